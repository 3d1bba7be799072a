//! One fork-mode invocation: hand the zygote its pipes (it forks the
//! worker), collect output and result under a deadline, then leave no
//! process behind.

use crate::capture::{parse_result, result_complete, Capture};
use crate::procs::{self, ReapError};
use crate::zygote::{Event, Zygote, ZygoteError};
use ember_proto::{HandlerError, InvokeRequest, InvokeResult, Outcome};
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{pipe2, Pid};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

/// How long cleanup may take before the sandbox is declared broken.
const SETTLE: Duration = Duration::from_secs(3);

/// Why an invocation could not be run or cleaned up after.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error(transparent)]
    Zygote(#[from] ZygoteError),
    #[error(transparent)]
    Reap(#[from] ReapError),
    #[error("pipe: {0}")]
    Pipe(nix::Error),
    #[error("encoding request: {0}")]
    Encode(serde_json::Error),
    #[error("poll: {0}")]
    Poll(nix::Error),
    /// Processes still alive after the settle time, by pid.
    #[error("processes left after an invocation would not die: {pids:?}")]
    Strays { pids: Vec<i32> },
}

/// The request line a worker or runner reads (the protocol's request
/// without the agent-only fields), newline-terminated.
pub fn request_line(req: &InvokeRequest) -> Result<Vec<u8>, InvokeError> {
    let mut line = serde_json::to_vec(&serde_json::json!({
        "id": req.id,
        "function": req.function,
        "handler": req.handler,
        "event": req.event,
        "timeout_ms": req.timeout_ms,
        "memory_limit_mb": req.memory_limit_mb,
        "max_result_bytes": req.max_result_bytes,
        "profile": req.profile,
        "nproc": req.nproc,
    }))
    .map_err(InvokeError::Encode)?;
    line.push(b'\n');
    Ok(line)
}

/// Most bytes of a result frame worth reading: the result travels
/// JSON-escaped inside an envelope, at most twice its size plus the
/// envelope.
pub fn result_capture_bytes(req: &InvokeRequest) -> usize {
    4 + 2 * req.max_result_bytes + 64 * 1024
}

/// The result of an invocation that produced none (yet): its output so
/// far, outcome `crashed` until the caller knows better.
pub fn crashed(req: &InvokeRequest, out: &Capture, err: &Capture, run_us: u64) -> InvokeResult {
    InvokeResult {
        id: req.id.clone(),
        outcome: Outcome::Crashed,
        result: None,
        error: None,
        stdout: out.text(),
        stderr: err.text(),
        stdout_truncated: out.truncated,
        stderr_truncated: err.truncated,
        run_us,
        confine_us: 0,
        exit_code: None,
        signal: None,
        pids_hit: false,
    }
}

pub fn run(zyg: &mut Zygote, req: &InvokeRequest) -> Result<(InvokeResult, Pending), InvokeError> {
    let started = Instant::now();
    let deadline = started + Duration::from_millis(req.timeout_ms);
    // The daemon only sends a request after `Idle`, so a spare is ready;
    // wait briefly all the same rather than trust it.
    let worker = zyg.take_spare(SETTLE)?;
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(InvokeError::Pipe)?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(InvokeError::Pipe)?;
    let (res_r, res_w) = pipe2(OFlag::O_CLOEXEC).map_err(InvokeError::Pipe)?;

    let line = request_line(req)?;
    zyg.send_request(
        &line,
        &[out_w.as_raw_fd(), err_w.as_raw_fd(), res_w.as_raw_fd()],
    )?;
    drop((out_w, err_w, res_w));

    let mut out = Capture::new(out_r, req.max_output_bytes);
    let mut err = Capture::new(err_r, req.max_output_bytes);
    let mut res = Capture::new(res_r, result_capture_bytes(req));

    let mut exit: Option<(Option<i32>, Option<i32>)> = None;
    let mut timed_out = false;

    // The zygote gone mid-invocation (the worker may kill its parent): the
    // worker's result still counts; the sandbox is given up after it.
    let mut zygote_lost = false;
    while exit.is_none() && !result_complete(&res.buf) && !res.truncated {
        if zygote_lost && res.fd.is_none() {
            break;
        }
        if !zygote_lost && zyg.has_buffered_line() {
            match zyg.read_event() {
                Ok(ev) => on_event(ev, worker, &mut exit),
                Err(_) => zygote_lost = true,
            }
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            timed_out = true;
            break;
        }
        let mut fds = Vec::new();
        if !zygote_lost {
            fds.push(PollFd::new(zyg.ctl.as_fd(), PollFlags::POLLIN));
        }
        for c in [&out, &err, &res] {
            if let Some(fd) = &c.fd {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
            }
        }
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(InvokeError::Poll(e)),
        }
        let ctl_ready = !zygote_lost && fds[0].revents().is_some_and(|r| !r.is_empty());
        drop(fds);
        out.pump();
        err.pump();
        res.pump();
        if ctl_ready {
            match zyg.read_event() {
                Ok(ev) => on_event(ev, worker, &mut exit),
                Err(_) => zygote_lost = true,
            }
        }
    }
    let run_us = started.elapsed().as_micros() as u64;
    // Where the kernel's per-user limit stands in for the cgroup's: were
    // the function's processes at it when it ended?
    let pids_hit = req
        .nproc
        .is_some_and(|limit| procs::user_tasks(zyg.uid, &zyg.keep_with(0)) >= limit);

    // The worker is done (or out of time): kill it and its process group
    // now. The rest of the sweep (`settle`) runs after the answer is sent;
    // the daemon sends nothing new before `Idle`, which follows the sweep.
    let _ = kill(Pid::from_raw(-worker), Signal::SIGKILL);
    let _ = kill(Pid::from_raw(worker), Signal::SIGKILL);
    out.pump();
    err.pump();
    res.pump();

    let (exit_code, signal) = exit.unwrap_or((None, None));
    let mut result = crashed(req, &out, &err, run_us);
    result.pids_hit = pids_hit;
    if !timed_out {
        result.exit_code = exit_code;
        result.signal = signal;
    }
    if res.truncated {
        result.outcome = Outcome::ResultTooLarge;
    } else if let Some(msg) = parse_result(&res.buf) {
        // The worker's own exit after a result is our kill, not news.
        result.exit_code = None;
        result.signal = None;
        apply_worker_message(&mut result, msg, req);
    } else if timed_out {
        result.outcome = Outcome::Timeout;
    }
    Ok((result, Pending { worker, exit }))
}

/// What `settle` needs to finish an invocation.
pub struct Pending {
    worker: i32,
    exit: Option<(Option<i32>, Option<i32>)>,
}

/// Make sure nothing of the invocation survives: wait for the worker's
/// exit, kill every process that is not the zygote or a fresh spare (the
/// zygote's other children: user code cannot create those, its orphans go
/// to PID 1), reap. Returns how many stray processes were killed.
pub fn settle(zyg: &mut Zygote, p: Pending) -> Result<u32, InvokeError> {
    let Pending { worker, mut exit } = p;
    let zygote = zyg.pid();
    let keep = zyg.keep.clone();
    let settle_by = Instant::now() + SETTLE;
    let mut strays = 0u32;
    loop {
        strays += procs::kill_where(|pid| {
            pid != zygote
                && pid != worker
                && !keep.contains(&pid)
                && procs::ppid(pid) != Some(zygote)
        });
        procs::reap(zygote)?;
        if exit.is_none() && poll_ctl(zyg, Duration::from_millis(20)) {
            on_event(zyg.read_event()?, worker, &mut exit);
            continue;
        }
        let clean = exit.is_some()
            && procs::others().iter().all(|&p| {
                p == zygote || keep.contains(&p) || (p != worker && procs::ppid(p) == Some(zygote))
            });
        if clean {
            return Ok(strays);
        }
        if Instant::now() > settle_by {
            return Err(InvokeError::Strays {
                pids: procs::others(),
            });
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn on_event(ev: Event, worker: i32, exit: &mut Option<(Option<i32>, Option<i32>)>) {
    match ev {
        Event::Spare => {}
        Event::Exited { pid, code, signal } => {
            if pid == worker {
                *exit = Some((code, signal));
            }
        }
        Event::Other(v) => eprintln!("ember-agent: zygote says {v}"),
    }
}

fn poll_ctl(zyg: &Zygote, wait: Duration) -> bool {
    if zyg.has_buffered_line() {
        return true;
    }
    let mut fds = [PollFd::new(zyg.ctl.as_fd(), PollFlags::POLLIN)];
    let ms = PollTimeout::try_from(wait.as_millis() as i32).unwrap_or(PollTimeout::ZERO);
    matches!(poll(&mut fds, ms), Ok(n) if n > 0)
}

pub fn apply_worker_message(
    result: &mut InvokeResult,
    msg: serde_json::Value,
    req: &InvokeRequest,
) {
    result.confine_us = msg["confine_us"].as_u64().unwrap_or(0);
    match msg["outcome"].as_str() {
        Some("ok") => {
            result.outcome = Outcome::Ok;
            result.result = msg["result"].as_str().map(str::to_string);
        }
        Some("setup_error") => {
            result.outcome = Outcome::SetupError;
            result.error = Some(HandlerError {
                kind: "SetupError".into(),
                message: msg["message"].as_str().unwrap_or("").to_string(),
                traceback: String::new(),
            });
        }
        Some("result_too_large") => {
            result.outcome = Outcome::ResultTooLarge;
            result.error = Some(HandlerError {
                kind: "ResultTooLarge".into(),
                message: format!(
                    "handler result is {} bytes, limit is {}",
                    msg["size"].as_u64().unwrap_or(0),
                    req.max_result_bytes
                ),
                traceback: String::new(),
            });
        }
        _ => {
            result.outcome = Outcome::HandlerError;
            let e = &msg["error"];
            result.error = Some(HandlerError {
                kind: e["type"].as_str().unwrap_or("Error").to_string(),
                message: e["message"].as_str().unwrap_or("").to_string(),
                traceback: e["traceback"].as_str().unwrap_or("").to_string(),
            });
        }
    }
}
