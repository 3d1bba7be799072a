//! Functions: what a deploy asks for, what the registry keeps, and how a
//! function's zygote is doing.

use crate::kinds::{Backend, Language, Mode};
use serde::{Deserialize, Serialize};

/// Deploy settings as a client gives them (query string, JSON body or the
/// CLI's manifest); anything left out gets the daemon's default. Raw input:
/// the daemon checks each field and answers `invalid_request` naming it.
#[derive(
    Debug, Default, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema, utoipa::IntoParams,
)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeployOptions {
    /// `python3` (default) or `node`.
    pub runtime: Option<String>,
    pub handler: Option<String>,
    pub timeout_ms: Option<u64>,
    pub profile: Option<String>,
    /// Backend of the function's sandboxes (default: the runtime's, from
    /// the config file, else emberd's first).
    pub backend: Option<String>,
    /// `fork` or `specialized` (default: fork for python3, specialized for
    /// node, which cannot fork).
    pub mode: Option<String>,
    /// Fork mode: once the function is warm, fork its workers from a
    /// function zygote that imported the handler once (default true;
    /// false: every invocation imports it afresh).
    pub zygote: Option<bool>,
    pub memory_mb: Option<u64>,
    pub pids: Option<u64>,
    pub cpu_shares: Option<u64>,
    pub max_output_bytes: Option<u64>,
    pub max_event_bytes: Option<u64>,
    /// Most invocations of the function running at once (default: no
    /// limit of its own, only the pool's).
    pub max_concurrency: Option<u32>,
    /// With `max_concurrency`: most invocations waiting for one of its
    /// slots; past it an invocation is refused at once with `overloaded`
    /// (default 4 × `max_concurrency`).
    pub max_queue: Option<u32>,
    /// Sessions: end one unused this long (default `--session-idle-s`).
    pub session_idle_s: Option<u64>,
    /// Sessions: end one this long after it opened (default
    /// `--session-lifetime-s`).
    pub session_lifetime_s: Option<u64>,
    /// Most sessions of the function open at once (default: only
    /// `--max-sessions`, the daemon's).
    pub max_sessions: Option<u32>,
}

/// What one invocation of a function may use. Stored with the function;
/// rows from before limits existed read as the defaults.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(default)]
pub struct FunctionLimits {
    /// Memory for the function's worker, on top of what the idle sandbox
    /// uses. Over it, the worker is OOM-killed (`oom`).
    pub memory_mb: u64,
    /// Processes and threads the function may have at once, its worker
    /// included. Over it, fork fails (`pids`).
    pub pids: u64,
    /// CPU weight against other sandboxes (cgroup v1 shares, 1024 normal).
    pub cpu_shares: u64,
    /// Cap for each of stdout and stderr; the rest is dropped and a marker
    /// says so (`output_truncated`).
    pub max_output_bytes: u64,
    /// Largest event accepted for this function (413 above it).
    pub max_event_bytes: u64,
}

impl Default for FunctionLimits {
    fn default() -> Self {
        FunctionLimits {
            memory_mb: 256,
            pids: 64,
            cpu_shares: 1024,
            max_output_bytes: 1024 * 1024,
            max_event_bytes: 6 * 1024 * 1024,
        }
    }
}

/// How many invocations of one function run and wait at once. Stored
/// with the function; absent fields (and rows from before admission
/// control) mean no limit of the function's own.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(default)]
pub struct Concurrency {
    /// Most invocations running at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Most invocations waiting for a slot (set only with
    /// `max_concurrency`; default 4 × it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_queue: Option<u32>,
}

impl Concurrency {
    /// The queue bound in force when `max_concurrency` is set: the
    /// deploy's, else 4 × the concurrency (a burst of a few rounds waits,
    /// a flood is refused).
    pub fn queue_bound(&self) -> Option<u32> {
        self.max_concurrency
            .map(|c| self.max_queue.unwrap_or(c.saturating_mul(4)))
    }
}

/// `"code": {"git": {...}}` in a JSON deploy body (Unix socket only):
/// emberd clones the repository as uid 65534 and unpacks the tree of one
/// commit, or of one directory of it, as it unpacks an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GitCode {
    /// An absolute host path or a URL (`file://`, `git://`, `http://`,
    /// `https://`), readable by uid 65534 without credentials.
    pub repo: String,
    /// A branch, a tag or a full commit sha (default: the repository's
    /// HEAD).
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The function's directory in the repository, relative (default: its
    /// root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdir: Option<String>,
}

/// Where a deploy's code came from, when emberd fetched it itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CodeOrigin {
    Git(GitOrigin),
}

/// The git commit a function's code was taken from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitOrigin {
    /// The repository as the deploy named it.
    pub repo: String,
    /// The ref as the deploy named it (`HEAD` if it named none).
    #[serde(rename = "ref")]
    pub reference: String,
    /// The full sha of the commit the ref resolved to.
    pub commit: String,
    /// The directory of the repository the code came from, if not its root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdir: Option<String>,
}

/// A deployed function, as the registry keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct FunctionRecord {
    pub name: String,
    pub runtime: Language,
    pub handler: String,
    pub timeout_ms: u64,
    pub profile: String,
    /// Backend of its sandboxes; absent: the daemon's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
    pub mode: Mode,
    /// Fork mode: workers fork from a function zygote once it is warm.
    pub zygote: bool,
    pub limits: FunctionLimits,
    /// Its own concurrency limit and queue bound, when the deploy set them.
    #[serde(flatten)]
    pub concurrency: Concurrency,
    /// Its session settings, when the deploy set any.
    #[serde(flatten)]
    pub sessions: crate::session::SessionPolicy,
    /// Where the code came from, when emberd fetched it itself (a git
    /// deploy: repository, ref, commit, subdir); absent for uploads and
    /// host paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<CodeOrigin>,
    /// Hex SHA-256 of the code tree in the store.
    pub digest: String,
    /// Unix milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
    /// Paused by an operator (`POST /v1/functions/{name}/pause`): its
    /// invocations are refused with `function_paused` until it is resumed.
    /// Kept across restarts and redeploys.
    #[serde(default)]
    pub paused: bool,
    /// When it was paused (Unix milliseconds); absent when not paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<i64>,
}

impl FunctionRecord {
    /// The key of sandboxes bound to this deploy (a specialized runner or
    /// a function zygote): a redeploy changes it, so no bound sandbox ever
    /// serves code it did not load.
    pub fn binding_key(&self) -> String {
        format!(
            "{}@{}-{}",
            self.name,
            self.updated_at,
            &self.digest[..12.min(self.digest.len())]
        )
    }
}

/// The zygote state of one deploy, as `GET /v1/functions/{name}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum ZygoteState {
    /// Not tried yet: the first invocation runs by hot swap, the sandbox
    /// is bound after it.
    Pending,
    /// At least one sandbox holds a function zygote; `init_us` is how
    /// long its module init took.
    Ready { init_us: u64 },
    /// Invocations import the handler afresh: the init failed or was
    /// unsafe to fork (`outcome`, e.g. `init_unsafe`; `reason`).
    Fallback { outcome: String, reason: String },
    /// The deploy turned zygotes off (`zygote: false`), the function runs
    /// in specialized mode, or emberd runs with `--no-function-zygotes`.
    Off,
}

/// `GET /v1/functions/{name}`: the record and its zygote state.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FunctionInfo {
    #[serde(flatten)]
    pub record: FunctionRecord,
    pub zygote_state: ZygoteState,
}

/// `GET /v1/functions`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FunctionList {
    pub functions: Vec<FunctionRecord>,
}

/// `DELETE /v1/functions/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Deleted {
    pub deleted: String,
}
