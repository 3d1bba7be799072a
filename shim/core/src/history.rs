//! Invocation records: every invocation of a deployed function, with its
//! sandbox, start kind, timings, outcome and output, in SQLite next to the
//! registry (`<state-dir>/ember.db`, table `invocations`).
//!
//! What emberd guarantees: once an invocation has begun (before it takes
//! a sandbox) it is on record, and once it is answered its outcome is,
//! even if emberd is SIGKILLed right after the answer and even while the
//! state filesystem is full. An invocation the journal cannot take is
//! refused (`503 history_full`) instead of running unrecorded.
//!
//! How: `begin` and `finish` append a line to the journal (module
//! [`journal`]: two preallocated files, written in place, so an append
//! needs no new disk block; a pwrite each, a few µs), synchronously,
//! before the invocation runs and before its answer goes out. An end line is a compact record:
//! outcome, error, timings, sizes and the first bytes of the output. Rows
//! go to SQLite through one background thread, in order and batched, so
//! the invocation path never waits for SQLite (a commit costs ~60 µs of a
//! 2-core VM's CPU; a warm invocation ~600 µs). A batch SQLite refuses
//! (`database or disk is full`) is kept and retried with backoff (the
//! history is then degraded: [`History::status`]), its output dropped past
//! [`PENDING_OUTPUT_BUDGET`]; what the journal holds is released once the
//! rows are committed. The next start records every begun invocation
//! without an end as `interrupted`, and every ended one not in SQLite with
//! its outcome (its output then cut to the end line's prefix).
//!
//! An invocation refused before it ran user code (`shutting_down`,
//! `pool_exhausted`, `overloaded`, `history_full`) leaves no record
//! ([`History::discard`]). The newest `rows` records are kept, and at most
//! `bytes` of them (output and a fixed overhead per row), oldest deleted
//! first.

mod journal;
mod writer;

pub use ember_api::records::InvocationRecord;
pub use journal::JournalFull;
use journal::{Entry, Journal};
use rusqlite::{params, Connection};
use std::collections::HashMap;
use std::io::BufRead;
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
    #[error("starting the invocation history writer for {path}: {source}")]
    Thread {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How many records are kept: the newest `rows`, and of them at most
/// `bytes` (see [`row_bytes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub rows: usize,
    pub bytes: u64,
}

/// Output of records waiting for SQLite kept in memory; past it a waiting
/// record keeps only what its journal line has.
pub const PENDING_OUTPUT_BUDGET: u64 = 64 << 20;

/// What a row costs besides its output, for byte retention.
const ROW_OVERHEAD: u64 = 256;

/// A row's size as byte retention counts it.
fn row_bytes(stdout_bytes: u64, stderr_bytes: u64) -> u64 {
    ROW_OVERHEAD + stdout_bytes + stderr_bytes
}

/// Whether the history writes, and what waits if it does not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryStatus {
    /// The last write to SQLite failed; records wait in memory and in the
    /// journal.
    pub degraded: bool,
    /// Records waiting to be written.
    pub waiting: usize,
    /// Why the last write failed.
    pub error: Option<String>,
    /// Failed writes since start.
    pub write_errors: u64,
}

enum Write {
    Begin(InvocationRecord),
    Finish(InvocationRecord),
    Discard(String),
    /// Reply once everything before it is written, or a write was tried
    /// (tests, shutdown).
    Flush(mpsc::Sender<()>),
    /// Reply once everything before it is written, or, while writes fail,
    /// at once: a listing waits for what can be written, and does not
    /// hurry the retries of what cannot.
    Settle(mpsc::Sender<()>),
    /// Run on the writer's connection (tests: make SQLite refuse writes).
    #[cfg(test)]
    Test(Box<dyn FnOnce(&Connection) + Send>),
}

/// What the writer and the invocation path share.
struct Shared {
    journal: Mutex<Journal>,
    status: Mutex<HistoryStatus>,
}

impl Shared {
    fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn status(&self) -> std::sync::MutexGuard<'_, HistoryStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Which records a listing picks; `None` fields pick all.
#[derive(Debug, Clone, Copy, Default)]
pub struct Filter<'a> {
    pub function: Option<&'a str>,
    /// Only records started after it (Unix milliseconds).
    pub since_ms: Option<i64>,
    pub session: Option<&'a str>,
}

pub struct History {
    path: PathBuf,
    reader: Mutex<Connection>,
    writer: Mutex<mpsc::Sender<Write>>,
    shared: Arc<Shared>,
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

/// Added after the first schema, in place for older databases: the
/// session a call ran in, and its index.
const SESSION_COLUMN: &str = "
ALTER TABLE invocations ADD COLUMN session TEXT;
";
const SESSION_INDEX: &str = "
CREATE INDEX IF NOT EXISTS invocations_by_session ON invocations (session, started_at)
    WHERE session IS NOT NULL;
";

/// Bring a database of an older emberd to this schema.
fn migrate(c: &Connection) -> rusqlite::Result<()> {
    let has_session: bool = c.query_row(
        "SELECT EXISTS(SELECT 1 FROM pragma_table_info('invocations') WHERE name = 'session')",
        [],
        |r| r.get(0),
    )?;
    if !has_session {
        c.execute_batch(SESSION_COLUMN)?;
    }
    c.execute_batch(SESSION_INDEX)
}

const COLUMNS: &str =
    "id, function, digest, sandbox, backend, start, mode, outcome, error, timings, \
     stdout, stderr, stdout_bytes, stderr_bytes, result_bytes, started_at, finished_at, session";

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    // History is not worth an fsync per invocation: in WAL mode NORMAL
    // loses at most the last moments on power loss, never consistency.
    c.pragma_update(None, "synchronous", "NORMAL")?;
    c.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(c)
}

/// The begun invocations an older emberd's journal (`ember.db.inflight`,
/// one record per line) holds; a torn last line is skipped.
fn read_legacy_journal(path: &Path) -> std::io::Result<Vec<InvocationRecord>> {
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

/// A begun invocation's record once it is known to have been cut off.
fn interrupted(rec: InvocationRecord) -> InvocationRecord {
    InvocationRecord {
        outcome: "interrupted".into(),
        error: Some("emberd stopped before the invocation ended".into()),
        ..rec
    }
}

/// What a previous run left unfinished: records to write, and how many of
/// them were interrupted.
struct Leftovers {
    /// From the journals, to be journaled again until written.
    journaled: Vec<InvocationRecord>,
    /// `running` rows in SQLite without a journal entry.
    running: Vec<InvocationRecord>,
    interrupted: usize,
}

fn leftovers(
    conn: &Connection,
    entries: HashMap<String, Entry>,
    legacy: Vec<InvocationRecord>,
) -> rusqlite::Result<Leftovers> {
    let mut journaled = Vec::new();
    let mut interrupted_n = 0;
    for e in entries.into_values() {
        journaled.push(match e {
            Entry::Begun(r) => {
                interrupted_n += 1;
                interrupted(r)
            }
            Entry::Ended(r) => r,
        });
    }
    for r in legacy {
        if !journaled.iter().any(|j| j.id == r.id) {
            interrupted_n += 1;
            journaled.push(interrupted(r));
        }
    }
    let mut running = Vec::new();
    let mut st = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM invocations WHERE outcome = 'running'"
    ))?;
    for r in st.query_map([], row_to_record)? {
        let r = r?;
        if !journaled.iter().any(|j| j.id == r.id) {
            interrupted_n += 1;
            running.push(interrupted(r));
        }
    }
    Ok(Leftovers {
        journaled,
        running,
        interrupted: interrupted_n,
    })
}

/// Bytes of the rows stored, as byte retention counts them.
fn stored_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(stdout_bytes + stderr_bytes), 0) FROM invocations",
        [],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
    )
    .map(|(n, out)| n * ROW_OVERHEAD + out)
}

impl History {
    /// Open the history in `path`, take back what a previous run left
    /// unfinished (begun: `interrupted`; ended: its outcome), and start the
    /// writer. Returns it and how many records were interrupted. A full
    /// filesystem does not fail it: what cannot be written waits.
    pub fn open(path: &Path, retention: Retention) -> Result<(History, usize), HistoryError> {
        History::open_with(path, retention, journal::FILE_BYTES)
    }

    /// [`History::open`] with journal files of `journal_bytes`.
    fn open_with(
        path: &Path,
        retention: Retention,
        journal_bytes: u64,
    ) -> Result<(History, usize), HistoryError> {
        let err = |source| HistoryError::Sql {
            path: path.to_path_buf(),
            source,
        };
        let jerr = |p: &Path| {
            let path = p.to_path_buf();
            move |source| HistoryError::Journal { path, source }
        };
        let conn = open(path).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        migrate(&conn).map_err(err)?;
        let jpath = journal::paths(path)[0].clone();
        let (mut journal, entries) = Journal::open(path, journal_bytes).map_err(jerr(&jpath))?;
        let legacy_path = path.with_extension("db.inflight");
        let legacy = read_legacy_journal(&legacy_path).map_err(jerr(&legacy_path))?;
        let left = leftovers(&conn, entries, legacy).map_err(err)?;
        journal.restore(&left.journaled).map_err(jerr(&jpath))?;
        // Its begun invocations are in the new journal now.
        match std::fs::remove_file(&legacy_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(jerr(&legacy_path)(e))
            }
            _ => {}
        }
        let shared = Arc::new(Shared {
            journal: Mutex::new(journal),
            status: Mutex::new(HistoryStatus::default()),
        });
        let stored = stored_bytes(&conn).map_err(err)?;
        let mut w = writer::Writer::new(open(path).map_err(err)?, path, retention, stored, &shared);
        w.recover(left.journaled.into_iter().chain(left.running));
        // At once, so that a start with room has them in SQLite before
        // anyone reads; without room they wait like any other.
        w.commit();
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("ember-history".into())
            .spawn(move || w.run(rx))
            .map_err(|source| HistoryError::Thread {
                path: path.to_path_buf(),
                source,
            })?;
        let history = History {
            path: path.to_path_buf(),
            reader: Mutex::new(conn),
            writer: Mutex::new(tx),
            shared,
        };
        Ok((history, left.interrupted))
    }

    fn send(&self, w: Write) {
        let tx = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if tx.send(w).is_err() {
            crate::warn_limit::warn(
                "history-writer-gone",
                format_args!("invocation history writer is gone; record dropped"),
            );
        }
    }

    /// Record an invocation that is about to start: in the journal at once
    /// (on record from here on, even across a SIGKILL), as a `running` row
    /// in the background. Refused when the journal has no room for it and
    /// its end: the invocation must not run.
    pub fn begin(&self, rec: InvocationRecord) -> Result<(), JournalFull> {
        let line = journal::begin_line(&rec);
        self.shared.journal().begin(&rec.id, line)?;
        self.send(Write::Begin(rec));
        Ok(())
    }

    /// Complete (or insert) a record. For a begun invocation its end is in
    /// the journal when this returns: its outcome survives a SIGKILL from
    /// here on.
    pub fn finish(&self, rec: InvocationRecord) {
        let line = journal::end_line(&rec);
        self.shared.journal().end(&rec.id, line);
        self.send(Write::Finish(rec));
    }

    /// Forget a begun invocation that was refused before it ran: it leaves
    /// no record.
    pub fn discard(&self, id: &str) {
        self.shared.journal().discard(id);
        self.send(Write::Discard(id.to_string()));
    }

    /// Wait until every record sent so far is written, or a write of them
    /// was tried (and failed: see [`History::status`]).
    pub fn flush(&self) {
        self.wait_for(Write::Flush);
    }

    /// Wait until every record sent so far is written, unless writes fail.
    fn settle(&self) {
        self.wait_for(Write::Settle);
    }

    fn wait_for(&self, write: fn(mpsc::Sender<()>) -> Write) {
        let (tx, rx) = mpsc::channel();
        self.send(write(tx));
        let _ = rx.recv_timeout(std::time::Duration::from_secs(10));
    }

    /// Whether records are written, and how many wait.
    pub fn status(&self) -> HistoryStatus {
        self.shared.status().clone()
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
        let filter = Filter {
            function,
            since_ms,
            session: None,
        };
        self.list_where(&filter, limit, output)
    }

    /// The newest `limit` records `filter` picks, oldest first.
    ///
    /// Reads its own writes: a record finished before this call shows with
    /// its outcome, not as `running`. Its end may still be on its way to
    /// SQLite (an invocation's answer does not wait for the write), so this
    /// first waits for the writer to write what is queued. While SQLite
    /// refuses writes it reads what SQLite has. It blocks.
    pub fn list_where(
        &self,
        filter: &Filter<'_>,
        limit: usize,
        output: bool,
    ) -> Result<Vec<InvocationRecord>, HistoryError> {
        self.settle();
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let columns = if output {
            COLUMNS.to_string()
        } else {
            COLUMNS.replace("stdout, stderr,", "'', '',")
        };
        let sql = format!(
            "SELECT {columns} FROM (SELECT * FROM invocations \
             WHERE (?1 IS NULL OR function = ?1) AND started_at > ?2 \
             AND (?4 IS NULL OR session = ?4) \
             ORDER BY started_at DESC, rowid DESC LIMIT ?3) ORDER BY started_at, id"
        );
        let run = || -> rusqlite::Result<Vec<InvocationRecord>> {
            let mut st = conn.prepare(&sql)?;
            let rows = st.query_map(
                params![
                    filter.function,
                    filter.since_ms.unwrap_or(i64::MIN),
                    limit as i64,
                    filter.session
                ],
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

/// Insert or complete a record; with `only_running`, leave a complete row
/// as it is (a record taken back at start that SQLite may already have).
fn upsert(c: &Connection, r: &InvocationRecord, only_running: bool) -> rusqlite::Result<usize> {
    let guard = if only_running {
        " WHERE outcome = 'running'"
    } else {
        ""
    };
    // Cached: parsing this statement for every record cost more than
    // writing the row.
    c.prepare_cached(
        &format!(
            "INSERT INTO invocations ({COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18)
             ON CONFLICT(id) DO UPDATE SET sandbox=?4, backend=?5, start=?6, mode=?7, outcome=?8, error=?9,
               timings=?10, stdout=?11, stderr=?12, stdout_bytes=?13, stderr_bytes=?14, result_bytes=?15,
               finished_at=?17{guard}"
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
            r.session,
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
        session: r.get(17)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const ROOMY: Retention = Retention {
        rows: 1000,
        bytes: 1 << 30,
    };

    fn rec(id: &str, function: &str, started_at: i64, outcome: &str) -> InvocationRecord {
        InvocationRecord {
            outcome: outcome.into(),
            ..InvocationRecord::started(id, function, "d", started_at)
        }
    }

    fn done(id: &str, started_at: i64, out: usize) -> InvocationRecord {
        InvocationRecord {
            stdout: "x".repeat(out),
            stdout_bytes: out as u64,
            finished_at: Some(started_at + 1),
            ..rec(id, "f", started_at, "ok")
        }
    }

    impl History {
        /// Run `f` on the writer's connection, in order with the records.
        fn on_writer(&self, f: impl FnOnce(&Connection) + Send + 'static) {
            self.send(Write::Test(Box::new(f)));
        }

        /// Every write fails with `database or disk is full`, as on a full
        /// filesystem. Capping `max_page_count` was not enough: a small
        /// row can still fit in a page the database already has, so the
        /// test depended on page layout and failed one run in three.
        fn fill_disk(&self) {
            self.on_writer(|c| {
                for op in ["INSERT", "UPDATE", "DELETE"] {
                    c.execute_batch(&format!(
                        "CREATE TEMP TRIGGER full_{op} BEFORE {op} ON main.invocations \
                         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;"
                    ))
                    .unwrap();
                }
            });
        }

        fn free_disk(&self) {
            self.on_writer(|c| {
                for op in ["INSERT", "UPDATE", "DELETE"] {
                    c.execute_batch(&format!("DROP TRIGGER temp.full_{op};"))
                        .unwrap();
                }
            });
        }

        /// Go away as at a SIGKILL: nothing more reaches SQLite.
        fn kill(self) {
            self.on_writer(|c| c.pragma_update(None, "query_only", true).unwrap());
            self.flush();
        }
    }

    #[test]
    fn a_listing_shows_what_finished_before_it_though_the_writer_lags() {
        let dir = tempfile::tempdir().unwrap();
        let (h, _) = History::open(&dir.path().join("ember.db"), ROOMY).unwrap();
        h.begin(rec("a", "f", 1, "running")).unwrap();
        h.flush();
        // The writer is busy when the end comes, as under load.
        h.on_writer(|_| std::thread::sleep(std::time::Duration::from_millis(300)));
        h.finish(rec("a", "f", 1, "ok"));
        h.begin(rec("b", "f", 2, "running")).unwrap();
        let got: Vec<_> = h
            .list(Some("f"), None, 10, false)
            .unwrap()
            .into_iter()
            .map(|r| (r.id, r.outcome))
            .collect();
        assert_eq!(
            got,
            [("a".into(), "ok".into()), ("b".into(), "running".into())]
        );
    }

    #[test]
    fn records_complete_list_and_survive_a_crash_as_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ember.db");
        {
            let (h, n) = History::open(&db, ROOMY).unwrap();
            assert_eq!(n, 0);
            h.begin(rec("a", "f", 1, "running")).unwrap();
            let mut done = rec("a", "f", 1, "ok");
            done.stdout = "hi\n".into();
            done.stdout_bytes = 3;
            done.finished_at = Some(2);
            done.timings_us = Some(serde_json::json!({"total": 5}));
            h.finish(done.clone());
            h.begin(rec("b", "g", 3, "running")).unwrap();
            h.begin(rec("c", "f", 4, "running")).unwrap();
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
        let (h, n) = History::open(&db, ROOMY).unwrap();
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
    fn ended_invocations_survive_a_kill_with_their_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ember.db");
        let (h, _) = History::open(&db, ROOMY).unwrap();
        // Nothing reaches SQLite: what survives is the journal's.
        h.fill_disk();
        h.begin(rec("a", "f", 1, "running")).unwrap();
        h.finish(done("a", 1, 1000));
        h.begin(rec("b", "f", 2, "running")).unwrap();
        h.begin(rec("c", "f", 3, "running")).unwrap();
        h.discard("c");
        h.kill();
        let (h, n) = History::open(&db, ROOMY).unwrap();
        assert_eq!(n, 1, "b");
        let l = h.list(None, None, 10, true).unwrap();
        let outcomes: Vec<_> = l
            .iter()
            .map(|r| (r.id.as_str(), r.outcome.as_str()))
            .collect();
        assert_eq!(outcomes, [("a", "ok"), ("b", "interrupted")]);
        // The output that never reached SQLite: its first bytes, its size.
        assert_eq!(l[0].stdout.len(), 128);
        assert_eq!(l[0].stdout_bytes, 1000);
        assert_eq!(l[0].finished_at, Some(2));
        // Taken back once, not again at the next start.
        drop(h);
        let (h, n) = History::open(&db, ROOMY).unwrap();
        assert_eq!(n, 0);
        assert_eq!(h.list(None, None, 10, true).unwrap().len(), 2);
    }

    #[test]
    fn a_failing_sqlite_keeps_records_and_writes_them_when_it_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let (h, _) = History::open(&dir.path().join("ember.db"), ROOMY).unwrap();
        h.fill_disk();
        for i in 0..50 {
            let id = format!("i{i:03}");
            h.begin(rec(&id, "f", i, "running")).unwrap();
            h.finish(done(&id, i, 10_000));
        }
        h.flush();
        let s = h.status();
        assert!(s.degraded, "{s:?}");
        assert_eq!(s.waiting, 50, "{s:?}");
        assert!(s.write_errors >= 1);
        let error = s.error.unwrap();
        assert!(error.contains("full"), "{error}");
        assert!(h.list(None, None, 100, false).unwrap().is_empty());
        // Space comes back: the next try writes everything, output and all.
        h.free_disk();
        h.flush();
        assert_eq!(h.status().waiting, 0);
        assert!(!h.status().degraded);
        let l = h.list(None, None, 100, true).unwrap();
        assert_eq!(l.len(), 50);
        assert!(l
            .iter()
            .all(|r| r.outcome == "ok" && r.stdout.len() == 10_000));
    }

    #[test]
    fn a_full_journal_refuses_begin_until_records_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ember.db");
        let (h, _) = History::open_with(&db, ROOMY, 64 << 10).unwrap();
        h.fill_disk();
        let mut answered = 0;
        let refused = loop {
            let id = format!("i{answered:04}");
            match h.begin(rec(&id, "f", answered, "running")) {
                Ok(()) => h.finish(done(&id, answered, 10)),
                Err(e) => break e,
            }
            answered += 1;
            assert!(answered < 10_000, "never full");
        };
        assert!(answered > 20, "{answered}");
        assert!(refused.to_string().contains("is full"), "{refused}");
        // Once SQLite has them, the journal has room again.
        h.free_disk();
        h.flush();
        h.begin(rec("after", "f", 1 << 40, "running")).unwrap();
        h.kill();
        let (h, n) = History::open(&db, ROOMY).unwrap();
        assert_eq!(n, 1, "after");
        let l = h.list(None, None, 10_000, false).unwrap();
        assert_eq!(l.len(), answered as usize + 1);
        assert!(l[..answered as usize].iter().all(|r| r.outcome == "ok"));
    }

    #[test]
    fn the_journal_keeps_only_what_is_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ember.db");
        {
            let (h, _) = History::open_with(&db, ROOMY, 8192).unwrap();
            h.begin(rec("long", "f", 0, "running")).unwrap();
            for i in 1..200 {
                let id = format!("i{i:03}");
                h.begin(rec(&id, "f", i, "running")).unwrap();
                h.finish(rec(&id, "f", i, "ok"));
                h.flush();
            }
            // Files of 8 KiB hold thousands of lines over time.
            for p in journal::paths(&db) {
                assert_eq!(std::fs::metadata(p).unwrap().len(), 8192);
            }
            h.kill();
        }
        let (h, n) = History::open(&db, ROOMY).unwrap();
        assert_eq!(n, 1);
        let l = h.list(None, None, 1000, false).unwrap();
        assert_eq!(l.len(), 200);
        assert_eq!(l[0].id, "long");
        assert_eq!(l[0].outcome, "interrupted");
        assert!(l[1..].iter().all(|r| r.outcome == "ok"));
    }

    #[test]
    fn an_older_journal_is_taken_back() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ember.db");
        let mut begun = rec("k1", "f", 7, "running");
        begun.mode = Some("specialized".into());
        let mut text = serde_json::to_vec(&begun).unwrap();
        text.extend_from_slice(b"\n{\"id\":\"torn");
        let legacy = db.with_extension("db.inflight");
        std::fs::write(&legacy, text).unwrap();
        let (h, n) = History::open(&db, ROOMY).unwrap();
        assert_eq!(n, 1);
        let l = h.list(None, None, 10, true).unwrap();
        assert_eq!(l.len(), 1, "{l:?}");
        assert_eq!(
            (l[0].id.as_str(), l[0].outcome.as_str()),
            ("k1", "interrupted")
        );
        assert_eq!(l[0].mode.as_deref(), Some("specialized"));
        assert!(!legacy.exists());
    }

    #[test]
    fn a_discarded_invocation_leaves_no_row() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ember.db");
        let (h, _) = History::open(&db, ROOMY).unwrap();
        h.begin(rec("a", "f", 1, "running")).unwrap();
        h.flush();
        assert_eq!(h.list(None, None, 10, false).unwrap().len(), 1, "running");
        h.discard("a");
        h.begin(rec("b", "f", 2, "running")).unwrap();
        h.discard("b");
        h.flush();
        assert!(h.list(None, None, 10, false).unwrap().is_empty());
        h.kill();
        let (h, n) = History::open(&db, ROOMY).unwrap();
        assert_eq!(n, 0);
        assert!(h.list(None, None, 10, false).unwrap().is_empty());
    }

    #[test]
    fn only_the_newest_records_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let retention = Retention {
            rows: 10,
            bytes: 1 << 30,
        };
        let (h, _) = History::open(&dir.path().join("ember.db"), retention).unwrap();
        for i in 0..150 {
            h.finish(rec(&format!("i{i:03}"), "f", i, "ok"));
        }
        h.flush();
        let left = h.list(None, None, 1000, true).unwrap();
        assert!(left.len() <= 60, "{} kept", left.len());
        assert_eq!(left.last().unwrap().id, "i149");
    }

    #[test]
    fn records_are_kept_within_the_byte_budget() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ember.db");
        let retention = Retention {
            rows: 100_000,
            bytes: 100 << 10,
        };
        let size = |l: &[InvocationRecord]| -> u64 {
            l.iter()
                .map(|r| row_bytes(r.stdout_bytes, r.stderr_bytes))
                .sum()
        };
        {
            let (h, _) = History::open(&db, retention).unwrap();
            for i in 0..100 {
                h.finish(done(&format!("i{i:03}"), i, 10_000));
                if i % 7 == 0 {
                    h.flush();
                }
            }
            h.flush();
            let left = h.list(None, None, 1000, false).unwrap();
            assert!(size(&left) <= 100 << 10, "{} bytes", size(&left));
            assert!(left.len() >= 8, "{} kept", left.len());
            assert_eq!(left.last().unwrap().id, "i099");
        }
        // The running total is taken again at open: still within it.
        let (h, _) = History::open(&db, retention).unwrap();
        for i in 100..120 {
            h.finish(done(&format!("i{i:03}"), i, 10_000));
        }
        h.flush();
        let left = h.list(None, None, 1000, false).unwrap();
        assert!(size(&left) <= 100 << 10, "{} bytes", size(&left));
        assert_eq!(left.last().unwrap().id, "i119");
    }

    /// What the journal adds to the invocation path (printed, not
    /// asserted: `cargo test -p ember-core journal_cost -- --nocapture`).
    #[test]
    fn journal_cost() {
        let dir = tempfile::tempdir().unwrap();
        let (h, _) = History::open(&dir.path().join("ember.db"), ROOMY).unwrap();
        let n = 2000;
        let recs: Vec<_> = (0..n)
            .map(|i| {
                let id = format!("{i:016x}");
                (rec(&id, "hello", i, "running"), done(&id, i, 200))
            })
            .collect();
        let t = Instant::now();
        for (b, e) in recs.clone() {
            h.begin(b).unwrap();
            h.finish(e);
        }
        let per = t.elapsed() / n as u32;
        h.flush();
        let (mut j, _) = Journal::open(&dir.path().join("alone.db"), journal::FILE_BYTES).unwrap();
        j.restore(&[]).unwrap();
        let t = Instant::now();
        for (b, e) in &recs {
            j.begin(&b.id, journal::begin_line(b)).unwrap();
            j.end(&e.id, journal::end_line(e));
        }
        let alone = t.elapsed() / n as u32;
        eprintln!(
            "per invocation: begin + finish {per:?} (the two journal lines alone {alone:?}), \
             {} build",
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        );
    }
}
