//! User namespaces of emberd's sandboxes.
//!
//! Every sandbox emberd creates (and every deploy build) runs in its own
//! user namespace whose ids 0..65535 map onto a block of 65536 host ids of
//! its own, taken from a range that no host account uses. So a host
//! process that is not root never shares an id with a sandbox process (it
//! can neither signal, trace nor read it through `/proc`), and two
//! sandboxes never share a host id either.
//!
//! The range is an operator setting (`emberd --userns-base`, `--userns-blocks`);
//! the default, `0x6000_0000` (1610612736) for 4096 blocks, ends at
//! `0x7000_0000`, inside the span systemd reserves for container ids
//! (`0x80000..0x6FFFFFFF`, "UIDs and GIDs" in systemd's docs) and far above
//! ids handed to accounts. emberd refuses to start when `/etc/passwd`,
//! `/etc/group`, `/etc/subuid` or `/etc/subgid` names an id in it.
//!
//! A block is held by an exclusive `flock` on a file named after its first
//! host id in a machine-wide directory (`/run/ember/userns`), so daemons on
//! one host never hand out the same block; the lock goes with the process,
//! so the blocks of a daemon that crashed come free by themselves (its
//! sandboxes are removed by its next start).

use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// Host ids each sandbox gets: its ids 0..65535.
pub const IDS_PER_SANDBOX: u32 = 65536;

/// Where the block locks of every emberd on this host live.
pub const LOCK_DIR: &str = "/run/ember/userns";

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error(
        "user namespace range {first}..{end} (--userns-base, --userns-blocks) overlaps \
         {file} line {line} (id {id}): sandbox ids must not belong to any host account; \
         choose another --userns-base"
    )]
    Overlap {
        first: u64,
        end: u64,
        file: String,
        line: usize,
        id: u64,
    },
    #[error("user namespace range {first}..{end} does not fit below 2^31 host ids")]
    TooLarge { first: u64, end: u64 },
    #[error("user namespace block lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "all {blocks} user namespace blocks from {first} are taken (by this and other emberd \
         processes): raise --userns-blocks or stop some sandboxes"
    )]
    Exhausted { first: u64, blocks: u32 },
}

/// The host ids sandboxes may use: `blocks` blocks of 65536 from `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub base: u32,
    pub blocks: u32,
}

impl Default for IdRange {
    fn default() -> Self {
        IdRange {
            base: 0x6000_0000,
            blocks: 4096,
        }
    }
}

impl IdRange {
    /// One past the last host id of the range.
    pub fn end(&self) -> u64 {
        u64::from(self.base) + u64::from(self.blocks) * u64::from(IDS_PER_SANDBOX)
    }

    /// Refuse a range that does not fit in the positive 32-bit ids (tools
    /// mishandle ids at and above 2^31) or that names a host account: the
    /// id fields of passwd/group files, the ranges of subuid/subgid files
    /// (given as their text, so tests need no host files).
    pub fn check(&self, files: &[(&str, &str)]) -> Result<(), UsernsError> {
        let (first, end) = (u64::from(self.base), self.end());
        if end > 1 << 31 {
            return Err(UsernsError::TooLarge { first, end });
        }
        for (file, text) in files {
            let sub = file.contains("subuid") || file.contains("subgid");
            for (i, line) in text.lines().enumerate() {
                let overlap = |id: u64, len: u64| id < end && id + len > first;
                let fields: Vec<&str> = line.split(':').collect();
                let hit = if sub {
                    // name:first:count
                    match (fields.get(1), fields.get(2)) {
                        (Some(a), Some(n)) => match (a.parse::<u64>(), n.parse::<u64>()) {
                            (Ok(a), Ok(n)) => overlap(a, n).then_some(a),
                            _ => None,
                        },
                        _ => None,
                    }
                } else {
                    // passwd: name:x:uid:gid:...; group: name:x:gid:...
                    fields
                        .iter()
                        .skip(2)
                        .take(2)
                        .filter_map(|f| f.parse::<u64>().ok())
                        .find(|&id| overlap(id, 1))
                };
                if let Some(id) = hit {
                    return Err(UsernsError::Overlap {
                        first,
                        end,
                        file: file.to_string(),
                        line: i + 1,
                        id,
                    });
                }
            }
        }
        Ok(())
    }

    /// [`IdRange::check`] against this host's account files.
    pub fn check_host(&self) -> Result<(), UsernsError> {
        let names = ["/etc/passwd", "/etc/group", "/etc/subuid", "/etc/subgid"];
        let texts: Vec<(&str, String)> = names
            .iter()
            .map(|n| (*n, std::fs::read_to_string(n).unwrap_or_default()))
            .collect();
        let files: Vec<(&str, &str)> = texts.iter().map(|(n, t)| (*n, t.as_str())).collect();
        self.check(&files)
    }

    /// Take a free block, held until the returned [`IdBlock`] is dropped.
    pub fn allocate(&self, lock_dir: &Path) -> Result<IdBlock, UsernsError> {
        let lock_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| UsernsError::Lock { path, source }
        };
        std::fs::create_dir_all(lock_dir).map_err(lock_err(lock_dir))?;
        // Start somewhere else each time, so concurrent daemons rarely
        // race for the same file.
        let start = pseudo_random() % self.blocks.max(1);
        for i in 0..self.blocks {
            let index = (start + i) % self.blocks;
            let host_base = self.base + index * IDS_PER_SANDBOX;
            let path = lock_dir.join(host_base.to_string());
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(lock_err(&path))?;
            if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                return Ok(IdBlock {
                    host_base,
                    _lock: lock,
                });
            }
        }
        Err(UsernsError::Exhausted {
            first: u64::from(self.base),
            blocks: self.blocks,
        })
    }
}

/// One sandbox's block of host ids, reserved while this lives.
#[derive(Debug)]
pub struct IdBlock {
    /// The host id of the sandbox's id 0.
    pub host_base: u32,
    _lock: Flock<File>,
}

impl IdBlock {
    /// The host id of the sandbox's id `inside`.
    pub fn host_id(&self, inside: u32) -> u32 {
        self.host_base + inside
    }
}

fn pseudo_random() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    t ^ std::process::id().rotate_left(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_range_ends_inside_the_container_span() {
        let r = IdRange::default();
        assert_eq!(r.end(), 0x7000_0000);
        r.check(&[(
            "/etc/passwd",
            "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/x\n",
        )])
        .unwrap();
    }

    #[test]
    fn accounts_and_subordinate_ranges_inside_the_range_are_refused() {
        let r = IdRange {
            base: 200_000,
            blocks: 2,
        };
        let err = r
            .check(&[("/etc/passwd", "a:x:1000:1000::/:/x\nb:x:200001:5::/:/x\n")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/etc/passwd line 2") && err.contains("200001"),
            "{err}"
        );
        let err = r
            .check(&[("/etc/group", "g:x:331000:\n")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/group line 1"), "{err}");
        // A subordinate range that straddles the start.
        assert!(r.check(&[("/etc/subuid", "u:100000:100001\n")]).is_err());
        assert!(r.check(&[("/etc/subuid", "u:100000:100000\n")]).is_ok());
        assert!(r.check(&[("/etc/subgid", "u:331072:10\n")]).is_ok());
    }

    #[test]
    fn ranges_past_2_pow_31_are_refused() {
        let r = IdRange {
            base: 0x7FFF_0000,
            blocks: 2,
        };
        assert!(matches!(r.check(&[]), Err(UsernsError::TooLarge { .. })));
    }

    #[test]
    fn blocks_are_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let r = IdRange {
            base: 1 << 24,
            blocks: 2,
        };
        let a = r.allocate(dir.path()).unwrap();
        let b = r.allocate(dir.path()).unwrap();
        assert_ne!(a.host_base, b.host_base);
        assert!(matches!(
            r.allocate(dir.path()),
            Err(UsernsError::Exhausted { blocks: 2, .. })
        ));
        let freed = a.host_base;
        drop(a);
        let c = r.allocate(dir.path()).unwrap();
        assert_eq!(c.host_base, freed);
        assert_eq!(c.host_id(65534), freed + 65534);
    }
}
