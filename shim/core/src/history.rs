//! Invocation records: every invocation of a deployed function, with its
//! sandbox, start kind, timings, outcome and output, in SQLite next to the
//! registry (`<state-dir>/ember.db`, table `invocations`).
//!
//! Rows go through one background thread, in order and batched, so the
//! invocation path never waits for SQLite (a commit costs ~60 µs of a
//! 2-core VM's CPU; a warm invocation ~600 µs). What must survive a
//! SIGKILL, that an invocation began, is appended to a journal file
//! (`ember.db.inflight`, ~1 µs) before the invocation runs; the next start
//! records every begun invocation without a complete row as
//! `interrupted`. The journal is rewritten to the invocations still in
//! flight once it grows past a limit. Only the newest `retention` records
//! are kept.

pub use ember_api::records::InvocationRecord;
use rusqlite::{params, Connection};
use std::collections::HashMap;
use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("invocation history {path}: {source}")]
    Sql {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("invocation journal {path}: {source}")]
    Journal {
        path: PathBuf,
        source: std::io::Error,
    },
}

enum Write {
    Begin(InvocationRecord),
    Finish(InvocationRecord),
    /// Reply once everything before it is on disk (tests, shutdown).
    Flush(mpsc::Sender<()>),
}

/// The append-only record of invocations that began, and those of them
/// not yet completed in SQLite.
struct Journal {
    path: PathBuf,
    file: std::fs::File,
    bytes: u64,
    /// Rewrite the file (to what is in flight) past this size.
    limit: u64,
    /// Begun and not yet committed complete, by id.
    inflight: HashMap<String, InvocationRecord>,
}

/// Journal size that triggers a rewrite (about 5000 invocations).
const JOURNAL_LIMIT: u64 = 1 << 20;

impl Journal {
    fn open(path: PathBuf, limit: u64) -> std::io::Result<Journal> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let bytes = file.metadata()?.len();
        Ok(Journal {
            path,
            file,
            bytes,
            limit,
            inflight: HashMap::new(),
        })
    }

    /// One line per begun invocation. A plain write(2): in the page cache
    /// it survives the process being killed, which is what it is for.
    fn append(&mut self, rec: &InvocationRecord) -> std::io::Result<()> {
        let line = journal_line(rec)?;
        self.file.write_all(&line)?;
        self.bytes += line.len() as u64;
        Ok(())
    }

    /// Replace the file with the lines of what is still in flight.
    fn rewrite(&mut self) -> std::io::Result<()> {
        let tmp = self.path.with_extension("inflight.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        let mut bytes = 0;
        for rec in self.inflight.values() {
            let line = journal_line(rec)?;
            f.write_all(&line)?;
            bytes += line.len() as u64;
        }
        std::fs::rename(&tmp, &self.path)?;
        self.file = std::fs::OpenOptions::new().append(true).open(&self.path)?;
        self.bytes = bytes;
        Ok(())
    }
}

/// A record as one journal line.
fn journal_line(rec: &InvocationRecord) -> std::io::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
    line.push(b'\n');
    Ok(line)
}

/// The records a journal holds (a torn last line, from a kill mid-write,
/// is skipped).
fn read_journal(path: &Path) -> std::io::Result<Vec<InvocationRecord>> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        if let Ok(rec) = serde_json::from_str(&line?) {
            out.push(rec);
        }
    }
    Ok(out)
}

pub struct History {
    path: PathBuf,
    reader: Mutex<Connection>,
    writer: Mutex<mpsc::Sender<Write>>,
    journal: Arc<Mutex<Journal>>,
}

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
        History::open_with(path, retention, JOURNAL_LIMIT)
    }

    /// [`History::open`] with the journal rewritten past `journal_limit`
    /// bytes.
    fn open_with(
        path: &Path,
        retention: usize,
        journal_limit: u64,
    ) -> Result<(History, usize), HistoryError> {
        let err = |source| HistoryError::Sql {
            path: path.to_path_buf(),
            source,
        };
        let conn = open(path).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        let jpath = path.with_extension("db.inflight");
        let jerr = |source| HistoryError::Journal {
            path: jpath.clone(),
            source,
        };
        // Begun before a kill, possibly without a row yet.
        for rec in read_journal(&jpath).map_err(jerr)? {
            conn.execute(
                &format!(
                    "INSERT OR IGNORE INTO invocations ({COLUMNS}) \
                     VALUES (?1,?2,?3,?4,?5,?6,?7,'running',NULL,NULL,'','',0,0,0,?8,NULL)"
                ),
                params![
                    rec.id,
                    rec.function,
                    rec.digest,
                    rec.sandbox,
                    rec.backend,
                    rec.start,
                    rec.mode,
                    rec.started_at
                ],
            )
            .map_err(err)?;
        }
        let interrupted = conn
            .execute(
                "UPDATE invocations SET outcome = 'interrupted', \
                 error = 'emberd stopped before the invocation ended' WHERE outcome = 'running'",
                [],
            )
            .map_err(err)?;
        // Everything in it is in SQLite now: start empty.
        std::fs::File::create(&jpath).map_err(jerr)?;
        let journal = Arc::new(Mutex::new(
            Journal::open(jpath.clone(), journal_limit).map_err(jerr)?,
        ));
        let writer_conn = open(path).map_err(err)?;
        let (tx, rx) = mpsc::channel();
        let w = Writer {
            conn: writer_conn,
            retention: retention.max(1),
            path: path.to_path_buf(),
            journal: journal.clone(),
        };
        std::thread::Builder::new()
            .name("ember-history".into())
            .spawn(move || w.run(rx))
            .map_err(|e| err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        Ok((
            History {
                path: path.to_path_buf(),
                reader: Mutex::new(conn),
                writer: Mutex::new(tx),
                journal,
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

    /// Record an invocation that has just started: in the journal at once
    /// (it survives a SIGKILL from here on), as a `running` row in the
    /// background.
    pub fn begin(&self, rec: InvocationRecord) {
        {
            let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = j.append(&rec) {
                tracing::warn!(path = %j.path.display(), invocation = %rec.id, "invocation journal: {e}");
            }
            j.inflight.insert(rec.id.clone(), rec.clone());
        }
        self.send(Write::Begin(rec));
    }

    /// Complete (or insert) a record.
    pub fn finish(&self, rec: InvocationRecord) {
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

/// The background writer.
struct Writer {
    conn: Connection,
    retention: usize,
    path: PathBuf,
    journal: Arc<Mutex<Journal>>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Write>) {
        let mut since_prune = 0usize;
        while let Ok(first) = rx.recv() {
            // Whatever else is queued goes in the same transaction.
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            // A begin whose end is in the same batch needs no row of its own.
            let ending: std::collections::HashSet<String> = batch
                .iter()
                .filter_map(|w| match w {
                    Write::Finish(r) => Some(r.id.clone()),
                    _ => None,
                })
                .collect();
            let mut flushes = Vec::new();
            let retention = self.retention;
            let res = (|| -> rusqlite::Result<()> {
                let tx = self.conn.transaction()?;
                for w in batch {
                    match w {
                        Write::Begin(r) if ending.contains(&r.id) => {}
                        Write::Begin(r) => {
                            upsert(&tx, &r)?;
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
                    // Through the time index: the cut-off is the
                    // retention-th newest start.
                    tx.execute(
                        "DELETE FROM invocations WHERE started_at < (SELECT started_at \
                         FROM invocations ORDER BY started_at DESC LIMIT 1 OFFSET ?1)",
                        params![retention as i64 - 1],
                    )?;
                }
                tx.commit()
            })();
            match res {
                // Only committed ends leave the journal's in-flight set: a
                // kill before the commit still finds their beginnings.
                Ok(()) => self.forget(&ending),
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), "writing invocation records: {e}")
                }
            }
            for f in flushes {
                let _ = f.send(());
            }
        }
    }

    fn forget(&self, ended: &std::collections::HashSet<String>) {
        let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        for id in ended {
            j.inflight.remove(id);
        }
        if j.bytes > j.limit {
            if let Err(e) = j.rewrite() {
                tracing::warn!(path = %j.path.display(), "rewriting the invocation journal: {e}");
            }
        }
    }
}

fn upsert(c: &Connection, r: &InvocationRecord) -> rusqlite::Result<usize> {
    // Cached: parsing this statement for every record cost more than
    // writing the row.
    c.prepare_cached(
        &format!(
            "INSERT INTO invocations ({COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17)
             ON CONFLICT(id) DO UPDATE SET sandbox=?4, backend=?5, start=?6, mode=?7, outcome=?8, error=?9,
               timings=?10, stdout=?11, stderr=?12, stdout_bytes=?13, stderr_bytes=?14, result_bytes=?15,
               finished_at=?17"
        ),
    )?
    .execute(
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

    #[test]
    fn a_begun_invocation_without_a_row_is_interrupted_after_a_kill() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ember.db");
        drop(History::open(&db, 1000).unwrap());
        // What a kill between begin() and the writer's commit leaves: the
        // journal line, no row; and a line torn by the kill.
        let mut begun = rec("k1", "f", 7, "running");
        begun.mode = Some("specialized".into());
        let jpath = db.with_extension("db.inflight");
        let mut j = Journal::open(jpath.clone(), JOURNAL_LIMIT).unwrap();
        j.append(&begun).unwrap();
        j.file.write_all(b"{\"id\":\"torn").unwrap();
        drop(j);
        let (h, n) = History::open(&db, 1000).unwrap();
        assert_eq!(n, 1);
        let l = h.list(None, None, 10, true).unwrap();
        assert_eq!(l.len(), 1, "{l:?}");
        assert_eq!(l[0].id, "k1");
        assert_eq!(l[0].outcome, "interrupted");
        assert_eq!(l[0].mode.as_deref(), Some("specialized"));
        assert_eq!(l[0].started_at, 7);
        assert_eq!(std::fs::metadata(&jpath).unwrap().len(), 0, "emptied");
        // A row already there (complete or running) is not overwritten.
        drop(h);
        let mut j = Journal::open(jpath, JOURNAL_LIMIT).unwrap();
        j.append(&rec("k1", "f", 7, "running")).unwrap();
        drop(j);
        let (h, n) = History::open(&db, 1000).unwrap();
        assert_eq!(n, 0);
        assert_eq!(h.list(None, None, 10, true).unwrap().len(), 1);
    }

    #[test]
    fn the_journal_keeps_only_what_is_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ember.db");
        let jpath = db.with_extension("db.inflight");
        {
            let (h, _) = History::open_with(&db, 1000, 4096).unwrap();
            h.begin(rec("long", "f", 0, "running"));
            for i in 1..200 {
                let id = format!("i{i:03}");
                h.begin(rec(&id, "f", i, "running"));
                h.finish(rec(&id, "f", i, "ok"));
                h.flush();
            }
            let text = std::fs::read_to_string(&jpath).unwrap();
            assert!(
                text.len() < 4096 + 1024,
                "{} bytes: not rewritten",
                text.len()
            );
            assert!(text.contains("\"long\""), "the running one was dropped");
            // The history goes away as at a kill: no completion for it.
        }
        let (h, n) = History::open(&db, 1000).unwrap();
        assert_eq!(n, 1);
        let l = h.list(None, None, 1000, false).unwrap();
        assert_eq!(l.len(), 200);
        assert_eq!(l[0].id, "long");
        assert_eq!(l[0].outcome, "interrupted");
        assert!(l[1..].iter().all(|r| r.outcome == "ok"));
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
