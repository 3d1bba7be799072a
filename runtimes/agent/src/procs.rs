//! Process bookkeeping for PID 1: listing, killing and reaping everything in
//! the sandbox's PID namespace.

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Every process in this PID namespace except the agent itself.
pub fn others() -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .collect()
}

/// Whether `pid` has exited and only waits for its parent to reap it: a
/// zombie runs nothing and holds nothing but its pid. A specialized
/// runner's child killed after an invocation stays one until the runner
/// waits for it (Python's `subprocess` does at its next `Popen`).
pub fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 2..];
            rest.chars().next()
        })
        == Some('Z')
}

/// Parent pid of `pid`, from `/proc/<pid>/stat`.
pub fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: skip past the
    // last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

/// SIGKILL every process except the agent and `keep`; returns how many
/// were signalled.
pub fn kill_all_but(keep: &[i32]) -> u32 {
    kill_where(|pid| !keep.contains(&pid))
}

/// SIGKILL every process (but the agent) for which `doomed` says so.
pub fn kill_where(doomed: impl Fn(i32) -> bool) -> u32 {
    let mut n = 0;
    for pid in others() {
        if !doomed(pid) {
            continue;
        }
        if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
            n += 1;
        }
    }
    n
}

/// Reap exited children (orphans re-parented to PID 1 included). Returns an
/// error if `zygote` is among them: the sandbox is then unusable.
pub fn reap(zygote: i32) -> Result<(), ReapError> {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(()),
            Ok(status) => {
                if status.pid() == Some(Pid::from_raw(zygote)) {
                    return Err(ReapError::ZygoteExited(status));
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(ReapError::Wait(e)),
        }
    }
}

/// Why reaping stopped: the zygote is gone, or `waitpid` failed.
#[derive(Debug, thiserror::Error)]
pub enum ReapError {
    #[error("zygote exited: {0:?}")]
    ZygoteExited(WaitStatus),
    #[error("waitpid: {0}")]
    Wait(Errno),
}

/// Tasks (threads, each process counting its own) of every process of
/// `uid` but those in `exclude`: what `RLIMIT_NPROC` counts of a function.
pub fn user_tasks(uid: u32, exclude: &[i32]) -> u64 {
    others()
        .into_iter()
        .filter(|pid| !exclude.contains(pid))
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter(|status| field(status, "Uid:") == Some(uid as u64))
        .map(|status| field(&status, "Threads:").unwrap_or(1))
        .sum()
}

/// How many threads `pid` has, from `/proc/<pid>/status`.
pub fn threads(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    field(&status, "Threads:")
}

/// The first number of line `key` in a `/proc/<pid>/status` text.
fn field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The command name of `pid`, from `/proc/<pid>/comm`.
pub fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read() {
        let status = "Name:\tpython3\nUid:\t65534\t65534\t65534\t65534\nThreads:\t3\n";
        assert_eq!(field(status, "Uid:"), Some(65534));
        assert_eq!(field(status, "Threads:"), Some(3));
        assert_eq!(field(status, "Gid:"), None);
    }

    #[test]
    fn a_child_that_exited_unreaped_is_a_zombie() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        assert!(!is_zombie(pid), "running");
        child.kill().expect("kill");
        let t = std::time::Instant::now();
        while !is_zombie(pid) {
            assert!(t.elapsed().as_secs() < 5, "never a zombie");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child.wait().expect("reap");
        assert!(!is_zombie(pid), "reaped: gone");
    }
}
