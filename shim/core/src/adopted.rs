//! What emberd remembers of the sandboxes it adopted, so the next emberd
//! on the same state dir takes them back (after a drain or a SIGKILL
//! alike): one JSON file per sandbox in `<state dir>/adopted/`, written
//! once the sandbox is in its pool, removed when the pool lets it go for
//! good (its container ended, or an invocation left it unusable). The
//! files are the registration (`AdoptRequest`) plus the start time of the
//! container's init, so a pid reused since is never taken for it.

use ember_api::pool::AdoptRequest;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One adopted sandbox, as remembered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AdoptedRecord {
    pub request: AdoptRequest,
    /// Start time of `request.pid` (clock ticks since boot, from
    /// `/proc/<pid>/stat`) when it was adopted.
    pub pid_start: u64,
}

/// Why a record could not be written.
#[derive(Debug, thiserror::Error)]
#[error("recording adopted sandbox {id} in {path}: {source}")]
pub struct RecordError {
    id: String,
    path: PathBuf,
    source: std::io::Error,
}

/// The directory of records.
#[derive(Debug, Clone)]
pub struct AdoptedRecords {
    dir: PathBuf,
}

impl AdoptedRecords {
    pub fn new(state_dir: &Path) -> AdoptedRecords {
        AdoptedRecords {
            dir: state_dir.join("adopted"),
        }
    }

    /// The record of sandbox `id` (a checked sandbox id: no `/`).
    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Write (or replace) the record of `record.request.id`.
    pub fn save(&self, record: &AdoptedRecord) -> Result<(), RecordError> {
        let id = &record.request.id;
        let path = self.path(id);
        let err = |source| RecordError {
            id: id.clone(),
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(err)?;
        let text = serde_json::to_vec(record).map_err(|e| err(e.into()))?;
        let tmp = self.dir.join(format!(".{id}.json.tmp"));
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(err)
    }

    /// Forget sandbox `id` (no record is fine).
    pub fn remove(&self, id: &str) {
        let path = self.path(id);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(sandbox = id, path = %path.display(), "removing adoption record: {e}");
            }
        }
    }

    /// Every readable record; an unreadable one is logged and removed.
    pub fn load(&self) -> Vec<AdoptedRecord> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for path in entries.flatten().map(|e| e.path()) {
            if path.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
            match parsed {
                Ok(record) => out.push(record),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "dropping unreadable adoption record: {e}");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        out
    }
}

/// Start time of process `pid` (field 22 of `/proc/<pid>/stat`), if it runs.
pub fn pid_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: count from the
    // last ')', after which field 3 (state) comes.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> AdoptedRecord {
        AdoptedRecord {
            request: AdoptRequest {
                id: id.into(),
                runtime: "python3".into(),
                pid: 42,
                socket: "/run/ember/a/x/run/agent.sock".into(),
                cgroups_path: "/k8s.io/x".into(),
                version: Some("0.1.0".into()),
            },
            pid_start: 7,
        }
    }

    #[test]
    fn records_are_kept_until_removed() {
        let state = tempfile::tempdir().unwrap();
        let records = AdoptedRecords::new(state.path());
        assert!(records.load().is_empty(), "no directory yet");
        records.save(&record("a")).unwrap();
        records.save(&record("b")).unwrap();
        std::fs::write(state.path().join("adopted/junk.json"), "{").unwrap();
        let mut ids: Vec<String> = records.load().into_iter().map(|r| r.request.id).collect();
        ids.sort();
        assert_eq!(ids, ["a", "b"]);
        assert!(!state.path().join("adopted/junk.json").exists());
        records.remove("a");
        records.remove("a");
        assert_eq!(records.load(), vec![record("b")]);
    }

    #[test]
    fn a_running_process_has_a_start_time() {
        let me = std::process::id();
        assert!(pid_start(me).is_some_and(|t| t > 0));
        assert_eq!(pid_start(me), pid_start(me));
        assert_eq!(pid_start(u32::MAX), None);
    }
}
