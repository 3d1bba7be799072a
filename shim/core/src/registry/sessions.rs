//! Sessions as the registry keeps them: one row per session, written when
//! it opens and when it ends, so a session open when emberd died is found
//! at the next start and reported as ended, never silently lost.

use super::{Registry, RegistryError};
use ember_api::{SessionEnd, SessionInfo};
use rusqlite::{params, OptionalExtension};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    id             TEXT PRIMARY KEY,
    function       TEXT NOT NULL,
    digest         TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    last_used_at   INTEGER NOT NULL,
    invocations    INTEGER NOT NULL DEFAULT 0,
    idle_timeout_s INTEGER NOT NULL,
    max_lifetime_s INTEGER NOT NULL,
    ended_at       INTEGER,
    end_reason     TEXT,
    end_message    TEXT
);
CREATE INDEX IF NOT EXISTS sessions_by_end ON sessions (ended_at);
";

/// Ended sessions kept; older ones are pruned as new ones end.
const KEEP_ENDED: i64 = 10_000;

const COLUMNS: &str = "id, function, digest, created_at, last_used_at, invocations, \
     idle_timeout_s, max_lifetime_s, ended_at, end_reason, end_message";

impl Registry {
    /// Record a session that just opened.
    pub fn session_opened(&self, s: &SessionInfo) -> Result<(), RegistryError> {
        self.with(|c| {
            c.execute(
                &format!(
                    "INSERT OR REPLACE INTO sessions ({COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, NULL, NULL)"
                ),
                params![
                    s.id,
                    s.function,
                    s.digest,
                    s.created_at,
                    s.last_used_at,
                    s.invocations as i64,
                    s.idle_timeout_s as i64,
                    s.max_lifetime_s as i64,
                ],
            )
        })
        .map(|_| ())
    }

    /// Record how a session ended (its last use and calls with it), and
    /// prune the oldest ended sessions past [`KEEP_ENDED`].
    pub fn session_ended(&self, s: &SessionInfo) -> Result<(), RegistryError> {
        self.with(|c| {
            c.execute(
                "UPDATE sessions SET last_used_at = ?2, invocations = ?3, ended_at = ?4, \
                 end_reason = ?5, end_message = ?6 WHERE id = ?1",
                params![
                    s.id,
                    s.last_used_at,
                    s.invocations as i64,
                    s.ended_at,
                    s.end_reason.map(SessionEnd::as_str),
                    s.end_message,
                ],
            )?;
            c.execute(
                "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions \
                 WHERE ended_at IS NOT NULL ORDER BY ended_at DESC LIMIT -1 OFFSET ?1)",
                params![KEEP_ENDED],
            )
        })
        .map(|_| ())
    }

    /// At start: the sessions a previous emberd left open (it died without
    /// ending them) are ended now, as `daemon_restart`. Returns how many.
    pub fn end_sessions_left_open(&self, now_ms: i64) -> Result<usize, RegistryError> {
        self.with(|c| {
            c.execute(
                "UPDATE sessions SET ended_at = ?1, end_reason = ?2, end_message = ?3 \
                 WHERE ended_at IS NULL",
                params![
                    now_ms,
                    SessionEnd::DaemonRestart.as_str(),
                    "emberd stopped while the session was open; its state is gone",
                ],
            )
        })
    }

    /// One session as last recorded.
    pub fn session(&self, id: &str) -> Result<Option<SessionInfo>, RegistryError> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM sessions WHERE id = ?1"),
                params![id],
                row_to_session,
            )
            .optional()
        })
    }

    /// The newest `limit` ended sessions (of `function`), newest first.
    pub fn ended_sessions(
        &self,
        function: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SessionInfo>, RegistryError> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM sessions WHERE ended_at IS NOT NULL \
                 AND (?1 IS NULL OR function = ?1) ORDER BY ended_at DESC, rowid DESC LIMIT ?2"
            ))?;
            let rows = st.query_map(params![function, limit as i64], row_to_session)?;
            rows.collect()
        })
    }
}

fn row_to_session(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionInfo> {
    let ended_at: Option<i64> = r.get(8)?;
    Ok(SessionInfo {
        id: r.get(0)?,
        function: r.get(1)?,
        digest: r.get(2)?,
        sandbox: None,
        open: ended_at.is_none(),
        created_at: r.get(3)?,
        last_used_at: r.get(4)?,
        invocations: r.get::<_, i64>(5)? as u64,
        busy: false,
        memory_bytes: None,
        idle_timeout_s: r.get::<_, i64>(6)? as u64,
        max_lifetime_s: r.get::<_, i64>(7)? as u64,
        expires_at: None,
        ended_at,
        end_reason: r
            .get::<_, Option<String>>(9)?
            .as_deref()
            .and_then(SessionEnd::by_name),
        end_message: r.get(10)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str) -> SessionInfo {
        SessionInfo {
            id: id.into(),
            function: "f".into(),
            digest: "d".into(),
            sandbox: Some("sb".into()),
            open: true,
            created_at: 10,
            last_used_at: 10,
            invocations: 0,
            busy: false,
            memory_bytes: Some(1),
            idle_timeout_s: 300,
            max_lifetime_s: 3600,
            expires_at: Some(20),
            ended_at: None,
            end_reason: None,
            end_message: None,
        }
    }

    #[test]
    fn sessions_are_recorded_ended_and_found_open_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("registry.db");
        {
            let r = Registry::open(&db).unwrap();
            r.session_opened(&info("a")).unwrap();
            r.session_opened(&info("b")).unwrap();
            let mut a = info("a");
            a.invocations = 3;
            a.last_used_at = 15;
            a.ended_at = Some(16);
            a.end_reason = Some(SessionEnd::Closed);
            r.session_ended(&a).unwrap();
            let got = r.session("a").unwrap().unwrap();
            assert!(!got.open);
            assert_eq!(got.invocations, 3);
            assert_eq!(got.end_reason, Some(SessionEnd::Closed));
            assert!(r.session("b").unwrap().unwrap().open);
            // emberd dies with b open.
        }
        let r = Registry::open(&db).unwrap();
        assert_eq!(r.end_sessions_left_open(99).unwrap(), 1);
        let b = r.session("b").unwrap().unwrap();
        assert_eq!(b.end_reason, Some(SessionEnd::DaemonRestart));
        assert_eq!(b.ended_at, Some(99));
        assert!(b.end_message.unwrap().contains("emberd stopped"));
        assert_eq!(r.end_sessions_left_open(100).unwrap(), 0);
        let ended = r.ended_sessions(Some("f"), 10).unwrap();
        assert_eq!(
            ended.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["b", "a"]
        );
        assert!(r.ended_sessions(Some("g"), 10).unwrap().is_empty());
        assert!(r.session("nope").unwrap().is_none());
    }
}
