//! emberd's configuration: the command line (with defaults), and what is
//! derived from it (paths, the instance tag).

use clap::Parser;
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
    pub runtimes: Vec<String>,

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

    /// Container runtimes of the sandboxes, comma-separated: runc, crun,
    /// runsc (gVisor), libcontainer (youki's, inside emberd). Each gets a
    /// pool per language runtime; the first is the default for functions
    /// deployed without a `backend`.
    #[arg(long, default_value = "runc", value_delimiter = ',', value_parser = parse_backend)]
    pub backend: Vec<String>,

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

fn parse_runtime(name: &str) -> Result<String, String> {
    crate::validate::runtime(name).map(|_| name.to_string())
}

fn parse_backend(name: &str) -> Result<String, String> {
    if ember_runtimes::BACKEND_NAMES.contains(&name) {
        Ok(name.to_string())
    } else {
        Err(format!(
            "unknown backend {name:?} (known: {})",
            ember_runtimes::BACKEND_NAMES.join(", ")
        ))
    }
}

impl DaemonConfig {
    /// The backend of functions deployed without one.
    pub fn default_backend(&self) -> &str {
        self.backend.first().map(String::as_str).unwrap_or("runc")
    }

    /// Options for building backend `name` (the configured binary and root
    /// apply to the first backend only).
    pub fn backend_options(&self, name: &str) -> ember_runtimes::BackendOptions {
        let mine = name == self.default_backend();
        ember_runtimes::BackendOptions {
            binary: if mine {
                self.runtime_binary.clone()
            } else {
                None
            },
            // This daemon's own root under its run directory: its recovery
            // never lists (and waits on) another daemon's containers.
            root: match (mine, &self.runtime_root) {
                (true, Some(root)) => Some(root.clone()),
                _ => Some(self.run_dir().join(name)),
            },
            runsc_platform: self.runsc_platform.clone(),
        }
    }
}

fn parse_profile(name: &str) -> Result<String, String> {
    ember_profiles::Profile::by_name(name)
        .map(|p| p.name.to_string())
        .map_err(|e| e.to_string())
}

impl DaemonConfig {
    pub fn db_path(&self) -> PathBuf {
        self.state_dir.join("ember.db")
    }
    pub fn code_dir(&self) -> PathBuf {
        self.state_dir.join("code")
    }
    /// This daemon's run directory (see `--run-dir`).
    pub fn run_dir(&self) -> PathBuf {
        self.run_dir
            .clone()
            .unwrap_or_else(|| Path::new("/run/ember").join(self.instance_tag()))
    }
    /// Sandbox bundles: under the run directory, whose path a sandbox's
    /// root in its user namespace can search.
    pub fn bundles_dir(&self) -> PathBuf {
        self.run_dir().join("sandboxes")
    }
    /// Deploy builds' bundles and work directories.
    pub fn builds_dir(&self) -> PathBuf {
        self.run_dir().join("builds")
    }
    /// The `/fn` and `/tmp` host directories of runsc sandboxes: on the
    /// code store's filesystem, so injected code is hard-linked.
    pub fn host_dirs(&self) -> PathBuf {
        self.state_dir.join("sandboxes")
    }
    /// What one function may ask for (see `--max-function-*`).
    pub fn function_caps(&self) -> crate::validate::FunctionCaps {
        crate::validate::FunctionCaps {
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
    pub fn sandboxes_budget(&self) -> ember_runtimes::cgroup::Budget {
        let mb = self
            .sandboxes_memory_mb
            .unwrap_or_else(|| machine_memory_mb() * 3 / 4);
        ember_runtimes::cgroup::Budget {
            memory_bytes: mb * 1024 * 1024,
            pids: self.sandboxes_pids,
        }
    }

    /// The host ids of the sandboxes' user namespaces.
    pub fn userns_range(&self) -> ember_runtimes::userns::IdRange {
        ember_runtimes::userns::IdRange {
            base: self.userns_base,
            blocks: self.userns_blocks,
        }
    }
    pub fn lock_path(&self) -> PathBuf {
        self.state_dir.join("emberd.lock")
    }

    /// Short tag derived from the state dir: names this daemon's containers
    /// and cgroups, so a restart on the same state dir finds its leftovers
    /// and two daemons on different state dirs never touch each other's.
    pub fn instance_tag(&self) -> String {
        use sha2::{Digest, Sha256};
        let canon =
            std::fs::canonicalize(&self.state_dir).unwrap_or_else(|_| self.state_dir.clone());
        let h = Sha256::digest(canon.as_os_str().as_encoded_bytes());
        hex::encode(&h[..4])
    }

    /// Find the agent binary: flag/env, then next to this executable, then
    /// the build tree's static build.
    pub fn resolve_agent(&self) -> Result<PathBuf, String> {
        if let Some(a) = &self.agent {
            // The bundle binds it by path: it must be absolute.
            return if a.is_file() {
                std::fs::canonicalize(a).map_err(|e| format!("ember-agent {}: {e}", a.display()))
            } else {
                Err(format!("ember-agent {} does not exist", a.display()))
            };
        }
        let exe = std::env::current_exe().map_err(|e| format!("locating emberd: {e}"))?;
        let dir = exe.parent().unwrap_or(Path::new("/"));
        let candidates = [
            dir.join("ember-agent"),
            dir.join("../lib/ember/ember-agent"),
            dir.join("../x86_64-unknown-linux-gnu/release-agent/ember-agent"),
            dir.join("../../x86_64-unknown-linux-gnu/release-agent/ember-agent"),
        ];
        candidates
            .iter()
            .find(|p| p.is_file())
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
            .ok_or_else(|| {
                format!(
                    "ember-agent not found (looked for {}); build it with scripts/build-agent and pass --agent",
                    candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
                )
            })
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
