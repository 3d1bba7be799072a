//! The invocation proper, one function per phase: take a sandbox, thaw
//! it, set the function's limits, inject the code, run the handler
//! through the agent, judge the answer, put the sandbox back, report.

use super::back::{return_when_idle, BindJob, Return};
use super::lease::{Lease, SessionCall};
use super::{InvokeError, Phase, AGENT_GRACE};
use crate::daemon::{CodeHold, Daemon};
use crate::pool::{Pool, Want};
use crate::registry::FunctionRecord;

use ember_api::{HandlerErrorInfo, LimitHit, Mode, Outcome, Report, StartKind, Timings};
use ember_proto::{BindRequest, FromAgent, InvokeRequest, InvokeResult, ToAgent};
use ember_runtimes::limits::{InvocationLimits, LimitHits};
use ember_runtimes::AgentConnError;
use serde_json::value::RawValue;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// One invocation on its way through the phases.
struct Invocation<'a> {
    daemon: &'a Arc<Daemon>,
    id: String,
    func: FunctionRecord,
    /// A sandbox of its own, not from the pool, destroyed after.
    throwaway: bool,
    /// Fork mode with function zygotes for this deploy.
    zygote: bool,
    /// Opening a session, or one of its calls: the session's id.
    session_id: Option<String>,
    t0: Instant,
    timings: Timings,
}

/// How many times an invocation moves to another sandbox after writing its
/// request failed (the agent was gone before it had the whole request, so
/// no handler started). Never after the request was sent: a handler must
/// not run twice.
const SEND_RETRIES: u32 = 2;

/// How many idle sandboxes found dead one invocation skips (each is
/// destroyed and the pool refills) before it gives up.
const DEAD_SKIPS: u32 = 8;

/// How the agent's answer came, if it did.
enum Answer {
    Result(InvokeResult),
    /// The kill switch (or a drain past its timeout) ended it.
    Killed,
    /// The agent or its connection failed.
    Lost(String),
    /// Writing the request failed: the agent never had all of it, so no
    /// user code ran; the event comes back for another sandbox.
    Unsent {
        event: String,
        why: String,
    },
}

/// The invocation proper: from taking a sandbox to giving it back.
/// `throwaway`: a sandbox of its own, not from the pool, destroyed after.
pub(super) async fn run_invocation(
    daemon: &Arc<Daemon>,
    id: String,
    func: FunctionRecord,
    held: CodeHold<'_>,
    event: String,
    throwaway: bool,
) -> Result<Report, InvokeError> {
    // `held` (dropped on return) keeps this tree in the store meanwhile.
    let code = daemon.store.path(held.digest());
    let pool = pool_for(daemon, &func)?;
    let zygote = !throwaway
        && daemon.function_zygotes(&func)
        && daemon.zygotes.may_bind(&func.binding_key());
    let mut inv = Invocation {
        daemon,
        id,
        func,
        throwaway,
        zygote,
        session_id: None,
        t0: Instant::now(),
        timings: Timings::default(),
    };
    let (lease, start, answer) = inv.take_and_send(&pool, &code, event).await?;
    inv.conclude(lease, start, answer, None)
}

/// A sandbox for the new session `session_id` of `func`: generic, taken
/// from the pool and given the function's code and a `/tmp` of its own,
/// thawed, with the function's limits. The caller gives it to the session.
pub(super) async fn open_session_sandbox(
    daemon: &Arc<Daemon>,
    session_id: &str,
    func: FunctionRecord,
    code: &Path,
) -> Result<(Lease, StartKind, Timings), InvokeError> {
    let pool = pool_for(daemon, &func)?;
    let mut inv = Invocation {
        daemon,
        id: session_id.to_string(),
        func,
        throwaway: false,
        zygote: false,
        session_id: Some(session_id.to_string()),
        t0: Instant::now(),
        timings: Timings::default(),
    };
    let (mut lease, start) = inv.take_live_sandbox(&pool).await?;
    inv.thaw(&mut lease)?;
    inv.apply_limits(&mut lease)?;
    inv.inject(&mut lease, code)?;
    inv.timings.total = inv.t0.elapsed().as_micros() as u64;
    Ok((lease, start, inv.timings))
}

/// One call of a session, in the sandbox `call` holds: the session's
/// runner and `/tmp` serve it as they served the calls before. A call that
/// fails leaves the slot empty (its sandbox destroyed): the caller ends
/// the session.
pub(super) async fn run_session_call(
    daemon: &Arc<Daemon>,
    id: String,
    mut call: SessionCall,
    event: String,
    first: bool,
) -> Result<Report, InvokeError> {
    let session = call.session.clone();
    let sb = call.slot.take().ok_or_else(|| InvokeError::SessionGone {
        session: session.id.clone(),
    })?;
    let mut inv = Invocation {
        daemon,
        id,
        func: session.func.clone(),
        throwaway: false,
        zygote: false,
        session_id: Some(session.id.clone()),
        t0: Instant::now(),
        timings: Timings::default(),
    };
    // The first call loads the handler into the session's runner; later
    // ones find it loaded.
    let start = if first {
        StartKind::Hot
    } else {
        StartKind::Warm
    };
    let mut lease = Lease::new(session.pool.clone(), sb);
    if let Some(dead) = lease.dead_process() {
        let why = format!("the session's sandbox died while idle: {dead}");
        return Err(inv.failed(&lease, Phase::Invoke, why));
    }
    inv.thaw(&mut lease)?;
    inv.apply_limits(&mut lease)?;
    let t = Instant::now();
    let answer = inv.ask_agent(&mut lease, event).await;
    inv.timings.run = t.elapsed().as_micros() as u64;
    inv.conclude(lease, start, answer, Some(call))
}

impl Invocation<'_> {
    /// From the agent's answer (or its absence) to the report: judge it,
    /// put the sandbox back (to its session, for a session's `call`) or
    /// give it up.
    fn conclude(
        mut self,
        lease: Lease,
        start: StartKind,
        answer: Answer,
        call: Option<SessionCall>,
    ) -> Result<Report, InvokeError> {
        let inv = &mut self;
        let bare = |inv: &mut Invocation, lease: &Lease, outcome| {
            inv.timings.total = inv.t0.elapsed().as_micros() as u64;
            inv.report(lease, start, outcome)
        };
        let answer = match answer {
            Answer::Result(r) => r,
            Answer::Killed => {
                // Shutdown past its drain timeout uses the same switch.
                let outcome = match lease.pool().is_closing() {
                    true => Outcome::Interrupted,
                    false => Outcome::Killed,
                };
                tracing::info!(sandbox = %lease.id, outcome = outcome.as_str(), "invocation ended through the kill switch");
                return Err(InvokeError::Failed(Box::new(bare(inv, &lease, outcome))));
            }
            Answer::Lost(message) => {
                // A function that fills its memory (a /tmp of tmpfs pages
                // included) may take the zygote or the agent down with it:
                // that is its OOM, not a sandbox failure.
                if lease.limits.hits().oom_kills == 0 {
                    return Err(inv.failed(&lease, Phase::Run, message));
                }
                tracing::info!(sandbox = %lease.id, "sandbox lost to the function's OOM: {message}");
                let mut report = bare(inv, &lease, Outcome::Oom);
                report.limits_hit.push(LimitHit::Oom);
                return Err(InvokeError::Failed(Box::new(report)));
            }
            // Past its retries: no agent ever had the request.
            Answer::Unsent { why, .. } => return Err(inv.failed(&lease, Phase::Run, why)),
        };
        inv.timings.confine = answer.confine_us;
        self.finish(lease, start, answer, call)
    }
}

/// What a failed send of request `msg` means. A failed write means the
/// agent's end closed before it had the whole frame: it cannot have
/// started the handler, so the event goes back for another sandbox.
fn not_sent(e: AgentConnError, msg: ToAgent) -> Answer {
    match (e, msg) {
        (AgentConnError::Write(e), ToAgent::Invoke(req)) => Answer::Unsent {
            event: req.event,
            why: format!("its agent is gone: writing the request failed: {e}"),
        },
        (e, _) => Answer::Lost(e.to_string()),
    }
}

/// The pool that serves `func`.
fn pool_for(daemon: &Daemon, func: &FunctionRecord) -> Result<Arc<Pool>, InvokeError> {
    daemon
        .pool(func.runtime, func.backend)
        .cloned()
        .ok_or_else(|| InvokeError::NoPool {
            function: func.name.clone(),
            runtime: func.runtime,
            backend: func
                .backend
                .unwrap_or_else(|| daemon.default_backend(func.runtime)),
        })
}

impl Invocation<'_> {
    /// What the invocation needs from the pool: bound sandboxes
    /// (specialized, or fork mode with a function zygote) serve one deploy
    /// of the function, so a redeploy never runs in a sandbox that loaded
    /// the old code.
    fn want<'k>(&self, key: &'k str) -> Want<'k> {
        // A session's sandbox starts generic: it gets the code at open.
        if self.session_id.is_some() {
            return Want::Fork;
        }
        match self.func.mode {
            Mode::Fork if self.zygote => Want::Bound { key, spread: true },
            Mode::Fork => Want::Fork,
            Mode::Specialized => Want::Bound { key, spread: false },
        }
    }

    /// How the agent runs it: a session's calls always in a runner of its
    /// own (specialized), whatever the function's mode, so its state lasts.
    fn mode(&self) -> Mode {
        match self.session_id {
            Some(_) => Mode::Specialized,
            None => self.func.mode,
        }
    }

    /// Take a live sandbox, ready it and send the request; a sandbox whose
    /// agent turns out gone before it had the request is given up and the
    /// request sent to another one, up to [`SEND_RETRIES`] times.
    async fn take_and_send(
        &mut self,
        pool: &Arc<Pool>,
        code: &Path,
        mut event: String,
    ) -> Result<(Lease, StartKind, Answer), InvokeError> {
        let mut retries = 0;
        loop {
            let (mut lease, start) = self.take_live_sandbox(pool).await?;
            self.thaw(&mut lease)?;
            self.apply_limits(&mut lease)?;
            if start != StartKind::Warm {
                self.inject(&mut lease, code)?;
            }
            let t = Instant::now();
            let answer = self.ask_agent(&mut lease, event).await;
            self.timings.run = t.elapsed().as_micros() as u64;
            match answer {
                Answer::Unsent { event: back, why } if retries < SEND_RETRIES => {
                    retries += 1;
                    self.found_dead(&lease, &why);
                    event = back;
                }
                answer => return Ok((lease, start, answer)),
            }
        }
    }

    /// Take a sandbox whose processes all still run. One killed from
    /// outside while idle (frozen or not) is given up (dropping its lease
    /// destroys it and the pool refills) and another taken: no user code
    /// ran in it for this invocation.
    async fn take_live_sandbox(
        &mut self,
        pool: &Arc<Pool>,
    ) -> Result<(Lease, StartKind), InvokeError> {
        let mut skipped = 0;
        loop {
            let (lease, start) = self.take_sandbox(pool.clone()).await?;
            let Some(dead) = lease.dead_process() else {
                return Ok((lease, start));
            };
            self.found_dead(&lease, &dead.to_string());
            skipped += 1;
            if skipped >= DEAD_SKIPS {
                return Err(self.failed(
                    &lease,
                    Phase::Invoke,
                    format!("{skipped} sandboxes in a row were found dead; the last: {dead}"),
                ));
            }
        }
    }

    /// Count and log a sandbox found dead; the caller drops its lease,
    /// which destroys it.
    fn found_dead(&self, lease: &Lease, why: &str) {
        let backend = crate::backend_of(lease);
        self.daemon
            .metrics
            .sandbox_found_dead(self.func.runtime, backend);
        tracing::info!(
            sandbox = %lease.id,
            runtime = %self.func.runtime,
            %backend,
            "sandbox found dead ({why}); destroying it and moving the invocation to another"
        );
    }

    async fn take_sandbox(&mut self, pool: Arc<Pool>) -> Result<(Lease, StartKind), InvokeError> {
        let name = self.func.name.as_str();
        let key = self.func.binding_key();
        let (sb, start, waited) = if self.throwaway {
            pool.create_throwaway(name, &self.id).await?
        } else {
            pool.acquire(name, &self.id, self.want(&key)).await?
        };
        let waited = waited.as_micros() as u64;
        if start == StartKind::Cold {
            self.timings.create = sb.create_us;
            self.timings.queue += waited.saturating_sub(sb.create_us);
        } else {
            // Added up over the sandboxes found dead before this one.
            self.timings.queue += waited;
        }
        Ok((Lease::new(pool, sb), start))
    }

    fn failed(&self, lease: &Lease, phase: Phase, message: String) -> InvokeError {
        InvokeError::Sandbox {
            sandbox: lease.id.clone(),
            phase,
            message,
        }
    }

    /// Thaw, if it was frozen: one that came back moments ago (and a cold
    /// one) never was.
    fn thaw(&mut self, lease: &mut Lease) -> Result<(), InvokeError> {
        let t = Instant::now();
        if lease.frozen {
            if let Err(e) = lease.freezer.thaw() {
                return Err(self.failed(lease, Phase::Thaw, e.to_string()));
            }
            lease.frozen = false;
        }
        self.timings.thaw = t.elapsed().as_micros() as u64;
        Ok(())
    }

    /// This function's limits, written only where they differ from what
    /// the sandbox's last invocation had.
    fn apply_limits(&self, lease: &mut Lease) -> Result<(), InvokeError> {
        let limits = &self.func.limits;
        let want = InvocationLimits {
            memory_bytes: lease.baseline_memory + limits.memory_mb * 1024 * 1024,
            // The agent and the zygote count too.
            pids: lease.pids_limit_applies.then_some(limits.pids + 2),
            cpu_shares: limits.cpu_shares,
        };
        if lease.applied != Some(want) {
            let sb = &mut **lease;
            let applied =
                tokio::task::block_in_place(|| sb.limits.apply(&want, sb.applied.as_ref()));
            if let Err(e) = applied {
                return Err(self.failed(lease, Phase::Limits, e.to_string()));
            }
            lease.applied = Some(want);
        }
        Ok(())
    }

    /// Inject code at /fn and a fresh /tmp (a sandbox bound to this
    /// function has both already).
    fn inject(&mut self, lease: &mut Lease, code: &Path) -> Result<(), InvokeError> {
        let t = Instant::now();
        let tmpfs_bytes = self.daemon.settings.tmpfs_mb * 1024 * 1024;
        let injected = tokio::task::block_in_place(|| lease.code.inject(code, tmpfs_bytes));
        if let Err(e) = injected {
            let _ = tokio::task::block_in_place(|| lease.code.eject());
            return Err(self.failed(lease, Phase::Inject, e.to_string()));
        }
        self.timings.inject = t.elapsed().as_micros() as u64;
        Ok(())
    }

    /// Send the invocation to the agent and wait for its result, the
    /// function's timeout plus a grace, or the kill switch.
    async fn ask_agent(&self, lease: &mut Lease, event: String) -> Answer {
        let func = &self.func;
        let req = InvokeRequest {
            id: self.id.clone(),
            function: func.name.clone(),
            handler: func.handler.clone(),
            event,
            timeout_ms: func.timeout_ms,
            max_output_bytes: func.limits.max_output_bytes as usize,
            max_result_bytes: self.daemon.settings.max_result_bytes,
            memory_limit_mb: func.limits.memory_mb,
            profile: func.profile.clone(),
            mode: self.mode(),
            // Where the cgroup cannot count the function's processes (gVisor).
            nproc: (!lease.pids_limit_applies).then_some(func.limits.pids),
        };
        let wait = Duration::from_millis(func.timeout_ms) + AGENT_GRACE;
        let started = Instant::now();
        let kill = lease.pool().kill_signal(&lease.id).unwrap_or_default();
        let killed = kill.notified();
        tokio::pin!(killed);
        let msg = ToAgent::Invoke(req);
        let sent = tokio::select! {
            s = tokio::time::timeout(wait, lease.conn.send(&msg)) => s,
            _ = &mut killed => return Answer::Killed,
        };
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return not_sent(e, msg),
            Err(_) => {
                return Answer::Lost(format!(
                    "agent took no request within {} ms",
                    wait.as_millis()
                ))
            }
        }
        let left = wait.saturating_sub(started.elapsed());
        let answer = tokio::select! {
            a = tokio::time::timeout(left, lease.conn.recv()) => a,
            _ = &mut killed => return Answer::Killed,
        };
        match answer {
            Ok(Ok(FromAgent::Result(r))) => Answer::Result(r),
            Ok(Ok(FromAgent::Fatal { message })) => {
                Answer::Lost(format!("agent gave up: {message}"))
            }
            Ok(Ok(other)) => Answer::Lost(format!("unexpected agent message {other:?}")),
            Ok(Err(e)) => Answer::Lost(e.to_string()),
            Err(_) => Answer::Lost(format!(
                "agent did not answer within {} ms",
                wait.as_millis()
            )),
        }
    }

    /// Judge the agent's answer, put the sandbox back (or give it up) and
    /// report. The worker is already dead (the agent kills it before
    /// answering); unmounting /fn and /tmp, verifying and freezing happen
    /// after the caller has its answer, before the sandbox is used again.
    fn finish(
        mut self,
        lease: Lease,
        start: StartKind,
        answer: InvokeResult,
        call: Option<SessionCall>,
    ) -> Result<Report, InvokeError> {
        let t = Instant::now();
        if answer.outcome == ember_proto::Outcome::SetupError {
            let why = answer.error.map(|e| e.message).unwrap_or_default();
            return Err(self.failed(&lease, Phase::Confine, why));
        }
        // Any limit hit discards the sandbox, so the counters are zero
        // before every invocation. Read for successful invocations too
        // (two small files, ~10 us): a handler that caught its failed fork
        // still ran into its limit, and the report says so.
        let hits = lease.limits.hits();
        let (outcome, limits_hit) = judge(&answer, &hits);
        let healthy = matches!(
            answer.outcome,
            ember_proto::Outcome::Ok
                | ember_proto::Outcome::HandlerError
                | ember_proto::Outcome::ResultTooLarge
        ) && hits == LimitHits::default();
        let mut report = self.report(&lease, start, outcome);
        if healthy && !self.throwaway {
            self.put_back(lease, start, call);
        } else {
            // A session's slot stays empty: the session ends.
            drop(lease);
        }
        self.timings.cleanup = t.elapsed().as_micros() as u64;
        self.timings.total = self.t0.elapsed().as_micros() as u64;
        report.timings_us = self.timings.clone();
        report.limits_hit = limits_hit;
        fill_from_answer(&mut report, answer);
        log_done(&report);
        match report.outcome {
            Outcome::Ok => Ok(report),
            _ => Err(InvokeError::Failed(Box::new(report))),
        }
    }

    /// After a healthy invocation: the sandbox goes back by the way its
    /// mode and start call for (see [`Return`]), off the caller's path.
    fn put_back(&self, lease: Lease, start: StartKind, call: Option<SessionCall>) {
        let key = self.func.binding_key();
        let (pool, mut sb) = lease.hand_back();
        if let Some(call) = call {
            call.kept.store(true, std::sync::atomic::Ordering::Release);
            call.session.call_answered();
            let back = super::back::back_to_session(self.daemon.clone(), pool, sb, call);
            tokio::spawn(back.in_current_span());
            return;
        }
        pool.mark_returning(&sb.id);
        let how = match (self.func.mode, start) {
            (Mode::Specialized, _) => {
                sb.bound = Some(key);
                Return::Keep
            }
            (Mode::Fork, StartKind::Warm) => Return::FreshScratch,
            // An adopted sandbox is someone else's container: it is never
            // bound (recycling it would end that container).
            (Mode::Fork, _) if self.zygote && !sb.external && pool.may_bind() => {
                Return::Bind(Box::new(self.bind_job(key, &sb)))
            }
            (Mode::Fork, _) => Return::Eject,
        };
        let back = return_when_idle(self.daemon.clone(), pool, sb, how);
        tokio::spawn(back.in_current_span());
    }

    fn bind_job(&self, key: String, sb: &ember_runtimes::Sandbox) -> BindJob {
        let func = &self.func;
        BindJob {
            key,
            digest: func.digest.clone(),
            req: BindRequest {
                function: func.name.clone(),
                handler: func.handler.clone(),
                profile: func.profile.clone(),
                nproc: (!sb.pids_limit_applies).then_some(func.limits.pids),
                timeout_ms: func.timeout_ms,
                max_output_bytes: func.limits.max_output_bytes as usize,
            },
        }
    }

    /// A report of what is known without the agent's result.
    fn report(&self, sb: &ember_runtimes::Sandbox, start: StartKind, outcome: Outcome) -> Report {
        let func = &self.func;
        Report {
            id: self.id.clone(),
            function: func.name.clone(),
            sandbox: sb.id.clone(),
            backend: crate::backend_of(sb),
            start,
            mode: self.mode(),
            profile: func.profile.clone(),
            outcome,
            limits_hit: Vec::new(),
            result: None,
            error: None,
            stdout: String::new(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            exit_code: None,
            signal: None,
            timings_us: self.timings.clone(),
            session: self.session_id.clone(),
            memory_mb: func.limits.memory_mb,
            pids: func.limits.pids,
        }
    }
}

/// The invocation's outcome and the limits it ran into: a cgroup OOM or
/// pids hit turns a failure into `oom` or `pids`.
fn judge(answer: &InvokeResult, hits: &LimitHits) -> (Outcome, Vec<LimitHit>) {
    use ember_proto::Outcome as Agent;
    let mut outcome = match answer.outcome {
        Agent::Ok => Outcome::Ok,
        Agent::HandlerError | Agent::SetupError => Outcome::HandlerError,
        Agent::Timeout => Outcome::Timeout,
        Agent::Crashed => Outcome::Crashed,
        Agent::ResultTooLarge => Outcome::ResultTooLarge,
    };
    let mut limits_hit = Vec::new();
    if hits.oom_kills > 0 {
        limits_hit.push(LimitHit::Oom);
        if answer.outcome != Agent::Ok {
            outcome = Outcome::Oom;
        }
    }
    if hits.pids_max > 0 || answer.pids_hit {
        limits_hit.push(LimitHit::Pids);
        let failed = matches!(
            answer.outcome,
            Agent::HandlerError | Agent::Crashed | Agent::Timeout
        );
        if failed && outcome != Outcome::Oom {
            outcome = Outcome::Pids;
        }
    }
    if answer.outcome == Agent::Timeout {
        limits_hit.push(LimitHit::Timeout);
    }
    if answer.stdout_truncated || answer.stderr_truncated {
        limits_hit.push(LimitHit::OutputTruncated);
    }
    if answer.outcome == Agent::ResultTooLarge {
        limits_hit.push(LimitHit::ResultTooLarge);
    }
    (outcome, limits_hit)
}

/// The handler's result, error and output into the report. A runner
/// shares its process with user code, which may write any bytes as its
/// result: one that is not JSON is the function's error.
fn fill_from_answer(report: &mut Report, answer: InvokeResult) {
    report.error = answer.error.map(|e| HandlerErrorInfo {
        kind: e.kind,
        message: e.message,
        traceback: e.traceback,
    });
    if let (ember_proto::Outcome::Ok, Some(text)) = (answer.outcome, answer.result) {
        match RawValue::from_string(text) {
            Ok(v) => report.result = Some(v),
            Err(e) => {
                report.outcome = Outcome::HandlerError;
                report.error = Some(HandlerErrorInfo {
                    kind: "InvalidResult".into(),
                    message: format!("the handler's result is not valid JSON: {e}"),
                    traceback: String::new(),
                });
            }
        }
    }
    report.stdout = answer.stdout;
    report.stderr = answer.stderr;
    report.stdout_truncated = answer.stdout_truncated;
    report.stderr_truncated = answer.stderr_truncated;
    report.exit_code = answer.exit_code;
    report.signal = answer.signal;
}

fn log_done(report: &Report) {
    let t = &report.timings_us;
    tracing::info!(
        outcome = report.outcome.as_str(),
        start = ?report.start,
        sandbox = %report.sandbox,
        total_us = t.total,
        queue_us = t.queue,
        thaw_us = t.thaw,
        inject_us = t.inject,
        run_us = t.run,
        cleanup_us = t.cleanup,
        "invocation done"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_proto::Outcome as Agent;

    fn answer(outcome: Agent) -> InvokeResult {
        InvokeResult {
            id: "i".into(),
            outcome,
            result: None,
            error: None,
            stdout: String::new(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            run_us: 0,
            confine_us: 0,
            exit_code: None,
            signal: None,
            pids_hit: false,
        }
    }

    #[test]
    fn limit_hits_name_the_outcome_of_a_failure_only() {
        let none = LimitHits::default();
        let oom = LimitHits {
            oom_kills: 1,
            ..none
        };
        let pids = LimitHits {
            pids_max: 1,
            ..none
        };
        assert_eq!(judge(&answer(Agent::Ok), &none), (Outcome::Ok, vec![]));
        assert_eq!(
            judge(&answer(Agent::Ok), &oom),
            (Outcome::Ok, vec![LimitHit::Oom])
        );
        assert_eq!(
            judge(&answer(Agent::Crashed), &oom),
            (Outcome::Oom, vec![LimitHit::Oom])
        );
        assert_eq!(
            judge(&answer(Agent::HandlerError), &pids),
            (Outcome::Pids, vec![LimitHit::Pids])
        );
        let both = LimitHits {
            oom_kills: 1,
            pids_max: 1,
        };
        assert_eq!(judge(&answer(Agent::Crashed), &both).0, Outcome::Oom);
        assert_eq!(
            judge(&answer(Agent::Timeout), &none),
            (Outcome::Timeout, vec![LimitHit::Timeout])
        );
        let mut truncated = answer(Agent::Ok);
        truncated.stderr_truncated = true;
        assert_eq!(judge(&truncated, &none).1, vec![LimitHit::OutputTruncated]);
        assert_eq!(
            judge(&answer(Agent::ResultTooLarge), &none),
            (Outcome::ResultTooLarge, vec![LimitHit::ResultTooLarge])
        );
    }

    /// A connection whose agent end is closed.
    fn closed_conn() -> ember_runtimes::AgentConn {
        let (ours, theirs) = tokio::io::duplex(64);
        drop(theirs);
        let (r, w) = tokio::io::split(ours);
        ember_runtimes::AgentConn::from_streams(
            "sb",
            Box::new(w),
            Box::new(r),
            Box::new(tokio::io::empty()),
        )
    }

    fn request(event: &str) -> ToAgent {
        ToAgent::Invoke(InvokeRequest {
            id: "i".into(),
            function: "f".into(),
            handler: "main.handler".into(),
            event: event.into(),
            timeout_ms: 1000,
            max_output_bytes: 1000,
            max_result_bytes: 1000,
            memory_limit_mb: 64,
            profile: "default".into(),
            mode: Mode::Fork,
            nproc: None,
        })
    }

    #[tokio::test]
    async fn a_request_the_agent_never_had_comes_back_for_another_sandbox() {
        let mut conn = closed_conn();
        let msg = request(r#"{"n": 1}"#);
        let e = conn.send(&msg).await.unwrap_err();
        match not_sent(e, msg) {
            Answer::Unsent { event, why } => {
                assert_eq!(event, r#"{"n": 1}"#);
                assert!(why.contains("agent is gone"), "{why}");
            }
            _ => panic!("a failed write is retried elsewhere"),
        }
    }

    #[test]
    fn a_request_that_could_not_be_framed_is_not_retried() {
        let e = AgentConnError::Frame(ember_proto::FrameError::TooLarge(1 << 40));
        assert!(matches!(not_sent(e, request("{}")), Answer::Lost(_)));
    }

    #[test]
    fn a_result_that_is_not_json_is_the_handlers_error() {
        let mut r = answer(Agent::Ok);
        r.result = Some("{not json".into());
        let mut report: Report = serde_json::from_value(serde_json::json!({
            "id": "i", "function": "f", "sandbox": "s", "backend": "runc",
            "start": "hot", "mode": "fork", "profile": "default", "outcome": "ok",
            "limits_hit": [], "stdout": "", "stderr": "", "stdout_truncated": false,
            "stderr_truncated": false, "timings_us": Timings::default(),
        }))
        .unwrap();
        fill_from_answer(&mut report, r);
        assert_eq!(report.outcome, Outcome::HandlerError);
        assert_eq!(report.error.unwrap().kind, "InvalidResult");
        assert!(report.result.is_none());
    }
}
