//! A live sandbox: its container, agent connection, code slot (mount
//! namespace or host directory), freezer and limits, and how to create and
//! destroy one.

use crate::agent_conn::{AgentConn, AgentConnError};
use crate::backend::{Backend, Injection};
use crate::bundle::{write_bundle, BundleSpec};
use crate::cgroup::{CgroupLayout, Freezer};
use crate::error::RuntimeError;
use crate::language::Interpreter;
use crate::limits::{CgroupLimits, InvocationLimits};
use crate::liveness::{host_pid_of, pid_running, DeadProcess, Liveness};
use crate::sandbox_files::SandboxFiles;
use crate::userns::{IdBlock, IdRange};
use ember_injector::{HostDirError, HostDirSlot, InjectError, Injector};
use ember_profiles::{Limits, Profile};
use ember_proto::{FromAgent, Ready, ToAgent};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a destroy waits for the agent to exit after being told to
/// (it answers at once unless it is stuck with an invocation).
const AGENT_EXIT_WAIT: Duration = Duration::from_millis(30);
/// How long it waits for a killed init to end.
const KILLED_EXIT_WAIT: Duration = Duration::from_millis(500);

/// Wait up to `limit` for processes `pids` to end; whether they did.
pub async fn wait_exit(pids: &[u32], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while pids.iter().any(|&p| pid_running(p)) {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

/// SIGKILL `pids` and wait up to `limit` for them to end.
pub async fn kill_and_wait(pids: &[u32], limit: Duration) -> bool {
    for &pid in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    wait_exit(pids, limit).await
}

/// What every sandbox of a pool is made from.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub backend: Arc<dyn Backend>,
    /// The daemon's shared sandbox files (agent, generated `/etc`, ...).
    pub files: SandboxFiles,
    /// The interpreter the agent starts.
    pub interpreter: Interpreter,
    /// Directory holding one bundle directory per sandbox (under the
    /// daemon's run directory: searchable from a user namespace).
    pub bundles_dir: PathBuf,
    /// Directory holding the host code and `/tmp` directories of
    /// host-directory sandboxes (runsc), one per sandbox: on the code
    /// store's filesystem, so code is hard-linked, not copied.
    pub host_dirs: PathBuf,
    /// Host ids for the sandboxes' user namespaces and where their locks
    /// live; `None`: no user namespace.
    pub userns: Option<(IdRange, PathBuf)>,
    /// cgroup parent of all this daemon's sandboxes, e.g. `/ember/<tag>`.
    pub cgroup_parent: String,
    pub profile: Profile,
    pub limits: Limits,
    /// How long a new sandbox may take to report ready.
    pub ready_timeout: Duration,
    /// Size of the per-invocation `/tmp`.
    pub tmpfs_bytes: u64,
}

/// Where an invocation's code goes in one sandbox.
pub enum CodeSlot {
    /// Mounted into the sandbox's mount namespace (runc, crun). Its thread
    /// holds the namespace, so injection never targets another process
    /// even if the pid were reused.
    Mounted(Injector),
    /// Linked into the host directory bound at `/fn` (runsc).
    HostDir(HostDirSlot),
}

#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    #[error(transparent)]
    Mount(#[from] InjectError),
    #[error(transparent)]
    HostDir(#[from] HostDirError),
}

impl CodeSlot {
    /// Put `code` at `/fn` (and, when mounting, a fresh tmpfs at `/tmp`).
    pub fn inject(&self, code: &Path, tmpfs_bytes: u64) -> Result<(), CodeError> {
        match self {
            CodeSlot::Mounted(i) => i.inject(code, tmpfs_bytes).map(|_| ()).map_err(Into::into),
            CodeSlot::HostDir(h) => h.inject(code).map_err(Into::into),
        }
    }

    /// Keep the code, give `/tmp` a fresh start: a new empty tmpfs
    /// (mounting), an emptied directory (host directory).
    pub fn fresh_scratch(&self, tmpfs_bytes: u64) -> Result<(), CodeError> {
        match self {
            CodeSlot::Mounted(i) => i.fresh_scratch(tmpfs_bytes).map_err(Into::into),
            CodeSlot::HostDir(h) => h.reset_tmp(false).map_err(Into::into),
        }
    }

    /// Keep the code, take `/tmp` away (mounting: the read-only root's
    /// empty directory shows; host directory: it is emptied and made
    /// read-only to the sandbox's users).
    pub fn drop_scratch(&self) -> Result<(), CodeError> {
        match self {
            CodeSlot::Mounted(i) => i.drop_scratch().map_err(Into::into),
            CodeSlot::HostDir(h) => h.reset_tmp(true).map_err(Into::into),
        }
    }

    /// Take the code out again, verified.
    pub fn eject(&self) -> Result<(), CodeError> {
        match self {
            CodeSlot::Mounted(i) => i.eject().map_err(Into::into),
            CodeSlot::HostDir(h) => h.eject().map_err(Into::into),
        }
    }
}

pub struct Sandbox {
    pub id: String,
    pub init_pid: u32,
    /// Where invocations' code goes.
    pub code: CodeSlot,
    /// The backend that runs it.
    pub backend: &'static str,
    /// See [`Backend::pids_limit_applies`].
    pub pids_limit_applies: bool,
    pub freezer: Freezer,
    /// Memory, pids and CPU limit files of its cgroup.
    pub limits: CgroupLimits,
    /// The limits last written (`None`: the bundle's own so far).
    pub applied: Option<InvocationLimits>,
    /// Memory the idle sandbox uses (agent, zygote, spare), measured when
    /// it became ready; a function's memory limit comes on top of it.
    pub baseline_memory: u64,
    pub conn: AgentConn,
    pub ready: Ready,
    pub bundle: PathBuf,
    /// A host-directory sandbox's `/fn` and `/tmp` directories' root.
    pub host_dir: Option<PathBuf>,
    /// Its block of host ids (its user namespace), held while it lives.
    pub ids: Option<IdBlock>,
    pub created: Instant,
    /// How long creation took (runtime start + zygote preload).
    pub create_us: u64,
    pub invocations: u64,
    /// Specialized mode: the function (and deploy) its runner is bound to,
    /// whose code stays mounted; `None`: generic, code swapped per
    /// invocation.
    pub bound: Option<String>,
    /// When it last went back to its pool (creation time until then).
    pub last_used: Instant,
    /// Frozen (or asked to freeze) since it last served: the next
    /// invocation thaws it. A sandbox that keeps getting work stays thawed
    /// (its processes are parked in blocking reads meanwhile).
    pub frozen: bool,
    /// Created and owned by someone else (containerd, through
    /// `ember-runtime`): emberd never deletes its container; destroying it
    /// only tells its agent to stop, which ends the container.
    pub external: bool,
    /// Watches on its processes (see [`Sandbox::dead_process`]).
    liveness: Liveness,
}

/// A sandbox someone else created with ember's agent in it, as
/// `ember-runtime` reports it (see [`Sandbox::adopt`]).
#[derive(Debug, Clone)]
pub struct ExternalSandbox {
    pub id: String,
    /// Host pid of its init (the agent).
    pub pid: u32,
    /// Host path of the Unix socket the agent listens on.
    pub socket: PathBuf,
    /// Its cgroup path (the bundle's `linux.cgroupsPath`).
    pub cgroups_path: String,
}

/// The host directory a host-directory sandbox sees at `/fn`.
fn host_code_dir(root: &Path) -> PathBuf {
    root.join("fn")
}

/// The host directory (a tmpfs) a host-directory sandbox sees at `/tmp`.
fn host_tmp_dir(root: &Path) -> PathBuf {
    root.join("tmp")
}

/// A size-limited tmpfs for the sandbox's `/tmp`, mounted on the host so
/// the daemon can empty it between invocations whatever modes the
/// function set.
fn mount_host_tmp(dir: &Path, bytes: u64) -> Result<(), RuntimeError> {
    let err = |source: std::io::Error| RuntimeError::Bundle {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let opts = format!("size={bytes},mode=1777");
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some(opts.as_str()),
    )
    .map_err(|e| err(e.into()))
}

/// The code slot of a sandbox whose init is `pid`: a thread held in its
/// mount namespace, so injection never targets another process even if
/// the pid were reused.
fn mount_slot(id: &str, pid: u32) -> Result<CodeSlot, RuntimeError> {
    let mntns = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
        .map(OwnedFd::from)
        .map_err(|source| RuntimeError::Namespace { pid, source })?;
    let injector = Injector::new(mntns, pid).map_err(|e| RuntimeError::Agent {
        id: id.to_string(),
        message: format!("joining its mount namespace: {e}"),
    })?;
    Ok(CodeSlot::Mounted(injector))
}

/// Remove a bundle directory, or a host-directory sandbox's directories
/// (unmounting its host `/tmp` first); also used for the leftovers of a
/// previous run.
pub fn remove_bundle(dir: &Path) {
    let _ = nix::mount::umount2(&host_tmp_dir(dir), nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir_all(dir);
}

/// The ember release of this emberd: its agents must be of the same
/// ([`Ready::check`]).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// An agent's first word, before the caller says what it means for its
/// kind of sandbox.
enum FirstWord {
    /// Ready, and of this emberd's release and protocol.
    Ready(Ready),
    /// Ready, but of another release or protocol.
    Mismatch(ember_proto::Mismatch),
    /// The agent could not start, and said why.
    Fatal(String),
    /// The connection ended before a word.
    Closed(AgentConnError),
    Other(FromAgent),
}

/// Wait up to `timeout` for the agent's first message, and check a
/// `Ready` against this emberd's release.
async fn first_word(
    conn: &mut AgentConn,
    id: &str,
    timeout: Duration,
) -> Result<FirstWord, RuntimeError> {
    match tokio::time::timeout(timeout, conn.recv()).await {
        Err(_) => Err(RuntimeError::AgentTimeout {
            id: id.to_string(),
            waited_ms: timeout.as_millis() as u64,
        }),
        Ok(Err(e @ AgentConnError::Closed { .. })) => Ok(FirstWord::Closed(e)),
        Ok(Err(source)) => Err(RuntimeError::AgentConn {
            id: id.to_string(),
            source,
        }),
        Ok(Ok(FromAgent::Ready(r))) => Ok(match r.check(VERSION) {
            Ok(()) => FirstWord::Ready(r),
            Err(mismatch) => FirstWord::Mismatch(mismatch),
        }),
        Ok(Ok(FromAgent::Fatal { message })) => Ok(FirstWord::Fatal(message)),
        Ok(Ok(other)) => Ok(FirstWord::Other(other)),
    }
}

/// Wait for the agent's `Ready` and check it is of this emberd's release
/// and protocol.
async fn await_ready(
    conn: &mut AgentConn,
    id: &str,
    timeout: Duration,
    agent: &Path,
) -> Result<Ready, RuntimeError> {
    let agent_err = |message: String| RuntimeError::Agent {
        id: id.to_string(),
        message,
    };
    match first_word(conn, id, timeout).await? {
        FirstWord::Ready(r) => Ok(r),
        FirstWord::Mismatch(mismatch) => Err(agent_err(format!(
            "{}: {mismatch}: rebuild and reinstall the agent with emberd \
             (scripts/build-agent, scripts/setup)",
            agent.display(),
        ))),
        FirstWord::Closed(source) => Err(RuntimeError::AgentConn {
            id: id.to_string(),
            source,
        }),
        FirstWord::Fatal(message) => Err(agent_err(format!(
            "{message}; stderr: {}",
            conn.stderr_tail()
        ))),
        FirstWord::Other(other) => Err(agent_err(format!(
            "expected ready, got {other:?}; stderr: {}",
            conn.stderr_tail()
        ))),
    }
}

/// Connect to an external sandbox's agent and wait for its `Ready`. An
/// agent that cannot start says why (`Fatal`) before it exits: that reason
/// is the error.
async fn connect_agent(
    ext: &ExternalSandbox,
    ready_timeout: Duration,
) -> Result<(AgentConn, Ready), RuntimeError> {
    let id = ext.id.clone();
    let agent_err = |message: String| RuntimeError::Agent {
        id: id.clone(),
        message,
    };
    let stream = connect_socket(ext, ready_timeout)
        .await
        .map_err(|e| agent_err(format!("connecting to {}: {e}", ext.socket.display())))?;
    let (r, w) = stream.into_split();
    let mut conn =
        AgentConn::from_streams(&id, Box::new(w), Box::new(r), Box::new(tokio::io::empty()));
    let message = match first_word(&mut conn, &id, ready_timeout).await? {
        FirstWord::Ready(ready) => return Ok((conn, ready)),
        FirstWord::Closed(_) => "its agent closed the connection before it was ready, without a \
             reason (an agent older than this emberd?); its reason is in the container's log"
            .to_string(),
        // The node's agent (its install) and this emberd (e.g. a
        // DaemonSet's image) are of different releases.
        FirstWord::Mismatch(mismatch) => format!(
            "{mismatch}: install the node's ember of emberd's release \
             (scripts/install-node --upgrade) or run emberd of the agent's"
        ),
        FirstWord::Fatal(message) => format!("its agent could not start: {message}"),
        FirstWord::Other(other) => format!(
            "expected ready of protocol {}, got {other:?}",
            ember_proto::PROTOCOL_VERSION
        ),
    };
    Err(agent_err(message))
}

/// Connect to an external sandbox's agent socket. The container's runtime
/// reports it started once the agent is exec'd, maybe before the agent has
/// bound its socket: while its init runs, a missing or unanswered socket
/// is tried again, up to `within`.
async fn connect_socket(
    ext: &ExternalSandbox,
    within: Duration,
) -> std::io::Result<tokio::net::UnixStream> {
    use std::io::ErrorKind::{ConnectionRefused, NotFound};
    let deadline = Instant::now() + within;
    loop {
        match tokio::net::UnixStream::connect(&ext.socket).await {
            Err(e)
                if matches!(e.kind(), NotFound | ConnectionRefused)
                    && Instant::now() < deadline
                    && pid_running(ext.pid) =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            res => return res,
        }
    }
}

/// Watches on a new sandbox's agent (host pid `init`) and on the zygote or
/// runner its `Ready` names, whose pid is the sandbox's own: found among
/// its cgroup's processes. Not under gVisor, whose processes are not the
/// host's (a pid there would match an unrelated runsc process).
fn watch(init: u32, ready: &Ready, freezer: &Freezer, backend: &str) -> Liveness {
    let mut liveness = Liveness::new(init);
    if backend != "runsc" && ready.zygote_pid != 0 {
        match host_pid_of(freezer, ready.zygote_pid) {
            Some(pid) => liveness.watch("zygote", pid, ready.zygote_pid),
            None => tracing::debug!(
                init,
                zygote = ready.zygote_pid,
                "zygote's host pid not found; watching the agent only"
            ),
        }
    }
    liveness
}

/// Where a new sandbox's pieces go.
struct Layout {
    bundle: PathBuf,
    /// Host-directory sandboxes: their `/fn` and `/tmp` directories' root.
    host_dir: Option<PathBuf>,
    cgroups_path: String,
}

impl Layout {
    fn remove(&self) {
        remove_bundle(&self.bundle);
        if let Some(d) = &self.host_dir {
            remove_bundle(d);
        }
    }
}

impl Sandbox {
    /// Create, start and wait for the agent's ready message. On any error
    /// the half-made container and bundle are removed.
    pub async fn create(
        cfg: &SandboxConfig,
        cgroups: &CgroupLayout,
        id: &str,
    ) -> Result<Sandbox, RuntimeError> {
        let started = Instant::now();
        let host_dirs = cfg.backend.injection() == Injection::HostDirectory;
        let layout = Layout {
            bundle: cfg.bundles_dir.join(id),
            host_dir: host_dirs.then(|| cfg.host_dirs.join(id)),
            cgroups_path: format!("{}/{}", cfg.cgroup_parent, id),
        };
        let result = Self::start(cfg, cgroups, id, &layout, started).await;
        if result.is_err() {
            let _ = cfg.backend.delete(id).await;
            layout.remove();
        }
        result
    }

    async fn start(
        cfg: &SandboxConfig,
        cgroups: &CgroupLayout,
        id: &str,
        layout: &Layout,
        started: Instant,
    ) -> Result<Sandbox, RuntimeError> {
        let ids = match &cfg.userns {
            Some((range, locks)) => Some(range.allocate(locks)?),
            None => None,
        };
        let host_code = match &layout.host_dir {
            Some(root) => {
                let (code, tmp) = (host_code_dir(root), host_tmp_dir(root));
                mount_host_tmp(&tmp, cfg.tmpfs_bytes)?;
                Some((code, tmp))
            }
            None => None,
        };
        write_bundle(&BundleSpec {
            dir: &layout.bundle,
            files: &cfg.files,
            interpreter: &cfg.interpreter,
            userns: ids.as_ref().map(|b| b.host_base),
            host_kernel: cfg.backend.injection() == Injection::MountNamespace,
            cgroups_path: &layout.cgroups_path,
            profile: &cfg.profile,
            limits: cfg.limits,
            host_code: host_code.as_ref().map(|(c, t)| (c.as_path(), t.as_path())),
            build: None,
        })?;
        let freezer = cgroups.freezer(&layout.cgroups_path)?;
        let limits = cgroups.limits(&layout.cgroups_path);
        let (init_pid, mut conn) = cfg.backend.run(id, &layout.bundle).await?;
        let code = match host_code {
            None => mount_slot(id, init_pid)?,
            Some((code, tmp)) => CodeSlot::HostDir(HostDirSlot::new(code, Some(tmp))),
        };
        let ready = await_ready(&mut conn, id, cfg.ready_timeout, &cfg.files.agent).await?;
        let baseline_memory = limits.memory_usage().unwrap_or(0);
        let liveness = watch(init_pid, &ready, &freezer, cfg.backend.name());
        Ok(Sandbox {
            id: id.to_string(),
            init_pid,
            code,
            backend: cfg.backend.name(),
            pids_limit_applies: cfg.backend.pids_limit_applies(),
            freezer,
            limits,
            applied: None,
            baseline_memory,
            conn,
            ready,
            bundle: layout.bundle.clone(),
            host_dir: layout.host_dir.clone(),
            ids,
            created: Instant::now(),
            create_us: started.elapsed().as_micros() as u64,
            invocations: 0,
            bound: None,
            last_used: Instant::now(),
            frozen: false,
            external: false,
            liveness,
        })
    }

    /// Take over a sandbox someone else created (containerd, through
    /// `ember-runtime`), or one a previous emberd adopted: thaw it (a
    /// previous emberd may have left it frozen), connect to its agent's
    /// socket, wait for it to be ready, and find its mount namespace and
    /// cgroup.
    pub async fn adopt(
        ext: &ExternalSandbox,
        cgroups: &CgroupLayout,
        ready_timeout: Duration,
    ) -> Result<Sandbox, RuntimeError> {
        let started = Instant::now();
        let freezer = cgroups.freezer(&ext.cgroups_path)?;
        let _ = freezer.thaw();
        let (conn, ready) = connect_agent(ext, ready_timeout).await?;
        let limits = cgroups.limits(&ext.cgroups_path);
        let code = mount_slot(&ext.id, ext.pid)?;
        let baseline_memory = limits.memory_usage().unwrap_or(0);
        let liveness = watch(ext.pid, &ready, &freezer, "external");
        Ok(Sandbox {
            id: ext.id.clone(),
            init_pid: ext.pid,
            code,
            backend: "external",
            pids_limit_applies: true,
            freezer,
            limits,
            applied: None,
            baseline_memory,
            conn,
            ready,
            bundle: PathBuf::new(),
            host_dir: None,
            ids: None,
            created: Instant::now(),
            create_us: started.elapsed().as_micros() as u64,
            invocations: 0,
            bound: None,
            last_used: Instant::now(),
            frozen: false,
            external: true,
            liveness,
        })
    }

    /// Let an external sandbox go without stopping it (emberd is
    /// stopping): thawed, its connection closed, its agent waits for the
    /// next emberd.
    pub fn let_go(self) {
        let _ = self.freezer.thaw();
    }

    /// Whether its init still runs (an external sandbox's owner may have
    /// killed it).
    pub fn alive(&self) -> bool {
        self.liveness.agent_alive(self.frozen)
    }

    /// A process it cannot serve without (agent, zygote, runner) that is
    /// gone or, frozen, has a SIGKILL pending: one poll(2) per process, so
    /// cheap enough before every invocation. gVisor's processes are not
    /// host processes: there only runsc's sandbox process is watched.
    pub fn dead_process(&self) -> Option<DeadProcess> {
        self.liveness.first_dead(self.frozen)
    }

    /// Also watch the process the agent knows as `ns_pid` (e.g. the
    /// function zygote a bind made), if its host pid can be found and it
    /// is not watched already.
    pub fn watch_process(&mut self, what: &'static str, ns_pid: u32) {
        if self.backend == "runsc" || ns_pid == 0 || self.liveness.watches(ns_pid) {
            return;
        }
        if let Some(pid) = host_pid_of(&self.freezer, ns_pid) {
            self.liveness.watch(what, pid, ns_pid);
        }
    }

    /// Kill and remove the container, its cgroups and its bundle. An
    /// external sandbox is only told to stop: its agent exits, which ends
    /// the container, and its owner cleans up.
    pub async fn destroy(mut self, backend: &dyn Backend) -> Result<(), RuntimeError> {
        // A polite stop first lets the agent kill its children; a frozen or
        // hung agent is handled by the forced delete anyway.
        let _ = self.freezer.thaw();
        let _ = tokio::time::timeout(
            Duration::from_millis(100),
            self.conn.send(&ToAgent::Shutdown),
        )
        .await;
        if self.external {
            return Ok(());
        }
        // runc's forced delete of a container whose init still runs kills
        // it and sleeps 100 ms before looking again; one whose init is gone
        // is removed at once. So: a moment for the agent to exit, then
        // (its pid being the container's init on runc, crun and
        // libcontainer; on runsc the sandbox process, left to runsc) a kill.
        let init = [self.init_pid];
        if self.backend != "runsc" && !wait_exit(&init, AGENT_EXIT_WAIT).await {
            kill_and_wait(&init, KILLED_EXIT_WAIT).await;
        }
        let res = backend.delete(&self.id).await;
        remove_bundle(&self.bundle);
        if let Some(d) = &self.host_dir {
            remove_bundle(d);
        }
        res
    }
}
