//! Starting the Python zygote and talking to it over its control socket.

use crate::Options;
use ember_profiles::ProfileError;
use ember_proto::Ready;
use nix::sys::socket::{
    sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};
use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BOOTSTRAP: &str = include_str!("../../bootstraps/python/zygote.py");
const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Zygote {
    /// The agent's own child (the generic zygote); `None` for a function
    /// zygote, which is the generic zygote's child.
    pub child: Option<Child>,
    pid: i32,
    /// Processes that must stay alive beside this zygote and its spare
    /// (a function zygote's parent, the generic zygote).
    pub keep: Vec<i32>,
    /// The sandbox user it and its workers run as.
    pub uid: u32,
    pub ctl: UnixStream,
    buf: Vec<u8>,
    /// The forked, warmed worker waiting for the next request.
    pub spare: Option<i32>,
}

/// One line the zygote sent on its control socket.
pub enum Event {
    /// A new spare worker is ready (also recorded in `Zygote::spare`).
    Spare,
    Exited {
        pid: i32,
        code: Option<i32>,
        signal: Option<i32>,
    },
    Other(serde_json::Value),
}

/// What went wrong starting or talking to a zygote.
#[derive(Debug, thiserror::Error)]
pub enum ZygoteError {
    #[error("socketpair for the zygote: {0}")]
    Socketpair(nix::Error),
    #[error("starting zygote {interpreter}: {source}")]
    Spawn {
        interpreter: String,
        source: std::io::Error,
    },
    #[error("worker filters of profile {profile}: {source}")]
    ProfileFilters {
        profile: &'static str,
        source: ProfileError,
    },
    #[error("base worker filter: {0}")]
    BaseFilter(ProfileError),
    #[error("encoding zygote config: {0}")]
    EncodeConfig(serde_json::Error),
    #[error("sending config to zygote: {0}")]
    SendConfig(std::io::Error),
    /// Setting the control socket's read timeout failed.
    #[error("zygote socket: {0}")]
    Socket(std::io::Error),
    #[error("zygote greeting is not JSON: {0}")]
    GreetingNotJson(serde_json::Error),
    #[error("zygote greeting without ready: {0}")]
    GreetingWithoutReady(serde_json::Value),
    /// `sendmsg` of a request (with its descriptors) failed.
    #[error("sending request to zygote: {0}")]
    SendRequest(nix::Error),
    /// Writing the rest of a request line failed.
    #[error("sending request to zygote: {0}")]
    SendRequestRest(std::io::Error),
    #[error("zygote sent a bad line: {0}")]
    BadLine(serde_json::Error),
    #[error("no spare worker within {waited_ms} ms")]
    NoSpare { waited_ms: u128 },
    #[error("worker {pid} died while warming up (exit code {code:?}, signal {signal:?}); see the sandbox's stderr")]
    WorkerDied {
        pid: i32,
        code: Option<i32>,
        signal: Option<i32>,
    },
    #[error("asking the spare to clean IPC: {0}")]
    AskClean(std::io::Error),
    #[error("spare did not clean IPC within {waited_ms} ms")]
    CleanTimeout { waited_ms: u128 },
    #[error("spare {pid} died while cleaning IPC (exit code {code:?}, signal {signal:?})")]
    SpareDied {
        pid: i32,
        code: Option<i32>,
        signal: Option<i32>,
    },
    #[error("zygote closed its socket (status {status:?})")]
    Closed { status: Option<ExitStatus> },
    #[error("reading from zygote: {0}")]
    Read(std::io::Error),
}

impl Zygote {
    pub fn start(opts: &Options) -> Result<Zygote, ZygoteError> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(ZygoteError::Socketpair)?;
        let their_fd = theirs.as_raw_fd();
        let mut cmd = Command::new(&opts.interpreter);
        cmd.args(["-I", "-B", "-c", BOOTSTRAP])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", "/tmp")
            .env("LANG", "C.UTF-8")
            .env("TMPDIR", "/tmp")
            .current_dir("/")
            .stdin(Stdio::null())
            // The agent's stdout carries frames to emberd: nothing else may
            // ever write there. Workers get their own pipes per invocation.
            .stdout(std::io::stderr())
            .uid(opts.uid)
            .gid(opts.gid);
        // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and
        // exec; `their_fd` stays open in the parent until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(their_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if their_fd == 3 && libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| ZygoteError::Spawn {
            interpreter: opts.interpreter.clone(),
            source,
        })?;
        drop(theirs);
        let mut zyg = Zygote {
            pid: child.id() as i32,
            child: Some(child),
            keep: Vec::new(),
            uid: opts.uid,
            ctl: UnixStream::from(ours),
            buf: Vec::new(),
            spare: None,
        };
        zyg.send_config()?;
        Ok(zyg)
    }

    /// The zygote's first input: the worker seccomp filters (the base every
    /// spare installs, and each profile's extra), compiled here; the
    /// zygote only hands bytes to `prctl`.
    fn send_config(&mut self) -> Result<(), ZygoteError> {
        let mut profiles = serde_json::Map::new();
        for name in ember_profiles::PROFILE_NAMES {
            let progs = ember_profiles::Profile::by_name(name)
                .and_then(|p| p.worker_programs())
                .map_err(|source| ZygoteError::ProfileFilters {
                    profile: name,
                    source,
                })?;
            let hex: Vec<String> = progs.iter().map(hex::encode).collect();
            profiles.insert(name.to_string(), serde_json::json!(hex));
        }
        let base = ember_profiles::worker_base_program().map_err(ZygoteError::BaseFilter)?;
        let config = serde_json::json!({ "base": hex::encode(base), "profiles": profiles });
        let mut line = serde_json::to_vec(&config).map_err(ZygoteError::EncodeConfig)?;
        line.push(b'\n');
        self.ctl.write_all(&line).map_err(ZygoteError::SendConfig)
    }

    /// A zygote the agent did not start: a function zygote, child of
    /// `parent`, reached over `ctl`.
    pub fn adopt(pid: i32, parent: i32, uid: u32, ctl: UnixStream) -> Zygote {
        Zygote {
            child: None,
            pid,
            keep: vec![parent],
            uid,
            ctl,
            buf: Vec::new(),
            spare: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The processes that belong while this zygote serves: itself, the
    /// ones it needs beside it, and `spare`.
    pub fn keep_with(&self, spare: i32) -> Vec<i32> {
        let mut keep = self.keep.clone();
        keep.extend([self.pid, spare]);
        keep
    }

    pub fn wait_ready(&mut self) -> Result<Ready, ZygoteError> {
        let started = Instant::now();
        self.ctl
            .set_read_timeout(Some(READY_TIMEOUT))
            .map_err(ZygoteError::Socket)?;
        let line = self.read_line()?;
        self.ctl
            .set_read_timeout(None)
            .map_err(ZygoteError::Socket)?;
        let v: serde_json::Value =
            serde_json::from_slice(&line).map_err(ZygoteError::GreetingNotJson)?;
        let Some(pid) = v["ready"].as_u64() else {
            return Err(ZygoteError::GreetingWithoutReady(v));
        };
        self.wait_spare(READY_TIMEOUT)?;
        Ok(Ready {
            protocol: ember_proto::PROTOCOL_VERSION,
            version: crate::VERSION.to_string(),
            zygote_pid: pid as u32,
            runtime_version: v["version"].as_str().unwrap_or("python").to_string(),
            preload_us: v["preload_us"]
                .as_u64()
                .unwrap_or(started.elapsed().as_micros() as u64),
        })
    }

    /// Send one request line with the worker's three pipe ends attached.
    pub fn send_request(&mut self, line: &[u8], fds: &[RawFd]) -> Result<(), ZygoteError> {
        let cmsg = [ControlMessage::ScmRights(fds)];
        let sent = sendmsg::<()>(
            self.ctl.as_raw_fd(),
            &[IoSlice::new(line)],
            &cmsg,
            MsgFlags::empty(),
            None,
        )
        .map_err(ZygoteError::SendRequest)?;
        self.ctl
            .write_all(&line[sent..])
            .map_err(ZygoteError::SendRequestRest)
    }

    /// Read and parse the next line, blocking until it is complete.
    pub fn read_event(&mut self) -> Result<Event, ZygoteError> {
        let line = self.read_line()?;
        let v: serde_json::Value = serde_json::from_slice(&line).map_err(ZygoteError::BadLine)?;
        if let Some(pid) = v["spare"].as_i64() {
            self.spare = Some(pid as i32);
            return Ok(Event::Spare);
        }
        if let Some(pid) = v["exited"].as_i64() {
            return Ok(Event::Exited {
                pid: pid as i32,
                code: v["code"].as_i64().map(|c| c as i32),
                signal: v["signal"].as_i64().map(|s| s as i32),
            });
        }
        Ok(Event::Other(v))
    }

    /// Block until a spare worker is ready (or `wait` runs out).
    pub fn wait_spare(&mut self, wait: Duration) -> Result<i32, ZygoteError> {
        let deadline = Instant::now() + wait;
        while self.spare.is_none() {
            let Some(ev) = self.event_before(deadline)? else {
                return Err(ZygoteError::NoSpare {
                    waited_ms: wait.as_millis(),
                });
            };
            match ev {
                Event::Exited { pid, code, signal } => {
                    return Err(ZygoteError::WorkerDied { pid, code, signal })
                }
                Event::Other(v) => eprintln!("ember-agent: zygote says {v}"),
                Event::Spare => {}
            }
        }
        Ok(self.spare.unwrap_or(0))
    }

    /// Hand out the spare worker, waiting up to `wait` for one to be ready.
    pub fn take_spare(&mut self, wait: Duration) -> Result<i32, ZygoteError> {
        if self.spare.is_none() {
            self.wait_spare(wait)?;
        }
        Ok(self.spare.take().unwrap_or(0))
    }

    /// Have the spare remove what the last invocation left in the IPC
    /// namespace (it runs as the workers' user: the agent may not); returns
    /// how many objects it removed.
    pub fn clean_ipc(&mut self, wait: Duration) -> Result<u64, ZygoteError> {
        self.ctl
            .write_all(b"{\"clean\": true}\n")
            .map_err(ZygoteError::AskClean)?;
        let deadline = Instant::now() + wait;
        loop {
            let Some(ev) = self.event_before(deadline)? else {
                return Err(ZygoteError::CleanTimeout {
                    waited_ms: wait.as_millis(),
                });
            };
            match ev {
                Event::Other(v) if v["cleaned"].is_u64() => {
                    return Ok(v["cleaned"].as_u64().unwrap_or(0))
                }
                Event::Exited { pid, code, signal } => {
                    return Err(ZygoteError::SpareDied { pid, code, signal })
                }
                Event::Other(v) => eprintln!("ember-agent: zygote says {v}"),
                Event::Spare => {}
            }
        }
    }

    /// The next event, if one comes before `deadline`.
    fn event_before(&mut self, deadline: Instant) -> Result<Option<Event>, ZygoteError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        self.ctl
            .set_read_timeout(Some(left))
            .map_err(ZygoteError::Socket)?;
        let ev = self.read_event();
        self.ctl
            .set_read_timeout(None)
            .map_err(ZygoteError::Socket)?;
        ev.map(Some)
    }

    pub fn has_buffered_line(&self) -> bool {
        self.buf.contains(&b'\n')
    }

    fn read_line(&mut self) -> Result<Vec<u8>, ZygoteError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let rest = self.buf.split_off(pos + 1);
                let mut line = std::mem::replace(&mut self.buf, rest);
                line.pop();
                return Ok(line);
            }
            let mut chunk = [0u8; 4096];
            match self.ctl.read(&mut chunk) {
                Ok(0) => {
                    let status = self
                        .child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten());
                    return Err(ZygoteError::Closed { status });
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ZygoteError::Read(e)),
            }
        }
    }
}
