//! Ending a session: out of the book, its sandbox destroyed, its code let
//! go, the end recorded. Apart from the session's calls so the way back
//! after a call (`back`) can end a session without depending on them.

use crate::daemon::Daemon;
use ember_api::{SessionEnd, SessionInfo};

/// End session `id` for `why`: take it out of the book, stop a call that
/// runs if the session is being closed (any other end lets that call
/// finish, as a pause or a drain lets invocations finish), destroy its
/// sandbox, record how it ended. `None`: it was not open (another ender
/// came first).
pub async fn end(
    daemon: &Daemon,
    id: &str,
    why: SessionEnd,
    message: String,
) -> Option<SessionInfo> {
    let s = daemon.sessions.remove(id)?;
    if why == SessionEnd::Closed && s.busy() {
        if let Some(kill) = s.pool.kill_signal(&s.sandbox) {
            kill.notify_one();
        }
    }
    let sb = s.slot.clone().lock_owned().await.take();
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
