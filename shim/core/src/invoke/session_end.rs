//! Ending a session: out of the book, its sandbox destroyed, its code let
//! go, the end recorded. Apart from the session's calls so the way back
//! after a call (`back`) can end a session without depending on them.

use crate::daemon::Daemon;
use ember_api::{SessionEnd, SessionInfo};

/// What becomes of a call running when its session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunningCall {
    /// It finishes first, as a pause or a drain lets invocations finish.
    Finishes,
    /// It is stopped (a close; a shutdown past its drain).
    Stopped,
}

/// End session `id` for `why`: take it out of the book, stop a call that
/// runs if the session is being closed (any other end lets that call
/// finish), destroy its sandbox, record how it ended. `None`: it was not
/// open (another ender came first).
pub async fn end(
    daemon: &Daemon,
    id: &str,
    why: SessionEnd,
    message: String,
) -> Option<SessionInfo> {
    let running = if why == SessionEnd::Closed {
        RunningCall::Stopped
    } else {
        RunningCall::Finishes
    };
    end_with(daemon, id, why, message, running).await
}

/// [`end`], with the running call's fate chosen.
async fn end_with(
    daemon: &Daemon,
    id: &str,
    why: SessionEnd,
    message: String,
    running: RunningCall,
) -> Option<SessionInfo> {
    let (s, mut slot) = match running {
        // Out of the book first: the call stopped then finds its session
        // ended for `why`, and does not end it as `failed` instead.
        RunningCall::Stopped => {
            let s = daemon.sessions.remove(id)?;
            let _ = s.kill_call();
            let slot = s.slot.clone().lock_owned().await;
            (s, slot)
        }
        // In the book while the call finishes: if this wait is given up
        // (a drain that timed out), the session is still there to end.
        RunningCall::Finishes => {
            let slot = daemon.sessions.get(id)?.slot.clone().lock_owned().await;
            (daemon.sessions.remove(id)?, slot)
        }
    };
    let sb = slot.take();
    drop(slot);
    if let Some(sb) = sb {
        s.pool.release(sb, false);
    }
    if let Some(pin) = s.take_pin() {
        daemon.release_code(pin);
    }
    let mut info = s.info();
    info.open = false;
    info.busy = false;
    info.memory_bytes = None;
    info.expires_at = None;
    info.ended_at = Some(crate::registry::now_ms());
    info.end_reason = Some(why);
    info.end_message = Some(message);
    if let Err(e) = daemon.registry.session_ended(&info) {
        tracing::warn!(session = id, "recording the session's end: {e}");
    }
    daemon.metrics.session_ended(&info.function, why.as_str());
    tracing::info!(
        session = id,
        function = %info.function,
        reason = why.as_str(),
        invocations = info.invocations,
        "session ended: {}",
        info.end_message.as_deref().unwrap_or("")
    );
    Some(info)
}

/// End every open session (of `function`) for `why`.
pub async fn end_all(daemon: &Daemon, function: Option<&str>, why: SessionEnd, message: &str) {
    for s in daemon.sessions.list(function) {
        end(daemon, &s.id, why, message.to_string()).await;
    }
}

/// End every open session for `why`, stopping their running calls (a
/// shutdown whose drain is over).
pub async fn end_all_now(daemon: &Daemon, why: SessionEnd, message: &str) {
    for s in daemon.sessions.list(None) {
        let message = message.to_string();
        end_with(daemon, &s.id, why, message, RunningCall::Stopped).await;
    }
}
