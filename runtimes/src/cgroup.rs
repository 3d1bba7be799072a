//! Freezing and thawing a sandbox through its cgroup (v1 freezer or v2
//! `cgroup.freeze`) by writing the control files directly: no `runc pause`
//! process on the hot path. Also removal of a whole cgroup subtree across
//! every mounted hierarchy, for cleanup after a crash.

use crate::error::RuntimeError;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Longest we wait for a freeze to settle before calling it failed.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(2);

/// Cgroup hierarchies mounted on this host.
#[derive(Debug, Clone)]
pub struct CgroupLayout {
    /// The v1 freezer hierarchy, if any.
    pub v1_freezer: Option<PathBuf>,
    /// The v2 hierarchy, if it is the only one (pure v2 host).
    pub v2_unified: Option<PathBuf>,
    /// Every cgroup mount (v1 and v2), for cleanup.
    pub all: Vec<PathBuf>,
    /// v1 hierarchies with the controllers each carries.
    pub v1: Vec<(Vec<String>, PathBuf)>,
}

impl CgroupLayout {
    pub fn detect() -> CgroupLayout {
        let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Self::parse(&text)
    }

    pub fn parse(mountinfo: &str) -> CgroupLayout {
        let mut layout = CgroupLayout {
            v1_freezer: None,
            v2_unified: None,
            all: Vec::new(),
            v1: Vec::new(),
        };
        let mut v2 = None;
        for line in mountinfo.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(sep) = fields.iter().position(|f| *f == "-") else {
                continue;
            };
            let (Some(point), Some(fstype)) = (fields.get(4), fields.get(sep + 1)) else {
                continue;
            };
            let opts = fields.get(sep + 3).copied().unwrap_or("");
            match *fstype {
                "cgroup" => {
                    layout.all.push(PathBuf::from(point));
                    layout.v1.push((
                        opts.split(',').map(str::to_string).collect(),
                        PathBuf::from(point),
                    ));
                    if opts.split(',').any(|o| o == "freezer") {
                        layout.v1_freezer = Some(PathBuf::from(point));
                    }
                }
                "cgroup2" => {
                    layout.all.push(PathBuf::from(point));
                    v2 = Some(PathBuf::from(point));
                }
                _ => {}
            }
        }
        if layout.v1_freezer.is_none() {
            layout.v2_unified = v2;
        }
        layout
    }

    /// The v1 hierarchy that carries `controller`, if mounted.
    pub fn v1_controller(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|(c, _)| c.iter().any(|x| x == controller))
            .map(|(_, p)| p.as_path())
    }

    /// The freezer of the cgroup at `cgroups_path` (as in the OCI config).
    pub fn freezer(&self, cgroups_path: &str) -> Result<Freezer, RuntimeError> {
        let rel = cgroups_path.trim_start_matches('/');
        if let Some(root) = &self.v1_freezer {
            return Ok(Freezer::V1(root.join(rel).join("freezer.state")));
        }
        if let Some(root) = &self.v2_unified {
            return Ok(Freezer::V2(root.join(rel)));
        }
        Err(RuntimeError::NoCgroup { what: "freezer" })
    }

    /// Thaw every frozen cgroup under `prefix` (v1 freezer or v2): a
    /// runtime asked about a frozen container may block on it (runsc does).
    pub fn thaw_tree(&self, prefix: &str) {
        let rel = prefix.trim_start_matches('/');
        for root in self.v1_freezer.iter().chain(self.v2_unified.iter()) {
            thaw_dir_tree(&root.join(rel));
        }
    }

    /// Kill every process left in `<hierarchy>/<prefix>` and remove the
    /// directories, deepest first, in every hierarchy. Returns the cgroups
    /// that could not be removed.
    pub fn remove_tree(&self, prefix: &str) -> Vec<PathBuf> {
        let rel = prefix.trim_start_matches('/');
        let mut left = Vec::new();
        for root in &self.all {
            let top = root.join(rel);
            if top.is_dir() {
                remove_dir_tree(&top, &mut left);
            }
        }
        left
    }
}

/// What all of one daemon's sandboxes (and builds) may use together: the
/// limits of their common parent cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub memory_bytes: u64,
    pub pids: u64,
}

impl CgroupLayout {
    /// Create the cgroup `prefix` (the parent of a daemon's sandboxes) in
    /// the memory and pids hierarchies and set `budget` on it: the kernel
    /// then holds every sandbox under it to the budget together, whatever
    /// each one's own limits say.
    pub fn set_budget(&self, prefix: &str, budget: Budget) -> Result<(), RuntimeError> {
        let rel = prefix.trim_start_matches('/');
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RuntimeError::Cgroup { path, source }
        };
        if let Some(root) = &self.v2_unified {
            // Each level down to the parent must hand the controllers on.
            let mut dir = root.clone();
            for part in Path::new(rel).components() {
                let ctl = dir.join("cgroup.subtree_control");
                fs::write(&ctl, "+memory +pids").map_err(err(&ctl))?;
                dir.push(part);
                fs::create_dir_all(&dir).map_err(err(&dir))?;
            }
            let mem = dir.join("memory.max");
            fs::write(&mem, budget.memory_bytes.to_string()).map_err(err(&mem))?;
            let pids = dir.join("pids.max");
            return fs::write(&pids, budget.pids.to_string()).map_err(err(&pids));
        }
        let memory = self
            .v1_controller("memory")
            .ok_or(RuntimeError::NoCgroup { what: "memory" })?
            .join(rel);
        fs::create_dir_all(&memory).map_err(err(&memory))?;
        let limit = memory.join("memory.limit_in_bytes");
        fs::write(&limit, budget.memory_bytes.to_string()).map_err(err(&limit))?;
        let pids = self
            .v1_controller("pids")
            .ok_or(RuntimeError::NoCgroup { what: "pids" })?
            .join(rel);
        fs::create_dir_all(&pids).map_err(err(&pids))?;
        let max = pids.join("pids.max");
        fs::write(&max, budget.pids.to_string()).map_err(err(&max))
    }
}

fn thaw_dir_tree(dir: &Path) {
    let _ = fs::write(dir.join("freezer.state"), "THAWED");
    let _ = fs::write(dir.join("cgroup.freeze"), "0");
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                thaw_dir_tree(&e.path());
            }
        }
    }
}

fn remove_dir_tree(dir: &Path, left: &mut Vec<PathBuf>) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_dir_tree(&e.path(), left);
            }
        }
    }
    // Thaw first: a frozen process cannot die.
    let _ = fs::write(dir.join("freezer.state"), "THAWED");
    let _ = fs::write(dir.join("cgroup.freeze"), "0");
    for _ in 0..50 {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<i32> = procs
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            // SAFETY: plain kill(2) on a pid read from this cgroup.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if fs::remove_dir(dir).is_err() && dir.exists() {
        left.push(dir.to_path_buf());
    }
}

/// One sandbox's freezer control.
#[derive(Debug, Clone)]
pub enum Freezer {
    /// Path of `freezer.state`.
    V1(PathBuf),
    /// Path of the cgroup directory.
    V2(PathBuf),
}

impl Freezer {
    fn err(path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError + '_ {
        move |source| RuntimeError::Cgroup {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn freeze(&self) -> Result<(), RuntimeError> {
        let deadline = Instant::now() + FREEZE_TIMEOUT;
        match self {
            Freezer::V1(state) => loop {
                fs::write(state, "FROZEN").map_err(Self::err(state))?;
                let now = fs::read_to_string(state).map_err(Self::err(state))?;
                if now.trim() == "FROZEN" {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(RuntimeError::Cgroup {
                        path: state.clone(),
                        source: std::io::Error::other(format!("still {} after 2 s", now.trim())),
                    });
                }
                std::thread::sleep(Duration::from_micros(100));
            },
            Freezer::V2(dir) => {
                let ctl = dir.join("cgroup.freeze");
                fs::write(&ctl, "1").map_err(Self::err(&ctl))?;
                let events = dir.join("cgroup.events");
                loop {
                    let text = fs::read_to_string(&events).map_err(Self::err(&events))?;
                    if text.lines().any(|l| l.trim() == "frozen 1") {
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        return Err(RuntimeError::Cgroup {
                            path: events,
                            source: std::io::Error::other("not frozen after 2 s"),
                        });
                    }
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
        }
    }

    /// Start freezing without waiting for it to settle: the hot path's
    /// variant. A sandbox still `FREEZING` when it is next thawed is fine.
    pub fn request_freeze(&self) -> Result<(), RuntimeError> {
        match self {
            Freezer::V1(state) => fs::write(state, "FROZEN").map_err(Self::err(state)),
            Freezer::V2(dir) => {
                let ctl = dir.join("cgroup.freeze");
                fs::write(&ctl, "1").map_err(Self::err(&ctl))
            }
        }
    }

    pub fn thaw(&self) -> Result<(), RuntimeError> {
        match self {
            Freezer::V1(state) => fs::write(state, "THAWED").map_err(Self::err(state)),
            Freezer::V2(dir) => {
                let ctl = dir.join("cgroup.freeze");
                fs::write(&ctl, "0").map_err(Self::err(&ctl))
            }
        }
    }

    pub fn is_frozen(&self) -> bool {
        match self {
            Freezer::V1(state) => fs::read_to_string(state)
                .map(|s| s.trim() == "FROZEN")
                .unwrap_or(false),
            Freezer::V2(dir) => fs::read_to_string(dir.join("cgroup.events"))
                .map(|t| t.lines().any(|l| l.trim() == "frozen 1"))
                .unwrap_or(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_hybrid_v1_freezer() {
        let mi = "30 25 0:26 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer\n\
                  31 25 0:27 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                  32 25 0:28 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let l = CgroupLayout::parse(mi);
        assert_eq!(l.v1_freezer, Some(PathBuf::from("/sys/fs/cgroup/freezer")));
        assert_eq!(l.v2_unified, None);
        assert_eq!(l.all.len(), 3);
        match l.freezer("/ember/a/b").unwrap() {
            Freezer::V1(p) => assert_eq!(
                p,
                PathBuf::from("/sys/fs/cgroup/freezer/ember/a/b/freezer.state")
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn detects_pure_v2() {
        let mi = "30 25 0:26 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n";
        let l = CgroupLayout::parse(mi);
        assert!(matches!(l.freezer("/x").unwrap(), Freezer::V2(_)));
    }

    #[test]
    fn no_cgroups_is_an_error() {
        let l = CgroupLayout::parse("");
        assert!(matches!(
            l.freezer("/x"),
            Err(RuntimeError::NoCgroup { .. })
        ));
    }
}
