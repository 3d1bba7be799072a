//! What an invocation may leave in the sandbox's IPC namespace: System V
//! shared memory, message queues and semaphore sets, and POSIX message
//! queues. The worker's user (not the agent, which is neither their
//! creator nor privileged) removes them after each fork-mode invocation
//! (the zygote's spare does, see `zygote.py`); this module counts what is
//! left, for the clean-state check: anything left discards the sandbox.
//!
//! Counting uses the `*_INFO` commands, which need no permission on the
//! objects and work where `/proc/sysvipc` does not exist (gVisor).

/// Where the sandbox's POSIX message queues are listed (an `mqueue` mount
/// of the bundle; absent under gVisor, whose message queues cannot carry
/// messages).
const MQUEUE_DIR: &str = "/dev/mqueue";

// The kernel's `*_INFO` commands and what they fill (x86_64 layouts of
// `struct shm_info`, `struct msginfo`, `struct seminfo`).
const SHM_INFO: libc::c_int = 14;
const MSG_INFO: libc::c_int = 12;
const SEM_INFO: libc::c_int = 19;

#[repr(C)]
#[derive(Default)]
struct ShmInfo {
    used_ids: libc::c_int,
    shm_tot: libc::c_ulong,
    shm_rss: libc::c_ulong,
    shm_swp: libc::c_ulong,
    swap_attempts: libc::c_ulong,
    swap_successes: libc::c_ulong,
}

#[repr(C)]
#[derive(Default)]
struct MsgInfo {
    msgpool: libc::c_int,
    msgmap: libc::c_int,
    msgmax: libc::c_int,
    msgmnb: libc::c_int,
    msgmni: libc::c_int,
    msgssz: libc::c_int,
    msgtql: libc::c_int,
    msgseg: libc::c_ushort,
}

#[repr(C)]
#[derive(Default)]
struct SemInfo {
    semmap: libc::c_int,
    semmni: libc::c_int,
    semmns: libc::c_int,
    semmnu: libc::c_int,
    semmsl: libc::c_int,
    semopm: libc::c_int,
    semume: libc::c_int,
    semusz: libc::c_int,
    semvmx: libc::c_int,
    semaem: libc::c_int,
}

/// Every IPC object in the namespace, as problems for the clean-state
/// check (empty: none).
pub fn leftovers() -> Vec<String> {
    let mut problems = Vec::new();
    let mut shm = ShmInfo::default();
    // SAFETY: SHM_INFO writes a `struct shm_info` into the buffer we pass,
    // which is laid out as the kernel's.
    let rc = unsafe { libc::shmctl(0, SHM_INFO, (&mut shm as *mut ShmInfo).cast()) };
    if rc >= 0 && shm.used_ids > 0 {
        problems.push(format!(
            "{} System V shared memory segment(s) left",
            shm.used_ids
        ));
    }
    let mut msg = MsgInfo::default();
    // SAFETY: as above, `struct msginfo`.
    let rc = unsafe { libc::msgctl(0, MSG_INFO, (&mut msg as *mut MsgInfo).cast()) };
    if rc >= 0 && msg.msgpool > 0 {
        problems.push(format!("{} System V message queue(s) left", msg.msgpool));
    }
    let mut sem = SemInfo::default();
    // SAFETY: as above, `struct seminfo` (passed as semctl's fourth
    // argument, a pointer in the `__buf` member of `union semun`).
    let rc = unsafe { libc::semctl(0, 0, SEM_INFO, &mut sem as *mut SemInfo) };
    if rc >= 0 && sem.semusz > 0 {
        problems.push(format!("{} System V semaphore set(s) left", sem.semusz));
    }
    if let Ok(entries) = std::fs::read_dir(MQUEUE_DIR) {
        let n = entries.count();
        if n > 0 {
            problems.push(format!("{n} POSIX message queue(s) left"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_shows_up_until_removed() {
        // In the test process's own IPC namespace: count relative to what
        // is already there.
        let before = leftovers();
        // SAFETY: plain SysV calls on a private segment we remove again.
        let id = unsafe { libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600) };
        assert!(id >= 0, "shmget: {}", std::io::Error::last_os_error());
        let during = leftovers();
        // SAFETY: removing the segment made above.
        unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
        assert!(
            during.iter().any(|p| p.contains("shared memory")),
            "{during:?} (before: {before:?})"
        );
    }
}
