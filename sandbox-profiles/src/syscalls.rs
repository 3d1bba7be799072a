//! Syscall tables for x86_64: the allow-list the sandbox-level filter
//! starts from, grouped with the reason each group is there, and
//! name-to-number mapping for the worker filters. Tables only; the
//! profiles that use them live in `seccomp.rs`.
//!
//! The allow-list follows moby's default seccomp profile
//! (`profiles/seccomp/default.json`, 2024): the syscalls it allows without
//! any capability or argument condition, plus its amd64-only
//! `arch_prctl` and `ptrace` (allowed there from kernel 4.8). Left out: 32-bit-only names
//! (`*_time64`, `*32`, `socketcall`, `ipc`, `mmap2`, ...), calls moby
//! allows only with arguments checked (`clone`, `clone3`, `personality`,
//! `socket`; `seccomp.rs` adds rules for them) or only with capabilities,
//! io_uring (dropped by moby in 2023), and two moby allows that ember does
//! not: [`REMOVED_FROM_DOCKER`].

/// A group of allowed syscalls and why a function needs them.
#[derive(Debug, Clone, Copy)]
pub struct Group {
    pub name: &'static str,
    pub why: &'static str,
    pub syscalls: &'static [&'static str],
}

/// Syscalls Docker's default profile allows that ember's does not, and why.
pub const REMOVED_FROM_DOCKER: &[(&str, &str)] = &[
    (
        "memfd_secret",
        "memory hidden even from the kernel's direct map: no interpreter needs it, and it lets \
         code keep data out of reach of inspection",
    ),
    (
        "modify_ldt",
        "16-bit segments for old software (Wine, DOS emulators); a kernel surface with a \
         history of exploits (CVE-2015-5157, CVE-2017-17053) that no interpreter uses",
    ),
];

/// The sandbox-level allow-list, by purpose. Every name is in exactly one
/// group (a unit test keeps it so); `KERNEL_SURFACE` (seccomp.rs) is taken
/// out again when a filter is built.
pub const ALLOW_GROUPS: &[Group] = &[
    Group {
        name: "files",
        why: "reading code and data, writing /tmp and pipes; the read-only root and the per-invocation /tmp decide where",
        syscalls: &[
            "access", "chdir", "chmod", "chown", "close", "close_range", "copy_file_range",
            "creat", "dup", "dup2", "dup3", "faccessat", "faccessat2", "fadvise64", "fallocate",
            "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchownat", "fcntl",
            "fdatasync", "flock", "fstat", "fstatfs", "fsync", "ftruncate", "futimesat",
            "getcwd", "getdents", "getdents64", "lchown", "link", "linkat", "lseek", "lstat",
            "mkdir", "mkdirat", "newfstatat", "open", "openat", "openat2", "pipe", "pipe2",
            "pread64", "preadv", "preadv2", "pwrite64", "pwritev", "pwritev2", "read",
            "readahead", "readlink", "readlinkat", "readv", "rename", "renameat", "renameat2",
            "rmdir", "sendfile", "splice", "stat", "statfs", "statx", "symlink", "symlinkat",
            "sync", "sync_file_range", "syncfs", "tee", "truncate", "umask", "unlink",
            "unlinkat", "utime", "utimensat", "utimes", "vmsplice", "write", "writev",
            "cachestat",
        ],
    },
    Group {
        name: "extended attributes",
        why: "copying files with their metadata (shutil.copy2); only where the function may write",
        syscalls: &[
            "fgetxattr", "flistxattr", "fremovexattr", "fsetxattr", "getxattr", "lgetxattr",
            "listxattr", "llistxattr", "lremovexattr", "lsetxattr", "removexattr", "setxattr",
        ],
    },
    Group {
        name: "named pipes",
        why: "os.mkfifo; device nodes need CAP_MKNOD, which no sandbox process has",
        syscalls: &["mknod", "mknodat"],
    },
    Group {
        name: "memory",
        why: "allocation and mappings of every runtime; locked memory counts against RLIMIT_MEMLOCK and the cgroup",
        syscalls: &[
            "brk", "madvise", "map_shadow_stack", "membarrier", "memfd_create", "mincore",
            "mlock", "mlock2", "mlockall", "mmap", "mprotect", "mremap", "msync", "munlock",
            "munlockall", "munmap", "pkey_alloc", "pkey_free", "pkey_mprotect",
            "remap_file_pages",
        ],
    },
    Group {
        name: "processes and threads",
        why: "subprocesses and threads (clone has its own rule: no namespace flags, no CLONE_PARENT); the sandbox's own pid namespace bounds whom they reach; strict refuses ptrace and exec",
        syscalls: &[
            "arch_prctl", "execve", "execveat", "exit", "exit_group", "fork", "get_robust_list",
            "get_thread_area", "getpgid", "getpgrp", "getpid", "getppid", "getsid", "gettid",
            "kill", "pidfd_open", "pidfd_send_signal", "prctl", "process_mrelease", "ptrace",
            "rseq", "set_robust_list", "set_thread_area", "set_tid_address", "setpgid",
            "setsid", "tgkill", "tkill", "vfork", "wait4", "waitid",
        ],
    },
    Group {
        name: "credentials",
        why: "the agent drops to the sandbox user with these; afterwards nothing can be gained (no capabilities, no_new_privs)",
        syscalls: &[
            "capget", "capset", "getegid", "geteuid", "getgid", "getgroups", "getresgid",
            "getresuid", "getuid", "setfsgid", "setfsuid", "setgid", "setgroups", "setregid",
            "setresgid", "setresuid", "setreuid", "setuid",
        ],
    },
    Group {
        name: "signals",
        why: "every runtime installs handlers and waits for signals",
        syscalls: &[
            "alarm", "pause", "restart_syscall", "rt_sigaction", "rt_sigpending",
            "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend",
            "rt_sigtimedwait", "rt_tgsigqueueinfo", "sigaltstack", "signalfd", "signalfd4",
        ],
    },
    Group {
        name: "time",
        why: "reading clocks, sleeping, timers; setting the clock needs CAP_SYS_TIME (workers refuse clock_adjtime outright)",
        syscalls: &[
            "adjtimex", "clock_adjtime", "clock_getres", "clock_gettime", "clock_nanosleep",
            "getitimer", "gettimeofday", "nanosleep", "setitimer", "time", "timer_create",
            "timer_delete", "timer_getoverrun", "timer_gettime", "timer_settime",
            "timerfd_create", "timerfd_gettime", "timerfd_settime", "times",
        ],
    },
    Group {
        name: "waiting and events",
        why: "event loops (libuv, asyncio), thread synchronisation, file change notification, POSIX AIO",
        syscalls: &[
            "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
            "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2",
            "fanotify_mark", "futex", "futex_requeue", "futex_wait", "futex_waitv", "futex_wake",
            "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch",
            "io_cancel", "io_destroy", "io_getevents", "io_pgetevents", "io_setup", "io_submit",
            "poll", "ppoll", "pselect6", "select",
        ],
    },
    Group {
        name: "sockets",
        why: "local sockets and TCP/UDP clients (socket itself by family: unix, inet, inet6); the sandbox has no interface but a down loopback, so nothing leaves it",
        syscalls: &[
            "accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt",
            "listen", "recvfrom", "recvmmsg", "recvmsg", "sendmmsg", "sendmsg", "sendto",
            "setsockopt", "shutdown", "socketpair",
        ],
    },
    Group {
        name: "scheduling and limits",
        why: "thread pools size themselves (sched_getaffinity), priorities and limits can only be lowered without privileges; sysinfo reports host totals (docs/isolation.md, known limits)",
        syscalls: &[
            "getcpu", "getpriority", "getrandom", "getrlimit", "getrusage", "ioctl",
            "ioprio_get", "ioprio_set", "prlimit64", "sched_get_priority_max",
            "sched_get_priority_min", "sched_getaffinity", "sched_getattr", "sched_getparam",
            "sched_getscheduler", "sched_rr_get_interval", "sched_setaffinity", "sched_setattr",
            "sched_setparam", "sched_setscheduler", "sched_yield", "setpriority", "setrlimit",
            "sysinfo", "uname",
        ],
    },
    Group {
        name: "System V IPC and POSIX message queues",
        why: "shared memory and queues between a function's processes; the IPC namespace is the sandbox's, emptied (and checked empty) after every fork-mode invocation",
        syscalls: &[
            "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedsend",
            "mq_unlink", "msgctl", "msgget", "msgrcv", "msgsnd", "semctl", "semget", "semop",
            "semtimedop", "shmat", "shmctl", "shmdt", "shmget",
        ],
    },
    Group {
        name: "self-confinement",
        why: "a function may confine itself further (seccomp, Landlock); neither can widen what it may do",
        syscalls: &[
            "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "seccomp",
        ],
    },
];

/// The allow-list as a markdown table (docs/isolation.md holds it; a test
/// keeps the two equal): group, why, syscalls; then what Docker's list has
/// that ember's does not.
pub fn allow_groups_table() -> String {
    let mut t = String::from("| group | why a function needs it | syscalls |\n|---|---|---|\n");
    for g in ALLOW_GROUPS {
        let names: Vec<String> = g.syscalls.iter().map(|n| format!("`{n}`")).collect();
        t.push_str(&format!(
            "| {} | {} | {} |\n",
            g.name,
            g.why,
            names.join(" ")
        ));
    }
    for (n, why) in REMOVED_FROM_DOCKER {
        t.push_str(&format!(
            "| not allowed (Docker allows it) | {why} | `{n}` |\n"
        ));
    }
    t
}

/// Every syscall of [`ALLOW_GROUPS`].
pub fn allow_list() -> Vec<&'static str> {
    ALLOW_GROUPS
        .iter()
        .flat_map(|g| g.syscalls.iter().copied())
        .collect()
}

/// The x86_64 number of a syscall, for the names ember's filters use.
pub fn number(name: &str) -> Option<i64> {
    NUMBERS
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .map(|i| NUMBERS[i].1)
}

/// The names ember's filters use and their x86_64 numbers, sorted by name
/// (for [`number`]'s binary search).
static NUMBERS: &[(&str, i64)] = &[
    ("accept", libc::SYS_accept),
    ("accept4", libc::SYS_accept4),
    ("access", libc::SYS_access),
    ("acct", libc::SYS_acct),
    ("add_key", libc::SYS_add_key),
    ("adjtimex", libc::SYS_adjtimex),
    ("alarm", libc::SYS_alarm),
    ("arch_prctl", libc::SYS_arch_prctl),
    ("bind", libc::SYS_bind),
    ("bpf", libc::SYS_bpf),
    ("brk", libc::SYS_brk),
    // Newer than the libc crate in use.
    ("cachestat", 451),
    ("capget", libc::SYS_capget),
    ("capset", libc::SYS_capset),
    ("chdir", libc::SYS_chdir),
    ("chmod", libc::SYS_chmod),
    ("chown", libc::SYS_chown),
    ("chroot", libc::SYS_chroot),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("clock_getres", libc::SYS_clock_getres),
    ("clock_gettime", libc::SYS_clock_gettime),
    ("clock_nanosleep", libc::SYS_clock_nanosleep),
    ("clock_settime", libc::SYS_clock_settime),
    ("clone", libc::SYS_clone),
    ("clone3", libc::SYS_clone3),
    ("close", libc::SYS_close),
    ("close_range", libc::SYS_close_range),
    ("connect", libc::SYS_connect),
    ("copy_file_range", libc::SYS_copy_file_range),
    ("creat", libc::SYS_creat),
    ("delete_module", libc::SYS_delete_module),
    ("dup", libc::SYS_dup),
    ("dup2", libc::SYS_dup2),
    ("dup3", libc::SYS_dup3),
    ("epoll_create", libc::SYS_epoll_create),
    ("epoll_create1", libc::SYS_epoll_create1),
    ("epoll_ctl", libc::SYS_epoll_ctl),
    ("epoll_ctl_old", libc::SYS_epoll_ctl_old),
    ("epoll_pwait", libc::SYS_epoll_pwait),
    ("epoll_pwait2", libc::SYS_epoll_pwait2),
    ("epoll_wait", libc::SYS_epoll_wait),
    ("epoll_wait_old", libc::SYS_epoll_wait_old),
    ("eventfd", libc::SYS_eventfd),
    ("eventfd2", libc::SYS_eventfd2),
    ("execve", libc::SYS_execve),
    ("execveat", libc::SYS_execveat),
    ("exit", libc::SYS_exit),
    ("exit_group", libc::SYS_exit_group),
    ("faccessat", libc::SYS_faccessat),
    ("faccessat2", libc::SYS_faccessat2),
    ("fadvise64", libc::SYS_fadvise64),
    ("fallocate", libc::SYS_fallocate),
    ("fanotify_init", libc::SYS_fanotify_init),
    ("fanotify_mark", libc::SYS_fanotify_mark),
    ("fchdir", libc::SYS_fchdir),
    ("fchmod", libc::SYS_fchmod),
    ("fchmodat", libc::SYS_fchmodat),
    ("fchmodat2", libc::SYS_fchmodat2),
    ("fchown", libc::SYS_fchown),
    ("fchownat", libc::SYS_fchownat),
    ("fcntl", libc::SYS_fcntl),
    ("fdatasync", libc::SYS_fdatasync),
    ("fgetxattr", libc::SYS_fgetxattr),
    ("finit_module", libc::SYS_finit_module),
    ("flistxattr", libc::SYS_flistxattr),
    ("flock", libc::SYS_flock),
    ("fork", libc::SYS_fork),
    ("fremovexattr", libc::SYS_fremovexattr),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsetxattr", libc::SYS_fsetxattr),
    ("fsmount", libc::SYS_fsmount),
    ("fsopen", libc::SYS_fsopen),
    ("fspick", libc::SYS_fspick),
    ("fstat", libc::SYS_fstat),
    ("fstatfs", libc::SYS_fstatfs),
    ("fsync", libc::SYS_fsync),
    ("ftruncate", libc::SYS_ftruncate),
    ("futex", libc::SYS_futex),
    // Newer than the libc crate in use.
    ("futex_requeue", 456),
    // Newer than the libc crate in use.
    ("futex_wait", 455),
    ("futex_waitv", libc::SYS_futex_waitv),
    // Newer than the libc crate in use.
    ("futex_wake", 454),
    ("futimesat", libc::SYS_futimesat),
    ("get_mempolicy", libc::SYS_get_mempolicy),
    ("get_robust_list", libc::SYS_get_robust_list),
    ("get_thread_area", libc::SYS_get_thread_area),
    ("getcpu", libc::SYS_getcpu),
    ("getcwd", libc::SYS_getcwd),
    ("getdents", libc::SYS_getdents),
    ("getdents64", libc::SYS_getdents64),
    ("getegid", libc::SYS_getegid),
    ("geteuid", libc::SYS_geteuid),
    ("getgid", libc::SYS_getgid),
    ("getgroups", libc::SYS_getgroups),
    ("getitimer", libc::SYS_getitimer),
    ("getpeername", libc::SYS_getpeername),
    ("getpgid", libc::SYS_getpgid),
    ("getpgrp", libc::SYS_getpgrp),
    ("getpid", libc::SYS_getpid),
    ("getppid", libc::SYS_getppid),
    ("getpriority", libc::SYS_getpriority),
    ("getrandom", libc::SYS_getrandom),
    ("getresgid", libc::SYS_getresgid),
    ("getresuid", libc::SYS_getresuid),
    ("getrlimit", libc::SYS_getrlimit),
    ("getrusage", libc::SYS_getrusage),
    ("getsid", libc::SYS_getsid),
    ("getsockname", libc::SYS_getsockname),
    ("getsockopt", libc::SYS_getsockopt),
    ("gettid", libc::SYS_gettid),
    ("gettimeofday", libc::SYS_gettimeofday),
    ("getuid", libc::SYS_getuid),
    ("getxattr", libc::SYS_getxattr),
    ("init_module", libc::SYS_init_module),
    ("inotify_add_watch", libc::SYS_inotify_add_watch),
    ("inotify_init", libc::SYS_inotify_init),
    ("inotify_init1", libc::SYS_inotify_init1),
    ("inotify_rm_watch", libc::SYS_inotify_rm_watch),
    ("io_cancel", libc::SYS_io_cancel),
    ("io_destroy", libc::SYS_io_destroy),
    ("io_getevents", libc::SYS_io_getevents),
    // Newer than the libc crate in use.
    ("io_pgetevents", 333),
    ("io_setup", libc::SYS_io_setup),
    ("io_submit", libc::SYS_io_submit),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("ioctl", libc::SYS_ioctl),
    ("ioperm", libc::SYS_ioperm),
    ("iopl", libc::SYS_iopl),
    ("ioprio_get", libc::SYS_ioprio_get),
    ("ioprio_set", libc::SYS_ioprio_set),
    ("kcmp", libc::SYS_kcmp),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("kexec_load", libc::SYS_kexec_load),
    ("keyctl", libc::SYS_keyctl),
    ("kill", libc::SYS_kill),
    ("landlock_add_rule", libc::SYS_landlock_add_rule),
    ("landlock_create_ruleset", libc::SYS_landlock_create_ruleset),
    ("landlock_restrict_self", libc::SYS_landlock_restrict_self),
    ("lchown", libc::SYS_lchown),
    ("lgetxattr", libc::SYS_lgetxattr),
    ("link", libc::SYS_link),
    ("linkat", libc::SYS_linkat),
    ("listen", libc::SYS_listen),
    ("listxattr", libc::SYS_listxattr),
    ("llistxattr", libc::SYS_llistxattr),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ("lremovexattr", libc::SYS_lremovexattr),
    ("lseek", libc::SYS_lseek),
    ("lsetxattr", libc::SYS_lsetxattr),
    ("lstat", libc::SYS_lstat),
    ("madvise", libc::SYS_madvise),
    // Newer than the libc crate in use.
    ("map_shadow_stack", 453),
    ("mbind", libc::SYS_mbind),
    ("membarrier", libc::SYS_membarrier),
    ("memfd_create", libc::SYS_memfd_create),
    ("memfd_secret", libc::SYS_memfd_secret),
    ("mincore", libc::SYS_mincore),
    ("mkdir", libc::SYS_mkdir),
    ("mkdirat", libc::SYS_mkdirat),
    ("mknod", libc::SYS_mknod),
    ("mknodat", libc::SYS_mknodat),
    ("mlock", libc::SYS_mlock),
    ("mlock2", libc::SYS_mlock2),
    ("mlockall", libc::SYS_mlockall),
    ("mmap", libc::SYS_mmap),
    ("modify_ldt", libc::SYS_modify_ldt),
    ("mount", libc::SYS_mount),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("move_mount", libc::SYS_move_mount),
    ("move_pages", libc::SYS_move_pages),
    ("mprotect", libc::SYS_mprotect),
    ("mq_getsetattr", libc::SYS_mq_getsetattr),
    ("mq_notify", libc::SYS_mq_notify),
    ("mq_open", libc::SYS_mq_open),
    ("mq_timedreceive", libc::SYS_mq_timedreceive),
    ("mq_timedsend", libc::SYS_mq_timedsend),
    ("mq_unlink", libc::SYS_mq_unlink),
    ("mremap", libc::SYS_mremap),
    ("msgctl", libc::SYS_msgctl),
    ("msgget", libc::SYS_msgget),
    ("msgrcv", libc::SYS_msgrcv),
    ("msgsnd", libc::SYS_msgsnd),
    ("msync", libc::SYS_msync),
    ("munlock", libc::SYS_munlock),
    ("munlockall", libc::SYS_munlockall),
    ("munmap", libc::SYS_munmap),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("nanosleep", libc::SYS_nanosleep),
    ("newfstatat", libc::SYS_newfstatat),
    ("nfsservctl", libc::SYS_nfsservctl),
    ("open", libc::SYS_open),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("open_tree", libc::SYS_open_tree),
    ("openat", libc::SYS_openat),
    ("openat2", libc::SYS_openat2),
    ("pause", libc::SYS_pause),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("personality", libc::SYS_personality),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("pidfd_open", libc::SYS_pidfd_open),
    ("pidfd_send_signal", libc::SYS_pidfd_send_signal),
    ("pipe", libc::SYS_pipe),
    ("pipe2", libc::SYS_pipe2),
    ("pivot_root", libc::SYS_pivot_root),
    ("pkey_alloc", libc::SYS_pkey_alloc),
    ("pkey_free", libc::SYS_pkey_free),
    ("pkey_mprotect", libc::SYS_pkey_mprotect),
    ("poll", libc::SYS_poll),
    ("ppoll", libc::SYS_ppoll),
    ("prctl", libc::SYS_prctl),
    ("pread64", libc::SYS_pread64),
    ("preadv", libc::SYS_preadv),
    ("preadv2", libc::SYS_preadv2),
    ("prlimit64", libc::SYS_prlimit64),
    ("process_madvise", libc::SYS_process_madvise),
    ("process_mrelease", libc::SYS_process_mrelease),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("pselect6", libc::SYS_pselect6),
    ("ptrace", libc::SYS_ptrace),
    ("pwrite64", libc::SYS_pwrite64),
    ("pwritev", libc::SYS_pwritev),
    ("pwritev2", libc::SYS_pwritev2),
    ("quotactl", libc::SYS_quotactl),
    ("read", libc::SYS_read),
    ("readahead", libc::SYS_readahead),
    ("readlink", libc::SYS_readlink),
    ("readlinkat", libc::SYS_readlinkat),
    ("readv", libc::SYS_readv),
    ("reboot", libc::SYS_reboot),
    ("recvfrom", libc::SYS_recvfrom),
    ("recvmmsg", libc::SYS_recvmmsg),
    ("recvmsg", libc::SYS_recvmsg),
    ("remap_file_pages", libc::SYS_remap_file_pages),
    ("removexattr", libc::SYS_removexattr),
    ("rename", libc::SYS_rename),
    ("renameat", libc::SYS_renameat),
    ("renameat2", libc::SYS_renameat2),
    ("request_key", libc::SYS_request_key),
    ("restart_syscall", libc::SYS_restart_syscall),
    ("rmdir", libc::SYS_rmdir),
    ("rseq", libc::SYS_rseq),
    ("rt_sigaction", libc::SYS_rt_sigaction),
    ("rt_sigpending", libc::SYS_rt_sigpending),
    ("rt_sigprocmask", libc::SYS_rt_sigprocmask),
    ("rt_sigqueueinfo", libc::SYS_rt_sigqueueinfo),
    ("rt_sigreturn", libc::SYS_rt_sigreturn),
    ("rt_sigsuspend", libc::SYS_rt_sigsuspend),
    ("rt_sigtimedwait", libc::SYS_rt_sigtimedwait),
    ("rt_tgsigqueueinfo", libc::SYS_rt_tgsigqueueinfo),
    ("sched_get_priority_max", libc::SYS_sched_get_priority_max),
    ("sched_get_priority_min", libc::SYS_sched_get_priority_min),
    ("sched_getaffinity", libc::SYS_sched_getaffinity),
    ("sched_getattr", libc::SYS_sched_getattr),
    ("sched_getparam", libc::SYS_sched_getparam),
    ("sched_getscheduler", libc::SYS_sched_getscheduler),
    ("sched_rr_get_interval", libc::SYS_sched_rr_get_interval),
    ("sched_setaffinity", libc::SYS_sched_setaffinity),
    ("sched_setattr", libc::SYS_sched_setattr),
    ("sched_setparam", libc::SYS_sched_setparam),
    ("sched_setscheduler", libc::SYS_sched_setscheduler),
    ("sched_yield", libc::SYS_sched_yield),
    ("seccomp", libc::SYS_seccomp),
    ("select", libc::SYS_select),
    ("semctl", libc::SYS_semctl),
    ("semget", libc::SYS_semget),
    ("semop", libc::SYS_semop),
    ("semtimedop", libc::SYS_semtimedop),
    ("sendfile", libc::SYS_sendfile),
    ("sendmmsg", libc::SYS_sendmmsg),
    ("sendmsg", libc::SYS_sendmsg),
    ("sendto", libc::SYS_sendto),
    ("set_mempolicy", libc::SYS_set_mempolicy),
    ("set_robust_list", libc::SYS_set_robust_list),
    ("set_thread_area", libc::SYS_set_thread_area),
    ("set_tid_address", libc::SYS_set_tid_address),
    ("setfsgid", libc::SYS_setfsgid),
    ("setfsuid", libc::SYS_setfsuid),
    ("setgid", libc::SYS_setgid),
    ("setgroups", libc::SYS_setgroups),
    ("setitimer", libc::SYS_setitimer),
    ("setns", libc::SYS_setns),
    ("setpgid", libc::SYS_setpgid),
    ("setpriority", libc::SYS_setpriority),
    ("setregid", libc::SYS_setregid),
    ("setresgid", libc::SYS_setresgid),
    ("setresuid", libc::SYS_setresuid),
    ("setreuid", libc::SYS_setreuid),
    ("setrlimit", libc::SYS_setrlimit),
    ("setsid", libc::SYS_setsid),
    ("setsockopt", libc::SYS_setsockopt),
    ("settimeofday", libc::SYS_settimeofday),
    ("setuid", libc::SYS_setuid),
    ("setxattr", libc::SYS_setxattr),
    ("shmat", libc::SYS_shmat),
    ("shmctl", libc::SYS_shmctl),
    ("shmdt", libc::SYS_shmdt),
    ("shmget", libc::SYS_shmget),
    ("shutdown", libc::SYS_shutdown),
    ("sigaltstack", libc::SYS_sigaltstack),
    ("signalfd", libc::SYS_signalfd),
    ("signalfd4", libc::SYS_signalfd4),
    ("socket", libc::SYS_socket),
    ("socketpair", libc::SYS_socketpair),
    ("splice", libc::SYS_splice),
    ("stat", libc::SYS_stat),
    ("statfs", libc::SYS_statfs),
    ("statx", libc::SYS_statx),
    ("swapoff", libc::SYS_swapoff),
    ("swapon", libc::SYS_swapon),
    ("symlink", libc::SYS_symlink),
    ("symlinkat", libc::SYS_symlinkat),
    ("sync", libc::SYS_sync),
    ("sync_file_range", libc::SYS_sync_file_range),
    ("syncfs", libc::SYS_syncfs),
    ("sysfs", libc::SYS_sysfs),
    ("sysinfo", libc::SYS_sysinfo),
    ("syslog", libc::SYS_syslog),
    ("tee", libc::SYS_tee),
    ("tgkill", libc::SYS_tgkill),
    ("time", libc::SYS_time),
    ("timer_create", libc::SYS_timer_create),
    ("timer_delete", libc::SYS_timer_delete),
    ("timer_getoverrun", libc::SYS_timer_getoverrun),
    ("timer_gettime", libc::SYS_timer_gettime),
    ("timer_settime", libc::SYS_timer_settime),
    ("timerfd_create", libc::SYS_timerfd_create),
    ("timerfd_gettime", libc::SYS_timerfd_gettime),
    ("timerfd_settime", libc::SYS_timerfd_settime),
    ("times", libc::SYS_times),
    ("tkill", libc::SYS_tkill),
    ("truncate", libc::SYS_truncate),
    ("umask", libc::SYS_umask),
    ("umount2", libc::SYS_umount2),
    ("uname", libc::SYS_uname),
    ("unlink", libc::SYS_unlink),
    ("unlinkat", libc::SYS_unlinkat),
    ("unshare", libc::SYS_unshare),
    ("uselib", libc::SYS_uselib),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("ustat", libc::SYS_ustat),
    ("utime", libc::SYS_utime),
    ("utimensat", libc::SYS_utimensat),
    ("utimes", libc::SYS_utimes),
    ("vfork", libc::SYS_vfork),
    ("vhangup", libc::SYS_vhangup),
    ("vmsplice", libc::SYS_vmsplice),
    ("wait4", libc::SYS_wait4),
    ("waitid", libc::SYS_waitid),
    ("write", libc::SYS_write),
    ("writev", libc::SYS_writev),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_allowed_call_is_in_one_group_and_numbered() {
        let all = allow_list();
        let mut seen = std::collections::BTreeSet::new();
        for n in &all {
            assert!(seen.insert(*n), "{n} is in two groups");
            assert!(number(n).is_some(), "{n} has no number");
        }
        assert_eq!(
            all.len(),
            292,
            "the allow-list changed size: update docs/isolation.md"
        );
        for g in ALLOW_GROUPS {
            assert!(!g.why.is_empty() && !g.syscalls.is_empty(), "{}", g.name);
        }
        assert_eq!(number("read"), Some(0));
        assert_eq!(number("clone3"), Some(435));
        assert_eq!(number("no_such_call"), None);
    }

    #[test]
    fn the_number_table_is_sorted_without_duplicates() {
        assert!(NUMBERS.windows(2).all(|w| w[0].0 < w[1].0));
        for (name, nr) in NUMBERS {
            assert_eq!(number(name), Some(*nr), "{name}");
        }
    }

    #[test]
    fn the_documented_allow_list_is_the_code() {
        const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/isolation.md");
        const START: &str =
            "<!-- syscall-groups:start (generated from sandbox-profiles/src/syscalls.rs) -->";
        const END: &str = "<!-- syscall-groups:end -->";
        let doc = std::fs::read_to_string(DOC).unwrap();
        let (a, b) = (
            doc.find(START).expect("start marker"),
            doc.find(END).expect("end marker"),
        );
        let want = format!("\n{}", allow_groups_table());
        if doc[a + START.len()..b] == want {
            return;
        }
        if std::env::var_os("EMBER_BLESS").is_some() {
            let new = format!("{}{START}{want}{}", &doc[..a], &doc[b..]);
            std::fs::write(DOC, new).unwrap();
            return;
        }
        panic!("docs/isolation.md's syscall table differs from the code; regenerate with EMBER_BLESS=1");
    }

    #[test]
    fn allow_list_has_none_of_the_dangerous_calls() {
        let all = allow_list();
        for n in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "bpf",
            "keyctl",
            "add_key",
            "perf_event_open",
            "kexec_load",
            "init_module",
            "userfaultfd",
            "io_uring_setup",
            "clone",
            "clone3",
            "socket",
            "memfd_secret",
            "modify_ldt",
            "name_to_handle_at",
        ] {
            assert!(!all.contains(&n), "{n} is allowed");
        }
        for (n, why) in REMOVED_FROM_DOCKER {
            assert!(!all.contains(n) && !why.is_empty());
        }
    }
}
