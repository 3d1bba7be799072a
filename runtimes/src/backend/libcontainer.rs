//! youki's `libcontainer` as an in-process backend: no runtime binary is
//! executed. Containers are created, deleted, listed and paused by library
//! calls in a *creator*: a child of emberd forked before its async runtime
//! starts, so it is single-threaded (libcontainer forks with raw `clone`,
//! which is only safe where no other thread can hold a lock, such as the
//! allocator's) and keeps libcontainer's non-`Send` state off the async
//! threads. emberd talks to it over a socketpair: one JSON request per
//! datagram, the agent's three stdio pipe ends attached to `run` requests.
//!
//! The sandbox itself is the same bundle as for runc (libcontainer applies
//! its seccomp filter with libseccomp, its cgroups under `cgroupsPath`), so
//! injection goes through the mount namespace and pausing through the
//! cgroup freezer, as for runc.

use crate::agent_conn::AgentConn;
use crate::backend::cli_driver::ContainerInfo;
use crate::backend::{Backend, Injection};
use crate::error::RuntimeError;
use libcontainer::error::LibcontainerError;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::{Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Largest request or answer (a `list` of many containers included).
const MAX_MESSAGE: usize = 1 << 20;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request {
    Run { id: String, bundle: PathBuf },
    Delete { id: String },
    List,
    Pause { id: String },
    Resume { id: String },
}

#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    error: Option<String>,
    pid: Option<u32>,
    list: Vec<ContainerInfo>,
}

/// emberd's end of the creator.
#[derive(Debug)]
struct Creator {
    sock: Mutex<OwnedFd>,
    root: PathBuf,
}

static CREATOR: OnceLock<Creator> = OnceLock::new();

/// Fork the creator. Call before any other thread exists (before the async
/// runtime is built). `root` holds libcontainer's container state.
pub fn start_creator(root: &Path) -> Result<(), RuntimeError> {
    if CREATOR.get().is_some() {
        return Ok(());
    }
    // The root is made by the first container (emberd's run directory may
    // not exist yet, and a daemon that stops before making one leaves
    // nothing behind).
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| creator_err(format!("socketpair: {e}")))?;
    // SAFETY: emberd is still single-threaded here (documented contract of
    // this function), so the child may run arbitrary code after fork.
    match unsafe { nix::unistd::fork() }.map_err(|e| creator_err(format!("fork: {e}")))? {
        nix::unistd::ForkResult::Child => {
            drop(ours);
            // The creator must not outlive emberd.
            // SAFETY: prctl with constant arguments.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
            serve(theirs, root);
            std::process::exit(0);
        }
        nix::unistd::ForkResult::Parent { .. } => {
            drop(theirs);
            let _ = CREATOR.set(Creator {
                sock: Mutex::new(ours),
                root: root.to_path_buf(),
            });
            Ok(())
        }
    }
}

fn creator_err(message: String) -> RuntimeError {
    RuntimeError::Agent {
        id: "libcontainer creator".into(),
        message,
    }
}

/// The creator's loop: one request, one answer, until emberd closes.
fn serve(sock: OwnedFd, root: &Path) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let mut space = nix::cmsg_space!([RawFd; 3]);
        let (n, fds) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = match recvmsg::<()>(
                sock.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(m) => m,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            };
            let mut fds = Vec::new();
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::ScmRights(r) = c {
                        // SAFETY: descriptors just received are ours alone.
                        fds.extend(r.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                    }
                }
            }
            (msg.bytes, fds)
        };
        if n == 0 {
            return;
        }
        let answer = match serde_json::from_slice::<Request>(&buf[..n]) {
            Ok(req) => handle(req, fds, root),
            Err(e) => Answer {
                error: Some(format!("bad request: {e}")),
                pid: None,
                list: Vec::new(),
            },
        };
        let out = serde_json::to_vec(&answer).unwrap_or_default();
        if sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(&out)],
            &[],
            MsgFlags::empty(),
            None,
        )
        .is_err()
        {
            return;
        }
    }
}

fn handle(req: Request, fds: Vec<OwnedFd>, root: &Path) -> Answer {
    use libcontainer::container::builder::ContainerBuilder;
    use libcontainer::container::Container;
    use libcontainer::syscall::syscall::SyscallType;
    let mut answer = Answer {
        error: None,
        pid: None,
        list: Vec::new(),
    };
    let load = |id: &str| Container::load(root.join(id));
    let result: Result<(), CreatorOpError> = (|| match req {
        Request::Run { id, bundle } => {
            let [stdin, stdout, stderr]: [OwnedFd; 3] =
                fds.try_into().map_err(|_| CreatorOpError::MissingStdio)?;
            std::fs::create_dir_all(root).map_err(|source| CreatorOpError::Root {
                path: root.to_path_buf(),
                source,
            })?;
            let mut c = ContainerBuilder::new(id.clone(), SyscallType::default())
                .with_root_path(root)
                .map_err(CreatorOpError::builder)?
                .with_executor(libcontainer::workload::default::DefaultExecutor {})
                .with_stdin(stdin)
                .with_stdout(stdout)
                .with_stderr(stderr)
                .validate_id()
                .map_err(CreatorOpError::builder)?
                .as_init(&bundle)
                .with_systemd(false)
                .with_detach(true)
                .build()
                .map_err(CreatorOpError::op("creating", &id))?;
            c.start().map_err(CreatorOpError::op("starting", &id))?;
            answer.pid = c.pid().map(|p| p.as_raw() as u32);
            Ok(())
        }
        Request::Delete { id } => match load(&id) {
            Ok(mut c) => c.delete(true).map_err(CreatorOpError::op("deleting", &id)),
            // Unknown to libcontainer: nothing to delete.
            Err(_) if !root.join(&id).exists() => Ok(()),
            Err(e) => Err(CreatorOpError::op("loading", &id)(e)),
        },
        Request::List => {
            let entries = match std::fs::read_dir(root) {
                Ok(entries) => entries,
                // No container was ever made here.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(CreatorOpError::List(e)),
            };
            for e in entries.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                if let Ok(mut c) = load(&id) {
                    let _ = c.refresh_status();
                    answer.list.push(ContainerInfo {
                        id,
                        pid: c.pid().map(|p| i64::from(p.as_raw())).unwrap_or(-1),
                        status: format!("{:?}", c.status()).to_lowercase(),
                        bundle: c.bundle().to_path_buf(),
                    });
                }
            }
            Ok(())
        }
        Request::Pause { id } => load(&id)
            .and_then(|mut c| c.pause())
            .map_err(CreatorOpError::op("pausing", &id)),
        Request::Resume { id } => load(&id)
            .and_then(|mut c| c.resume())
            .map_err(CreatorOpError::op("resuming", &id)),
    })();
    answer.error = result.err().map(|e| e.to_string());
    answer
}

/// Why the creator could not do what a request asked; sent back to the
/// daemon as text in [`Answer::error`].
#[derive(Debug, thiserror::Error)]
enum CreatorOpError {
    #[error("run needs three stdio descriptors")]
    MissingStdio,
    #[error("creating {}: {source}", .path.display())]
    Root {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Setting up the container builder (root path, id) failed.
    #[error(transparent)]
    Builder(Box<LibcontainerError>),
    /// `verb` (`creating`, `starting`, ...) container `id` failed.
    #[error("{verb} {id}: {source}")]
    Container {
        verb: &'static str,
        id: String,
        source: Box<LibcontainerError>,
    },
    /// Listing the containers under the root failed.
    #[error(transparent)]
    List(std::io::Error),
}

impl CreatorOpError {
    fn builder(e: LibcontainerError) -> Self {
        CreatorOpError::Builder(Box::new(e))
    }

    fn op<'a>(verb: &'static str, id: &'a str) -> impl FnOnce(LibcontainerError) -> Self + 'a {
        move |source| CreatorOpError::Container {
            verb,
            id: id.to_string(),
            source: Box::new(source),
        }
    }
}

fn ask(req: &Request, fds: &[RawFd]) -> Result<Answer, RuntimeError> {
    let creator = CREATOR.get().ok_or_else(|| RuntimeError::Spawn {
        binary: PathBuf::from("libcontainer"),
        source: std::io::Error::other(
            "the libcontainer creator was not started (emberd starts it before its runtime)",
        ),
    })?;
    let sock = creator.sock.lock().unwrap_or_else(|e| e.into_inner());
    let body = serde_json::to_vec(req).map_err(|e| creator_err(e.to_string()))?;
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(&body)],
        cmsgs,
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| creator_err(format!("sending a request: {e}")))?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    let n = loop {
        match nix::sys::socket::recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) => break n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(creator_err(format!("reading an answer: {e}"))),
        }
    };
    if n == 0 {
        return Err(creator_err("the creator exited".into()));
    }
    serde_json::from_slice(&buf[..n]).map_err(|e| creator_err(format!("bad answer: {e}")))
}

/// Run `req` on a blocking thread (the creator answers synchronously).
async fn call(
    req: Request,
    fds: Vec<OwnedFd>,
    op: &'static str,
    id: String,
) -> Result<Answer, RuntimeError> {
    let answer = tokio::task::spawn_blocking(move || {
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        // `fds` stay open until the creator has answered (it dup'd them).
        let a = ask(&req, &raw);
        drop(fds);
        a
    })
    .await
    .map_err(|e| creator_err(format!("request task: {e}")))??;
    match answer.error {
        None => Ok(answer),
        Some(stderr) => Err(RuntimeError::RuntimeFailed {
            op,
            id,
            status: "libcontainer".into(),
            stderr,
        }),
    }
}

/// The in-process backend.
#[derive(Debug)]
pub struct LibcontainerBackend;

/// Where libcontainer keeps container state by default.
pub const DEFAULT_ROOT: &str = "/run/ember/libcontainer";

#[async_trait::async_trait]
impl Backend for LibcontainerBackend {
    fn name(&self) -> &'static str {
        "libcontainer"
    }

    fn injection(&self) -> Injection {
        Injection::MountNamespace
    }

    async fn run(&self, id: &str, bundle: &Path) -> Result<(u32, AgentConn), RuntimeError> {
        let pipe = || {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| creator_err(format!("pipe: {e}")))
        };
        let (in_r, in_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let answer = call(
            Request::Run {
                id: id.to_string(),
                bundle: bundle.to_path_buf(),
            },
            vec![in_r, out_w, err_w],
            "run",
            id.to_string(),
        )
        .await?;
        let pid = answer.pid.ok_or_else(|| RuntimeError::RuntimeFailed {
            op: "run",
            id: id.to_string(),
            status: "libcontainer".into(),
            stderr: "no pid for the started container".into(),
        })?;
        let io = |e: std::io::Error| creator_err(format!("agent pipes: {e}"));
        let stdin = tokio::net::unix::pipe::Sender::from_owned_fd(in_w).map_err(io)?;
        let stdout = tokio::net::unix::pipe::Receiver::from_owned_fd(out_r).map_err(io)?;
        let stderr = tokio::net::unix::pipe::Receiver::from_owned_fd(err_r).map_err(io)?;
        Ok((
            pid,
            AgentConn::from_streams(id, Box::new(stdin), Box::new(stdout), Box::new(stderr)),
        ))
    }

    async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        call(
            Request::Delete { id: id.to_string() },
            vec![],
            "delete",
            id.to_string(),
        )
        .await
        .map(|_| ())
    }

    async fn list(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        call(Request::List, vec![], "list", String::new())
            .await
            .map(|a| a.list)
    }

    async fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        call(
            Request::Pause { id: id.to_string() },
            vec![],
            "pause",
            id.to_string(),
        )
        .await
        .map(|_| ())
    }

    async fn resume(&self, id: &str) -> Result<(), RuntimeError> {
        call(
            Request::Resume { id: id.to_string() },
            vec![],
            "resume",
            id.to_string(),
        )
        .await
        .map(|_| ())
    }
}

/// The root the creator was started with, if it was.
pub fn creator_root() -> Option<PathBuf> {
    CREATOR.get().map(|c| c.root.clone())
}
