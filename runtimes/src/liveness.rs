//! Whether a sandbox's processes still run, cheaply enough to ask before
//! every invocation: a pidfd per process, opened while the sandbox is made,
//! turns readable once its process has exited, so a check is one poll(2)
//! per process and no runtime call. A pidfd also pins its process's
//! identity: a pid reused after the process is reaped never fools it.

use crate::cgroup::Freezer;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// SIGKILL's bit in `/proc/<pid>/status`'s pending-signal masks.
const SIGKILL_MASK: u64 = 1 << (libc::SIGKILL - 1);

/// A process of a sandbox found dead (or dying).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadProcess {
    /// What it was to the sandbox: `agent`, `zygote`, ...
    pub what: &'static str,
    /// Its host pid.
    pub pid: u32,
}

impl std::fmt::Display for DeadProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "its {} (host pid {}) is gone", self.what, self.pid)
    }
}

/// How one process is watched.
#[derive(Debug)]
enum Handle {
    Pidfd(OwnedFd),
    /// No pidfd (a kernel before 5.3): `/proc`, which a reused pid fools.
    Proc,
    /// It had exited before it could be watched.
    Gone,
}

/// A watch on one host process.
#[derive(Debug)]
pub struct PidWatch {
    what: &'static str,
    pid: u32,
    /// Its pid as the agent knows it, inside the sandbox.
    ns_pid: Option<u32>,
    handle: Handle,
}

impl PidWatch {
    /// Watch host process `pid`, which is the sandbox's `what`.
    pub fn open(what: &'static str, pid: u32) -> PidWatch {
        let handle = match pidfd_open(pid) {
            Ok(fd) => Handle::Pidfd(fd),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Handle::Gone,
            Err(e) => {
                tracing::debug!(pid, what, "no pidfd ({e}); watching through /proc");
                Handle::Proc
            }
        };
        PidWatch {
            what,
            pid,
            ns_pid: None,
            handle,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process has exited. `frozen`: its cgroup is frozen, where
    /// (cgroup v1) a SIGKILL stays pending until the thaw, so a pending one
    /// counts as dead too (one small `/proc` read, frozen sandboxes only).
    pub fn exited(&self, frozen: bool) -> bool {
        let gone = match &self.handle {
            Handle::Pidfd(fd) => pidfd_readable(fd),
            Handle::Proc => !pid_running(self.pid),
            Handle::Gone => true,
        };
        gone || (frozen && kill_pending(self.pid))
    }

    fn dead(&self, frozen: bool) -> Option<DeadProcess> {
        self.exited(frozen).then_some(DeadProcess {
            what: self.what,
            pid: self.pid,
        })
    }
}

/// The processes a sandbox cannot serve without: its agent (the host
/// process behind it: the container's init, or runsc's sandbox process)
/// and, where their host pids can be known, its zygotes or runner.
#[derive(Debug)]
pub struct Liveness {
    agent: PidWatch,
    others: Vec<PidWatch>,
}

impl Liveness {
    /// Watch the agent, host pid `agent`.
    pub fn new(agent: u32) -> Liveness {
        Liveness {
            agent: PidWatch::open("agent", agent),
            others: Vec::new(),
        }
    }

    /// Also watch host process `pid`, the sandbox's `what`, whose pid in
    /// the sandbox is `ns_pid`.
    pub fn watch(&mut self, what: &'static str, pid: u32, ns_pid: u32) {
        let mut watch = PidWatch::open(what, pid);
        watch.ns_pid = Some(ns_pid);
        self.others.push(watch);
    }

    /// Whether the process the agent knows as `ns_pid` is watched already.
    pub fn watches(&self, ns_pid: u32) -> bool {
        self.others.iter().any(|w| w.ns_pid == Some(ns_pid))
    }

    /// Whether the agent's process still runs.
    pub fn agent_alive(&self, frozen: bool) -> bool {
        !self.agent.exited(frozen)
    }

    /// The first watched process found dead, agent first.
    pub fn first_dead(&self, frozen: bool) -> Option<DeadProcess> {
        std::iter::once(&self.agent)
            .chain(&self.others)
            .find_map(|w| w.dead(frozen))
    }
}

/// A pidfd for host process `pid` (nix has no wrapper for pidfd_open).
fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags, no pointers; it returns
    // a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0 as libc::c_uint) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just made this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Whether a pidfd polls readable (its process has exited), without
/// waiting. A failed poll proves nothing: alive.
fn pidfd_readable(fd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// Whether process `pid` has a SIGKILL pending (it dies as soon as it
/// runs again).
fn kill_pending(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .filter_map(|l| {
            l.strip_prefix("SigPnd:")
                .or_else(|| l.strip_prefix("ShdPnd:"))
        })
        .filter_map(|v| u64::from_str_radix(v.trim(), 16).ok())
        .any(|mask| mask & SIGKILL_MASK != 0)
}

/// The cgroup directory whose `cgroup.procs` lists a sandbox's processes.
fn cgroup_dir(freezer: &Freezer) -> Option<&Path> {
    match freezer {
        Freezer::V1(state) => state.parent(),
        Freezer::V2(dir) => Some(dir),
    }
}

/// The host pid of the sandbox process whose pid in its own (innermost)
/// pid namespace is `ns_pid`, found among its cgroup's processes: the
/// agent reports pids as it sees them.
pub fn host_pid_of(freezer: &Freezer, ns_pid: u32) -> Option<u32> {
    let procs = std::fs::read_to_string(cgroup_dir(freezer)?.join("cgroup.procs")).ok()?;
    procs
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .find(|&pid| innermost_pid(pid) == Some(ns_pid))
}

/// Process `pid`'s pid in its innermost pid namespace (`NSpid`'s last).
fn innermost_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// Whether process `pid` runs: not gone, and not a zombie its parent has
/// yet to reap.
pub fn pid_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|st| {
            st.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::{Duration, Instant};

    /// Poll `watch` until it says dead (the kill lands asynchronously).
    fn wait_dead(watch: &PidWatch) -> bool {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if watch.exited(false) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn a_pidfd_tells_a_running_child_from_a_killed_one() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let watch = PidWatch::open("agent", child.id());
        assert!(matches!(watch.handle, Handle::Pidfd(_) | Handle::Proc));
        assert!(!watch.exited(false));
        assert!(!watch.exited(true), "no kill pending yet");
        child.kill().unwrap();
        // Dead before it is reaped (a zombie), and still after.
        assert!(wait_dead(&watch));
        child.wait().unwrap();
        assert!(watch.exited(false));
    }

    #[test]
    fn liveness_names_the_dead_process() {
        let agent = Command::new("sleep").arg("30").spawn().unwrap();
        let mut zygote = Command::new("sleep").arg("30").spawn().unwrap();
        let mut live = Liveness::new(agent.id());
        live.watch("zygote", zygote.id(), 2);
        assert!(live.watches(2) && !live.watches(3));
        assert_eq!(live.first_dead(false), None);
        zygote.kill().unwrap();
        zygote.wait().unwrap();
        let dead = live.first_dead(false).unwrap();
        assert_eq!((dead.what, dead.pid), ("zygote", zygote.id()));
        assert!(live.agent_alive(false));
        let mut agent = agent;
        agent.kill().unwrap();
        agent.wait().unwrap();
        assert_eq!(live.first_dead(false).unwrap().what, "agent");
    }

    #[test]
    fn a_process_gone_before_it_is_watched_is_dead() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        // Reaped: its pid is free (a reuse this quick is most unlikely).
        assert!(PidWatch::open("agent", pid).exited(false));
    }

    #[test]
    fn status_reads_our_own_process() {
        let me = std::process::id();
        assert!(!kill_pending(me), "no SIGKILL pending here");
        assert_eq!(innermost_pid(me), Some(me));
    }
}
