//! Sessions on the invocation path: open one (a generic sandbox from its
//! function's pool, given the function's code and a `/tmp` of its own),
//! run its calls one at a time in that sandbox, end it (destroying the
//! sandbox), and the sweeper that ends idle and old sessions. The book of
//! open sessions and its policy are [`crate::sessions`]'.

use super::lease::SessionCall;
use super::run;
pub use super::session_end::{end, end_all, end_all_now};
use super::{
    check_event, function_and_code, invocation_id, record, run_detached, run_recorded, Done,
    InvocationError, InvokeError,
};
use crate::daemon::Daemon;
use crate::history::InvocationRecord;
use crate::sessions::Session;
use ember_api::{Report, SessionEnd, SessionInfo};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// How often the sweeper looks for idle and old sessions.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// A session id: 128 random bits in hex. It is all a caller needs to use
/// the session, so it must not be guessable.
fn session_id() -> Result<String, InvokeError> {
    let mut bytes = [0u8; 16];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| InvokeError::Sandbox {
            sandbox: String::new(),
            phase: super::Phase::Invoke,
            message: format!("reading /dev/urandom for a session id: {e}"),
        })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Open a session of function `name`. Runs as its own task: a client that
/// hangs up cannot leave a sandbox half-given.
pub async fn open(daemon: Arc<Daemon>, name: String) -> Result<SessionInfo, InvokeError> {
    let span = tracing::info_span!("session_open", function = %name);
    let work = async move { open_inner(&daemon, &name).await }.instrument(span);
    run_detached("session open", work).await
}

async fn open_inner(daemon: &Arc<Daemon>, name: &str) -> Result<SessionInfo, InvokeError> {
    let t0 = Instant::now();
    let (func, code) = function_and_code(daemon, name)?;
    daemon
        .check_not_paused(&func)
        .map_err(|e| super::refused(daemon, name, e))?;
    let place = daemon.sessions.reserve(&func).inspect_err(|_| {
        daemon
            .metrics
            .refused(name, ember_api::ErrorCode::SessionLimit.as_str());
    })?;
    let id = session_id()?;
    let path = daemon.store.path(code.digest());
    let (lease, start, timings) =
        run::open_session_sandbox(daemon, &id, func.clone(), &path).await?;
    let (pool, sb) = lease.hand_back();
    pool.give_to_session(&sb.id, &id);
    let policy = daemon.sessions.policy(&func);
    let session = Arc::new(Session::new(
        id.clone(),
        func,
        pool,
        sb,
        code.into_pin(),
        policy,
    ));
    let info = session.info();
    if let Err(e) = daemon.registry.session_opened(&info) {
        // Not recorded: it could not be reported after a restart.
        let sb = session.slot.lock().await.take();
        if let Some(sb) = sb {
            session.pool.release(sb, false);
        }
        if let Some(pin) = session.take_pin() {
            daemon.release_code(pin);
        }
        return Err(e.into());
    }
    daemon.sessions.opened(place, session);
    daemon.metrics.session_opened(name);
    tracing::info!(
        session = %id,
        sandbox = info.sandbox.as_deref().unwrap_or(""),
        start = start.as_str(),
        open_us = t0.elapsed().as_micros() as u64,
        queue_us = timings.queue,
        inject_us = timings.inject,
        "session opened"
    );
    Ok(info)
}

/// The open session `id`, or why there is none: ended (its reason, from
/// the registry) or never known.
fn lookup(daemon: &Daemon, id: &str) -> Result<Arc<Session>, InvokeError> {
    if let Some(s) = daemon.sessions.get(id) {
        return Ok(s);
    }
    Err(gone(daemon, id))
}

/// Why session `id` is not open.
fn gone(daemon: &Daemon, id: &str) -> InvokeError {
    match daemon.registry.session(id) {
        Ok(Some(s)) if !s.open => InvokeError::SessionEnded {
            session: id.to_string(),
            reason: s.end_reason.unwrap_or(SessionEnd::Closed),
            message: s.end_message.unwrap_or_default(),
        },
        // Open in the registry but not in the book: ending right now.
        Ok(Some(_)) => InvokeError::SessionGone {
            session: id.to_string(),
        },
        Ok(None) => InvokeError::SessionNotFound(id.to_string()),
        Err(e) => e.into(),
    }
}

/// Close session `id` (`DELETE /v1/sessions/{id}`): its ended record, or
/// why it was not open (ended before, or never known).
pub async fn close(daemon: &Daemon, id: &str) -> Result<SessionInfo, InvokeError> {
    let message = "closed by DELETE /v1/sessions/{id}".to_string();
    end(daemon, id, SessionEnd::Closed, message)
        .await
        .ok_or_else(|| gone(daemon, id))
}

/// Session `id`, open or ended.
pub fn info(daemon: &Daemon, id: &str) -> Result<SessionInfo, InvokeError> {
    if let Some(s) = daemon.sessions.get(id) {
        return Ok(s.info());
    }
    match daemon.registry.session(id)? {
        Some(s) => Ok(s),
        None => Err(InvokeError::SessionNotFound(id.to_string())),
    }
}

/// Open sessions (of `function`), then with `ended` the newest ended ones.
pub fn list(
    daemon: &Daemon,
    function: Option<&str>,
    ended: bool,
) -> Result<Vec<SessionInfo>, InvokeError> {
    let mut v: Vec<SessionInfo> = daemon
        .sessions
        .list(function)
        .iter()
        .map(|s| s.info())
        .collect();
    if ended {
        v.extend(daemon.registry.ended_sessions(function, 100)?);
    }
    Ok(v)
}

/// One call of session `session`: the event goes to the session's runner,
/// in the session's sandbox. Runs as its own task.
pub async fn invoke(
    daemon: Arc<Daemon>,
    session: String,
    body: bytes::Bytes,
) -> Result<Report, InvocationError> {
    let id = invocation_id();
    let span = tracing::info_span!("session_call", invocation = %id, session = %session);
    run_recorded(id, |id, recorded| {
        async move { call(&daemon, id, &session, &body, &recorded).await }.instrument(span)
    })
    .await
}

async fn call(
    daemon: &Arc<Daemon>,
    id: String,
    session_id: &str,
    body: &[u8],
    recorded: &AtomicBool,
) -> Result<Report, InvokeError> {
    let session = lookup(daemon, session_id)?;
    let func = &session.func;
    let limit = daemon
        .settings
        .max_event_bytes
        .min(func.limits.max_event_bytes as usize);
    let event = check_event(body, limit)?;
    if let Some(current) = daemon.registry.get(&func.name)? {
        daemon
            .check_not_paused(&current)
            .map_err(|e| super::refused(daemon, &func.name, e))?;
    }
    let wait = daemon.settings.pools.queue_timeout_ms;
    let slot = tokio::time::timeout(
        Duration::from_millis(wait),
        session.slot.clone().lock_owned(),
    )
    .await
    .map_err(|_| InvokeError::SessionBusy {
        session: session_id.to_string(),
        waited_ms: wait,
    })?;
    if slot.is_none() {
        // Ended while this call waited for it.
        return Err(gone(daemon, session_id));
    }
    let started_at = crate::registry::now_ms();
    let begun = daemon.history.begin(InvocationRecord {
        mode: Some(func.mode.as_str().to_string()),
        session: Some(session_id.to_string()),
        ..InvocationRecord::started(&id, &func.name, &func.digest, started_at)
    });
    if let Err(e) = begun {
        return Err(super::refused(daemon, &func.name, e.into()));
    }
    recorded.store(true, Ordering::Release);
    let first = session.call_begins(&id) == 0;
    let kept = Arc::new(AtomicBool::new(false));
    let call = SessionCall {
        session: session.clone(),
        slot,
        kept: kept.clone(),
    };
    let res = run::run_session_call(daemon, id.clone(), call, event, first).await;
    let done = Done {
        id: &id,
        function: &func.name,
        runtime: func.runtime,
        digest: &func.digest,
        started_at,
        session: Some(session_id),
    };
    record(daemon, &done, &res);
    if !kept.load(Ordering::Acquire) {
        // Its sandbox is gone with the call: so is the session's state.
        session.call_ends();
        let why = match &res {
            Ok(_) => format!("call {id} left its sandbox unusable"),
            Err(e) => format!("call {id} failed: {e}"),
        };
        let (daemon, sid) = (daemon.clone(), session_id.to_string());
        tokio::spawn(async move { end(&daemon, &sid, SessionEnd::Failed, why).await });
    }
    res
}

/// End sessions idle past their timeout or open past their lifetime, every
/// [`SWEEP_EVERY`], until emberd shuts down.
pub async fn sweep(daemon: Weak<Daemon>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(d) = daemon.upgrade() else { return };
        if d.draining() {
            return;
        }
        for (id, why) in d.sessions.expired(Instant::now()) {
            let Some(s) = d.sessions.get(&id) else {
                continue;
            };
            let message = match why {
                SessionEnd::Lifetime => format!(
                    "open for its maximum lifetime of {} s",
                    s.lifetime.as_secs()
                ),
                _ => format!("unused for its idle timeout of {} s", s.idle.as_secs()),
            };
            let d = d.clone();
            tokio::spawn(async move { end(&d, &id, why, message).await });
        }
    }
}
