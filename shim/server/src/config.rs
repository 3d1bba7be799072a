//! emberd's command line (with defaults), and the core's [`Settings`]
//! built from it and the config file.

use clap::Parser;
use ember_api::config_file::{ConfigFile, ConfigFileError};
use ember_api::validate::{FunctionCaps, Invalid};
use ember_api::{Backend, Language};
use ember_core::settings::{BuildDefaults, PoolDefaults, Settings};
use ember_runtimes::cgroup::Budget;
use ember_runtimes::userns::IdRange;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "emberd",
    version,
    about = "ember daemon: warm sandbox pools and the invoke API on a Unix socket",
    long_about = "Keeps paused sandboxes with a preloaded interpreter and hot-swaps \
function code into them per invocation. Serves HTTP/1.1 + JSON on a Unix socket \
(see docs/api.md). Runs in the foreground and logs to stderr (RUST_LOG sets the level)."
)]
pub struct DaemonConfig {
    /// Unix socket to serve the API on.
    #[arg(long, env = "EMBER_SOCKET", default_value = "/run/ember/ember.sock")]
    pub socket: PathBuf,

    /// Directory for the function registry and code store.
    #[arg(long, env = "EMBER_STATE_DIR", default_value = "/var/lib/ember")]
    pub state_dir: PathBuf,

    /// Directory for this daemon's run-time files: sandbox bundles, the
    /// generated /etc and agent copy they bind, deploy builds (default:
    /// /run/ember/<tag>, the tag derived from --state-dir). Removed at stop.
    #[arg(long, env = "EMBER_RUN_DIR")]
    pub run_dir: Option<PathBuf>,

    /// First host id of the range the sandboxes' user namespaces map onto
    /// (each sandbox gets 65536 ids of its own); no host account may use
    /// an id in the range (checked against /etc/passwd, /etc/group,
    /// /etc/subuid and /etc/subgid at start). See docs/isolation.md.
    #[arg(long, default_value_t = 0x6000_0000)]
    pub userns_base: u32,

    /// Blocks of 65536 host ids in that range: at most this many sandboxes
    /// (of all emberd processes sharing the range) exist at once.
    #[arg(long, default_value_t = 4096)]
    pub userns_blocks: u32,

    /// Configuration file: per-runtime pool bounds, scaling and default
    /// backend, specialized recycling (see docs/config.md). Default:
    /// /etc/ember/ember.toml if it exists. Its sections override the flags
    /// below for their runtime.
    #[arg(long, env = "EMBER_CONFIG")]
    pub config: Option<PathBuf>,

    /// Language runtimes to run pools for, comma-separated (python3,
    /// node). A runtime whose interpreter is not installed is skipped with
    /// a warning.
    #[arg(long, default_value = "python3,node", value_delimiter = ',', value_parser = parse_runtime)]
    pub runtimes: Vec<Language>,

    /// Warm (paused) sandboxes kept ready per pool even when idle
    /// (`min_warm`).
    #[arg(long, default_value_t = 2)]
    pub pool_size: usize,

    /// Most warm sandboxes a pool keeps ahead of demand (`max_warm`): under
    /// load it keeps --pool-headroom free sandboxes beyond those in use, up
    /// to this.
    #[arg(long, default_value_t = 6)]
    pub pool_max_warm: usize,

    /// Free warm sandboxes kept beyond those in use while there is load
    /// (`headroom`; 0 turns demand scaling off).
    #[arg(long, default_value_t = 1)]
    pub pool_headroom: usize,

    /// Most sandboxes per pool, warm and busy together; invocations past
    /// it wait in a queue.
    #[arg(long, default_value_t = 8)]
    pub max_sandboxes: usize,

    /// A pool with no new invocations for this long shrinks back toward
    /// --pool-size, destroying sandboxes unused this long.
    #[arg(long, default_value_t = 10_000)]
    pub idle_trim_ms: u64,

    /// A specialized sandbox (bound to one function) is recycled after
    /// this many invocations.
    #[arg(long, default_value_t = 10_000)]
    pub specialized_max_invocations: u64,

    /// A specialized sandbox unused this long is recycled (as is a
    /// fork-mode sandbox bound to its function's zygote).
    #[arg(long, default_value_t = 300_000)]
    pub specialized_idle_ms: u64,

    /// A sandbox back from an invocation is frozen (cgroup freezer) once
    /// it has been idle this long; while invocations keep coming it stays
    /// thawed, saving a freeze and a thaw each.
    #[arg(long, default_value_t = 50)]
    pub freeze_after_ms: u64,

    /// Never bind fork-mode sandboxes to a function zygote: every
    /// invocation imports its handler afresh in a generic sandbox.
    #[arg(long)]
    pub no_function_zygotes: bool,

    /// How long an invocation may wait for a sandbox before failing.
    #[arg(long, default_value_t = 30_000)]
    pub queue_timeout_ms: u64,

    /// Most invocations that may wait for a sandbox of one pool (beyond
    /// the `max` it runs at once); past it an invocation is refused at
    /// once with 429 overloaded and a Retry-After, instead of waiting up
    /// to --queue-timeout-ms. Default: 4 × the pool's max. Also
    /// `max_queue` in a `[pools.<runtime>]` section of the config file.
    #[arg(long)]
    pub max_queue: Option<usize>,

    /// Serve invocations from adopted sandboxes only (containers annotated
    /// dev.ember.sandbox, started through ember-runtime): never create a
    /// sandbox of one's own (no warm pool, no cold start, `ember test`
    /// refused); an invocation waits up to --queue-timeout-ms for an
    /// adopted one, then fails with pool_exhausted. Deploy builds still
    /// run in a throwaway sandbox of --backend. Also `adopted_only = true`
    /// in the config file. See docs/containerd.md.
    #[arg(long)]
    pub adopted_only: bool,

    /// Container runtimes of the sandboxes, comma-separated: runc, crun,
    /// runsc (gVisor), libcontainer (youki's, inside emberd). Each gets a
    /// pool per language runtime; the first is the default for functions
    /// deployed without a `backend`.
    #[arg(long, default_value = "runc", value_delimiter = ',', value_parser = parse_backend)]
    pub backend: Vec<Backend>,

    /// The runtime binary of the first backend (default: the backend's
    /// name, from PATH).
    #[arg(long, alias = "runc")]
    pub runtime_binary: Option<PathBuf>,

    /// `--root` passed to the first backend's runtime (default: a root of
    /// this daemon's own, `<run-dir>/<backend>`, as for every other backend).
    #[arg(long, alias = "runc-root")]
    pub runtime_root: Option<PathBuf>,

    /// gVisor platform for runsc: ptrace (works everywhere), systrap or kvm
    /// (needs a working /dev/kvm).
    #[arg(long, default_value = "ptrace")]
    pub runsc_platform: String,

    /// Static ember-agent binary (default: next to emberd, or $EMBER_AGENT).
    #[arg(long, env = "EMBER_AGENT")]
    pub agent: Option<PathBuf>,

    /// Python interpreter inside the sandbox (from the host's /usr).
    #[arg(long, default_value = "/usr/bin/python3")]
    pub python: String,

    /// Node.js interpreter inside the sandbox (from the host's /usr).
    #[arg(long, default_value = "/usr/bin/node")]
    pub node: String,

    /// Directory of wheels from which deploy builds install functions'
    /// requirements.txt (`pip --no-index --find-links`, in the build's
    /// sandbox, which has no network); without it a deploy with a
    /// requirements.txt is refused. Its files must be readable by all.
    #[arg(long, env = "EMBER_WHEELS_DIR")]
    pub wheels_dir: Option<PathBuf>,

    /// Memory of a deploy build's sandbox (pip, bytecode compiler), MiB.
    #[arg(long, default_value_t = 1024)]
    pub build_memory_mb: u64,

    /// Processes and threads of a deploy build.
    #[arg(long, default_value_t = 256)]
    pub build_pids: i64,

    /// Disk of a deploy build: the unpacked code and what the build adds
    /// (dependencies, bytecode) together, MiB (a tmpfs, so memory too).
    #[arg(long, default_value_t = 1024)]
    pub build_disk_mb: u64,

    /// Longest a deploy build may take.
    #[arg(long, default_value_t = 300_000)]
    pub build_timeout_ms: u64,

    /// Invocation records kept (the newest; older ones are deleted).
    #[arg(long, default_value_t = 100_000)]
    pub invocation_retention: usize,

    /// Invocation records kept at most, in bytes (their output and about
    /// 256 bytes each); the oldest are deleted past it.
    #[arg(long, default_value_t = 256 << 20)]
    pub history_max_bytes: u64,

    /// Most sessions open at once, all functions together; past it, opening
    /// one is refused (`429 session_limit`). Each holds a sandbox of its
    /// own, outside the pools' `--max-sandboxes`.
    #[arg(long, default_value_t = 32)]
    pub max_sessions: usize,

    /// A session unused this long is ended, unless its function's deploy
    /// sets `session_idle_s`.
    #[arg(long, default_value_t = 300)]
    pub session_idle_s: u64,

    /// A session is ended this long after it opened, unless its function's
    /// deploy sets `session_lifetime_s`.
    #[arg(long, default_value_t = 3600)]
    pub session_lifetime_s: u64,

    /// How long SIGTERM (or SIGINT) waits for running invocations to
    /// finish; those still running after it, or at a second signal, are
    /// interrupted. New invocations are refused (`503 shutting_down`) from
    /// the first signal on.
    #[arg(long, default_value_t = 30_000)]
    pub drain_timeout_ms: u64,

    /// Serve the dashboard and the same API over HTTP on this address
    /// (e.g. 127.0.0.1:8080). Off by default. Loopback addresses only; API
    /// requests need the bearer token emberd writes to
    /// <state-dir>/dashboard-token at each start (and logs as the page's URL).
    #[arg(long, value_name = "ADDR:PORT")]
    pub http: Option<std::net::SocketAddr>,

    /// Timeout for functions deployed without one.
    #[arg(long, default_value_t = 10_000)]
    pub default_timeout_ms: u64,

    /// Largest invoke event accepted (bytes).
    #[arg(long, default_value_t = 6 * 1024 * 1024)]
    pub max_event_bytes: usize,

    /// Largest handler result accepted (bytes of JSON).
    #[arg(long, default_value_t = 6 * 1024 * 1024)]
    pub max_result_bytes: usize,

    /// Cap for each of a worker's stdout and stderr (bytes); the rest is dropped.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_output_bytes: usize,

    /// Largest deploy body (compressed bytes).
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub max_code_bytes: usize,

    /// Largest unpacked code tree (bytes).
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    pub max_unpacked_code_bytes: u64,

    /// How long git may take on one deploy from a repository (clone and
    /// archive; git runs as uid 65534), in seconds; past it git is killed
    /// and the deploy answers git_failed.
    #[arg(long, default_value_t = 60)]
    pub git_timeout_s: u64,

    /// Size of the per-invocation /tmp (MiB).
    #[arg(long, default_value_t = 64)]
    pub tmpfs_mb: u64,

    /// Memory limit of each sandbox (MiB).
    #[arg(long, default_value_t = 512)]
    pub sandbox_memory_mb: u64,

    /// Process limit of each sandbox.
    #[arg(long, default_value_t = 256)]
    pub sandbox_pids: i64,

    /// Most memory a function may ask for (`memory_mb` at deploy), MiB.
    /// Default: a quarter of the machine's memory, at most 4096.
    #[arg(long)]
    pub max_function_memory_mb: Option<u64>,

    /// Most processes and threads a function may ask for (`pids`).
    #[arg(long, default_value_t = 1024)]
    pub max_function_pids: u64,

    /// Largest CPU weight a function may ask for (`cpu_shares`; 1024 is a
    /// normal share, so the default lets one function outweigh four).
    #[arg(long, default_value_t = 4096)]
    pub max_function_cpu_shares: u64,

    /// Memory all of this emberd's sandboxes and deploy builds may use
    /// together (their parent cgroup's limit), MiB. Default: three
    /// quarters of the machine's memory.
    #[arg(long)]
    pub sandboxes_memory_mb: Option<u64>,

    /// Processes and threads all of this emberd's sandboxes and deploy
    /// builds may have together (their parent cgroup's limit).
    #[arg(long, default_value_t = 16_384)]
    pub sandboxes_pids: u64,

    /// Profile of the sandboxes themselves (their OCI seccomp filter and
    /// settings): `default` or `strict`. Each function's own profile is
    /// applied on top, in its worker.
    #[arg(long, default_value = "default", value_parser = parse_profile)]
    pub sandbox_profile: String,
}

fn parse_runtime(name: &str) -> Result<Language, Invalid> {
    ember_api::validate::runtime(name)
}

/// A backend name `--backend` does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown backend {0:?} (known: {known})", known = Backend::names())]
pub struct UnknownBackend(String);

fn parse_backend(name: &str) -> Result<Backend, UnknownBackend> {
    Backend::by_name(name).ok_or_else(|| UnknownBackend(name.to_string()))
}

fn parse_profile(name: &str) -> Result<String, ember_profiles::ProfileError> {
    ember_profiles::Profile::by_name(name).map(|p| p.name.to_string())
}

/// Why the flags do not make settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    File(#[from] ConfigFileError),
    #[error("ember-agent {0} does not exist")]
    AgentMissing(PathBuf),
    #[error("ember-agent {path}: {source}")]
    Agent {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("locating emberd: {0}")]
    CurrentExe(std::io::Error),
    #[error("ember-agent not found (looked for {0}); build it with scripts/build-agent and pass --agent")]
    AgentNotFound(String),
}

impl DaemonConfig {
    /// The core's settings: paths resolved, the config file read, the
    /// operator's caps and budget worked out.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let file = ConfigFile::load(self.config.as_deref())?;
        let adopted_only = self.adopted_only || file.adopted_only == Some(true);
        Ok(Settings {
            state_dir: self.state_dir.clone(),
            run_dir: self.run_dir(),
            tag: self.instance_tag(),
            agent: self.resolve_agent()?,
            file,
            runtimes: self.runtimes.clone(),
            python: self.python.clone(),
            node: self.node.clone(),
            backends: self.backend.clone(),
            runtime_binary: self.runtime_binary.clone(),
            runtime_root: self.runtime_root.clone(),
            runsc_platform: self.runsc_platform.clone(),
            userns: IdRange {
                base: self.userns_base,
                blocks: self.userns_blocks,
            },
            pools: self.pool_defaults(adopted_only),
            function_zygotes: !self.no_function_zygotes,
            builds: BuildDefaults {
                wheels_dir: self.wheels_dir.clone(),
                memory_mb: self.build_memory_mb,
                pids: self.build_pids,
                disk_mb: self.build_disk_mb,
                timeout_ms: self.build_timeout_ms,
            },
            invocation_retention: self.invocation_retention,
            history_max_bytes: self.history_max_bytes,
            sessions: ember_core::settings::SessionDefaults {
                max: self.max_sessions,
                idle_s: self.session_idle_s,
                lifetime_s: self.session_lifetime_s,
            },
            default_timeout_ms: self.default_timeout_ms,
            max_event_bytes: self.max_event_bytes,
            max_result_bytes: self.max_result_bytes,
            max_output_bytes: self.max_output_bytes,
            max_code_bytes: self.max_code_bytes,
            max_unpacked_code_bytes: self.max_unpacked_code_bytes,
            git_timeout_s: self.git_timeout_s,
            tmpfs_mb: self.tmpfs_mb,
            sandbox_memory_mb: self.sandbox_memory_mb,
            sandbox_pids: self.sandbox_pids,
            sandbox_profile: self.sandbox_profile.clone(),
            caps: self.function_caps(),
            budget: self.sandboxes_budget(),
        })
    }

    fn pool_defaults(&self, adopted_only: bool) -> PoolDefaults {
        PoolDefaults {
            min_warm: self.pool_size,
            max_warm: self.pool_max_warm,
            headroom: self.pool_headroom,
            max: self.max_sandboxes,
            idle_trim_ms: self.idle_trim_ms,
            specialized_max_invocations: self.specialized_max_invocations,
            specialized_idle_ms: self.specialized_idle_ms,
            freeze_after_ms: self.freeze_after_ms,
            queue_timeout_ms: self.queue_timeout_ms,
            adopted_only,
            max_queue: self.max_queue,
        }
    }

    /// This daemon's run directory (see `--run-dir`).
    pub fn run_dir(&self) -> PathBuf {
        self.run_dir
            .clone()
            .unwrap_or_else(|| Path::new("/run/ember").join(self.instance_tag()))
    }

    /// What one function may ask for (see `--max-function-*`).
    fn function_caps(&self) -> FunctionCaps {
        FunctionCaps {
            memory_mb: self
                .max_function_memory_mb
                .unwrap_or_else(|| (machine_memory_mb() / 4).clamp(64, 4096)),
            pids: self.max_function_pids,
            cpu_shares: self.max_function_cpu_shares,
            max_output_bytes: self.max_output_bytes as u64,
            max_event_bytes: self.max_event_bytes as u64,
        }
    }

    /// The parent cgroup's limits (see `--sandboxes-*`).
    fn sandboxes_budget(&self) -> Budget {
        let mb = self
            .sandboxes_memory_mb
            .unwrap_or_else(|| machine_memory_mb() * 3 / 4);
        Budget {
            memory_bytes: mb * 1024 * 1024,
            pids: self.sandboxes_pids,
        }
    }

    /// Short tag derived from the state dir: names this daemon's containers
    /// and cgroups, so a restart on the same state dir finds its leftovers
    /// and two daemons on different state dirs never touch each other's.
    pub fn instance_tag(&self) -> String {
        use sha2::{Digest, Sha256};
        let canon = canonical(&self.state_dir);
        let h = Sha256::digest(canon.as_os_str().as_encoded_bytes());
        hex::encode(&h[..4])
    }

    /// Find the agent binary: flag/env, then next to this executable, then
    /// the build tree's static build.
    fn resolve_agent(&self) -> Result<PathBuf, ConfigError> {
        if let Some(a) = &self.agent {
            // The bundle binds it by path: it must be absolute.
            if !a.is_file() {
                return Err(ConfigError::AgentMissing(a.clone()));
            }
            return std::fs::canonicalize(a).map_err(|source| ConfigError::Agent {
                path: a.clone(),
                source,
            });
        }
        let exe = std::env::current_exe().map_err(ConfigError::CurrentExe)?;
        let dir = exe.parent().unwrap_or(Path::new("/"));
        let candidates = [
            dir.join("ember-agent"),
            dir.join("../lib/ember/ember-agent"),
            dir.join("../x86_64-unknown-linux-gnu/release-agent/ember-agent"),
            dir.join("../../x86_64-unknown-linux-gnu/release-agent/ember-agent"),
        ];
        let found = candidates.iter().find(|p| p.is_file());
        let looked = || {
            let all: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            ConfigError::AgentNotFound(all.join(", "))
        };
        found
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
            .ok_or_else(looked)
    }
}

/// `path` made absolute with every link resolved, as `canonicalize` would
/// give it once the directory exists (the state dir is created later, by
/// the core; nothing is created before the flags are all checked).
fn canonical(path: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut existing = path;
    loop {
        if let Ok(c) = std::fs::canonicalize(existing) {
            return missing.iter().rev().fold(c, |p, name| p.join(name));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_os_string());
                existing = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// The machine's memory in MiB (`MemTotal`), 4096 if it cannot be read.
fn machine_memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(4096, |kb| kb / 1024)
}

#[cfg(test)]
mod tests {
    use super::canonical;

    #[test]
    fn a_missing_state_dir_gets_the_path_it_will_have() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        let missing = link.join("state/sub");
        let before = canonical(&missing);
        std::fs::create_dir_all(&missing).unwrap();
        assert_eq!(before, std::fs::canonicalize(&missing).unwrap());
        assert!(!before.starts_with(&link), "links resolved: {before:?}");
    }
}
