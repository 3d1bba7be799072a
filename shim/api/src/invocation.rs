//! An invocation's answer: how it ended, how it started, what it hit, its
//! per-phase timings.

use crate::kinds::{Backend, Mode};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// How an invocation ended (`outcome` of its answer and record).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The handler returned a JSON value.
    Ok,
    /// The handler (or its import) raised, or its result is not JSON.
    HandlerError,
    /// The handler ran past its `timeout_ms`.
    Timeout,
    /// The worker died without a result.
    Crashed,
    /// The result is over `max_result_bytes`.
    ResultTooLarge,
    /// The function ran out of memory.
    Oom,
    /// The function hit its process limit.
    Pids,
    /// Ended through the kill switch (`POST /v1/sandboxes/{id}/kill`).
    Killed,
    /// emberd shut down while it ran, past `--drain-timeout-ms`.
    Interrupted,
}

impl Outcome {
    pub const ALL: [Outcome; 9] = [
        Outcome::Ok,
        Outcome::HandlerError,
        Outcome::Timeout,
        Outcome::Crashed,
        Outcome::ResultTooLarge,
        Outcome::Oom,
        Outcome::Pids,
        Outcome::Killed,
        Outcome::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::HandlerError => "handler_error",
            Outcome::Timeout => "timeout",
            Outcome::Crashed => "crashed",
            Outcome::ResultTooLarge => "result_too_large",
            Outcome::Oom => "oom",
            Outcome::Pids => "pids",
            Outcome::Killed => "killed",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// How the sandbox that ran an invocation was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StartKind {
    /// A sandbox already bound to this function (specialized mode, or a
    /// function zygote): no code to swap in, the handler is loaded.
    Warm,
    /// A generic warm sandbox from the pool, the code hot-swapped in.
    Hot,
    /// The pool was empty: a sandbox was created for this invocation.
    Cold,
}

impl StartKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StartKind::Warm => "warm",
            StartKind::Hot => "hot",
            StartKind::Cold => "cold",
        }
    }
}

/// A limit an invocation ran into (`limits_hit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitHit {
    Oom,
    Pids,
    Timeout,
    OutputTruncated,
    ResultTooLarge,
}

/// Per-phase timings of one invocation, in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Timings {
    /// Waiting for a sandbox (excludes creating one).
    pub queue: u64,
    /// Creating a sandbox (cold starts only).
    pub create: u64,
    pub thaw: u64,
    pub inject: u64,
    /// From the request reaching the agent's pipe to its answer.
    pub run: u64,
    /// Part of `run`: the worker installing its profile's seccomp filters
    /// before user code runs.
    pub confine: u64,
    /// Cleanup the caller waited for. The worker is killed inside `run`;
    /// unmounting `/fn` and `/tmp`, verifying and freezing happen after the
    /// answer, before the sandbox is used again (logged as "sandbox
    /// returned" with `eject_us`).
    pub cleanup: u64,
    pub total: u64,
}

/// An exception the handler raised.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct HandlerErrorInfo {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    pub traceback: String,
}

/// Everything known about one invocation; the API's invoke answer.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Report {
    pub id: String,
    pub function: String,
    pub sandbox: String,
    /// Backend of that sandbox (`external` for an adopted one).
    pub backend: Backend,
    pub start: StartKind,
    pub mode: Mode,
    /// Sandbox profile the worker ran under.
    pub profile: String,
    pub outcome: Outcome,
    /// Limits the invocation ran into.
    pub limits_hit: Vec<LimitHit>,
    /// The handler's return value, any JSON (only with `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Value)]
    pub result: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<HandlerErrorInfo>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub timings_us: Timings,
    /// The session the invocation ran in, for a session's call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The memory limit in force (MiB), for messages; not on the wire.
    #[serde(skip)]
    pub memory_mb: u64,
    /// The process limit in force, for messages; not on the wire.
    #[serde(skip)]
    pub pids: u64,
}
