//! Seccomp rules of the profiles, compiled two ways: as the OCI
//! `linux.seccomp` section for a whole sandbox (runc compiles it with
//! libseccomp), and as classic BPF programs built here with `seccompiler`
//! that a forked worker installs on itself just before user code runs.
//!
//! Both are x86_64 only; other architectures are refused with an error.

use crate::syscalls;
use crate::ProfileError;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

/// Flags of `clone(2)` that are refused: every namespace flag (Docker's
/// default does the same without `CAP_SYS_ADMIN`), and `CLONE_PARENT`, which
/// would make the new process a sibling of its creator: a worker's child
/// would become the zygote's, where the sweep after an invocation spares
/// the zygote's own spare.
pub const CLONE_REFUSED_FLAGS: [u64; 8] = [
    libc::CLONE_PARENT as u64,
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

/// Denied to the worker in every profile: kernel interfaces that change the
/// mount table, namespaces, keyrings, the kernel itself or the clock, or
/// widen the kernel's attack surface (BPF, perf, userfaultfd, io_uring).
/// A function never needs them; most need privileges the worker lacks, but
/// each has had unprivileged bugs, so the filter refuses them first.
pub const KERNEL_SURFACE: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "chroot",
    "clock_adjtime",
    "clock_settime",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "iopl",
    "ioperm",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "memfd_secret",
    "modify_ldt",
    "mount",
    "mount_setattr",
    "move_mount",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "syslog",
    "sysfs",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
];

/// Further denied to `strict` workers: looking into or controlling other
/// processes, running other programs, fileless executables, and NUMA or
/// personality tweaks. Sockets other than `AF_UNIX` are refused by rule.
pub const STRICT_EXTRA: &[&str] = &[
    "execve",
    "execveat",
    "fanotify_init",
    "get_mempolicy",
    "mbind",
    "memfd_create",
    "move_pages",
    "personality",
    "pidfd_getfd",
    "process_madvise",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "set_mempolicy",
    "vhangup",
];

/// Of `STRICT_EXTRA`, what a strict *sandbox* must still allow: its init
/// (the agent) executes the interpreter.
const STRICT_SANDBOX_KEEPS: &[&str] = &["execve", "execveat"];

const AF_UNIX: u64 = libc::AF_UNIX as u64;
/// Socket families the `default` sandbox filter allows: local sockets and
/// TCP/UDP over IPv4 and IPv6 (no interface but a down loopback exists).
const ALLOWED_FAMILIES: [u64; 3] = [
    libc::AF_UNIX as u64,
    libc::AF_INET as u64,
    libc::AF_INET6 as u64,
];
/// Socket families every worker refuses on top: netlink (kernel events,
/// routing and more: host information even in an empty network
/// namespace), raw packets, vsock (the host's hypervisor), and the kernel
/// crypto API (a surface with a history of bugs that no interpreter uses).
const REFUSED_FAMILIES: [u64; 4] = [
    libc::AF_NETLINK as u64,
    libc::AF_PACKET as u64,
    libc::AF_VSOCK as u64,
    libc::AF_ALG as u64,
];

fn number(name: &str) -> Result<i64, ProfileError> {
    syscalls::number(name).ok_or_else(|| ProfileError::Seccomp {
        message: format!("no x86_64 syscall number for {name:?}"),
    })
}

fn seccomp_err(e: seccompiler::BackendError) -> ProfileError {
    ProfileError::Seccomp {
        message: e.to_string(),
    }
}

fn arg0(op: SeccompCmpOp, value: u64) -> Result<SeccompRule, ProfileError> {
    let cond = SeccompCondition::new(0, SeccompCmpArgLen::Qword, op, value).map_err(seccomp_err)?;
    SeccompRule::new(vec![cond]).map_err(seccomp_err)
}

fn target_arch() -> Result<TargetArch, ProfileError> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else {
        Err(ProfileError::Seccomp {
            message: format!(
                "seccomp profiles exist for x86_64 only, not {}",
                std::env::consts::ARCH
            ),
        })
    }
}

/// The rules of a worker filter set, before compilation: what each of the
/// filters refuses, by syscall name, with the argument rules (none = always).
#[derive(Debug, Clone)]
pub struct WorkerRules {
    /// Refused with `ENOSYS`, so libc falls back to an older call that the
    /// other filter can inspect (`clone3` passes its flags in memory).
    pub enosys: Vec<&'static str>,
    /// Refused with `EPERM`.
    pub eperm: Vec<&'static str>,
    /// `socket`/`socketpair` only for `AF_UNIX`.
    pub unix_sockets_only: bool,
    /// `clone` with any of [`CLONE_REFUSED_FLAGS`] refused.
    pub clone_ns: bool,
    /// `socket` refused for these families (the base: netlink, packet,
    /// vsock, the kernel crypto API), whatever the sandbox filter allows.
    pub refused_families: Vec<u64>,
}

impl WorkerRules {
    /// Everything a worker of this profile refuses (base and extra).
    pub fn for_profile(strict: bool) -> WorkerRules {
        let mut all = WorkerRules::base();
        if let Some(extra) = WorkerRules::extra(strict) {
            all.eperm.extend(extra.eperm);
            all.unix_sockets_only |= extra.unix_sockets_only;
        }
        all.eperm.sort_unstable();
        all
    }

    /// What every worker refuses: installed by each spare worker as soon
    /// as it is forked, off the hot path, before it can receive user code.
    pub fn base() -> WorkerRules {
        WorkerRules {
            enosys: vec!["clone3"],
            eperm: KERNEL_SURFACE.to_vec(),
            unix_sockets_only: false,
            clone_ns: true,
            refused_families: REFUSED_FAMILIES.to_vec(),
        }
    }

    /// What a profile refuses beyond the base, installed when the worker
    /// learns its function's profile, just before the function's code is
    /// imported. `None`: nothing more (`default`).
    pub fn extra(strict: bool) -> Option<WorkerRules> {
        strict.then(|| WorkerRules {
            enosys: vec![],
            eperm: STRICT_EXTRA.to_vec(),
            unix_sockets_only: true,
            clone_ns: false,
            refused_families: Vec::new(),
        })
    }

    /// Compile to BPF programs, in the order they are to be installed (one
    /// today; a list so a profile can stack more).
    pub fn compile(&self) -> Result<Vec<BpfProgram>, ProfileError> {
        let arch = target_arch()?;
        let mut eperm: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        for name in &self.eperm {
            eperm.insert(number(name)?, vec![]);
        }
        if self.clone_ns {
            // clone with any refused flag: one rule per flag (rules OR).
            let clone_rules = CLONE_REFUSED_FLAGS
                .iter()
                .map(|&f| arg0(SeccompCmpOp::MaskedEq(f), f))
                .collect::<Result<Vec<_>, _>>()?;
            eperm.insert(number("clone")?, clone_rules);
        }
        if self.unix_sockets_only {
            for name in ["socket", "socketpair"] {
                eperm.insert(number(name)?, vec![arg0(SeccompCmpOp::Ne, AF_UNIX)?]);
            }
        } else if !self.refused_families.is_empty() {
            let rules = self
                .refused_families
                .iter()
                .map(|&f| arg0(SeccompCmpOp::Eq, f))
                .collect::<Result<Vec<_>, _>>()?;
            eperm.insert(number("socket")?, rules);
        }
        let filter = SeccompFilter::new(
            eperm,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            arch,
        )
        .map_err(seccomp_err)?;
        let body = BpfProgram::try_from(filter).map_err(seccomp_err)?;
        // seccompiler gives one match action per filter, and a second
        // filter costs a second attach (the kernel emulates each filter for
        // every syscall number to build its cache: ~0.1 ms). So the ENOSYS
        // rules go in a short hand-written prefix of the same program. It
        // reads the syscall number before the arch check that starts
        // seccompiler's part: a foreign-arch call with a matching number
        // gets ENOSYS, anything else still meets the arch check.
        let mut prog = Vec::with_capacity(2 * self.enosys.len() + 2 + body.len());
        if !self.enosys.is_empty() {
            prog.push(bpf_stmt(BPF_LD | BPF_W | BPF_ABS, SECCOMP_DATA_NR));
        }
        for name in &self.enosys {
            let nr = number(name)? as u32;
            prog.push(bpf_jump(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1));
            prog.push(bpf_stmt(
                BPF_RET | BPF_K,
                SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
            ));
        }
        prog.extend(body);
        Ok(vec![prog])
    }
}

// Classic BPF opcodes and seccomp constants for the prefix.
const BPF_LD: u16 = 0x00;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_JMP: u16 = 0x05;
const BPF_JEQ: u16 = 0x10;
const BPF_K: u16 = 0x00;
const BPF_RET: u16 = 0x06;
/// `offsetof(struct seccomp_data, nr)`.
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

fn bpf_stmt(code: u16, k: u32) -> seccompiler::sock_filter {
    seccompiler::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn bpf_jump(code: u16, k: u32, jt: u8, jf: u8) -> seccompiler::sock_filter {
    seccompiler::sock_filter { code, jt, jf, k }
}

/// A BPF program as bytes: each `struct sock_filter` in native layout
/// (`u16 code, u8 jt, u8 jf, u32 k`), ready to hand to `prctl`.
pub fn program_bytes(prog: &BpfProgram) -> Vec<u8> {
    let mut out = Vec::with_capacity(prog.len() * 8);
    for ins in prog {
        out.extend_from_slice(&ins.code.to_ne_bytes());
        out.push(ins.jt);
        out.push(ins.jf);
        out.extend_from_slice(&ins.k.to_ne_bytes());
    }
    out
}

/// One rule of the sandbox-level (OCI) filter.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxRule {
    pub names: Vec<&'static str>,
    /// `None`: allow. `Some(errno)`: fail with it.
    pub errno: Option<u32>,
    /// `(index, op, value, value_two)` with op one of "eq", "ne", "masked_eq".
    pub args: Vec<(u32, &'static str, u64, u64)>,
}

/// The sandbox-level filter: an allow-list (default action `EPERM`)
/// modelled on Docker's default profile, tightened for `strict`.
pub fn sandbox_rules(strict: bool) -> Vec<SandboxRule> {
    let dropped: Vec<&str> = if strict {
        STRICT_EXTRA
            .iter()
            .copied()
            .filter(|n| !STRICT_SANDBOX_KEEPS.contains(n))
            .collect()
    } else {
        Vec::new()
    };
    let mut allow: Vec<&'static str> = syscalls::allow_list()
        .into_iter()
        .filter(|n| !dropped.contains(n) && !KERNEL_SURFACE.contains(n))
        .collect();
    if strict {
        allow.retain(|n| *n != "socketpair");
    }
    let ns_mask: u64 = CLONE_REFUSED_FLAGS.iter().fold(0, |m, f| m | f);
    let mut rules = vec![
        SandboxRule {
            names: allow,
            errno: None,
            args: vec![],
        },
        SandboxRule {
            names: vec!["clone"],
            errno: None,
            args: vec![(0, "masked_eq", ns_mask, 0)],
        },
        SandboxRule {
            names: vec!["clone3"],
            errno: Some(libc::ENOSYS as u32),
            args: vec![],
        },
    ];
    if strict {
        rules.push(SandboxRule {
            names: vec!["socket", "socketpair"],
            errno: None,
            args: vec![(0, "eq", AF_UNIX, 0)],
        });
    } else {
        for family in ALLOWED_FAMILIES {
            rules.push(SandboxRule {
                names: vec!["socket"],
                errno: None,
                args: vec![(0, "eq", family, 0)],
            });
        }
        // Docker's personality values: Linux, with or without
        // UNAME26/ADDR_NO_RANDOMIZE, and the query 0xffffffff.
        for v in [0u64, 0x0008, 0x20000, 0x20008, 0xffff_ffff] {
            rules.push(SandboxRule {
                names: vec!["personality"],
                errno: None,
                args: vec![(0, "eq", v, 0)],
            });
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Profile;

    /// Install `progs` the way the Python worker does (prctl with the raw
    /// bytes), then report which probes were refused and with what errno.
    /// Runs in a forked child: a filter cannot be removed.
    fn probe_under(progs: &[Vec<u8>]) -> Vec<(&'static str, i32)> {
        type Probe = (&'static str, fn() -> libc::c_long);
        let probes: [Probe; 6] = [
            ("getpid", || unsafe { libc::syscall(libc::SYS_getpid) }),
            ("socket_inet", || unsafe {
                libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_DGRAM, 0)
            }),
            ("socket_unix", || unsafe {
                libc::syscall(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_DGRAM, 0)
            }),
            ("unshare_user", || unsafe {
                libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER)
            }),
            ("clone3", || unsafe {
                libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize)
            }),
            ("mount", || unsafe {
                libc::syscall(
                    libc::SYS_mount,
                    c"none".as_ptr(),
                    c"/".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    0,
                )
            }),
        ];
        let (r, w) = nix::unistd::pipe().unwrap();
        // SAFETY: the child only makes raw syscalls and writes to a pipe
        // before `_exit`; no allocation or locks after fork.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let mut out = [0i32; 6];
                // SAFETY: prctl with valid arguments; `fprog` points at
                // `progs`, which outlive the calls.
                unsafe {
                    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                        libc::_exit(90);
                    }
                    for p in progs {
                        let fprog = libc::sock_fprog {
                            len: (p.len() / 8) as u16,
                            filter: p.as_ptr() as *mut libc::sock_filter,
                        };
                        if libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog) != 0
                        {
                            libc::_exit(91);
                        }
                    }
                    for (i, (_, f)) in probes.iter().enumerate() {
                        out[i] = if f() < 0 {
                            *libc::__errno_location()
                        } else {
                            0
                        };
                    }
                    libc::write(
                        std::os::fd::AsRawFd::as_raw_fd(&w),
                        out.as_ptr().cast(),
                        std::mem::size_of_val(&out),
                    );
                    libc::_exit(0);
                }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(w);
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
                let mut buf = [0u8; 24];
                let n = nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&r), &mut buf).unwrap();
                assert_eq!(n, 24);
                probes
                    .iter()
                    .enumerate()
                    .map(|(i, (name, _))| {
                        let v = i32::from_ne_bytes(buf[i * 4..i * 4 + 4].try_into().unwrap());
                        (*name, v)
                    })
                    .collect()
            }
        }
    }

    fn errno_of(results: &[(&str, i32)], name: &str) -> i32 {
        results.iter().find(|(n, _)| *n == name).unwrap().1
    }

    #[test]
    fn worker_filters_refuse_what_they_say_in_a_real_process() {
        let base = crate::worker_base_program().unwrap();
        let with_base = |p: Profile| {
            let mut progs = vec![base.clone()];
            progs.extend(p.worker_programs().unwrap());
            progs
        };
        let d = probe_under(&with_base(Profile::default_profile()));
        let s = probe_under(&with_base(Profile::strict_profile()));
        for r in [&d, &s] {
            assert_eq!(errno_of(r, "getpid"), 0);
            assert_eq!(errno_of(r, "socket_unix"), 0);
            assert_eq!(errno_of(r, "unshare_user"), libc::EPERM);
            assert_eq!(errno_of(r, "mount"), libc::EPERM);
            assert_eq!(errno_of(r, "clone3"), libc::ENOSYS);
        }
        assert_eq!(
            errno_of(&d, "socket_inet"),
            0,
            "default allows INET sockets"
        );
        assert_eq!(errno_of(&s, "socket_inet"), libc::EPERM);
    }

    #[test]
    fn program_bytes_are_native_sock_filters() {
        let progs = WorkerRules::base().compile().unwrap();
        let bytes = program_bytes(&progs[0]);
        assert_eq!(bytes.len(), progs[0].len() * 8);
        assert_eq!(u16::from_ne_bytes([bytes[8], bytes[9]]), progs[0][1].code);
        assert_eq!((bytes[10], bytes[11]), (0, 1), "jt/jf of the clone3 test");
        assert_eq!(
            u32::from_ne_bytes(bytes[12..16].try_into().unwrap()),
            progs[0][1].k
        );
    }
}
