//! The clean-state check after each invocation: the sandbox must look
//! exactly as it did before (same mounts, only the zygote and its fresh
//! spare alive), or the daemon discards it.

use crate::procs;

/// Mount points of this mount namespace, in mountinfo order.
pub fn mount_points() -> Result<Vec<String>, MountinfoError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(MountinfoError)?;
    Ok(text
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .collect())
}

/// `/proc/self/mountinfo` could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading /proc/self/mountinfo: {0}")]
pub struct MountinfoError(std::io::Error);

/// What the sandbox looked like before any invocation.
pub struct Baseline {
    mounts: Vec<String>,
}

impl Baseline {
    pub fn capture() -> Result<Baseline, MountinfoError> {
        Ok(Baseline {
            mounts: mount_points()?,
        })
    }

    /// Every way the sandbox now differs from the baseline; empty = clean.
    /// `keep`: the processes that belong (zygote, spare or runner).
    /// `fork_mode`: `/tmp` must be empty and no IPC object left (a bound
    /// runner keeps its `/tmp` and IPC objects between invocations: they
    /// are its function's own, gone with the sandbox).
    pub fn problems(&self, keep: &[i32], fork_mode: bool) -> Vec<String> {
        self.problems_where(|pid| keep.contains(&pid), fork_mode)
    }

    /// As [`problems`](Self::problems), with `belongs` saying which
    /// processes may be there (decided when each is seen, so a process
    /// forked meanwhile is judged too).
    pub fn problems_where(&self, belongs: impl Fn(i32) -> bool, fork_mode: bool) -> Vec<String> {
        let mut problems = Vec::new();
        if fork_mode {
            problems.extend(tmp_left());
            problems.extend(crate::ipc::leftovers());
        }
        match mount_points() {
            Ok(now) => problems.extend(mount_diff(&self.mounts, &now)),
            Err(e) => problems.push(e.to_string()),
        }
        let running = |pid: i32| !belongs(pid) && !procs::is_zombie(pid);
        let mut left: Vec<i32> = procs::others()
            .into_iter()
            .filter(|&p| running(p))
            .collect();
        // A process SIGKILLed a moment ago (a stray of the invocation) may
        // not have died yet: give it up to 200 ms to become a zombie.
        for _ in 0..20 {
            if left.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            left.retain(|&p| running(p) && std::path::Path::new(&format!("/proc/{p}")).exists());
        }
        for pid in left {
            problems.push(format!(
                "process {pid} ({}) is still running",
                procs::comm(pid).unwrap_or_default()
            ));
        }
        problems
    }
}

/// `/tmp` must be empty between invocations: where the daemon mounts a
/// fresh tmpfs per invocation (runc, crun) it is unmounted by now and this
/// is the read-only root's empty directory; where `/tmp` is a host
/// directory the daemon empties (runsc), this checks the sandbox sees it
/// empty too.
pub fn tmp_left() -> Vec<String> {
    match std::fs::read_dir("/tmp") {
        Ok(entries) => entries
            .flatten()
            .map(|e| {
                format!(
                    "/tmp/{} left after the invocation",
                    e.file_name().to_string_lossy()
                )
            })
            .collect(),
        Err(e) => vec![format!("reading /tmp: {e}")],
    }
}

/// Mounts added or gone, comparing mount points as multisets (a mount
/// stacked on an existing point counts as new).
pub fn mount_diff(before: &[String], now: &[String]) -> Vec<String> {
    let mut left: Vec<&String> = before.iter().collect();
    let mut problems = Vec::new();
    for m in now {
        if let Some(i) = left.iter().position(|b| *b == m) {
            left.swap_remove(i);
        } else {
            problems.push(format!("unexpected mount at {m}"));
        }
    }
    problems.extend(left.into_iter().map(|m| format!("mount at {m} is gone")));
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn mount_diff_sees_added_stacked_and_removed_mounts() {
        let base = v(&["/", "/proc", "/usr"]);
        assert!(mount_diff(&base, &v(&["/", "/usr", "/proc"])).is_empty());
        assert_eq!(
            mount_diff(&base, &v(&["/", "/proc", "/usr", "/fn"])),
            vec!["unexpected mount at /fn"]
        );
        assert_eq!(
            mount_diff(&base, &v(&["/", "/proc", "/usr", "/usr"])),
            vec!["unexpected mount at /usr"]
        );
        assert_eq!(
            mount_diff(&base, &v(&["/", "/usr"])),
            vec!["mount at /proc is gone"]
        );
    }
}
