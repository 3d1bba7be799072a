//! The invocation path: pick a sandbox, thaw it, inject the code, run the
//! handler through the agent, eject, freeze, give the sandbox back, with a
//! timing for each phase.

use crate::daemon::{CodeHold, Daemon};
use crate::history::InvocationRecord;
use crate::pool::{PoolError, StartKind, Want};
use crate::registry::RegistryError;
use ember_proto::{
    BindReport, BindRequest, FromAgent, InitOutcome, InvokeRequest, Mode, Outcome, ToAgent,
};
use ember_runtimes::limits::{InvocationLimits, LimitHits};
use serde::Serialize;
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Extra time the daemon gives the agent past the function's timeout to
/// kill the worker and report, before it gives up on the whole sandbox.
const AGENT_GRACE: Duration = Duration::from_secs(5);

/// Per-phase timings of one invocation, in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    /// Waiting for a sandbox (excludes creating one).
    pub queue: u64,
    /// Creating a sandbox (cold starts only).
    pub create: u64,
    pub thaw: u64,
    pub inject: u64,
    /// From the request reaching the agent's pipe to its answer.
    pub run: u64,
    /// Part of `run`: the worker installing its profile's seccomp filters
    /// before user code runs.
    pub confine: u64,
    /// Cleanup the caller waited for. The worker is killed inside `run`;
    /// unmounting `/fn` and `/tmp`, verifying and freezing happen after the
    /// answer, before the sandbox is used again (logged as "sandbox
    /// returned" with `eject_us`).
    pub cleanup: u64,
    pub total: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HandlerErrorInfo {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    pub traceback: String,
}

/// Everything known about one invocation; the API's invoke answer.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub id: String,
    pub function: String,
    pub sandbox: String,
    /// Backend of that sandbox (`external` for an adopted one).
    pub backend: &'static str,
    pub start: StartKind,
    /// `fork` or `specialized`.
    pub mode: &'static str,
    /// Sandbox profile the worker ran under.
    pub profile: String,
    pub outcome: &'static str,
    /// Limits the invocation ran into: `oom`, `pids`, `timeout`,
    /// `output_truncated`, `result_too_large`.
    pub limits_hit: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<HandlerErrorInfo>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub timings_us: Timings,
    /// The limits in force, for the messages above.
    #[serde(skip)]
    pub memory_mb: u64,
    #[serde(skip)]
    pub pids: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("function {0:?} is not deployed")]
    UnknownFunction(String),
    #[error("event is not valid JSON: {0}")]
    BadEvent(String),
    #[error("event is {size} bytes, limit is {limit}")]
    EventTooLarge { size: usize, limit: usize },
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("sandbox {sandbox} failed during {phase}: {message}")]
    Sandbox {
        sandbox: String,
        phase: &'static str,
        message: String,
    },
    #[error("function {function:?} runs on {runtime} with backend {backend}, which this emberd does not run (start it with --backend)")]
    NoPool {
        function: String,
        runtime: String,
        backend: String,
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
    /// The handler ran but did not produce a result; the report says why.
    #[error("{}", describe(.0))]
    Failed(Box<Report>),
}

fn describe(r: &Report) -> String {
    match (r.outcome, &r.error) {
        ("timeout", _) => format!("function {:?} timed out", r.function),
        ("oom", _) => format!(
            "function {:?} ran out of memory and was killed (limit {} MiB)",
            r.function, r.memory_mb
        ),
        ("pids", _) => format!(
            "function {:?} hit its process limit ({} processes and threads)",
            r.function, r.pids
        ),
        ("killed", _) => format!(
            "invocation {} of {:?} was killed through the kill switch",
            r.id, r.function
        ),
        ("interrupted", _) => format!(
            "invocation {} of {:?} was interrupted: emberd shut down before it finished \
             (it ran past --drain-timeout-ms, or emberd got a second signal)",
            r.id, r.function
        ),
        (_, Some(e)) => format!("{}: {}", e.kind, e.message),
        ("crashed", None) => match (r.exit_code, r.signal) {
            (_, Some(sig)) => format!("worker of {:?} was killed by signal {sig}", r.function),
            (Some(code), _) => format!(
                "worker of {:?} exited with status {code} without a result",
                r.function
            ),
            _ => format!("worker of {:?} died without a result", r.function),
        },
        (o, None) => format!("function {:?} failed: {o}", r.function),
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
) -> Result<Report, InvokeError> {
    let id = invocation_id();
    let span = tracing::info_span!("invoke", invocation = %id, function = %name);
    run_detached(async move { invoke_inner(&daemon, id, &name, &body).await }.instrument(span))
        .await
}

/// Run an invocation as its own task, so a caller that goes away cannot
/// leave a sandbox half-used.
async fn run_detached(
    work: impl std::future::Future<Output = Result<Report, InvokeError>> + Send + 'static,
) -> Result<Report, InvokeError> {
    tokio::spawn(work).await.unwrap_or_else(|e| {
        Err(InvokeError::Sandbox {
            sandbox: String::new(),
            phase: "invoke",
            message: format!("invocation task failed: {e}"),
        })
    })
}

async fn invoke_inner(
    daemon: &Arc<Daemon>,
    id: String,
    name: &str,
    body: &[u8],
) -> Result<Report, InvokeError> {
    let event = check_event(body, daemon.cfg.max_event_bytes)?;
    let (func, code) = function_and_code(daemon, name)?;
    let event_limit = func.limits.max_event_bytes as usize;
    if body.len() > event_limit {
        return Err(InvokeError::EventTooLarge {
            size: body.len(),
            limit: event_limit,
        });
    }
    let started_at = crate::registry::now_ms();
    daemon.history.begin(InvocationRecord {
        mode: Some(func.mode.as_str().to_string()),
        ..InvocationRecord::started(&id, name, &func.digest, started_at)
    });
    let runtime = func.runtime.clone();
    let digest = func.digest.clone();
    let res = run_invocation(daemon, id.clone(), func, code, event, false).await;
    record(daemon, &id, name, &runtime, &digest, started_at, &res);
    res
}

/// The function's record and its code, held in the store for the whole
/// invocation: a delete or redeploy meanwhile removes the code only after.
fn function_and_code<'a>(
    daemon: &'a Daemon,
    name: &str,
) -> Result<(crate::registry::FunctionRecord, CodeHold<'a>), InvokeError> {
    let read = || {
        daemon
            .registry
            .get(name)?
            .ok_or_else(|| InvokeError::UnknownFunction(name.to_string()))
    };
    let pin = |f: &crate::registry::FunctionRecord| {
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
fn missing_code(daemon: &Daemon, func: &crate::registry::FunctionRecord) -> InvokeError {
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

/// Write the invocation's record and count it in the metrics.
fn record(
    daemon: &Daemon,
    id: &str,
    function: &str,
    runtime: &str,
    digest: &str,
    started_at: i64,
    res: &Result<Report, InvokeError>,
) {
    let report = match res {
        Ok(r) => Some(r),
        Err(InvokeError::Failed(r)) => Some(r.as_ref()),
        Err(_) => None,
    };
    let mut rec = InvocationRecord {
        finished_at: Some(crate::registry::now_ms()),
        ..InvocationRecord::started(id, function, digest, started_at)
    };
    match report {
        Some(r) => {
            let timings = serde_json::to_value(&r.timings_us).unwrap_or_default();
            let start = serde_json::to_value(r.start)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            daemon.metrics.timings(runtime, r.backend, &start, &timings);
            rec.sandbox = Some(r.sandbox.clone());
            rec.backend = Some(r.backend.to_string());
            rec.start = Some(start);
            rec.mode = Some(r.mode.to_string());
            rec.outcome = r.outcome.to_string();
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
                    daemon.metrics.sandbox_failure(phase);
                }
                rec.outcome = crate::api::invoke_error_code(e).1.to_string();
                rec.error = Some(e.to_string());
            }
        }
    }
    daemon.metrics.invocation(function, &rec.outcome);
    daemon.history.finish(rec);
}

/// Run `func` once in a throwaway sandbox, created for it and destroyed
/// after (`ember test`): the function need not be deployed.
pub async fn invoke_throwaway(
    daemon: Arc<Daemon>,
    func: crate::registry::FunctionRecord,
    code: ember_injector::Pin,
    event: String,
) -> Result<Report, InvokeError> {
    let id = invocation_id();
    let span = tracing::info_span!("test", invocation = %id, function = %func.name);
    run_detached(
        async move {
            let code = daemon.hold_code(code);
            run_invocation(&daemon, id, func, code, event, true).await
        }
        .instrument(span),
    )
    .await
}

/// The invocation proper: from taking a sandbox to giving it back.
/// `throwaway`: a sandbox of its own, not from the pool, destroyed after.
async fn run_invocation(
    daemon: &Arc<Daemon>,
    id: String,
    func: crate::registry::FunctionRecord,
    held: CodeHold<'_>,
    event: String,
    throwaway: bool,
) -> Result<Report, InvokeError> {
    let t0 = Instant::now();
    let name = func.name.as_str();
    // `held` (dropped on return) keeps this tree in the store meanwhile.
    let code = daemon.store.path(held.digest());
    let pool = daemon
        .pool(&func.runtime, func.backend.as_deref())
        .ok_or_else(|| InvokeError::NoPool {
            function: name.to_string(),
            runtime: func.runtime.clone(),
            backend: func
                .backend
                .clone()
                .unwrap_or_else(|| daemon.default_backend(&func.runtime).to_string()),
        })?;
    let mode = func.mode;
    // Bound sandboxes (specialized, or fork mode with a function zygote)
    // serve one deploy of the function: a redeploy never runs in a sandbox
    // that loaded the old code.
    let key = func.binding_key();
    let zygote = !throwaway && daemon.function_zygotes(&func) && daemon.zygotes.may_bind(&key);
    let want = match mode {
        Mode::Fork if zygote => Want::Bound {
            key: &key,
            spread: true,
        },
        Mode::Fork => Want::Fork,
        Mode::Specialized => Want::Bound {
            key: &key,
            spread: false,
        },
    };
    let mut timings = Timings::default();
    let (mut sb, start, waited) = if throwaway {
        pool.create_throwaway(name, &id).await?
    } else {
        pool.acquire(name, &id, want).await?
    };
    if start == StartKind::Cold {
        timings.create = sb.create_us;
        timings.queue = (waited.as_micros() as u64).saturating_sub(sb.create_us);
    } else {
        timings.queue = waited.as_micros() as u64;
    }
    let sandbox_id = sb.id.clone();
    let sb_backend = sb.backend;
    let fail = |phase: &'static str, message: String| InvokeError::Sandbox {
        sandbox: sandbox_id.clone(),
        phase,
        message,
    };

    // Thaw, if it was frozen: one that came back moments ago (and a cold
    // one) never was.
    let t = Instant::now();
    if sb.frozen {
        if let Err(e) = sb.freezer.thaw() {
            pool.release(sb, false);
            return Err(fail("thaw", e.to_string()));
        }
        sb.frozen = false;
    }
    timings.thaw = t.elapsed().as_micros() as u64;

    // This function's limits, written only where they differ from what the
    // sandbox's last invocation had.
    let want = InvocationLimits {
        memory_bytes: sb.baseline_memory + func.limits.memory_mb * 1024 * 1024,
        // The agent and the zygote count too.
        pids: sb.pids_limit_applies.then_some(func.limits.pids + 2),
        cpu_shares: func.limits.cpu_shares,
    };
    if sb.applied != Some(want) {
        let applied = tokio::task::block_in_place(|| sb.limits.apply(&want, sb.applied.as_ref()));
        if let Err(e) = applied {
            pool.release(sb, false);
            return Err(fail("limits", e.to_string()));
        }
        sb.applied = Some(want);
    }

    // Inject code at /fn and a fresh /tmp (a sandbox bound to this
    // function has both already).
    let t = Instant::now();
    if start != StartKind::Warm {
        let tmpfs_bytes = daemon.cfg.tmpfs_mb * 1024 * 1024;
        let injected = tokio::task::block_in_place(|| sb.code.inject(&code, tmpfs_bytes));
        if let Err(e) = injected {
            let _ = tokio::task::block_in_place(|| sb.code.eject());
            pool.release(sb, false);
            return Err(fail("inject", e.to_string()));
        }
        timings.inject = t.elapsed().as_micros() as u64;
    }

    // Run.
    let t = Instant::now();
    let req = InvokeRequest {
        id: id.clone(),
        function: name.to_string(),
        handler: func.handler.clone(),
        event,
        timeout_ms: func.timeout_ms,
        max_output_bytes: func.limits.max_output_bytes as usize,
        max_result_bytes: daemon.cfg.max_result_bytes,
        memory_limit_mb: func.limits.memory_mb,
        profile: func.profile.clone(),
        mode,
        // Where the cgroup cannot count the function's processes (gVisor).
        nproc: (!sb.pids_limit_applies).then_some(func.limits.pids),
    };
    let wait = Duration::from_millis(func.timeout_ms) + AGENT_GRACE;
    // What is known for a report if the agent's result never comes.
    let bare = BareReport {
        id: &id,
        func: &func,
        sandbox: &sandbox_id,
        backend: sb_backend,
        start,
    };
    let kill = pool.kill_signal(&sb.id).unwrap_or_default();
    let answer = async {
        sb.conn.send(&ToAgent::Invoke(req)).await?;
        sb.conn.recv().await
    };
    let answer = tokio::select! {
        a = tokio::time::timeout(wait, answer) => Some(a),
        _ = kill.notified() => None,
    };
    let Some(answer) = answer else {
        // The kill switch: the sandbox (worker and all) is destroyed; a
        // fresh one replaces it.
        timings.run = t.elapsed().as_micros() as u64;
        pool.release(sb, false);
        timings.total = t0.elapsed().as_micros() as u64;
        // Shutdown past its drain timeout uses the same switch.
        let outcome = if pool.is_closing() {
            "interrupted"
        } else {
            "killed"
        };
        tracing::info!(sandbox = %sandbox_id, outcome, "invocation ended through the kill switch");
        return Err(InvokeError::Failed(Box::new(bare.report(outcome, timings))));
    };
    let lost = match answer {
        Ok(Ok(FromAgent::Result(r))) => Ok(r),
        Ok(Ok(FromAgent::Fatal { message })) => Err(format!("agent gave up: {message}")),
        Ok(Ok(other)) => Err(format!("unexpected agent message {other:?}")),
        Ok(Err(message)) => Err(message),
        Err(_) => Err(format!(
            "agent did not answer within {} ms",
            wait.as_millis()
        )),
    };
    let answer = match lost {
        Ok(r) => r,
        Err(message) => {
            // A function that fills its memory (a /tmp of tmpfs pages
            // included) may take the zygote or the agent down with it:
            // that is its OOM, not a sandbox failure.
            let oom = sb.limits.hits().oom_kills > 0;
            pool.release(sb, false);
            if !oom {
                return Err(fail("run", message));
            }
            timings.run = t.elapsed().as_micros() as u64;
            timings.total = t0.elapsed().as_micros() as u64;
            tracing::info!(sandbox = %sandbox_id, "sandbox lost to the function's OOM: {message}");
            let mut report = bare.report("oom", timings);
            report.limits_hit.push("oom");
            return Err(InvokeError::Failed(Box::new(report)));
        }
    };
    timings.run = t.elapsed().as_micros() as u64;
    timings.confine = answer.confine_us;

    // The worker is already dead (the agent kills it before answering).
    // Unmounting /fn and /tmp, verifying, and freezing happen after the
    // caller has its answer and before the sandbox can be used again:
    // unmounting costs an RCU grace period per mount, which the caller
    // should not wait for.
    let t = Instant::now();
    if answer.outcome == Outcome::SetupError {
        pool.release(sb, false);
        let why = answer.error.map(|e| e.message).unwrap_or_default();
        return Err(fail("confine", why));
    }
    // Did it run into a cgroup limit? Any hit discards the sandbox, so the
    // counters are zero before every invocation. Read for successful
    // invocations too (two small files, ~10 us): a handler that caught its
    // failed fork still ran into its limit, and the report says so.
    let hits = sb.limits.hits();
    let mut outcome = answer.outcome.as_str();
    let mut limits_hit = Vec::new();
    if hits.oom_kills > 0 {
        limits_hit.push("oom");
        if answer.outcome != Outcome::Ok {
            outcome = "oom";
        }
    }
    if hits.pids_max > 0 || answer.pids_hit {
        limits_hit.push("pids");
        if matches!(
            answer.outcome,
            Outcome::HandlerError | Outcome::Crashed | Outcome::Timeout
        ) && outcome != "oom"
        {
            outcome = "pids";
        }
    }
    if answer.outcome == Outcome::Timeout {
        limits_hit.push("timeout");
    }
    if answer.stdout_truncated || answer.stderr_truncated {
        limits_hit.push("output_truncated");
    }
    if answer.outcome == Outcome::ResultTooLarge {
        limits_hit.push("result_too_large");
    }
    let healthy = matches!(
        answer.outcome,
        Outcome::Ok | Outcome::HandlerError | Outcome::ResultTooLarge
    ) && hits == LimitHits::default();
    if healthy && !throwaway {
        pool.mark_returning(&sb.id);
        let how = match (mode, start) {
            (Mode::Specialized, _) => {
                sb.bound = Some(key.clone());
                Return::Keep
            }
            (Mode::Fork, StartKind::Warm) => Return::FreshScratch,
            // An adopted sandbox is someone else's container: it is
            // never bound (recycling it would end that container).
            (Mode::Fork, _) if zygote && !sb.external && pool.may_bind() => {
                Return::Bind(Box::new(BindJob {
                    key: key.clone(),
                    digest: func.digest.clone(),
                    req: BindRequest {
                        function: name.to_string(),
                        handler: func.handler.clone(),
                        profile: func.profile.clone(),
                        nproc: (!sb.pids_limit_applies).then_some(func.limits.pids),
                        timeout_ms: func.timeout_ms,
                        max_output_bytes: func.limits.max_output_bytes as usize,
                    },
                }))
            }
            (Mode::Fork, _) => Return::Eject,
        };
        let back = return_when_idle(daemon.clone(), pool.clone(), sb, how);
        tokio::spawn(back.in_current_span());
    } else {
        pool.release(sb, false);
    }
    timings.cleanup = t.elapsed().as_micros() as u64;
    timings.total = t0.elapsed().as_micros() as u64;

    // A runner shares its process with user code, which may write any
    // bytes as its result: one that is not JSON is the function's error.
    let mut error = answer.error.map(|e| HandlerErrorInfo {
        kind: e.kind,
        message: e.message,
        traceback: e.traceback,
    });
    let result = match (&answer.outcome, answer.result) {
        (Outcome::Ok, Some(text)) => match RawValue::from_string(text) {
            Ok(v) => Some(v),
            Err(e) => {
                outcome = "handler_error";
                error = Some(HandlerErrorInfo {
                    kind: "InvalidResult".into(),
                    message: format!("the handler's result is not valid JSON: {e}"),
                    traceback: String::new(),
                });
                None
            }
        },
        _ => None,
    };
    let report = Report {
        id,
        function: name.to_string(),
        sandbox: sandbox_id.clone(),
        backend: sb_backend,
        start,
        mode: mode.as_str(),
        profile: func.profile.clone(),
        outcome,
        limits_hit,
        result,
        error,
        stdout: answer.stdout,
        stderr: answer.stderr,
        stdout_truncated: answer.stdout_truncated,
        stderr_truncated: answer.stderr_truncated,
        exit_code: answer.exit_code,
        signal: answer.signal,
        timings_us: timings,
        memory_mb: func.limits.memory_mb,
        pids: func.limits.pids,
    };
    tracing::info!(
        outcome = report.outcome,
        start = ?report.start,
        sandbox = %report.sandbox,
        total_us = report.timings_us.total,
        queue_us = report.timings_us.queue,
        thaw_us = report.timings_us.thaw,
        inject_us = report.timings_us.inject,
        run_us = report.timings_us.run,
        cleanup_us = report.timings_us.cleanup,
        "invocation done"
    );
    if report.outcome == "ok" {
        Ok(report)
    } else {
        Err(InvokeError::Failed(Box::new(report)))
    }
}

/// What is known of an invocation that ended without the agent's result
/// (the kill switch, a lost sandbox): enough for its report.
struct BareReport<'a> {
    id: &'a str,
    func: &'a crate::registry::FunctionRecord,
    sandbox: &'a str,
    backend: &'static str,
    start: StartKind,
}

impl BareReport<'_> {
    fn report(&self, outcome: &'static str, timings_us: Timings) -> Report {
        Report {
            id: self.id.to_string(),
            function: self.func.name.clone(),
            sandbox: self.sandbox.to_string(),
            backend: self.backend,
            start: self.start,
            mode: self.func.mode.as_str(),
            profile: self.func.profile.clone(),
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
            timings_us,
            memory_mb: self.func.limits.memory_mb,
            pids: self.func.limits.pids,
        }
    }
}

/// Ask the agent to check the sandbox is back to its clean state (mounts
/// are gone by now) and read its answer.
async fn check(sb: &mut ember_runtimes::Sandbox) -> Result<FromAgent, String> {
    sb.conn.send(&ToAgent::Check).await?;
    sb.conn.recv().await
}

/// How long a sandbox may take to warm its next worker.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// What becomes of a sandbox after a healthy invocation.
enum Return {
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

struct BindJob {
    key: String,
    digest: String,
    req: BindRequest,
}

/// Put the sandbox back in shape for its next invocation (see [`Return`]),
/// wait for the agent's `Idle`, and give it back to the pool (which freezes
/// it once it sits idle); any surprise discards it.
async fn return_when_idle(
    daemon: Arc<Daemon>,
    pool: Arc<crate::pool::Pool>,
    mut sb: ember_runtimes::Sandbox,
    how: Return,
) {
    let t = Instant::now();
    let tmpfs_bytes = daemon.cfg.tmpfs_mb * 1024 * 1024;
    let ejected = match &how {
        Return::Eject => tokio::task::block_in_place(|| sb.code.eject()),
        Return::Keep => Ok(()),
        Return::FreshScratch => tokio::task::block_in_place(|| sb.code.fresh_scratch(tmpfs_bytes)),
        Return::Bind(_) => tokio::task::block_in_place(|| sb.code.drop_scratch()),
    };
    let eject_us = t.elapsed().as_micros() as u64;
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
        Ok(()) => match tokio::time::timeout(IDLE_TIMEOUT, check(&mut sb)).await {
            Ok(Ok(FromAgent::Idle { problems, .. })) if !problems.is_empty() => {
                tracing::warn!(sandbox = %sb.id, ?problems, "sandbox not clean after invocation; discarding");
                false
            }
            Ok(Ok(FromAgent::Idle { .. })) if sb.limits.hits() != LimitHits::default() => {
                tracing::info!(sandbox = %sb.id, "invocation ran into a cgroup limit; discarding sandbox");
                false
            }
            // Frozen by the pool once it has sat idle a moment.
            Ok(Ok(FromAgent::Idle { strays_killed, .. })) => {
                if strays_killed > 0 {
                    tracing::info!(sandbox = %sb.id, strays_killed, "killed processes the invocation left behind");
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
        },
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

/// Bind a sandbox that just served `job`'s function by hot swap: its
/// spare imports the handler once and becomes the function's zygote.
/// Returns whether the sandbox can serve again (bound). The outcome goes
/// to the zygote book, the init's output and outcome to the function's
/// logs.
async fn bind(
    daemon: &Arc<Daemon>,
    sb: &mut ember_runtimes::Sandbox,
    job: BindJob,
    tmpfs_bytes: u64,
) -> bool {
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
        backend: sb.backend,
        started_at,
    };
    rec.write(daemon, &report);
    healthy
}

/// Send `Bind` and read the agent's report; a lost agent is a crashed
/// init. `None`: the agent answered something else (the sandbox goes).
async fn ask_bind(sb: &mut ember_runtimes::Sandbox, req: BindRequest) -> Option<BindReport> {
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
    backend: &'static str,
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
                &invocation_id(),
                self.function,
                self.digest,
                self.started_at,
            )
        };
        daemon.history.finish(rec);
    }
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
