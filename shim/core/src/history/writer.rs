//! The background writer: records into SQLite, in order and batched; a
//! batch SQLite refuses is kept and retried, never dropped.

use super::{
    journal, row_bytes, upsert, HistoryStatus, InvocationRecord, Retention, Shared, Write,
    PENDING_OUTPUT_BUDGET,
};
use rusqlite::{params, Connection, OptionalExtension as _};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// First wait before a failed write is tried again; it doubles up to
/// [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Finished records between two row-retention prunes.
const PRUNE_EVERY: usize = 100;

/// One change waiting for SQLite.
enum Op {
    Upsert(InvocationRecord),
    /// Taken back at start: only over a `running` row or none.
    Recover(InvocationRecord),
    Delete(String),
}

impl Op {
    fn output(&self) -> u64 {
        match self {
            Op::Upsert(r) | Op::Recover(r) => (r.stdout.len() + r.stderr.len()) as u64,
            Op::Delete(_) => 0,
        }
    }
}

pub(super) struct Writer {
    conn: Connection,
    path: PathBuf,
    retention: Retention,
    shared: Arc<Shared>,
    /// Changes not yet committed, in order.
    queue: Vec<Op>,
    /// Where each id's change is in `queue`.
    index: HashMap<String, usize>,
    /// Output bytes `queue` holds.
    output: u64,
    /// Bytes stored, as byte retention counts them.
    stored: u64,
    since_prune: usize,
    backoff: Duration,
    /// Set while writes fail: when to try again.
    retry_at: Option<Instant>,
}

impl Writer {
    pub(super) fn new(
        conn: Connection,
        path: &Path,
        retention: Retention,
        stored: u64,
        shared: &Arc<Shared>,
    ) -> Writer {
        Writer {
            conn,
            path: path.to_path_buf(),
            retention: Retention {
                rows: retention.rows.max(1),
                bytes: retention.bytes,
            },
            shared: Arc::clone(shared),
            queue: Vec::new(),
            index: HashMap::new(),
            output: 0,
            stored,
            since_prune: 0,
            backoff: MIN_BACKOFF,
            retry_at: None,
        }
    }

    /// Queue records a previous run left unfinished.
    pub(super) fn recover(&mut self, recs: impl Iterator<Item = InvocationRecord>) {
        for r in recs {
            self.push(r.id.clone(), Op::Recover(r));
        }
    }

    pub(super) fn run(mut self, rx: mpsc::Receiver<Write>) {
        loop {
            let first = match self.retry_at {
                Some(at) if !self.queue.is_empty() => {
                    match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                        Ok(w) => Some(w),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                _ => match rx.recv() {
                    Ok(w) => Some(w),
                    Err(_) => break,
                },
            };
            // Whatever else is queued goes in the same transaction.
            let mut flushes = Vec::new();
            for w in first
                .into_iter()
                .chain(std::iter::from_fn(|| rx.try_recv().ok()))
            {
                self.take(w, &mut flushes);
            }
            // A flush tries at once, whatever the backoff says; a settle
            // waits for the backoff.
            let due = !matches!(self.retry_at, Some(t) if Instant::now() < t);
            if due || flushes.iter().any(|&(_, force)| force) {
                self.commit();
            }
            for (f, _) in flushes {
                let _ = f.send(());
            }
        }
        self.commit();
    }

    fn take(&mut self, w: Write, flushes: &mut Vec<(mpsc::Sender<()>, bool)>) {
        match w {
            Write::Begin(r) => self.push(r.id.clone(), Op::Upsert(r)),
            Write::Finish(r) => {
                let r = self.within_budget(r);
                self.push(r.id.clone(), Op::Upsert(r));
            }
            Write::Discard(id) => self.push(id.clone(), Op::Delete(id)),
            Write::Flush(tx) => flushes.push((tx, true)),
            Write::Settle(tx) => flushes.push((tx, false)),
            #[cfg(test)]
            Write::Test(f) => f(&self.conn),
        }
    }

    /// Queue a change; one already queued for the id (its begin) is
    /// replaced: a begin whose end is queued needs no row of its own.
    fn push(&mut self, id: String, op: Op) {
        self.output += op.output();
        match self.index.get(&id) {
            Some(&i) => {
                self.output -= self.queue[i].output();
                self.queue[i] = op;
            }
            None => {
                self.index.insert(id, self.queue.len());
                self.queue.push(op);
            }
        }
    }

    /// While writes fail, a record past the output budget keeps only what
    /// its journal line has.
    fn within_budget(&self, r: InvocationRecord) -> InvocationRecord {
        let size = (r.stdout.len() + r.stderr.len()) as u64;
        if self.retry_at.is_some() && self.output + size > PENDING_OUTPUT_BUDGET {
            journal::compact(&r)
        } else {
            r
        }
    }

    /// After a failed write: cut the output of waiting records past the
    /// budget, the newest first to go.
    fn trim(&mut self) {
        let mut kept = 0u64;
        for op in &mut self.queue {
            if let Op::Upsert(r) | Op::Recover(r) = op {
                let size = (r.stdout.len() + r.stderr.len()) as u64;
                if kept + size > PENDING_OUTPUT_BUDGET {
                    *r = journal::compact(r);
                }
                kept += (r.stdout.len() + r.stderr.len()) as u64;
            }
        }
        self.output = kept;
    }

    /// Write everything queued, or keep it for the next try.
    pub(super) fn commit(&mut self) {
        if self.queue.is_empty() {
            return;
        }
        match self.write() {
            Ok(stored) => self.written(stored),
            Err(e) => self.failed(e),
        }
    }

    /// One transaction of the queue and the prunes; the bytes stored after.
    fn write(&mut self) -> rusqlite::Result<u64> {
        let tx = self.conn.transaction()?;
        let mut stored = self.stored;
        let mut finished = 0;
        for op in &self.queue {
            stored = match op {
                Op::Upsert(r) => {
                    finished += usize::from(r.outcome != "running");
                    apply(&tx, r, false, stored)?
                }
                Op::Recover(r) => apply(&tx, r, true, stored)?,
                Op::Delete(id) => stored.saturating_sub(freed(
                    &tx,
                    "DELETE FROM invocations WHERE id = ?1 RETURNING stdout_bytes + stderr_bytes",
                    params![id],
                )?),
            };
        }
        let since = self.since_prune + finished;
        if since >= PRUNE_EVERY {
            // Through the time index: the cut-off is the rows-th newest.
            stored = stored.saturating_sub(freed(
                &tx,
                "DELETE FROM invocations WHERE started_at < (SELECT started_at \
                 FROM invocations ORDER BY started_at DESC LIMIT 1 OFFSET ?1) \
                 RETURNING stdout_bytes + stderr_bytes",
                params![self.retention.rows as i64 - 1],
            )?);
        }
        stored = prune_bytes(&tx, stored, self.retention.bytes)?;
        tx.commit()?;
        self.since_prune = if since >= PRUNE_EVERY { 0 } else { since };
        Ok(stored)
    }

    fn written(&mut self, stored: u64) {
        // Only committed ends leave the journal: a kill before the commit
        // still finds them there.
        let saved: Vec<String> = self
            .queue
            .iter()
            .filter_map(|op| match op {
                Op::Upsert(r) | Op::Recover(r) if r.outcome != "running" => Some(r.id.clone()),
                _ => None,
            })
            .collect();
        self.shared.journal().saved(&saved);
        let n = self.queue.len();
        // Memory a long outage took goes back.
        self.queue.clear();
        self.queue.shrink_to(1024);
        self.index.clear();
        self.index.shrink_to(1024);
        self.output = 0;
        self.stored = stored;
        self.backoff = MIN_BACKOFF;
        {
            let mut s = self.shared.status();
            s.degraded = false;
            s.waiting = 0;
            s.error = None;
        }
        if self.retry_at.take().is_some() {
            tracing::info!(path = %self.path.display(), records = n, "invocation records are written again; those waiting are saved");
        }
    }

    fn failed(&mut self, e: rusqlite::Error) {
        self.trim();
        let waiting = self.queue.len();
        {
            let mut s = self.shared.status();
            *s = HistoryStatus {
                degraded: true,
                waiting,
                error: Some(e.to_string()),
                write_errors: s.write_errors + 1,
            };
        }
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        crate::warn_limit::warn(
            "history-write",
            format_args!(
                "writing invocation records to {}: {e}; {waiting} records wait, retrying",
                self.path.display()
            ),
        );
    }
}

/// Write one record; the bytes stored after.
fn apply(
    tx: &Connection,
    r: &InvocationRecord,
    only_running: bool,
    stored: u64,
) -> rusqlite::Result<u64> {
    let old: Option<i64> = tx
        .prepare_cached("SELECT stdout_bytes + stderr_bytes FROM invocations WHERE id = ?1")?
        .query_row(params![r.id], |x| x.get(0))
        .optional()?;
    if upsert(tx, r, only_running)? == 0 {
        return Ok(stored);
    }
    let before = old.map_or(0, |o| row_bytes(o as u64, 0));
    Ok(stored.saturating_sub(before) + row_bytes(r.stdout_bytes, r.stderr_bytes))
}

/// Run a `DELETE ... RETURNING stdout_bytes + stderr_bytes`: the bytes it
/// freed.
fn freed(tx: &Connection, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<u64> {
    let mut st = tx.prepare_cached(sql)?;
    let mut rows = st.query(p)?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        n += row_bytes(r.get::<_, i64>(0)? as u64, 0);
    }
    Ok(n)
}

/// Past `max` bytes, delete the oldest rows down to 90% of it (so that
/// not every record prunes); the bytes stored after.
fn prune_bytes(tx: &Connection, stored: u64, max: u64) -> rusqlite::Result<u64> {
    if stored <= max {
        return Ok(stored);
    }
    let excess = stored - (max - max / 10);
    // Through the time index, oldest first, only as far as needed.
    let mut oldest = tx.prepare_cached(
        "SELECT rowid, stdout_bytes + stderr_bytes FROM invocations ORDER BY started_at, rowid",
    )?;
    let mut rows = oldest.query([])?;
    let (mut doomed, mut freed) = (Vec::new(), 0);
    while freed < excess {
        let Some(r) = rows.next()? else { break };
        doomed.push(r.get::<_, i64>(0)?);
        freed += row_bytes(r.get::<_, i64>(1)? as u64, 0);
    }
    drop(rows);
    let mut delete = tx.prepare_cached("DELETE FROM invocations WHERE rowid = ?1")?;
    for rowid in doomed {
        delete.execute(params![rowid])?;
    }
    Ok(stored.saturating_sub(freed))
}
