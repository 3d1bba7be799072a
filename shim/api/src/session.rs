//! Sessions: a warm sandbox bound to one function and one session alone,
//! keeping the handler's state between the session's calls, as
//! `POST /v1/functions/{name}/sessions` opens it and `GET /v1/sessions`
//! shows it.

use serde::{Deserialize, Serialize};

/// A function's session settings, from its deploy. Absent fields take
/// emberd's defaults (`--session-idle-s`, `--session-lifetime-s`) and
/// only the daemon-wide limit (`--max-sessions`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(default)]
pub struct SessionPolicy {
    /// A session unused this long is ended (`idle`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_idle_s: Option<u64>,
    /// A session is ended this long after it opened, used or not
    /// (`lifetime`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_lifetime_s: Option<u64>,
    /// Most sessions of the function open at once (429 `session_limit`
    /// past it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<u32>,
}

impl SessionPolicy {
    pub fn is_unset(&self) -> bool {
        *self == SessionPolicy::default()
    }
}

/// Why a session ended: a closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionEnd {
    /// `DELETE /v1/sessions/{id}`.
    Closed,
    /// Unused for its idle timeout.
    Idle,
    /// Open for its maximum lifetime.
    Lifetime,
    /// A call crashed, timed out, ran into a limit, or its sandbox failed:
    /// the session's state is gone with its sandbox.
    Failed,
    /// Its function was paused.
    FunctionPaused,
    /// Its function was deleted.
    FunctionDeleted,
    /// emberd shut down.
    Shutdown,
    /// emberd stopped without a shutdown (killed, crashed) while it was
    /// open; found at the next start.
    DaemonRestart,
}

impl SessionEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionEnd::Closed => "closed",
            SessionEnd::Idle => "idle",
            SessionEnd::Lifetime => "lifetime",
            SessionEnd::Failed => "failed",
            SessionEnd::FunctionPaused => "function_paused",
            SessionEnd::FunctionDeleted => "function_deleted",
            SessionEnd::Shutdown => "shutdown",
            SessionEnd::DaemonRestart => "daemon_restart",
        }
    }

    pub const ALL: [SessionEnd; 8] = [
        SessionEnd::Closed,
        SessionEnd::Idle,
        SessionEnd::Lifetime,
        SessionEnd::Failed,
        SessionEnd::FunctionPaused,
        SessionEnd::FunctionDeleted,
        SessionEnd::Shutdown,
        SessionEnd::DaemonRestart,
    ];

    pub fn by_name(s: &str) -> Option<SessionEnd> {
        SessionEnd::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

impl std::fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One session, open or ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionInfo {
    pub id: String,
    pub function: String,
    /// Code digest the session runs (the deploy it opened on).
    pub digest: String,
    /// Its sandbox, while open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    pub open: bool,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds of the last call's end (`created_at` before the
    /// first).
    pub last_used_at: i64,
    pub invocations: u64,
    /// A call is running.
    #[serde(default)]
    pub busy: bool,
    /// Memory its sandbox's cgroup uses now, while open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    pub idle_timeout_s: u64,
    pub max_lifetime_s: u64,
    /// Unix milliseconds at which the sweeper ends it if unused (open
    /// sessions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<SessionEnd>,
    /// What ended it, in words (the failed call's id and outcome, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_message: Option<String>,
}

/// `GET /v1/sessions`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionInfo>,
}

/// `?function=&ended=` of `GET /v1/sessions`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SessionQuery {
    /// Only this function's sessions.
    pub function: Option<String>,
    /// `true`: also the most recently ended sessions (newest first, at
    /// most 100), from the registry.
    pub ended: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_reasons_round_trip_by_name_and_in_json() {
        for e in SessionEnd::ALL {
            assert_eq!(SessionEnd::by_name(e.as_str()), Some(e));
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(json, format!("\"{}\"", e.as_str()));
        }
        assert_eq!(SessionEnd::by_name("nope"), None);
    }

    #[test]
    fn an_unset_policy_serializes_to_nothing() {
        let p = SessionPolicy::default();
        assert!(p.is_unset());
        assert_eq!(serde_json::to_string(&p).unwrap(), "{}");
        let p: SessionPolicy = serde_json::from_str(r#"{"max_sessions":3}"#).unwrap();
        assert_eq!(p.max_sessions, Some(3));
        assert!(!p.is_unset());
    }
}
