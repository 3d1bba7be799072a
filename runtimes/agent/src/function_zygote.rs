//! Binding a sandbox to one fork-mode function: the generic zygote's spare
//! becomes the function's zygote. It imports the handler's module once
//! (the function's init, under the function's profile and limits) and from
//! then on forks a fresh worker per invocation with the module loaded, so
//! an invocation pays a fork instead of the import (SOCK's zygotes, with
//! Groundhog's guarantee: every invocation starts from the post-init
//! state, nothing one changes reaches the next).
//!
//! The function zygote talks to the agent over a socket of its own (it
//! never holds the generic zygote's), and its init output goes to pipes the
//! agent reads into the bind report.

use crate::capture::Capture;
use crate::procs;
use crate::zygote::{Event, Zygote, ZygoteError};
use ember_proto::{BindReport, BindRequest, InitOutcome};
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::{pipe2, Pid};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// How long the function zygote may take to fork its first spare after a
/// successful init.
const FIRST_SPARE: Duration = Duration::from_secs(10);

/// Why a bind could not be started (what the function's init does is in
/// the report, not here).
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(transparent)]
    Zygote(#[from] ZygoteError),
    #[error("socketpair for the function zygote: {0}")]
    Socketpair(nix::Error),
    #[error("pipe: {0}")]
    Pipe(nix::Error),
    #[error("encoding bind request: {0}")]
    Encode(serde_json::Error),
}

/// Turn `generic`'s spare into the zygote of `req.function`. Returns the
/// report and, if the init is ready, the new zygote with its first spare
/// forked. On any other outcome the spare is killed and the sandbox
/// cannot serve again (its generic zygote has no spare left): the daemon
/// discards it.
pub fn bind(
    generic: &mut Zygote,
    req: &BindRequest,
) -> Result<(BindReport, Option<Zygote>), BindError> {
    let started = Instant::now();
    let pid = generic.take_spare(FIRST_SPARE)?;
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(BindError::Socketpair)?;
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(BindError::Pipe)?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(BindError::Pipe)?;
    let mut line = serde_json::to_vec(&serde_json::json!({
        "function_zygote": true,
        "function": req.function,
        "handler": req.handler,
        "profile": req.profile,
        "nproc": req.nproc,
    }))
    .map_err(BindError::Encode)?;
    line.push(b'\n');
    generic.send_request(
        &line,
        &[theirs.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()],
    )?;
    drop((theirs, out_w, err_w));

    let mut zyg = Zygote::adopt(pid, generic.pid(), generic.uid, UnixStream::from(ours));
    let mut out = Capture::new(out_r, req.max_output_bytes);
    let mut err = Capture::new(err_r, req.max_output_bytes);
    let deadline = started + Duration::from_millis(req.timeout_ms);
    let answer = await_init(&mut zyg, &mut out, &mut err, deadline);
    // Everything the init printed (the pipes close when it is ready or dies).
    let drain_by = Instant::now() + Duration::from_millis(200);
    while (out.fd.is_some() || err.fd.is_some()) && Instant::now() < drain_by {
        poll_init(None, &mut out, &mut err, Duration::from_millis(20));
    }
    let mut report = BindReport {
        outcome: InitOutcome::Ready,
        message: String::new(),
        stdout: out.text(),
        stderr: err.text(),
        init_us: started.elapsed().as_micros() as u64,
        zygote_pid: 0,
    };
    match answer {
        Init::Ready { init_us } => {
            report.init_us = init_us;
            match zyg.wait_spare(FIRST_SPARE) {
                Ok(spare) => {
                    if let Some(why) = unsafe_processes(&zyg, generic.pid(), spare) {
                        report.outcome = InitOutcome::Unsafe;
                        report.message = why;
                    }
                }
                Err(e) => {
                    report.outcome = InitOutcome::Crashed;
                    report.message = format!("the function zygote forked no worker: {e}");
                }
            }
        }
        Init::Error(message) => {
            report.outcome = InitOutcome::Error;
            report.message = message;
        }
        Init::Unsafe(message) => {
            report.outcome = InitOutcome::Unsafe;
            report.message = message;
        }
        Init::Timeout => {
            report.outcome = InitOutcome::Timeout;
            report.message = format!(
                "module init ran past the function's timeout ({} ms)",
                req.timeout_ms
            );
        }
        Init::Died(message) => {
            report.outcome = InitOutcome::Crashed;
            report.message = message;
        }
    }
    if report.outcome != InitOutcome::Ready {
        // The zygote, its spare and anything the init started: gone. The
        // daemon discards the sandbox; nothing of it serves again.
        procs::kill_all_but(&[generic.pid()]);
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        return Ok((report, None));
    }
    report.zygote_pid = pid as u32;
    Ok((report, Some(zyg)))
}

/// How the init ended, as the function zygote (or its silence) says.
enum Init {
    Ready { init_us: u64 },
    Error(String),
    Unsafe(String),
    Timeout,
    Died(String),
}

fn await_init(zyg: &mut Zygote, out: &mut Capture, err: &mut Capture, deadline: Instant) -> Init {
    loop {
        if !zyg.has_buffered_line() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Init::Timeout;
            }
            if !poll_init(Some(zyg), out, err, left) {
                continue;
            }
        }
        let v = match zyg.read_event() {
            Ok(Event::Other(v)) => v,
            Ok(Event::Exited { pid, code, signal }) => {
                return Init::Died(format!(
                    "the function zygote's child {pid} exited during init (code {code:?}, signal {signal:?})"
                ))
            }
            Ok(Event::Spare) => continue,
            Err(e) => return Init::Died(format!("the function zygote died during init: {e}")),
        };
        if let Some(us) = v.get("init_us").and_then(|u| u.as_u64()) {
            if v.get("ready").is_some() {
                return Init::Ready { init_us: us };
            }
        }
        if let Some(e) = v.get("init_error") {
            return Init::Error(format!(
                "{}: {}\n{}",
                e["type"].as_str().unwrap_or("Error"),
                e["message"].as_str().unwrap_or(""),
                e["traceback"].as_str().unwrap_or("")
            ));
        }
        if let Some(why) = v.get("unsafe").and_then(|w| w.as_str()) {
            return Init::Unsafe(why.to_string());
        }
        eprintln!("ember-agent: function zygote says {v}");
    }
}

/// Wait up to `wait` for the init's pipes (and the zygote's socket, if
/// given) and pump what the pipes hold into the captures; true if the
/// socket has something to read.
fn poll_init(zyg: Option<&Zygote>, out: &mut Capture, err: &mut Capture, wait: Duration) -> bool {
    let ctl_ready = {
        let mut fds = Vec::new();
        if let Some(z) = zyg {
            fds.push(PollFd::new(z.ctl.as_fd(), PollFlags::POLLIN));
        }
        for c in [&*out, &*err] {
            if let Some(fd) = &c.fd {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
            }
        }
        let ms = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
        let _ = poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        );
        zyg.is_some() && fds[0].revents().is_some_and(|r| !r.is_empty())
    };
    out.pump();
    err.pump();
    ctl_ready
}

/// Seen from outside the function's reach: threads in the function zygote
/// (counted by the kernel, whatever the init did to the interpreter) and
/// processes other than the agent's own.
fn unsafe_processes(zyg: &Zygote, generic: i32, spare: i32) -> Option<String> {
    let threads = procs::threads(zyg.pid()).unwrap_or(1);
    if threads > 1 {
        return Some(format!(
            "module init started {} threads (forking a multi-threaded process is unsafe)",
            threads - 1
        ));
    }
    let strays: Vec<i32> = procs::others()
        .into_iter()
        .filter(|&p| p != generic && p != zyg.pid() && p != spare)
        .collect();
    if !strays.is_empty() {
        return Some(format!("module init left processes running: {strays:?}"));
    }
    None
}
