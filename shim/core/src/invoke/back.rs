//! The way back after a healthy invocation, off the caller's path: eject
//! (or keep, or refresh `/tmp`, or bind to the function), wait for the
//! agent's `Idle`, and give the sandbox back to its pool; and the binding
//! of a sandbox to its function, whose spare becomes a function zygote.

use super::lease::SessionCall;
use crate::daemon::Daemon;
use crate::history::InvocationRecord;
use crate::pool::Pool;
use ember_api::Backend;
use ember_api::SessionEnd;
use ember_proto::{BindReport, BindRequest, FromAgent, InitOutcome, ToAgent};
use ember_runtimes::limits::LimitHits;
use ember_runtimes::{AgentConnError, Sandbox};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Ask the agent to check the sandbox is back to its clean state (mounts
/// are gone by now) and read its answer.
async fn check(sb: &mut Sandbox) -> Result<FromAgent, AgentConnError> {
    sb.conn.send(&ToAgent::Check).await?;
    sb.conn.recv().await
}

/// How long a sandbox may take to warm its next worker.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// What becomes of a sandbox after a healthy invocation.
pub(super) enum Return {
    /// Fork mode, generic: code and `/tmp` out.
    Eject,
    /// Specialized: everything stays, the runner keeps its state.
    Keep,
    /// Fork mode from a function zygote: the code stays, `/tmp` is
    /// replaced by an empty one.
    FreshScratch,
    /// Fork mode, first served by hot swap: bind the sandbox to the
    /// function (its spare becomes the function's zygote).
    Bind(Box<BindJob>),
}

pub(super) struct BindJob {
    pub(super) key: String,
    pub(super) digest: String,
    pub(super) req: BindRequest,
}

/// Put the sandbox back in shape for its next invocation (see [`Return`]),
/// wait for the agent's `Idle`, and give it back to the pool (which freezes
/// it once it sits idle); any surprise discards it.
pub(super) async fn return_when_idle(
    daemon: Arc<Daemon>,
    pool: Arc<Pool>,
    mut sb: Sandbox,
    how: Return,
) {
    let t = Instant::now();
    let tmpfs_bytes = daemon.settings.tmpfs_mb * 1024 * 1024;
    let ejected = match &how {
        Return::Eject => tokio::task::block_in_place(|| sb.code.eject()),
        Return::Keep => Ok(()),
        Return::FreshScratch => tokio::task::block_in_place(|| sb.code.fresh_scratch(tmpfs_bytes)),
        Return::Bind(_) => tokio::task::block_in_place(|| sb.code.drop_scratch()),
    };
    let eject_us = t.elapsed().as_micros() as u64;
    let kept = matches!(how, Return::Keep);
    if let (Return::Bind(job), Ok(())) = (how, &ejected) {
        let healthy = bind(&daemon, &mut sb, *job, tmpfs_bytes).await;
        tracing::debug!(sandbox = %sb.id, return_us = t.elapsed().as_micros() as u64, healthy, "sandbox returned bound");
        pool.release(sb, healthy);
        return;
    }
    let healthy = match ejected {
        Err(e) => {
            tracing::warn!(sandbox = %sb.id, "eject failed, discarding sandbox: {e}");
            false
        }
        Ok(()) => idle_check(&mut sb, kept).await,
    };
    tracing::debug!(
        sandbox = %sb.id,
        eject_us,
        return_us = t.elapsed().as_micros() as u64,
        healthy,
        "sandbox returned"
    );
    pool.release(sb, healthy);
}

/// Ask the agent whether the sandbox is clean and idle again after a
/// healthy invocation; `kept` (specialized, sessions): its spare is the
/// runner, watched from now on. Any surprise: false, and why is logged.
pub(super) async fn idle_check(sb: &mut Sandbox, kept: bool) -> bool {
    match tokio::time::timeout(IDLE_TIMEOUT, check(sb)).await {
        Ok(Ok(FromAgent::Idle { problems, .. })) if !problems.is_empty() => {
            tracing::warn!(sandbox = %sb.id, ?problems, "sandbox not clean after invocation; discarding");
            false
        }
        Ok(Ok(FromAgent::Idle { .. })) if sb.limits.hits() != LimitHits::default() => {
            tracing::info!(sandbox = %sb.id, "invocation ran into a cgroup limit; discarding sandbox");
            false
        }
        // Frozen by the pool once it has sat idle a moment.
        Ok(Ok(FromAgent::Idle {
            strays_killed,
            spare_pid,
            ..
        })) => {
            if strays_killed > 0 {
                tracing::info!(sandbox = %sb.id, strays_killed, "killed processes the invocation left behind");
            }
            // Specialized: the "spare" is the runner, which serves the
            // sandbox's function from now on (watched once).
            if kept {
                sb.watch_process("runner", spare_pid);
            }
            true
        }
        Ok(Ok(other)) => {
            tracing::warn!(sandbox = %sb.id, "expected idle from agent, got {other:?}; discarding");
            false
        }
        Ok(Err(e)) => {
            tracing::warn!(sandbox = %sb.id, "agent failed after invocation: {e}; discarding");
            false
        }
        Err(_) => {
            tracing::warn!(sandbox = %sb.id, "agent not idle within {IDLE_TIMEOUT:?}; discarding");
            false
        }
    }
}

/// Bind a sandbox that just served `job`'s function by hot swap: its
/// spare imports the handler once and becomes the function's zygote.
/// Returns whether the sandbox can serve again (bound). The outcome goes
/// to the zygote book, the init's output and outcome to the function's
/// logs.
async fn bind(daemon: &Arc<Daemon>, sb: &mut Sandbox, job: BindJob, tmpfs_bytes: u64) -> bool {
    let started_at = crate::registry::now_ms();
    let Some(mut report) = ask_bind(sb, job.req.clone()).await else {
        return false;
    };
    if report.outcome != InitOutcome::NotClean && sb.limits.hits().oom_kills > 0 {
        report.outcome = InitOutcome::Oom;
        report.message = format!("module init ran out of memory: {}", report.message);
    }
    let function = &job.req.function;
    let healthy = match report.outcome {
        InitOutcome::Ready => {
            match tokio::task::block_in_place(|| sb.code.fresh_scratch(tmpfs_bytes)) {
                Ok(()) => {
                    sb.bound = Some(job.key.clone());
                    // Its invocations fork from this zygote from now on.
                    sb.watch_process("function zygote", report.zygote_pid);
                    daemon.zygotes.ready(&job.key, report.init_us);
                    tracing::info!(sandbox = %sb.id, function = %function, init_us = report.init_us, "function zygote ready");
                    true
                }
                Err(e) => {
                    tracing::warn!(sandbox = %sb.id, "bound sandbox could not be readied: {e}; discarding");
                    false
                }
            }
        }
        InitOutcome::NotClean => {
            tracing::warn!(sandbox = %sb.id, problems = %report.message, "sandbox not clean before bind; discarding");
            false
        }
        // The init itself is at fault: it would fail the same way in any
        // sandbox. Invocations import afresh from now on.
        outcome => {
            if daemon
                .zygotes
                .fall_back(&job.key, outcome.as_str(), &report.message)
            {
                tracing::warn!(function = %function, outcome = outcome.as_str(), reason = %report.message, "function zygote failed; invocations import the handler afresh");
            }
            false
        }
    };
    let rec = InitRecord {
        function,
        digest: &job.digest,
        sandbox: &sb.id,
        backend: crate::backend_of(sb),
        started_at,
    };
    rec.write(daemon, &report);
    healthy
}

/// Send `Bind` and read the agent's report; a lost agent is a crashed
/// init. `None`: the agent answered something else (the sandbox goes).
async fn ask_bind(sb: &mut Sandbox, req: BindRequest) -> Option<BindReport> {
    let wait = Duration::from_millis(req.timeout_ms) + IDLE_TIMEOUT;
    let answer = async {
        sb.conn.send(&ToAgent::Bind(req)).await?;
        sb.conn.recv().await
    };
    let lost = |message: String| BindReport {
        outcome: InitOutcome::Crashed,
        message,
        stdout: String::new(),
        stderr: String::new(),
        init_us: 0,
        zygote_pid: 0,
    };
    match tokio::time::timeout(wait, answer).await {
        Ok(Ok(FromAgent::Bound(r))) => Some(r),
        Ok(Ok(other)) => {
            tracing::warn!(sandbox = %sb.id, "expected bound from agent, got {other:?}; discarding");
            None
        }
        Ok(Err(e)) => Some(lost(format!(
            "the sandbox's agent failed during the bind: {e}"
        ))),
        Err(_) => Some(lost(format!(
            "the agent did not answer the bind within {} ms",
            wait.as_millis()
        ))),
    }
}

/// Where a function zygote's init ran, for its record.
struct InitRecord<'a> {
    function: &'a str,
    digest: &'a str,
    sandbox: &'a str,
    backend: Backend,
    started_at: i64,
}

impl InitRecord<'_> {
    /// The init in the function's logs (`start: zygote_init`, its outcome
    /// and output) and in the metrics. A silent, successful init is no
    /// news for the logs.
    fn write(&self, daemon: &Daemon, report: &BindReport) {
        let outcome = report.outcome.as_str();
        daemon.metrics.zygote_init(outcome);
        let silent = report.stdout.is_empty() && report.stderr.is_empty();
        if report.outcome == InitOutcome::Ready && silent {
            return;
        }
        let rec = InvocationRecord {
            sandbox: Some(self.sandbox.to_string()),
            backend: Some(self.backend.to_string()),
            start: Some("zygote_init".into()),
            mode: Some("fork".into()),
            outcome: outcome.to_string(),
            error: (!report.message.is_empty()).then(|| report.message.clone()),
            timings_us: Some(serde_json::json!({ "init": report.init_us })),
            stdout_bytes: report.stdout.len() as u64,
            stderr_bytes: report.stderr.len() as u64,
            stdout: report.stdout.clone(),
            stderr: report.stderr.clone(),
            finished_at: Some(crate::registry::now_ms()),
            ..InvocationRecord::started(
                &super::invocation_id(),
                self.function,
                self.digest,
                self.started_at,
            )
        };
        daemon.history.finish(rec);
    }
}

/// After a healthy call: once the agent says the sandbox is idle and
/// clean again, freeze it (nothing of the session runs between its calls)
/// and put it back in the session's slot. Otherwise destroy it and end the
/// session.
pub(super) async fn back_to_session(
    daemon: Arc<Daemon>,
    pool: Arc<Pool>,
    mut sb: Sandbox,
    mut call: SessionCall,
) {
    let session = call.session.clone();
    if idle_check(&mut sb, true).await {
        match sb.freezer.request_freeze() {
            Ok(()) => sb.frozen = true,
            Err(e) => tracing::warn!(sandbox = %sb.id, "freezing a session's sandbox: {e}"),
        }
        *call.slot = Some(sb);
        drop(call);
        session.call_ends();
        return;
    }
    pool.release(sb, false);
    drop(call);
    session.call_ends();
    let why = "its sandbox was not idle and clean after a call (see emberd's log)".to_string();
    super::session_end::end(&daemon, &session.id, SessionEnd::Failed, why).await;
}
