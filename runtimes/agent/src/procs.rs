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

/// SIGKILL every process except the agent and `keep`; returns how many
/// were signalled.
pub fn kill_all_but(keep: &[i32]) -> u32 {
    let mut n = 0;
    for pid in others() {
        if keep.contains(&pid) {
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
pub fn reap(zygote: i32) -> Result<(), String> {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(()),
            Ok(status) => {
                if status.pid() == Some(Pid::from_raw(zygote)) {
                    return Err(format!("zygote exited: {status:?}"));
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("waitpid: {e}")),
        }
    }
}
