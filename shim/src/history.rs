//! Invocation records: every invocation of a deployed function, with its
//! sandbox, start kind, timings, outcome and output, in SQLite next to the
//! registry (`<state-dir>/ember.db`, table `invocations`).
//!
//! Writes go through one background thread, in order and batched, so the
//! invocation path never waits for the disk: a record is `running` when the
//! invocation starts and complete when it ends. A daemon killed mid-way
//! leaves `running` rows, which the next start marks `interrupted`. Only
//! the newest `retention` records are kept.

use rusqlite::{params, Connection};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("invocation history {path}: {source}")]
    Sql {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

/// One invocation as stored and as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InvocationRecord {
    pub id: String,
    pub function: String,
    /// Code digest the invocation ran (the deploy's version).
    pub digest: String,
    pub sandbox: Option<String>,
    pub backend: Option<String>,
    pub start: Option<String>,
    pub mode: Option<String>,
    /// `running`, `interrupted`, an invocation outcome (`ok`,
    /// `handler_error`, `timeout`, ...) or an API error code.
    pub outcome: String,
    pub error: Option<String>,
    pub timings_us: Option<serde_json::Value>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub result_bytes: u64,
    /// Unix milliseconds.
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

impl InvocationRecord {
    /// A record of an invocation that has just started, nothing known yet
    /// but what it runs.
    pub fn started(id: &str, function: &str, digest: &str, started_at: i64) -> InvocationRecord {
        InvocationRecord {
            id: id.to_string(),
            function: function.to_string(),
            digest: digest.to_string(),
            sandbox: None,
            backend: None,
            start: None,
            mode: None,
            outcome: "running".into(),
            error: None,
            timings_us: None,
            stdout: String::new(),
            stderr: String::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            result_bytes: 0,
            started_at,
            finished_at: None,
        }
    }
}

enum Write {
    /// With whom to tell once the row is committed.
    Begin(InvocationRecord, tokio::sync::oneshot::Sender<()>),
    Finish(InvocationRecord),
    /// Reply once everything before it is on disk (tests, shutdown).
    Flush(mpsc::Sender<()>),
}

pub struct History {
    path: PathBuf,
    reader: Mutex<Connection>,
    writer: Mutex<mpsc::Sender<Write>>,
    /// Invocations whose `running` row is on its way, by id.
    pending: Mutex<HashMap<String, tokio::sync::oneshot::Receiver<()>>>,
}

/// Longest an invocation waits for its `running` row before running
/// anyway (a stuck disk must not stop invocations; it is logged).
const BEGIN_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS invocations (
    id           TEXT PRIMARY KEY,
    function     TEXT NOT NULL,
    digest       TEXT NOT NULL,
    sandbox      TEXT,
    backend      TEXT,
    start        TEXT,
    mode         TEXT,
    outcome      TEXT NOT NULL,
    error        TEXT,
    timings      TEXT,
    stdout       TEXT NOT NULL DEFAULT '',
    stderr       TEXT NOT NULL DEFAULT '',
    stdout_bytes INTEGER NOT NULL DEFAULT 0,
    stderr_bytes INTEGER NOT NULL DEFAULT 0,
    result_bytes INTEGER NOT NULL DEFAULT 0,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER
);
CREATE INDEX IF NOT EXISTS invocations_by_function ON invocations (function, started_at);
CREATE INDEX IF NOT EXISTS invocations_by_time ON invocations (started_at);
";

const COLUMNS: &str =
    "id, function, digest, sandbox, backend, start, mode, outcome, error, timings, \
     stdout, stderr, stdout_bytes, stderr_bytes, result_bytes, started_at, finished_at";

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    // History is not worth an fsync per invocation: in WAL mode NORMAL
    // loses at most the last moments on power loss, never consistency.
    c.pragma_update(None, "synchronous", "NORMAL")?;
    c.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(c)
}

impl History {
    /// Open the history in `path`, mark what a previous run left `running`
    /// as `interrupted`, and start the writer. Returns it and how many
    /// records were interrupted.
    pub fn open(path: &Path, retention: usize) -> Result<(History, usize), HistoryError> {
        let err = |source| HistoryError::Sql {
            path: path.to_path_buf(),
            source,
        };
        let conn = open(path).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        let interrupted = conn
            .execute(
                "UPDATE invocations SET outcome = 'interrupted', \
                 error = 'emberd stopped before the invocation ended' WHERE outcome = 'running'",
                [],
            )
            .map_err(err)?;
        let writer_conn = open(path).map_err(err)?;
        let (tx, rx) = mpsc::channel();
        let wpath = path.to_path_buf();
        std::thread::Builder::new()
            .name("ember-history".into())
            .spawn(move || write_loop(writer_conn, rx, retention.max(1), wpath))
            .map_err(|e| err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        Ok((
            History {
                path: path.to_path_buf(),
                reader: Mutex::new(conn),
                writer: Mutex::new(tx),
                pending: Mutex::new(HashMap::new()),
            },
            interrupted,
        ))
    }

    fn send(&self, w: Write) {
        let tx = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if tx.send(w).is_err() {
            tracing::warn!("invocation history writer is gone; record dropped");
        }
    }

    /// Record an invocation that has just started. The row is written in
    /// the background; [`History::written`] waits for it.
    pub fn begin(&self, rec: InvocationRecord) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(rec.id.clone(), rx);
        self.send(Write::Begin(rec, tx));
    }

    /// Wait until the `running` row of invocation `id` is committed (at
    /// once if there is none pending). Called right before the handler
    /// runs, so a daemon killed from then on leaves a row the next start
    /// marks `interrupted`; the write overlaps the thaw and injection.
    pub async fn written(&self, id: &str) {
        let rx = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if let Some(rx) = rx {
            if tokio::time::timeout(BEGIN_WAIT, rx).await.is_err() {
                tracing::warn!(
                    invocation = id,
                    "invocation record not written within 1 s; running anyway"
                );
            }
        }
    }

    /// Complete (or insert) a record.
    pub fn finish(&self, rec: InvocationRecord) {
        // Refused before it ran: nobody waited for its first row.
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&rec.id);
        self.send(Write::Finish(rec));
    }

    /// Wait until every record sent so far is written.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        self.send(Write::Flush(tx));
        let _ = rx.recv_timeout(std::time::Duration::from_secs(10));
    }

    /// Records, oldest first: of `function` (all if `None`), started after
    /// `since_ms`, at most the newest `limit`. Without `output` their
    /// stdout and stderr are not read (left empty; the sizes stay), which
    /// keeps frequent summaries (the dashboard's) cheap.
    pub fn list(
        &self,
        function: Option<&str>,
        since_ms: Option<i64>,
        limit: usize,
        output: bool,
    ) -> Result<Vec<InvocationRecord>, HistoryError> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let columns = if output {
            COLUMNS.to_string()
        } else {
            COLUMNS.replace("stdout, stderr,", "'', '',")
        };
        let sql = format!(
            "SELECT {columns} FROM (SELECT * FROM invocations \
             WHERE (?1 IS NULL OR function = ?1) AND started_at > ?2 \
             ORDER BY started_at DESC, rowid DESC LIMIT ?3) ORDER BY started_at, id"
        );
        let run = || -> rusqlite::Result<Vec<InvocationRecord>> {
            let mut st = conn.prepare(&sql)?;
            let rows = st.query_map(
                params![function, since_ms.unwrap_or(i64::MIN), limit as i64],
                row_to_record,
            )?;
            rows.collect()
        };
        run().map_err(|source| HistoryError::Sql {
            path: self.path.clone(),
            source,
        })
    }
}

fn write_loop(mut conn: Connection, rx: mpsc::Receiver<Write>, retention: usize, path: PathBuf) {
    let mut since_prune = 0usize;
    while let Ok(first) = rx.recv() {
        // Whatever else is queued goes in the same transaction.
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut flushes = Vec::new();
        let mut begun = Vec::new();
        let res = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            for w in batch {
                match w {
                    Write::Begin(r, done) => {
                        upsert(&tx, &r)?;
                        begun.push(done);
                    }
                    Write::Finish(r) => {
                        upsert(&tx, &r)?;
                        since_prune += 1;
                    }
                    Write::Flush(done) => flushes.push(done),
                }
            }
            if since_prune >= 100 {
                since_prune = 0;
                tx.execute(
                    "DELETE FROM invocations WHERE rowid NOT IN \
                     (SELECT rowid FROM invocations ORDER BY started_at DESC LIMIT ?1)",
                    params![retention as i64],
                )?;
            }
            tx.commit()
        })();
        if let Err(e) = res {
            tracing::warn!(path = %path.display(), "writing invocation records: {e}");
        }
        // Told even after an error: the invocation must not wait for a
        // write that will not happen (the error is logged).
        for b in begun {
            let _ = b.send(());
        }
        for f in flushes {
            let _ = f.send(());
        }
    }
}

fn upsert(c: &Connection, r: &InvocationRecord) -> rusqlite::Result<usize> {
    c.execute(
        &format!(
            "INSERT INTO invocations ({COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17)
             ON CONFLICT(id) DO UPDATE SET sandbox=?4, backend=?5, start=?6, mode=?7, outcome=?8, error=?9,
               timings=?10, stdout=?11, stderr=?12, stdout_bytes=?13, stderr_bytes=?14, result_bytes=?15,
               finished_at=?17"
        ),
        params![
            r.id,
            r.function,
            r.digest,
            r.sandbox,
            r.backend,
            r.start,
            r.mode,
            r.outcome,
            r.error,
            r.timings_us.as_ref().map(|t| t.to_string()),
            r.stdout,
            r.stderr,
            r.stdout_bytes as i64,
            r.stderr_bytes as i64,
            r.result_bytes as i64,
            r.started_at,
            r.finished_at,
        ],
    )
}

fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<InvocationRecord> {
    Ok(InvocationRecord {
        id: r.get(0)?,
        function: r.get(1)?,
        digest: r.get(2)?,
        sandbox: r.get(3)?,
        backend: r.get(4)?,
        start: r.get(5)?,
        mode: r.get(6)?,
        outcome: r.get(7)?,
        error: r.get(8)?,
        timings_us: r
            .get::<_, Option<String>>(9)?
            .and_then(|t| serde_json::from_str(&t).ok()),
        stdout: r.get(10)?,
        stderr: r.get(11)?,
        stdout_bytes: r.get::<_, i64>(12)? as u64,
        stderr_bytes: r.get::<_, i64>(13)? as u64,
        result_bytes: r.get::<_, i64>(14)? as u64,
        started_at: r.get(15)?,
        finished_at: r.get(16)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, function: &str, started_at: i64, outcome: &str) -> InvocationRecord {
        InvocationRecord {
            outcome: outcome.into(),
            ..InvocationRecord::started(id, function, "d", started_at)
        }
    }

    #[test]
    fn records_complete_list_and_survive_a_crash_as_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ember.db");
        {
            let (h, n) = History::open(&db, 1000).unwrap();
            assert_eq!(n, 0);
            h.begin(rec("a", "f", 1, "running"));
            let mut done = rec("a", "f", 1, "ok");
            done.stdout = "hi\n".into();
            done.stdout_bytes = 3;
            done.finished_at = Some(2);
            done.timings_us = Some(serde_json::json!({"total": 5}));
            h.finish(done.clone());
            h.begin(rec("b", "g", 3, "running"));
            h.begin(rec("c", "f", 4, "running"));
            h.flush();
            let f = h.list(Some("f"), None, 10, true).unwrap();
            assert_eq!(f.len(), 2);
            assert_eq!(f[0], done);
            assert_eq!(f[1].outcome, "running");
            assert_eq!(h.list(None, Some(2), 10, true).unwrap().len(), 2, "since");
            assert_eq!(
                h.list(None, None, 1, true).unwrap()[0].id,
                "c",
                "newest within limit"
            );
        }
        // A new daemon on the same state dir: what was running is interrupted.
        let (h, n) = History::open(&db, 1000).unwrap();
        assert_eq!(n, 2);
        let all = h.list(None, None, 10, true).unwrap();
        let bare = h.list(None, None, 10, false).unwrap();
        assert_eq!(bare.len(), all.len());
        assert!(bare
            .iter()
            .all(|r| r.stdout.is_empty() && r.stderr.is_empty()));
        assert_eq!(
            all.iter().map(|r| r.outcome.as_str()).collect::<Vec<_>>(),
            vec!["ok", "interrupted", "interrupted"]
        );
    }

    #[tokio::test]
    async fn a_started_invocation_is_on_record_once_written_returns() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ember.db");
        let (h, _) = History::open(&db, 1000).unwrap();
        for i in 0..50 {
            let id = format!("r{i}");
            h.begin(rec(&id, "f", i, "running"));
            h.written(&id).await;
            // No flush: what a crash right now would leave behind.
            let n: i64 = Connection::open(&db)
                .unwrap()
                .query_row(
                    "SELECT COUNT(*) FROM invocations WHERE id = ?1 AND outcome = 'running'",
                    params![id],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(n, 1, "{id} not committed");
        }
        // Nothing pending is left behind, and an unknown id does not wait.
        assert!(h.pending.lock().unwrap().is_empty());
        h.written("never-begun").await;
    }

    #[test]
    fn only_the_newest_records_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (h, _) = History::open(&dir.path().join("ember.db"), 10).unwrap();
        for i in 0..150 {
            h.finish(rec(&format!("i{i:03}"), "f", i, "ok"));
        }
        h.flush();
        let left = h.list(None, None, 1000, true).unwrap();
        assert!(left.len() <= 60, "{} kept", left.len());
        assert_eq!(left.last().unwrap().id, "i149");
    }
}
