//! Specialized mode: one long-lived *runner* process bound to a single
//! function, which keeps it loaded and serves each of its invocations.
//!
//! The runner is a Node.js process started with the sandbox (Node cannot
//! fork a warm zygote), or a Python spare taken from the zygote at the
//! first invocation. Either way it holds four pipes for its whole life:
//! requests in (one JSON line each), results out (one length-prefixed
//! frame each), stdout and stderr. Unlike a fork-mode worker it survives
//! its invocations, so anything that leaves it in doubt (a timeout, a crash,
//! a result too large to read) kills it, and the daemon then discards the
//! sandbox.

use crate::capture::{parse_result, result_complete, Capture};
use crate::worker::{
    apply_worker_message, crashed, request_line, result_capture_bytes, InvokeError,
};
use crate::zygote::{Event, Zygote, ZygoteError};
use crate::Options;
use ember_proto::{InvokeRequest, InvokeResult, Outcome};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{pipe2, write, Pid};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NODE_BOOTSTRAP: &str = include_str!("../../bootstraps/node/bootstrap.js");
const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Runner {
    pub pid: i32,
    /// Node: the agent's own child. Python: `None` (the zygote's child; its
    /// exit is reported on the zygote's socket).
    child: Option<Child>,
    req: OwnedFd,
    out: Capture,
    err: Capture,
    res: Capture,
    /// The function it serves, once bound.
    pub bound: Option<String>,
    /// It died or was killed; the sandbox must go.
    pub dead: bool,
}

/// The runner's pipe ends: (ours, theirs) for requests, results, stdout,
/// stderr. Ours are the request write end and the three read ends.
struct Pipes {
    req_r: OwnedFd,
    req_w: OwnedFd,
    res_r: OwnedFd,
    res_w: OwnedFd,
    out_r: OwnedFd,
    out_w: OwnedFd,
    err_r: OwnedFd,
    err_w: OwnedFd,
}

/// Why a runner could not be started, bound or served.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error(transparent)]
    Zygote(#[from] ZygoteError),
    #[error(transparent)]
    Invoke(#[from] InvokeError),
    #[error("pipe for the runner: {0}")]
    Pipe(nix::Error),
    #[error("base worker filter: {0}")]
    BaseFilter(ember_profiles::ProfileError),
    #[error("dup: {0}")]
    Dup(std::io::Error),
    #[error("starting node runner {interpreter}: {source}")]
    Spawn {
        interpreter: String,
        source: std::io::Error,
    },
    /// `stderr`: what the runner wrote there, trimmed.
    #[error("node runner exited while starting: {stderr}")]
    ExitedWhileStarting { stderr: String },
    #[error("node runner not ready within {waited:?}")]
    NotReady { waited: Duration },
    #[error("node runner sent a bad ready frame")]
    BadReady,
    #[error("encoding bind request: {0}")]
    EncodeBind(serde_json::Error),
    #[error("poll: {0}")]
    Poll(nix::Error),
}

fn pipes() -> Result<Pipes, RunnerError> {
    let p = || pipe2(OFlag::O_CLOEXEC).map_err(RunnerError::Pipe);
    let (req_r, req_w) = p()?;
    let (res_r, res_w) = p()?;
    let (out_r, out_w) = p()?;
    let (err_r, err_w) = p()?;
    Ok(Pipes {
        req_r,
        req_w,
        res_r,
        res_w,
        out_r,
        out_w,
        err_r,
        err_w,
    })
}

impl Runner {
    fn from_parts(pid: i32, child: Option<Child>, p: Pipes) -> Runner {
        let _ = fcntl(p.req_w.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
        Runner {
            pid,
            child,
            req: p.req_w,
            out: Capture::new(p.out_r, 0),
            err: Capture::new(p.err_r, 0),
            res: Capture::new(p.res_r, 0),
            bound: None,
            dead: false,
        }
    }

    /// Start the Node.js runner: preloaded, confined by the base worker
    /// filter before its first instruction, waiting for its first request.
    pub fn spawn_node(opts: &Options) -> Result<Runner, RunnerError> {
        let p = pipes()?;
        let base = ember_profiles::worker_base_program().map_err(RunnerError::BaseFilter)?;
        let (req_fd, res_fd) = (p.req_r.as_raw_fd(), p.res_w.as_raw_fd());
        let nproc = opts.nproc;
        let mut cmd = Command::new(&opts.interpreter);
        cmd.args(["-e", NODE_BOOTSTRAP])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", "/tmp")
            .env("LANG", "C.UTF-8")
            .env("TMPDIR", "/tmp")
            .env("NODE_ENV", "production")
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(p.out_w.try_clone().map_err(RunnerError::Dup)?)
            .stderr(p.err_w.try_clone().map_err(RunnerError::Dup)?)
            .uid(opts.uid)
            .gid(opts.gid);
        // SAFETY: between fork and exec only async-signal-safe calls run
        // (dup2, fcntl, prctl); `base` and the fds stay alive in the parent
        // until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                for (from, to) in [(req_fd, 3), (res_fd, 4)] {
                    if libc::dup2(from, to) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    if from == to && libc::fcntl(to, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // Where the cgroup cannot count the sandbox's processes
                // (gVisor), the kernel's per-user limit does.
                if let Some(n) = nproc {
                    let lim = libc::rlimit {
                        rlim_cur: n as libc::rlim_t,
                        rlim_max: n as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NPROC, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // Node cannot install a seccomp filter on itself: the base
                // worker filter goes in here, before exec, so no user code
                // ever runs without it.
                install_filter(&base)
            });
        }
        let child = cmd.spawn().map_err(|source| RunnerError::Spawn {
            interpreter: opts.interpreter.clone(),
            source,
        })?;
        let pid = child.id() as i32;
        Ok(Runner::from_parts(pid, Some(child), p))
    }

    /// Wait for the Node runner's ready frame.
    pub fn wait_ready(&mut self) -> Result<ember_proto::Ready, RunnerError> {
        let started = Instant::now();
        self.res.reset(64 * 1024);
        let deadline = started + READY_TIMEOUT;
        while !result_complete(&self.res.buf) {
            if self.res.fd.is_none() {
                return Err(RunnerError::ExitedWhileStarting {
                    stderr: self.err.text().trim().to_string(),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RunnerError::NotReady {
                    waited: READY_TIMEOUT,
                });
            }
            self.poll_once(left, false)?;
        }
        let msg = parse_result(&self.res.buf).ok_or(RunnerError::BadReady)?;
        self.res.buf.clear();
        Ok(ember_proto::Ready {
            protocol: ember_proto::PROTOCOL_VERSION,
            version: crate::VERSION.to_string(),
            zygote_pid: self.pid as u32,
            runtime_version: msg["version"].as_str().unwrap_or("node").to_string(),
            preload_us: msg["preload_us"]
                .as_u64()
                .unwrap_or(started.elapsed().as_micros() as u64),
        })
    }

    /// Bind the zygote's spare to `profile` as this sandbox's runner. The
    /// spare confines itself to the profile, then serves requests from its
    /// pipe until it dies.
    pub fn bind_python(
        zyg: &mut Zygote,
        profile: &str,
        nproc: Option<u64>,
    ) -> Result<Runner, RunnerError> {
        let pid = zyg.take_spare(Duration::from_secs(3))?;
        let p = pipes()?;
        let mut line = serde_json::to_vec(&serde_json::json!({
            "specialized": true,
            "profile": profile,
            "nproc": nproc,
        }))
        .map_err(RunnerError::EncodeBind)?;
        line.push(b'\n');
        zyg.send_request(
            &line,
            &[
                p.out_w.as_raw_fd(),
                p.err_w.as_raw_fd(),
                p.res_w.as_raw_fd(),
                p.req_r.as_raw_fd(),
            ],
        )?;
        Ok(Runner::from_parts(pid, None, p))
    }

    /// Run one invocation in the runner. The runner may have died on the
    /// way (`self.dead`); the result then says how.
    pub fn invoke(
        &mut self,
        zyg: Option<&mut Zygote>,
        req: &InvokeRequest,
    ) -> Result<InvokeResult, RunnerError> {
        let started = Instant::now();
        let deadline = started + Duration::from_millis(req.timeout_ms);
        // Output the runner wrote between invocations (late timers) is not
        // this invocation's: dropped.
        self.out.reset(req.max_output_bytes);
        self.err.reset(req.max_output_bytes);
        self.res.reset(result_capture_bytes(req));
        let line = request_line(req)?;
        let mut pending: &[u8] = &line;
        let mut timed_out = false;
        while !result_complete(&self.res.buf) && !self.res.truncated && self.res.fd.is_some() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                timed_out = true;
                break;
            }
            if !pending.is_empty() {
                match write(&self.req, pending) {
                    Ok(n) => pending = &pending[n..],
                    Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
                    // The runner closed its request pipe: it is gone.
                    Err(_) => break,
                }
            }
            self.poll_once(left, !pending.is_empty())?;
        }
        let run_us = started.elapsed().as_micros() as u64;
        let complete = result_complete(&self.res.buf) && !self.res.truncated;
        if !complete {
            // Timed out, died, or its result is too large to read: the
            // runner cannot serve again.
            self.kill();
        }
        self.out.pump();
        self.err.pump();
        let mut result = crashed(req, &self.out, &self.err, run_us);
        if complete {
            match parse_result(&self.res.buf) {
                Some(msg) => {
                    if msg["fatal"].as_bool() == Some(true) {
                        // The runner reports an error it cannot recover
                        // from (an exception outside the handler's
                        // promise) and exits.
                        self.dead = true;
                    }
                    apply_worker_message(&mut result, msg, req);
                }
                None => {
                    self.kill();
                }
            }
            self.res.buf.clear();
        } else if self.res.truncated {
            result.outcome = Outcome::ResultTooLarge;
        } else if timed_out {
            result.outcome = Outcome::Timeout;
        } else {
            let (code, signal) = self.exit_status(zyg);
            result.exit_code = code;
            result.signal = signal;
        }
        Ok(result)
    }

    /// Kill the runner and its process group.
    pub fn kill(&mut self) {
        self.dead = true;
        let _ = kill(Pid::from_raw(-self.pid), Signal::SIGKILL);
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
    }

    /// How the runner ended, as far as can be told within a moment.
    fn exit_status(&mut self, zyg: Option<&mut Zygote>) -> (Option<i32>, Option<i32>) {
        self.dead = true;
        let until = Instant::now() + Duration::from_millis(500);
        if self.child.is_some() {
            while Instant::now() < until {
                match waitpid(Pid::from_raw(self.pid), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(_, code)) => return (Some(code), None),
                    Ok(WaitStatus::Signaled(_, sig, _)) => return (None, Some(sig as i32)),
                    Ok(_) => std::thread::sleep(Duration::from_millis(5)),
                    Err(_) => break,
                }
            }
            return (None, None);
        }
        let Some(zyg) = zyg else { return (None, None) };
        while Instant::now() < until {
            if !zyg.has_buffered_line() {
                let mut fds = [PollFd::new(zyg.ctl.as_fd(), PollFlags::POLLIN)];
                if !matches!(poll(&mut fds, PollTimeout::from(50u8)), Ok(n) if n > 0) {
                    continue;
                }
            }
            match zyg.read_event() {
                Ok(Event::Exited { pid, code, signal }) if pid == self.pid => {
                    return (code, signal)
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        (None, None)
    }

    /// Wait up to `wait` for any pipe to have data (or the request pipe room),
    /// then read what is there.
    fn poll_once(&mut self, wait: Duration, want_write: bool) -> Result<(), RunnerError> {
        {
            let mut fds = Vec::new();
            for c in [&self.out, &self.err, &self.res] {
                if let Some(fd) = &c.fd {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                }
            }
            if want_write {
                fds.push(PollFd::new(self.req.as_fd(), PollFlags::POLLOUT));
            }
            let ms = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
            match poll(
                &mut fds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            ) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(RunnerError::Poll(e)),
            }
        }
        self.out.pump();
        self.err.pump();
        self.res.pump();
        Ok(())
    }
}

/// `prctl(PR_SET_NO_NEW_PRIVS)` and `prctl(PR_SET_SECCOMP)` with a BPF
/// program given as bytes (8 per instruction). Async-signal-safe.
pub fn install_filter(program: &[u8]) -> std::io::Result<()> {
    #[repr(C)]
    struct SockFprog {
        len: libc::c_ushort,
        filter: *const u8,
    }
    let prog = SockFprog {
        len: (program.len() / 8) as libc::c_ushort,
        filter: program.as_ptr(),
    };
    // SAFETY: plain prctl calls; `prog` points at `program`, alive for the
    // call, laid out as the kernel's `struct sock_fprog`.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const SockFprog,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
