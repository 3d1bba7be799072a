//! What the daemon runs with: built by the server from emberd's flags and
//! the config file (`ember-server`'s `config.rs`), with every path,
//! default and cap already resolved. The core never sees the command line.

use ember_api::config_file::ConfigFile;
use ember_api::validate::FunctionCaps;
use ember_api::{Backend, Language};
use ember_runtimes::cgroup::Budget;
use ember_runtimes::userns::IdRange;
use ember_runtimes::BackendOptions;
use std::path::PathBuf;

/// The daemon's settings (see `emberd --help` for each).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Registry, invocation records and code store.
    pub state_dir: PathBuf,
    /// Bundles, the generated `/etc`, deploy builds; removed at stop.
    pub run_dir: PathBuf,
    /// Names this daemon's sandboxes and cgroups (from the state dir).
    pub tag: String,
    /// The `ember-agent` binary sandboxes run as PID 1.
    pub agent: PathBuf,
    /// Per-runtime pool settings and the specialized recycling rules.
    pub file: ConfigFile,
    /// Runtimes to run pools for.
    pub runtimes: Vec<Language>,
    pub python: String,
    pub node: String,
    /// Backends from the flags, the first being the default.
    pub backends: Vec<Backend>,
    /// The first backend's binary and root, if not the defaults.
    pub runtime_binary: Option<PathBuf>,
    pub runtime_root: Option<PathBuf>,
    pub runsc_platform: String,
    pub userns: IdRange,
    pub pools: PoolDefaults,
    pub function_zygotes: bool,
    pub builds: BuildDefaults,
    pub invocation_retention: usize,
    /// Invocation records kept at most, in bytes (output and a fixed
    /// overhead per record).
    pub history_max_bytes: u64,
    /// Session limits and the defaults of functions that set none.
    pub sessions: SessionDefaults,
    pub default_timeout_ms: u64,
    pub max_event_bytes: usize,
    pub max_result_bytes: usize,
    pub max_output_bytes: usize,
    pub max_code_bytes: usize,
    pub max_unpacked_code_bytes: u64,
    /// How long git may take on one deploy from a repository (clone,
    /// archive), in seconds.
    pub git_timeout_s: u64,
    pub tmpfs_mb: u64,
    pub sandbox_memory_mb: u64,
    pub sandbox_pids: i64,
    pub sandbox_profile: String,
    /// The most one function may ask for.
    pub caps: FunctionCaps,
    /// All sandboxes and builds together.
    pub budget: Budget,
}

/// Pool sizing and recycling, before a runtime's config file section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolDefaults {
    pub min_warm: usize,
    pub max_warm: usize,
    pub headroom: usize,
    pub max: usize,
    pub idle_trim_ms: u64,
    pub specialized_max_invocations: u64,
    pub specialized_idle_ms: u64,
    pub freeze_after_ms: u64,
    pub queue_timeout_ms: u64,
    /// `--adopted-only`: pools serve adopted sandboxes only, and make none.
    pub adopted_only: bool,
    /// `--max-queue`: most invocations waiting for a sandbox of one pool;
    /// `None`: 4 × the pool's `max`.
    pub max_queue: Option<usize>,
}

/// Deploy builds' limits and where pip finds wheels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildDefaults {
    pub wheels_dir: Option<PathBuf>,
    pub memory_mb: u64,
    pub pids: i64,
    pub disk_mb: u64,
    pub timeout_ms: u64,
}

impl Settings {
    /// The backend of functions deployed without one.
    pub fn default_backend(&self) -> Backend {
        self.backends.first().copied().unwrap_or(Backend::Runc)
    }

    /// Options for building `backend` (the configured binary and root
    /// apply to the first backend only).
    pub fn backend_options(&self, backend: Backend) -> BackendOptions {
        let mine = backend == self.default_backend();
        BackendOptions {
            binary: self.runtime_binary.clone().filter(|_| mine),
            // This daemon's own root under its run directory: its recovery
            // never lists (and waits on) another daemon's containers.
            root: match (mine, &self.runtime_root) {
                (true, Some(root)) => Some(root.clone()),
                _ => Some(self.run_dir.join(backend.as_str())),
            },
            runsc_platform: self.runsc_platform.clone(),
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.state_dir.join("ember.db")
    }
    pub fn code_dir(&self) -> PathBuf {
        self.state_dir.join("code")
    }
    pub fn lock_path(&self) -> PathBuf {
        self.state_dir.join("emberd.lock")
    }
    /// Sandbox bundles: under the run directory, whose path a sandbox's
    /// root in its user namespace can search.
    pub fn bundles_dir(&self) -> PathBuf {
        self.run_dir.join("sandboxes")
    }
    /// Deploy builds' bundles and work directories.
    pub fn builds_dir(&self) -> PathBuf {
        self.run_dir.join("builds")
    }
    /// The `/fn` and `/tmp` host directories of runsc sandboxes: on the
    /// code store's filesystem, so injected code is hard-linked.
    pub fn host_dirs(&self) -> PathBuf {
        self.state_dir.join("sandboxes")
    }
    /// This daemon's cgroup, parent of its sandboxes' and builds'.
    pub fn cgroup(&self) -> String {
        format!("/ember/{}", self.tag)
    }
}

/// Sessions: how many may be open, and how long one lives when its
/// function's deploy does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionDefaults {
    /// Most sessions open at once, all functions together.
    pub max: usize,
    /// A session unused this long is ended.
    pub idle_s: u64,
    /// A session is ended this long after it opened.
    pub lifetime_s: u64,
}

impl Default for SessionDefaults {
    fn default() -> Self {
        SessionDefaults {
            max: 32,
            idle_s: 300,
            lifetime_s: 3600,
        }
    }
}
