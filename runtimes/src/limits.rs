//! Per-invocation cgroup limits of a sandbox: memory, pids and CPU weight
//! are rewritten when the next function's limits differ from the last
//! one's, and the kernel's counters tell whether an invocation hit the
//! memory (OOM kill) or pids limit. Direct writes to the control files, as
//! for the freezer: no runtime process on the hot path.

use crate::cgroup::CgroupLayout;
use crate::error::RuntimeError;
use std::fs;
use std::path::{Path, PathBuf};

/// What one invocation may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvocationLimits {
    /// Memory of the whole sandbox during the invocation, in bytes.
    pub memory_bytes: u64,
    /// Processes (and threads) of the whole sandbox; `None`: leave the
    /// bundle's limit (backends whose cgroup counts their own threads).
    pub pids: Option<u64>,
    /// CPU weight in cgroup v1 `cpu.shares` units (2..=262144, 1024 normal).
    pub cpu_shares: u64,
}

/// Where one sandbox's limit files are.
#[derive(Debug, Clone)]
pub enum CgroupLimits {
    V1 {
        memory: Option<PathBuf>,
        pids: Option<PathBuf>,
        cpu: Option<PathBuf>,
    },
    V2(PathBuf),
}

/// Counters of limit hits since the cgroup was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitHits {
    pub oom_kills: u64,
    pub pids_max: u64,
}

impl CgroupLayout {
    /// The limit files of the cgroup at `cgroups_path`.
    pub fn limits(&self, cgroups_path: &str) -> CgroupLimits {
        let rel = cgroups_path.trim_start_matches('/');
        if let Some(root) = &self.v2_unified {
            return CgroupLimits::V2(root.join(rel));
        }
        let dir = |c: &str| self.v1_controller(c).map(|root| root.join(rel));
        CgroupLimits::V1 {
            memory: dir("memory"),
            pids: dir("pids"),
            cpu: dir("cpu"),
        }
    }
}

fn write(path: &Path, value: impl ToString) -> Result<(), RuntimeError> {
    fs::write(path, value.to_string()).map_err(|source| RuntimeError::Cgroup {
        path: path.to_path_buf(),
        source,
    })
}

fn read(path: &Path) -> Result<String, RuntimeError> {
    fs::read_to_string(path).map_err(|source| RuntimeError::Cgroup {
        path: path.to_path_buf(),
        source,
    })
}

/// The value of `key` in a flat keyed file (`memory.events`,
/// `memory.oom_control`, `pids.events`).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// cgroup v1 `cpu.shares` to v2 `cpu.weight` (the mapping runc and crun
/// use: 2..262144 onto 1..10000).
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

impl CgroupLimits {
    /// Current memory use of the sandbox, in bytes.
    pub fn memory_usage(&self) -> Result<u64, RuntimeError> {
        let path = match self {
            CgroupLimits::V1 {
                memory: Some(m), ..
            } => m.join("memory.usage_in_bytes"),
            CgroupLimits::V1 { memory: None, .. } => {
                return Err(RuntimeError::NoCgroup { what: "memory" })
            }
            CgroupLimits::V2(dir) => dir.join("memory.current"),
        };
        let text = read(&path)?;
        text.trim().parse().map_err(|_| RuntimeError::Cgroup {
            path,
            source: std::io::Error::other(format!("not a number: {text:?}")),
        })
    }

    /// Apply `want`, writing only what differs from `current`.
    pub fn apply(
        &self,
        want: &InvocationLimits,
        current: Option<&InvocationLimits>,
    ) -> Result<(), RuntimeError> {
        let changed = |f: fn(&InvocationLimits) -> u64| current.is_none_or(|c| f(c) != f(want));
        match self {
            CgroupLimits::V1 { memory, pids, cpu } => {
                if changed(|l| l.memory_bytes) {
                    if let Some(dir) = memory {
                        set_v1_memory(dir, want.memory_bytes)?;
                    }
                }
                if let (true, Some(dir), Some(n)) =
                    (current.is_none_or(|c| c.pids != want.pids), pids, want.pids)
                {
                    write(&dir.join("pids.max"), n)?;
                }
                if changed(|l| l.cpu_shares) {
                    if let Some(dir) = cpu {
                        write(&dir.join("cpu.shares"), want.cpu_shares)?;
                    }
                }
            }
            CgroupLimits::V2(dir) => {
                if changed(|l| l.memory_bytes) {
                    write(&dir.join("memory.max"), want.memory_bytes)?;
                }
                if let (true, Some(n)) = (current.is_none_or(|c| c.pids != want.pids), want.pids) {
                    write(&dir.join("pids.max"), n)?;
                }
                if changed(|l| l.cpu_shares) {
                    write(&dir.join("cpu.weight"), shares_to_weight(want.cpu_shares))?;
                }
            }
        }
        Ok(())
    }

    /// How often the sandbox hit its memory and pids limits so far.
    pub fn hits(&self) -> LimitHits {
        let get = |p: Option<PathBuf>, key: &str| {
            p.and_then(|p| fs::read_to_string(p).ok())
                .and_then(|t| keyed(&t, key))
                .unwrap_or(0)
        };
        match self {
            CgroupLimits::V1 { memory, pids, .. } => LimitHits {
                oom_kills: get(
                    memory.as_ref().map(|d| d.join("memory.oom_control")),
                    "oom_kill",
                ),
                pids_max: get(pids.as_ref().map(|d| d.join("pids.events")), "max"),
            },
            CgroupLimits::V2(dir) => LimitHits {
                oom_kills: get(Some(dir.join("memory.events")), "oom_kill"),
                pids_max: get(Some(dir.join("pids.events")), "max"),
            },
        }
    }
}

/// v1 keeps `memory.limit_in_bytes <= memory.memsw.limit_in_bytes` at all
/// times, so the order of the two writes depends on the direction. The
/// sandbox never swaps: both get the same value.
fn set_v1_memory(dir: &Path, bytes: u64) -> Result<(), RuntimeError> {
    let mem = dir.join("memory.limit_in_bytes");
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    let has_memsw = memsw.exists();
    // The file, not our memory of it: the first change starts from the
    // bundle's limit.
    let growing = read(&mem)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .is_none_or(|c| bytes > c);
    if has_memsw && growing {
        write(&memsw, bytes)?;
    }
    write(&mem, bytes)?;
    if has_memsw && !growing {
        write(&memsw, bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files_parse() {
        let t = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed(t, "oom_kill"), Some(3));
        assert_eq!(keyed(t, "oom"), None);
        assert_eq!(keyed("max 0\n", "max"), Some(0));
    }

    #[test]
    fn shares_map_onto_weights() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(0), 1);
    }

    #[test]
    fn only_changed_limits_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let limits = CgroupLimits::V1 {
            memory: Some(d.clone()),
            pids: Some(d.clone()),
            cpu: Some(d.clone()),
        };
        let a = InvocationLimits {
            memory_bytes: 100,
            pids: Some(10),
            cpu_shares: 512,
        };
        limits.apply(&a, None).unwrap();
        assert_eq!(
            fs::read_to_string(d.join("memory.limit_in_bytes")).unwrap(),
            "100"
        );
        assert_eq!(fs::read_to_string(d.join("pids.max")).unwrap(), "10");
        assert_eq!(fs::read_to_string(d.join("cpu.shares")).unwrap(), "512");
        fs::remove_file(d.join("pids.max")).unwrap();
        let b = InvocationLimits {
            memory_bytes: 50,
            ..a
        };
        limits.apply(&b, Some(&a)).unwrap();
        assert_eq!(
            fs::read_to_string(d.join("memory.limit_in_bytes")).unwrap(),
            "50"
        );
        assert!(
            !d.join("pids.max").exists(),
            "unchanged pids limit was rewritten"
        );
    }
}
