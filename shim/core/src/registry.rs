//! The function registry: one SQLite database under the state dir, so a
//! restarted daemon knows every deployed function.

use ember_api::function::CodeOrigin;
pub use ember_api::FunctionRecord;
use ember_api::{Backend, Concurrency, FunctionLimits, Language, Mode, SessionPolicy};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

mod sessions;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("function registry {path}: {source}")]
    Sql {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

/// Everything a deploy sets besides the code.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionSettings {
    pub runtime: Language,
    pub handler: String,
    pub timeout_ms: u64,
    /// Sandbox profile (`default`, `strict`).
    pub profile: String,
    /// Backend of its sandboxes; `None`: the daemon's default.
    pub backend: Option<Backend>,
    /// Fork (a fresh worker per invocation) or specialized.
    pub mode: Mode,
    /// Fork mode: once warm, fork workers from a function zygote that has
    /// imported the handler (false: every worker imports it afresh).
    pub zygote: bool,
    pub limits: FunctionLimits,
    /// Its own concurrency limit and queue bound, if any.
    pub concurrency: Concurrency,
    /// Its session idle timeout, lifetime and limit, if set.
    pub sessions: SessionPolicy,
}

pub struct Registry {
    path: PathBuf,
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS functions (
    name       TEXT PRIMARY KEY,
    runtime    TEXT NOT NULL,
    handler    TEXT NOT NULL,
    timeout_ms INTEGER NOT NULL,
    digest     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
";

/// Columns added after the first schema: (name, definition). Added in
/// place to databases of older daemons.
const ADDED_COLUMNS: &[(&str, &str)] = &[
    ("profile", "TEXT NOT NULL DEFAULT 'default'"),
    ("limits", "TEXT NOT NULL DEFAULT '{}'"),
    ("backend", "TEXT"),
    ("mode", "TEXT NOT NULL DEFAULT 'fork'"),
    ("zygote", "INTEGER NOT NULL DEFAULT 1"),
    ("concurrency", "TEXT NOT NULL DEFAULT '{}'"),
    // NULL: uploaded or from a host path; else where emberd fetched the
    // code (a `CodeOrigin` as JSON: a git commit).
    ("source", "TEXT"),
    ("sessions", "TEXT NOT NULL DEFAULT '{}'"),
    // NULL: not paused; else when it was paused (Unix ms).
    ("paused_at", "INTEGER"),
];

const COLUMNS: &str =
    "name, runtime, handler, timeout_ms, digest, created_at, updated_at, profile, limits, backend, mode, zygote, concurrency, sessions, paused_at, source";

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Registry {
    pub fn open(path: &Path) -> Result<Registry, RegistryError> {
        let err = |source| RegistryError::Sql {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        // WAL with full sync: a deploy that got its answer survives a crash.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        conn.execute_batch(sessions::SCHEMA).map_err(err)?;
        let have: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('functions')")
            .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
            .map_err(err)?;
        for (col, def) in ADDED_COLUMNS {
            if !have.iter().any(|h| h == col) {
                conn.execute_batch(&format!("ALTER TABLE functions ADD COLUMN {col} {def}"))
                    .map_err(err)?;
            }
        }
        Ok(Registry {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, RegistryError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&conn).map_err(|source| RegistryError::Sql {
            path: self.path.clone(),
            source,
        })
    }

    /// Insert or replace; returns the stored record and whether it is new.
    pub fn upsert(
        &self,
        name: &str,
        settings: &FunctionSettings,
        digest: &str,
        source: Option<&CodeOrigin>,
    ) -> Result<(FunctionRecord, bool), RegistryError> {
        let now = now_ms();
        let existing = self.get(name)?;
        let created_at = existing.as_ref().map(|r| r.created_at).unwrap_or(now);
        let limits = serde_json::to_string(&settings.limits).unwrap_or_else(|_| "{}".into());
        let concurrency =
            serde_json::to_string(&settings.concurrency).unwrap_or_else(|_| "{}".into());
        let sessions = serde_json::to_string(&settings.sessions).unwrap_or_else(|_| "{}".into());
        let source_json = source.and_then(|s| serde_json::to_string(s).ok());
        self.with(|c| {
            c.execute(
                "INSERT INTO functions (name, runtime, handler, timeout_ms, digest, created_at, updated_at, profile, limits, backend, mode, zygote, concurrency, sessions, source)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
                 ON CONFLICT(name) DO UPDATE SET runtime = ?2, handler = ?3, timeout_ms = ?4,
                    digest = ?5, updated_at = ?7, profile = ?8, limits = ?9, backend = ?10, mode = ?11,
                    zygote = ?12, concurrency = ?13, sessions = ?14, source = ?15",
                params![
                    name,
                    settings.runtime.runtime_name(),
                    settings.handler,
                    settings.timeout_ms as i64,
                    digest,
                    created_at,
                    now,
                    settings.profile,
                    limits,
                    settings.backend.map(Backend::as_str),
                    settings.mode.as_str(),
                    settings.zygote,
                    concurrency,
                    sessions,
                    source_json
                ],
            )
        })?;
        let rec = FunctionRecord {
            name: name.to_string(),
            runtime: settings.runtime,
            handler: settings.handler.clone(),
            timeout_ms: settings.timeout_ms,
            profile: settings.profile.clone(),
            backend: settings.backend,
            mode: settings.mode,
            zygote: settings.zygote,
            limits: settings.limits,
            concurrency: settings.concurrency,
            sessions: settings.sessions,
            source: source.cloned(),
            digest: digest.to_string(),
            created_at,
            updated_at: now,
            // A redeploy leaves the pause as it was (the statement above
            // does not touch `paused_at`).
            paused: existing.as_ref().is_some_and(|r| r.paused),
            paused_at: existing.as_ref().and_then(|r| r.paused_at),
        };
        Ok((rec, existing.is_none()))
    }

    pub fn get(&self, name: &str) -> Result<Option<FunctionRecord>, RegistryError> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM functions WHERE name = ?1"),
                params![name],
                row_to_record,
            )
            .optional()
        })
    }

    pub fn list(&self) -> Result<Vec<FunctionRecord>, RegistryError> {
        self.with(|c| {
            let mut st = c.prepare(&format!("SELECT {COLUMNS} FROM functions ORDER BY name"))?;
            let rows = st.query_map([], row_to_record)?;
            rows.collect()
        })
    }

    /// Returns whether a function was deleted.
    pub fn delete(&self, name: &str) -> Result<bool, RegistryError> {
        self.with(|c| c.execute("DELETE FROM functions WHERE name = ?1", params![name]))
            .map(|n| n > 0)
    }

    /// Pause (`paused`) or resume function `name`; pausing a paused
    /// function keeps the time it was first paused. Returns the record as
    /// it is now, `None` if no such function.
    pub fn set_paused(
        &self,
        name: &str,
        paused: bool,
    ) -> Result<Option<FunctionRecord>, RegistryError> {
        let changed = self.with(|c| match paused {
            true => c.execute(
                "UPDATE functions SET paused_at = COALESCE(paused_at, ?2) WHERE name = ?1",
                params![name, now_ms()],
            ),
            false => c.execute(
                "UPDATE functions SET paused_at = NULL WHERE name = ?1",
                params![name],
            ),
        })?;
        match changed {
            0 => Ok(None),
            _ => self.get(name),
        }
    }

    /// Whether any function still uses `digest`.
    pub fn digest_in_use(&self, digest: &str) -> Result<bool, RegistryError> {
        self.with(|c| {
            c.query_row(
                "SELECT EXISTS(SELECT 1 FROM functions WHERE digest = ?1)",
                params![digest],
                |r| r.get::<_, bool>(0),
            )
        })
    }
}

fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<FunctionRecord> {
    // By name: rows from before pausing read NULL, not paused.
    let paused_at: Option<i64> = r.get("paused_at")?;
    Ok(FunctionRecord {
        paused: paused_at.is_some(),
        paused_at,
        name: r.get(0)?,
        runtime: language(r, 1)?,
        handler: r.get(2)?,
        timeout_ms: r.get::<_, i64>(3)? as u64,
        digest: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
        profile: r.get(7)?,
        // A row this daemon cannot read back is a bug, but it must not
        // make the function unusable: fall back to the defaults.
        limits: serde_json::from_str(&r.get::<_, String>(8)?).unwrap_or_default(),
        backend: r
            .get::<_, Option<String>>(9)?
            .as_deref()
            .and_then(Backend::by_name),
        mode: Mode::by_name(&r.get::<_, String>(10)?).unwrap_or_default(),
        zygote: r.get(11)?,
        // Rows from before admission control read `{}`: no limit.
        concurrency: serde_json::from_str(&r.get::<_, String>(12)?).unwrap_or_default(),
        // Rows from before sessions read `{}`: the daemon's defaults.
        sessions: serde_json::from_str(&r.get::<_, String>(13)?).unwrap_or_default(),
        // By name; NULL (and a source this daemon cannot read): none.
        source: r
            .get::<_, Option<String>>("source")?
            .and_then(|s| serde_json::from_str(&s).ok()),
    })
}

/// Column `i` as a language runtime; one this daemon does not know is
/// an error (a row written by a newer emberd).
fn language(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Language> {
    let name: String = r.get(i)?;
    Language::by_runtime(&name).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("unknown runtime {name:?}").into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(handler: &str, timeout_ms: u64) -> FunctionSettings {
        FunctionSettings {
            runtime: Language::Python,
            handler: handler.into(),
            timeout_ms,
            profile: "default".into(),
            backend: None,
            mode: Mode::Fork,
            zygote: true,
            limits: FunctionLimits::default(),
            concurrency: Concurrency::default(),
            sessions: SessionPolicy::default(),
        }
    }

    #[test]
    fn databases_of_older_daemons_gain_the_new_columns() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ember.db");
        {
            let c = Connection::open(&db).unwrap();
            c.execute_batch(SCHEMA).unwrap();
            c.execute(
                "INSERT INTO functions VALUES ('old', 'python3', 'main.handler', 100, 'aa', 1, 1)",
                [],
            )
            .unwrap();
        }
        let r = Registry::open(&db).unwrap();
        let f = r.get("old").unwrap().unwrap();
        assert_eq!(f.profile, "default");
        assert_eq!(f.limits, FunctionLimits::default());
        assert_eq!(f.mode, Mode::Fork);
        assert_eq!(f.concurrency, Concurrency::default());
        assert_eq!((f.paused, f.paused_at), (false, None));
    }

    #[test]
    fn survives_reopen_and_tracks_updates() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ember.db");
        {
            let r = Registry::open(&db).unwrap();
            let (rec, new) = r
                .upsert("f", &settings("main.handler", 100), "aa", None)
                .unwrap();
            assert!(new);
            assert_eq!(rec.digest, "aa");
            let mut strict = settings("main.other", 200);
            strict.profile = "strict".into();
            strict.limits.memory_mb = 64;
            strict.mode = Mode::Specialized;
            strict.concurrency.max_concurrency = Some(2);
            strict.concurrency.max_queue = Some(0);
            let (rec2, new) = r.upsert("f", &strict, "bb", None).unwrap();
            assert!(!new);
            assert_eq!(rec2.created_at, rec.created_at);
            r.upsert("g", &settings("main.handler", 100), "bb", None)
                .unwrap();
        }
        let r = Registry::open(&db).unwrap();
        let f = r.get("f").unwrap().unwrap();
        assert_eq!(
            (f.handler.as_str(), f.timeout_ms, f.digest.as_str()),
            ("main.other", 200, "bb")
        );
        assert_eq!((f.profile.as_str(), f.limits.memory_mb), ("strict", 64));
        assert_eq!(f.mode, Mode::Specialized);
        assert_eq!(
            (f.concurrency.max_concurrency, f.concurrency.max_queue),
            (Some(2), Some(0))
        );
        assert_eq!(r.list().unwrap().len(), 2);
        assert!(r.digest_in_use("bb").unwrap());
        assert!(!r.digest_in_use("aa").unwrap());
        assert!(r.delete("f").unwrap());
        assert!(!r.delete("f").unwrap());
        assert!(r.get("f").unwrap().is_none());
    }

    #[test]
    fn a_pause_survives_reopen_and_redeploy_until_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ember.db");
        {
            let r = Registry::open(&db).unwrap();
            r.upsert("f", &settings("main.handler", 100), "aa", None)
                .unwrap();
            r.upsert("g", &settings("main.handler", 100), "aa", None)
                .unwrap();
            assert!(r.set_paused("nope", true).unwrap().is_none());
            let p = r.set_paused("f", true).unwrap().unwrap();
            let since = p.paused_at.expect("paused_at");
            assert!(p.paused);
            // Pausing again keeps the first time; a redeploy keeps the pause.
            std::thread::sleep(std::time::Duration::from_millis(2));
            assert_eq!(
                r.set_paused("f", true).unwrap().unwrap().paused_at,
                Some(since)
            );
            let (re, new) = r
                .upsert("f", &settings("main.other", 200), "bb", None)
                .unwrap();
            assert!(!new);
            assert_eq!((re.paused, re.paused_at), (true, Some(since)));
            assert!(!r.get("g").unwrap().unwrap().paused);
        }
        let r = Registry::open(&db).unwrap();
        let f = r.get("f").unwrap().unwrap();
        assert_eq!((f.paused, f.handler.as_str()), (true, "main.other"));
        let listed: Vec<bool> = r.list().unwrap().iter().map(|f| f.paused).collect();
        assert_eq!(listed, [true, false]);
        let f = r.set_paused("f", false).unwrap().unwrap();
        assert_eq!((f.paused, f.paused_at), (false, None));
        // Resuming a running function changes nothing.
        assert!(!r.set_paused("f", false).unwrap().unwrap().paused);
        assert!(r.delete("f").unwrap());
        assert!(r.set_paused("f", true).unwrap().is_none());
    }

    #[test]
    fn a_git_source_is_kept_and_a_redeploy_without_one_clears_it() {
        use ember_api::function::GitOrigin;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ember.db");
        let origin = CodeOrigin::Git(GitOrigin {
            repo: "/srv/repo".into(),
            reference: "v1".into(),
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            subdir: Some("fn".into()),
        });
        {
            let r = Registry::open(&db).unwrap();
            let s = settings("main.handler", 100);
            let (rec, _) = r.upsert("f", &s, "aa", Some(&origin)).unwrap();
            assert_eq!(rec.source.as_ref(), Some(&origin));
            r.upsert("g", &s, "aa", None).unwrap();
        }
        let r = Registry::open(&db).unwrap();
        assert_eq!(r.get("f").unwrap().unwrap().source, Some(origin));
        assert_eq!(r.get("g").unwrap().unwrap().source, None);
        r.upsert("f", &settings("main.handler", 100), "bb", None)
            .unwrap();
        assert_eq!(r.get("f").unwrap().unwrap().source, None);
    }
}
