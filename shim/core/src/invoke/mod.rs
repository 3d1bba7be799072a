//! The invocation path: pick a sandbox, thaw it, inject the code, run the
//! handler through the agent, eject, freeze, give the sandbox back, with a
//! timing for each phase.

mod admit;
mod back;
mod lease;
mod run;
pub mod session;
mod session_end;

use crate::daemon::{CodeHold, Daemon};
use crate::history::InvocationRecord;
use crate::pool::PoolError;
use crate::registry::{FunctionRecord, RegistryError};
use ember_api::{ErrorCode, Outcome, Report};
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// Extra time the daemon gives the agent past the function's timeout to
/// kill the worker and report, before it gives up on the whole sandbox.
const AGENT_GRACE: Duration = Duration::from_secs(5);

/// Where on the invocation path a sandbox failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The invocation's task itself.
    Invoke,
    Thaw,
    /// Writing the function's cgroup limits.
    Limits,
    Inject,
    Run,
    /// The worker could not install its seccomp filters.
    Confine,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Invoke => "invoke",
            Phase::Thaw => "thaw",
            Phase::Limits => "limits",
            Phase::Inject => "inject",
            Phase::Run => "run",
            Phase::Confine => "confine",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("function {0:?} is not deployed")]
    UnknownFunction(String),
    /// Refused at once: an operator paused the function.
    #[error("function {function:?} is paused: resume it (POST /v1/functions/{function}/resume, ember resume {function}) to invoke it")]
    Paused { function: String },
    #[error("event is not valid JSON: {0}")]
    BadEvent(String),
    #[error("event is {size} bytes, limit is {limit}")]
    EventTooLarge { size: usize, limit: usize },
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("sandbox {sandbox} failed during {phase}: {message}")]
    Sandbox {
        sandbox: String,
        phase: Phase,
        message: String,
    },
    #[error("function {function:?} runs on {runtime} with backend {backend}, which this emberd does not run (start it with --backend)")]
    NoPool {
        function: String,
        runtime: ember_api::Language,
        backend: ember_api::Backend,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("code {digest} of function {function:?} is missing from the store")]
    CodeMissing { function: String, digest: String },
    #[error(
        "function {function:?} was deployed by an older emberd, whose deploy builds ran as \
         root on the host; this emberd does not run code built that way: deploy it again"
    )]
    RebuildRequired { function: String },
    /// The history's journal has no room to record it (the state
    /// filesystem is full): it does not run unrecorded.
    #[error(transparent)]
    HistoryFull(#[from] crate::history::JournalFull),
    /// The handler ran but did not produce a result; the report says why.
    #[error("{}", describe(.0))]
    Failed(Box<Report>),
    /// Refused at once by admission control: a queue was full.
    #[error(transparent)]
    Overloaded(#[from] crate::admission::Refused),
    /// Waited at its function's gate (`max_concurrency`) up to the queue
    /// timeout.
    #[error(transparent)]
    GateTimeout(#[from] crate::admission::GateTimeout),
    #[error("no session {0:?}")]
    SessionNotFound(String),
    #[error("session {session:?} has ended ({reason}): {message}")]
    SessionEnded {
        session: String,
        reason: ember_api::SessionEnd,
        message: String,
    },
    /// Its sandbox went with a call that failed a moment ago.
    #[error("session {session:?} has ended: its last call failed")]
    SessionGone { session: String },
    #[error(transparent)]
    SessionLimit(#[from] crate::sessions::SessionLimit),
    #[error("session {session:?} is busy: its running call held it for {waited_ms} ms (--queue-timeout-ms)")]
    SessionBusy { session: String, waited_ms: u64 },
}

impl From<crate::admission::AdmitError> for InvokeError {
    fn from(e: crate::admission::AdmitError) -> Self {
        match e {
            crate::admission::AdmitError::Refused(r) => r.into(),
            crate::admission::AdmitError::Timeout(t) => t.into(),
        }
    }
}

impl InvokeError {
    /// The API's code for this error (also what an invocation record's
    /// `outcome` says when no report exists).
    pub fn code(&self) -> ErrorCode {
        match self {
            InvokeError::UnknownFunction(_) => ErrorCode::FunctionNotFound,
            InvokeError::Paused { .. } => ErrorCode::FunctionPaused,
            InvokeError::BadEvent(_) => ErrorCode::InvalidEvent,
            InvokeError::EventTooLarge { .. } => ErrorCode::PayloadTooLarge,
            InvokeError::Pool(PoolError::Exhausted { .. } | PoolError::NoAdopted { .. }) => {
                ErrorCode::PoolExhausted
            }
            InvokeError::Pool(PoolError::AdoptedOnly { .. }) => ErrorCode::BackendUnavailable,
            InvokeError::Pool(PoolError::ShuttingDown { .. }) => ErrorCode::ShuttingDown,
            InvokeError::Pool(PoolError::Create { .. }) | InvokeError::Sandbox { .. } => {
                ErrorCode::SandboxFailed
            }
            InvokeError::NoPool { .. } => ErrorCode::BackendUnavailable,
            InvokeError::Registry(_) | InvokeError::CodeMissing { .. } => ErrorCode::Internal,
            InvokeError::RebuildRequired { .. } => ErrorCode::RebuildRequired,
            InvokeError::HistoryFull(_) => ErrorCode::HistoryFull,
            InvokeError::Failed(r) => r.outcome.error_code().unwrap_or(ErrorCode::HandlerError),
            InvokeError::Overloaded(_) => ErrorCode::Overloaded,
            InvokeError::GateTimeout(_) => ErrorCode::PoolExhausted,
            InvokeError::SessionNotFound(_) => ErrorCode::SessionNotFound,
            InvokeError::SessionEnded { .. } | InvokeError::SessionGone { .. } => {
                ErrorCode::SessionEnded
            }
            InvokeError::SessionLimit(_) => ErrorCode::SessionLimit,
            InvokeError::SessionBusy { .. } => ErrorCode::SessionBusy,
        }
    }

    /// Seconds a refused client should wait before trying again.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            InvokeError::Overloaded(r) => Some(r.retry_after_s),
            _ => None,
        }
    }
}

fn describe(r: &Report) -> String {
    match (r.outcome, &r.error) {
        (Outcome::Timeout, _) => format!("function {:?} timed out", r.function),
        (Outcome::Oom, _) => format!(
            "function {:?} ran out of memory and was killed (limit {} MiB)",
            r.function, r.memory_mb
        ),
        (Outcome::Pids, _) => format!(
            "function {:?} hit its process limit ({} processes and threads)",
            r.function, r.pids
        ),
        (Outcome::Killed, _) => format!(
            "invocation {} of {:?} was killed through the kill switch",
            r.id, r.function
        ),
        (Outcome::Interrupted, _) => format!(
            "invocation {} of {:?} was interrupted: emberd shut down before it finished \
             (it ran past --drain-timeout-ms, or emberd got a second signal)",
            r.id, r.function
        ),
        (_, Some(e)) => format!("{}: {}", e.kind, e.message),
        (Outcome::Crashed, None) => match (r.exit_code, r.signal) {
            (_, Some(sig)) => format!("worker of {:?} was killed by signal {sig}", r.function),
            (Some(code), _) => format!(
                "worker of {:?} exited with status {code} without a result",
                r.function
            ),
            _ => format!("worker of {:?} died without a result", r.function),
        },
        (o, None) => format!("function {:?} failed: {}", r.function, o.as_str()),
    }
}

static INVOCATION_SEQ: AtomicU64 = AtomicU64::new(0);

fn invocation_id() -> String {
    format!(
        "{:011x}{:05x}",
        crate::registry::now_ms(),
        INVOCATION_SEQ.fetch_add(1, Ordering::Relaxed) & 0xfffff
    )
}

/// Check the event before anything is spent on it. An empty body is `{}`.
pub fn check_event(body: &[u8], limit: usize) -> Result<String, InvokeError> {
    if body.len() > limit {
        return Err(InvokeError::EventTooLarge {
            size: body.len(),
            limit,
        });
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok("{}".to_string());
    }
    let text = std::str::from_utf8(body).map_err(|e| InvokeError::BadEvent(e.to_string()))?;
    serde_json::from_str::<&RawValue>(text).map_err(|e| InvokeError::BadEvent(e.to_string()))?;
    Ok(text.to_string())
}

/// Run one invocation to the end, whatever happens to the caller: the work
/// is spawned so a client that hangs up cannot leave a sandbox half-used.
pub async fn invoke(
    daemon: Arc<Daemon>,
    name: String,
    body: bytes::Bytes,
) -> Result<Report, InvocationError> {
    let id = invocation_id();
    let span = tracing::info_span!("invoke", invocation = %id, function = %name);
    run_recorded(id, |id, recorded| {
        async move { invoke_inner(&daemon, id, &name, &body, &recorded).await }.instrument(span)
    })
    .await
}

/// Run invocation `id` as `work` builds it, detached (see
/// [`run_detached`]); `work` sets the flag it is given once the
/// invocation has a record, and only then does an error name its id.
async fn run_recorded<Fut>(
    id: String,
    work: impl FnOnce(String, Arc<std::sync::atomic::AtomicBool>) -> Fut,
) -> Result<Report, InvocationError>
where
    Fut: std::future::Future<Output = Result<Report, InvokeError>> + Send + 'static,
{
    let recorded = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let work = work(id.clone(), Arc::clone(&recorded));
    run_detached("invocation", work)
        .await
        .map_err(|error| InvocationError {
            id: recorded
                .load(std::sync::atomic::Ordering::Acquire)
                .then_some(id),
            error,
        })
}

/// A failed invocation: why, and its id once it had a record.
#[derive(Debug)]
pub struct InvocationError {
    pub id: Option<String>,
    pub error: InvokeError,
}

/// Run an invocation as its own task, so a caller that goes away cannot
/// leave a sandbox half-used.
async fn run_detached<T: Send + 'static>(
    what: &str,
    work: impl std::future::Future<Output = Result<T, InvokeError>> + Send + 'static,
) -> Result<T, InvokeError> {
    tokio::spawn(work).await.unwrap_or_else(|e| {
        Err(InvokeError::Sandbox {
            sandbox: String::new(),
            phase: Phase::Invoke,
            message: format!("{what} task failed: {e}"),
        })
    })
}

async fn invoke_inner(
    daemon: &Arc<Daemon>,
    id: String,
    name: &str,
    body: &[u8],
    recorded: &std::sync::atomic::AtomicBool,
) -> Result<Report, InvokeError> {
    let event = check_event(body, daemon.settings.max_event_bytes)?;
    let (func, code) = function_and_code(daemon, name)?;
    if let Err(e) = daemon.check_not_paused(&func) {
        return Err(refused(daemon, name, e));
    }
    let event_limit = func.limits.max_event_bytes as usize;
    if body.len() > event_limit {
        return Err(InvokeError::EventTooLarge {
            size: body.len(),
            limit: event_limit,
        });
    }
    // Before the record begins: a refused invocation takes no history row
    // and gets no id. Held (then dropped) for the whole invocation.
    let _admitted = match admit::admit_invocation(daemon, &func).await {
        Ok(a) => a,
        Err(e) => return Err(refused(daemon, name, e.into())),
    };
    let started_at = crate::registry::now_ms();
    let begun = daemon.history.begin(InvocationRecord {
        mode: Some(func.mode.as_str().to_string()),
        ..InvocationRecord::started(&id, name, &func.digest, started_at)
    });
    if let Err(e) = begun {
        return Err(refused(daemon, name, e.into()));
    }
    recorded.store(true, std::sync::atomic::Ordering::Release);
    let runtime = func.runtime;
    let digest = func.digest.clone();
    let res = run::run_invocation(daemon, id.clone(), func, code, event, false).await;
    let done = Done {
        id: &id,
        function: name,
        runtime,
        digest: &digest,
        started_at,
        session: None,
    };
    if !record(daemon, &done, &res) {
        // Refused before it ran: no record, so its answer names none.
        recorded.store(false, std::sync::atomic::Ordering::Release);
    }
    res
}

/// Count an invocation refused before it ran user code (it leaves no
/// record).
fn refused(daemon: &Daemon, function: &str, e: InvokeError) -> InvokeError {
    count_refusal(daemon, function, e.code());
    e
}

fn count_refusal(daemon: &Daemon, function: &str, code: ErrorCode) {
    daemon.metrics.invocation(function, code.as_str());
    daemon.metrics.refused(function, code.as_str());
}

/// The function's record and its code, held in the store for the whole
/// invocation: a delete or redeploy meanwhile removes the code only after.
fn function_and_code<'a>(
    daemon: &'a Daemon,
    name: &str,
) -> Result<(FunctionRecord, CodeHold<'a>), InvokeError> {
    let read = || {
        daemon
            .registry
            .get(name)?
            .ok_or_else(|| InvokeError::UnknownFunction(name.to_string()))
    };
    let pin = |f: &FunctionRecord| {
        ember_injector::Digest::parse(&f.digest).and_then(|d| daemon.store.pin_current(&d))
    };
    let mut func = read()?;
    let code = match pin(&func) {
        Some(code) => code,
        // A redeploy between reading the record and pinning its code
        // removed the old code; the record read again names the new code.
        None => {
            func = read()?;
            match pin(&func) {
                Some(code) => code,
                None => return Err(missing_code(daemon, &func)),
            }
        }
    };
    Ok((func, daemon.hold_code(code)))
}

/// Why the code of `func` cannot be pinned: built the old way, or gone.
fn missing_code(daemon: &Daemon, func: &FunctionRecord) -> InvokeError {
    let old =
        ember_injector::Digest::parse(&func.digest).is_some_and(|d| daemon.store.contains(&d));
    if old {
        InvokeError::RebuildRequired {
            function: func.name.clone(),
        }
    } else {
        InvokeError::CodeMissing {
            function: func.name.clone(),
            digest: func.digest.clone(),
        }
    }
}

/// Write the invocation's record and count it in the metrics. Before
/// this returns, an answered invocation's outcome is in the journal (it
/// survives a SIGKILL). An invocation refused before it ran user code
/// (`pool_exhausted`, `shutting_down`) is counted and its begun record
/// dropped instead: false.
/// What the record of an ended invocation is made from, besides its
/// result.
#[derive(Clone, Copy)]
struct Done<'a> {
    id: &'a str,
    function: &'a str,
    runtime: ember_api::Language,
    digest: &'a str,
    started_at: i64,
    session: Option<&'a str>,
}

fn record(daemon: &Daemon, done: &Done<'_>, res: &Result<Report, InvokeError>) -> bool {
    let Done {
        id,
        function,
        runtime,
        digest,
        started_at,
        session,
    } = *done;
    if let Err(e) = res {
        if e.code().is_refusal() {
            daemon.history.discard(id);
            count_refusal(daemon, function, e.code());
            return false;
        }
    }
    let report = match res {
        Ok(r) => Some(r),
        Err(InvokeError::Failed(r)) => Some(r.as_ref()),
        Err(_) => None,
    };
    let mut rec = InvocationRecord {
        finished_at: Some(crate::registry::now_ms()),
        session: session.map(str::to_string),
        ..InvocationRecord::started(id, function, digest, started_at)
    };
    match report {
        Some(r) => {
            let timings = serde_json::to_value(&r.timings_us).unwrap_or_default();
            daemon
                .metrics
                .timings(runtime, r.backend, r.start, &r.timings_us);
            rec.sandbox = Some(r.sandbox.clone());
            rec.backend = Some(r.backend.to_string());
            rec.start = Some(r.start.as_str().to_string());
            rec.mode = Some(r.mode.as_str().to_string());
            rec.outcome = r.outcome.as_str().to_string();
            rec.error = r
                .error
                .as_ref()
                .map(|e| format!("{}: {}", e.kind, e.message));
            rec.timings_us = Some(timings);
            rec.stdout_bytes = r.stdout.len() as u64;
            rec.stderr_bytes = r.stderr.len() as u64;
            rec.stdout = r.stdout.clone();
            rec.stderr = r.stderr.clone();
            rec.result_bytes = r.result.as_ref().map_or(0, |v| v.get().len() as u64);
        }
        None => {
            if let Err(e) = res {
                if let InvokeError::Sandbox { phase, .. } = e {
                    daemon.metrics.sandbox_failure(phase.as_str());
                }
                rec.outcome = e.code().as_str().to_string();
                rec.error = Some(e.to_string());
            }
        }
    }
    daemon.metrics.invocation(function, &rec.outcome);
    daemon.history.finish(rec);
    true
}

/// Run `func` once in a throwaway sandbox, created for it and destroyed
/// after (`ember test`): the function need not be deployed.
pub async fn invoke_throwaway(
    daemon: Arc<Daemon>,
    func: FunctionRecord,
    code: ember_injector::Pin,
    event: String,
) -> Result<Report, InvokeError> {
    let id = invocation_id();
    let span = tracing::info_span!("test", invocation = %id, function = %func.name);
    run_detached(
        "invocation",
        async move {
            let code = daemon.hold_code(code);
            run::run_invocation(&daemon, id, func, code, event, true).await
        }
        .instrument(span),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_checked() {
        assert_eq!(check_event(b"", 10).unwrap(), "{}");
        assert_eq!(check_event(b" \n", 10).unwrap(), "{}");
        assert_eq!(check_event(br#"{"a":[1]}"#, 100).unwrap(), r#"{"a":[1]}"#);
        assert!(matches!(
            check_event(b"{bad", 100),
            Err(InvokeError::BadEvent(_))
        ));
        assert!(matches!(
            check_event(b"\xff\xfe", 100),
            Err(InvokeError::BadEvent(_))
        ));
        assert!(matches!(
            check_event(b"[1,2,3]", 3),
            Err(InvokeError::EventTooLarge { size: 7, limit: 3 })
        ));
    }
}
