//! The journal: what must survive a SIGKILL (and a full state filesystem)
//! before SQLite has it.
//!
//! Two files of [`FILE_BYTES`], preallocated with zeros when created, so
//! an append never needs a new disk block. Lines (JSON, one per line) are
//! written with `pwrite` at the end of what the active file holds; a file
//! is read up to its first NUL. When the active file cannot take a line,
//! the lines still needed (the live set) are written into the other file,
//! which becomes the active one, and the first line of the old one is
//! zeroed, so at most one file is valid except in the middle of that
//! switch (then both are read, the older first: replaying a line twice is
//! harmless).
//!
//! The live set is every invocation begun and not yet ended (its begin
//! line), ended and not yet in SQLite (its end line, a compact record),
//! and room for the end line of each begun one ([`END_RESERVE`]): a begin
//! that would not leave that room is refused, so an end always fits.

use super::InvocationRecord;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

/// Size of each of the two journal files.
pub(super) const FILE_BYTES: u64 = 8 << 20;
/// Bytes of stdout and of stderr an end line keeps.
const OUTPUT_PREFIX: usize = 128;
/// Characters of an error message an end line keeps.
const ERROR_MAX: usize = 1024;
/// The most an end line takes (the record is cut to fit); reserved for
/// each begun invocation.
pub(super) const END_RESERVE: u64 = 3072;

/// One journal line, as read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    /// First line of a file: which switch wrote it.
    Gen(u64),
    Begin(InvocationRecord),
    /// A compact record of an invocation that ended.
    End(InvocationRecord),
    /// A begun invocation that leaves no record (refused before it ran).
    Discard(String),
    /// Records now in SQLite: the journal no longer needs them.
    Saved(Vec<String>),
}

/// One journal line, as written (the same JSON as [`Line`], without
/// copying the record).
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum LineRef<'a> {
    Gen(u64),
    Begin(&'a InvocationRecord),
    End(&'a InvocationRecord),
    Discard(&'a str),
    Saved(&'a [String]),
}

/// The journal is out of room: the invocation cannot be recorded.
#[derive(Debug, thiserror::Error)]
#[error(
    "invocation journal {path} is full: {waiting} invocation records wait to be saved to \
     SQLite (the state filesystem is probably full)"
)]
pub struct JournalFull {
    pub path: PathBuf,
    pub waiting: usize,
}

/// What the journal holds of an invocation.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Entry {
    Begun(InvocationRecord),
    /// Ended, not yet in SQLite (the compact record).
    Ended(InvocationRecord),
}

struct Live {
    ended: bool,
    line: Vec<u8>,
}

pub(super) struct Journal {
    paths: [PathBuf; 2],
    files: [File; 2],
    /// Bytes at the start of each file that may be non-zero.
    used: [u64; 2],
    active: usize,
    gen: u64,
    /// Where the next line goes in the active file.
    offset: u64,
    size: u64,
    live: HashMap<String, Live>,
    /// Bytes of the live set's lines.
    live_bytes: u64,
    /// Live entries not ended yet.
    begun: u64,
}

/// The two files of the journal of database `db`.
pub(super) fn paths(db: &Path) -> [PathBuf; 2] {
    [
        db.with_extension("db.journal-a"),
        db.with_extension("db.journal-b"),
    ]
}

/// Open (creating and zero-filling if new) one journal file of `size`.
fn open_file(path: &Path, size: u64) -> std::io::Result<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let len = f.metadata()?.len();
    if len < size {
        // Real zeros, not a sparse tail or unwritten extents: later
        // writes then need no new block.
        let zeros = vec![0u8; 1 << 16];
        let mut at = len;
        while at < size {
            let n = (size - at).min(zeros.len() as u64) as usize;
            f.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        f.sync_all()?;
    }
    Ok(f)
}

/// A file's content: up to its first NUL.
fn content(f: &File) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    let mut at = 0u64;
    loop {
        let n = f.read_at(&mut chunk, at)?;
        if n == 0 {
            return Ok(buf);
        }
        if let Some(nul) = chunk[..n].iter().position(|&b| b == 0) {
            buf.extend_from_slice(&chunk[..nul]);
            return Ok(buf);
        }
        buf.extend_from_slice(&chunk[..n]);
        at += n as u64;
    }
}

/// A file's generation and lines (none if its first line is no `Gen`; a
/// torn line, from a kill mid-write, is skipped).
fn parse(text: &[u8]) -> Option<(u64, Vec<Line>)> {
    let mut lines = text.split(|&b| b == b'\n');
    let gen = match serde_json::from_slice(lines.next()?) {
        Ok(Line::Gen(g)) => g,
        _ => return None,
    };
    let rest = lines
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect();
    Some((gen, rest))
}

/// Apply lines, in order, to the entries by id.
fn replay(lines: Vec<Line>, entries: &mut HashMap<String, Entry>) {
    for line in lines {
        match line {
            Line::Gen(_) => {}
            Line::Begin(r) => {
                entries.entry(r.id.clone()).or_insert(Entry::Begun(r));
            }
            Line::End(r) => {
                entries.insert(r.id.clone(), Entry::Ended(r));
            }
            Line::Discard(id) => {
                entries.remove(&id);
            }
            Line::Saved(ids) => {
                for id in ids {
                    entries.remove(&id);
                }
            }
        }
    }
}

fn to_line(line: &LineRef<'_>) -> Vec<u8> {
    // A record always serializes; an empty line would just be skipped.
    let mut v = serde_json::to_vec(line).unwrap_or_default();
    v.push(b'\n');
    v
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn prefix(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The record as an end line keeps it: output cut to a prefix (its sizes
/// stay), the error message shortened, everything within [`END_RESERVE`].
pub(super) fn compact(rec: &InvocationRecord) -> InvocationRecord {
    compact_and_line(rec).0
}

/// The end line of an invocation (made before the journal is locked).
pub(super) fn end_line(rec: &InvocationRecord) -> Vec<u8> {
    compact_and_line(rec).1
}

/// The begin line of an invocation.
pub(super) fn begin_line(rec: &InvocationRecord) -> Vec<u8> {
    to_line(&LineRef::Begin(rec))
}

/// The compact record and its end line.
fn compact_and_line(rec: &InvocationRecord) -> (InvocationRecord, Vec<u8>) {
    // Field by field: the output (up to a few MiB) is not copied whole.
    let mut c = InvocationRecord {
        id: rec.id.clone(),
        function: rec.function.clone(),
        digest: rec.digest.clone(),
        sandbox: rec.sandbox.clone(),
        backend: rec.backend.clone(),
        start: rec.start.clone(),
        mode: rec.mode.clone(),
        outcome: rec.outcome.clone(),
        error: rec.error.as_deref().map(|e| prefix(e, ERROR_MAX)),
        timings_us: rec.timings_us.clone(),
        stdout: prefix(&rec.stdout, OUTPUT_PREFIX),
        stderr: prefix(&rec.stderr, OUTPUT_PREFIX),
        stdout_bytes: rec.stdout_bytes,
        stderr_bytes: rec.stderr_bytes,
        result_bytes: rec.result_bytes,
        started_at: rec.started_at,
        finished_at: rec.finished_at,
        session: rec.session.clone(),
    };
    let line = to_line(&LineRef::End(&c));
    if line.len() as u64 <= END_RESERVE {
        return (c, line);
    }
    // Only odd fields (huge timings, names) get here.
    c.timings_us = None;
    c.stdout.clear();
    c.stderr.clear();
    c.error = c.error.map(|e| prefix(&e, 256));
    let line = to_line(&LineRef::End(&c));
    (c, line)
}

impl Journal {
    /// Open the journal of `db` (files of `size` bytes): the entries its
    /// files hold, and the journal, empty, ready to take them back (see
    /// [`Journal::restore`]).
    pub(super) fn open(db: &Path, size: u64) -> std::io::Result<(Journal, HashMap<String, Entry>)> {
        let paths = paths(db);
        let files = [open_file(&paths[0], size)?, open_file(&paths[1], size)?];
        let texts = [content(&files[0])?, content(&files[1])?];
        let mut found: Vec<(u64, usize, Vec<Line>)> = (0..2)
            .filter_map(|i| parse(&texts[i]).map(|(g, lines)| (g, i, lines)))
            .collect();
        found.sort_by_key(|(g, _, _)| *g);
        // The newest file stays as it is until the first switch has
        // written everything it holds into the other one.
        let (gen, active) = found.last().map_or((0, 0), |(g, i, _)| (*g, *i));
        let mut entries = HashMap::new();
        for (_, _, lines) in found {
            replay(lines, &mut entries);
        }
        let used = [texts[0].len() as u64, texts[1].len() as u64];
        let journal = Journal {
            paths,
            files,
            used,
            active,
            gen,
            offset: size,
            size,
            live: HashMap::new(),
            live_bytes: 0,
            begun: 0,
        };
        Ok((journal, entries))
    }

    /// Take back entries (what [`Journal::open`] found, begun ones now
    /// ended as interrupted) into a fresh file.
    pub(super) fn restore(&mut self, ended: &[InvocationRecord]) -> std::io::Result<()> {
        for r in ended {
            let line = end_line(r);
            self.live_bytes += line.len() as u64;
            self.live.insert(r.id.clone(), Live { ended: true, line });
        }
        self.switch()
    }

    pub(super) fn path(&self) -> &Path {
        &self.paths[self.active]
    }

    /// Note that an invocation began; refused when the journal could not
    /// also take its end.
    /// `line` is [`begin_line`]'s.
    pub(super) fn begin(&mut self, id: &str, line: Vec<u8>) -> Result<(), JournalFull> {
        let need = self.header_bytes() + self.live_bytes + line.len() as u64;
        if need + (self.begun + 1) * END_RESERVE > self.size {
            return Err(self.full());
        }
        self.live_bytes += line.len() as u64;
        self.begun += 1;
        let l = Live {
            ended: false,
            line: line.clone(),
        };
        if let Some(old) = self.live.insert(id.to_string(), l) {
            self.drop_live(&old);
        }
        self.append(&line).map_err(|e| {
            if let Some(l) = self.live.remove(id) {
                self.drop_live(&l);
            }
            self.io_failed(id, "begin", e)
        })
    }

    /// Note that a begun invocation ended (`line` is [`end_line`]'s).
    /// Does nothing for one that never began (a zygote's init).
    pub(super) fn end(&mut self, id: &str, line: Vec<u8>) -> bool {
        let Some(old) = self.live.remove(id) else {
            return false;
        };
        self.drop_live(&old);
        self.live_bytes += line.len() as u64;
        let l = Live {
            ended: true,
            line: line.clone(),
        };
        self.live.insert(id.to_string(), l);
        if let Err(e) = self.append(&line) {
            let _ = self.io_failed(id, "end", e);
        }
        true
    }

    /// Forget a begun invocation that leaves no record.
    pub(super) fn discard(&mut self, id: &str) {
        if let Some(old) = self.live.remove(id) {
            self.drop_live(&old);
            if let Err(e) = self.append(&to_line(&LineRef::Discard(id))) {
                let _ = self.io_failed(id, "discard", e);
            }
        }
    }

    /// Forget ended invocations now in SQLite (not begun ones: a record
    /// saved `running` still needs its end).
    pub(super) fn saved(&mut self, ids: &[String]) {
        let mut gone = Vec::new();
        for id in ids {
            if self.live.get(id).is_some_and(|l| l.ended) {
                if let Some(old) = self.live.remove(id) {
                    self.drop_live(&old);
                    gone.push(id.clone());
                }
            }
        }
        if gone.is_empty() {
            return;
        }
        // What a long outage took goes back.
        if self.live.capacity() > 4 * self.live.len() + 1024 {
            self.live.shrink_to_fit();
        }
        if let Err(e) = self.append(&to_line(&LineRef::Saved(&gone))) {
            let _ = self.io_failed("", "saved", e);
        }
    }

    fn drop_live(&mut self, old: &Live) {
        self.live_bytes -= old.line.len() as u64;
        if !old.ended {
            self.begun -= 1;
        }
    }

    fn full(&self) -> JournalFull {
        JournalFull {
            path: self.paths[self.active].clone(),
            waiting: self.live.len(),
        }
    }

    /// A write failed (an I/O error, not a lack of room: the files are
    /// preallocated). Logged; the begin is refused.
    fn io_failed(&self, id: &str, what: &str, e: std::io::Error) -> JournalFull {
        crate::warn_limit::warn(
            "history-journal",
            format_args!(
                "invocation journal {}: writing the {what} line of {id:?}: {e}",
                self.path().display()
            ),
        );
        self.full()
    }

    fn header_bytes(&self) -> u64 {
        to_line(&LineRef::Gen(self.gen + 1)).len() as u64
    }

    /// Append a line at the end of the active file, or switch files (the
    /// live set, which already has it, is written to the other one).
    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.offset + line.len() as u64 > self.size {
            return self.switch();
        }
        self.files[self.active].write_all_at(line, self.offset)?;
        self.offset += line.len() as u64;
        self.used[self.active] = self.used[self.active].max(self.offset);
        Ok(())
    }

    /// Write the live set into the other file and make it the active one.
    fn switch(&mut self) -> std::io::Result<()> {
        let (old, new) = (self.active, 1 - self.active);
        let gen = self.gen + 1;
        let mut buf = to_line(&LineRef::Gen(gen));
        for l in self.live.values() {
            buf.extend_from_slice(&l.line);
        }
        if buf.len() as u64 > self.size {
            return Err(std::io::Error::other(
                "the live set is larger than the file",
            ));
        }
        let f = &self.files[new];
        f.write_all_at(&buf, 0)?;
        // What an older use left after it reads as the end of the file.
        let end = buf.len() as u64;
        if self.used[new] > end {
            f.write_all_at(&vec![0u8; (self.used[new] - end) as usize], end)?;
        }
        // Only now, with the new file complete, is the old one dropped.
        let header = self.used[old].min(64) as usize;
        self.files[old].write_all_at(&vec![0u8; header], 0)?;
        self.used[new] = end;
        self.active = new;
        self.gen = gen;
        self.offset = end;
        Ok(())
    }
}
