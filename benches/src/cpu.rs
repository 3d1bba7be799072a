//! Where the CPU of a batch of invocations goes: emberd itself (its
//! threads, and the runtime processes it spawned and reaped: `runc create`
//! of replacement sandboxes), the sandboxes (the cgroup parent every
//! sandbox of one emberd lives under, `/ember/<instance>`), the bench
//! client, and the whole machine; for emberd and the sandboxes also the
//! part spent in the kernel (fork, exit, page faults, mounts). Read before
//! and after the batch; the difference divided by the number of
//! invocations is the cost of one.
//!
//! ```text
//! let before = cpu::Snapshot::take(pid, &tag);
//! ... n invocations ...
//! let per_inv = cpu::Snapshot::take(pid, &tag).since(&before).per_invocation(n);
//! ```

use serde::Serialize;
use std::path::PathBuf;

/// Cumulative CPU counters, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Snapshot {
    pub emberd_ns: u64,
    pub emberd_sys_ns: u64,
    /// Children emberd waited for (runtime binaries: they run outside the
    /// sandboxes' cgroups).
    pub emberd_children_ns: u64,
    pub sandboxes_ns: u64,
    pub sandboxes_sys_ns: u64,
    /// This process: the bench's HTTP clients.
    pub bench_ns: u64,
    /// Every CPU, everything but idle and iowait.
    pub machine_ns: u64,
}

/// CPU time per invocation, in microseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PerInvocation {
    pub invocations: usize,
    pub emberd_us: f64,
    /// Of `emberd_us`, in the kernel.
    pub emberd_sys_us: f64,
    pub emberd_children_us: f64,
    pub sandboxes_us: f64,
    /// Of `sandboxes_us`, in the kernel.
    pub sandboxes_sys_us: f64,
    pub bench_us: f64,
    pub machine_us: f64,
    /// Machine time none of the above accounts for (kernel threads, other
    /// processes: on a shared machine, other people's work).
    pub other_us: f64,
}

fn clock_tick_ns() -> u64 {
    // SAFETY: sysconf has no memory effects; a failure returns -1.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        1_000_000_000 / hz as u64
    } else {
        10_000_000
    }
}

/// CPU of a process from its `/proc/<pid>/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidTimes {
    pub user: u64,
    pub sys: u64,
    /// Children waited for, user and kernel together.
    pub children: u64,
}

/// The command name may hold spaces and parentheses: fields are counted
/// after its last `)`.
pub fn parse_pid_stat(text: &str) -> Option<PidTimes> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(1) // state
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // After the state: ppid pgrp session tty tpgid flags minflt cminflt
    // majflt cmajflt utime stime cutime cstime.
    Some(PidTimes {
        user: *f.get(10)?,
        sys: *f.get(11)?,
        children: f.get(12)? + f.get(13)?,
    })
}

/// Busy ticks of all CPUs from `/proc/stat`'s first line: user, nice,
/// system, irq, softirq and steal (not idle, not iowait; guest time is
/// already inside user).
pub fn parse_machine_busy(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    Some(
        [0, 1, 2, 5, 6, 7]
            .iter()
            .map(|&i| f.get(i).unwrap_or(&0))
            .sum(),
    )
}

/// A key of a v2 `cpu.stat` (`usage_usec`, `system_usec`), in
/// nanoseconds.
pub fn parse_cpu_stat_ns(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|us| us * 1000)
}

fn read_u64(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// CPU used by every sandbox of emberd instance `tag` so far, and the
/// kernel's part of it (v1 cpuacct or v2 cpu.stat of their common
/// parent); zeros if neither is readable.
fn sandboxes_ns(tag: &str) -> (u64, u64) {
    let layout = ember_runtimes::cgroup::CgroupLayout::detect();
    let rel = PathBuf::from("ember").join(tag);
    if let Some(root) = layout.v1_controller("cpuacct") {
        let dir = root.join(&rel);
        return (
            read_u64(&dir.join("cpuacct.usage")),
            read_u64(&dir.join("cpuacct.usage_sys")),
        );
    }
    let stat = layout
        .v2_unified
        .as_ref()
        .and_then(|root| std::fs::read_to_string(root.join(&rel).join("cpu.stat")).ok())
        .unwrap_or_default();
    (
        parse_cpu_stat_ns(&stat, "usage_usec").unwrap_or(0),
        parse_cpu_stat_ns(&stat, "system_usec").unwrap_or(0),
    )
}

fn self_ns() -> u64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF)
        .map(|u| {
            let ns = |t: nix::sys::time::TimeVal| {
                t.tv_sec() as u64 * 1_000_000_000 + t.tv_usec() as u64 * 1000
            };
            ns(u.user_time()) + ns(u.system_time())
        })
        .unwrap_or(0)
}

impl Snapshot {
    /// Counters now, for emberd process `pid` and its instance `tag`.
    pub fn take(pid: u32, tag: &str) -> Snapshot {
        let tick = clock_tick_ns();
        let emberd = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|t| parse_pid_stat(&t))
            .unwrap_or(PidTimes {
                user: 0,
                sys: 0,
                children: 0,
            });
        let (sandboxes, sandboxes_sys) = sandboxes_ns(tag);
        let machine = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| parse_machine_busy(&t))
            .unwrap_or(0);
        Snapshot {
            emberd_ns: (emberd.user + emberd.sys) * tick,
            emberd_sys_ns: emberd.sys * tick,
            emberd_children_ns: emberd.children * tick,
            sandboxes_ns: sandboxes,
            sandboxes_sys_ns: sandboxes_sys,
            bench_ns: self_ns(),
            machine_ns: machine * tick,
        }
    }

    /// What was used between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            emberd_ns: self.emberd_ns.saturating_sub(earlier.emberd_ns),
            emberd_sys_ns: self.emberd_sys_ns.saturating_sub(earlier.emberd_sys_ns),
            emberd_children_ns: self
                .emberd_children_ns
                .saturating_sub(earlier.emberd_children_ns),
            sandboxes_ns: self.sandboxes_ns.saturating_sub(earlier.sandboxes_ns),
            sandboxes_sys_ns: self
                .sandboxes_sys_ns
                .saturating_sub(earlier.sandboxes_sys_ns),
            bench_ns: self.bench_ns.saturating_sub(earlier.bench_ns),
            machine_ns: self.machine_ns.saturating_sub(earlier.machine_ns),
        }
    }

    pub fn per_invocation(&self, n: usize) -> PerInvocation {
        let per = |ns: u64| ns as f64 / 1000.0 / n.max(1) as f64;
        let known = self.emberd_ns + self.emberd_children_ns + self.sandboxes_ns + self.bench_ns;
        PerInvocation {
            invocations: n,
            emberd_us: per(self.emberd_ns),
            emberd_sys_us: per(self.emberd_sys_ns),
            emberd_children_us: per(self.emberd_children_ns),
            sandboxes_us: per(self.sandboxes_ns),
            sandboxes_sys_us: per(self.sandboxes_sys_ns),
            bench_us: per(self.bench_ns),
            machine_us: per(self.machine_ns),
            other_us: per(self.machine_ns.saturating_sub(known)),
        }
    }
}

impl PerInvocation {
    /// What ember itself spent: emberd, its runtime children, the sandboxes.
    pub fn ember_us(&self) -> f64 {
        self.emberd_us + self.emberd_children_us + self.sandboxes_us
    }

    /// One line: `emberd 120 us + children 0 + sandboxes 800 + bench 40 = ...`.
    pub fn line(&self) -> String {
        format!(
            "CPU per invocation (us): emberd {:.0} (kernel {:.0}), its runtime children {:.0}, sandboxes {:.0} (kernel {:.0}): ember {:.0}; bench client {:.0}, rest of the machine {:.0}; machine {:.0}",
            self.emberd_us,
            self.emberd_sys_us,
            self.emberd_children_us,
            self.sandboxes_us,
            self.sandboxes_sys_us,
            self.ember_us(),
            self.bench_us,
            self.other_us,
            self.machine_us
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_stat_fields_count_after_the_last_parenthesis() {
        let line = "4242 (emb erd) (x)) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    37 11 5 2 20 0 3 0 100 0 0";
        let t = PidTimes {
            user: 37,
            sys: 11,
            children: 7,
        };
        assert_eq!(parse_pid_stat(line), Some(t));
        assert_eq!(parse_pid_stat("garbage"), None);
        assert_eq!(parse_pid_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn machine_busy_skips_idle_and_iowait() {
        let text = "cpu  100 5 50 9000 70 3 2 1 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n";
        assert_eq!(parse_machine_busy(text), Some(100 + 5 + 50 + 3 + 2 + 1));
        assert_eq!(parse_machine_busy("intr 1\n"), None);
    }

    #[test]
    fn v2_cpu_stat_keys_are_read_in_nanoseconds() {
        let text = "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n";
        assert_eq!(parse_cpu_stat_ns(text, "usage_usec"), Some(1_500_000));
        assert_eq!(parse_cpu_stat_ns(text, "system_usec"), Some(500_000));
        assert_eq!(parse_cpu_stat_ns("user_usec 3\n", "usage_usec"), None);
        assert_eq!(parse_cpu_stat_ns("usage_usec_x 3\n", "usage_usec"), None);
    }

    #[test]
    fn per_invocation_divides_and_names_the_rest_other() {
        let a = Snapshot {
            emberd_ns: 1_000_000,
            emberd_sys_ns: 500_000,
            emberd_children_ns: 0,
            sandboxes_ns: 2_000_000,
            sandboxes_sys_ns: 1_500_000,
            bench_ns: 1_000_000,
            machine_ns: 10_000_000,
        };
        let d = a.since(&Snapshot::default()).per_invocation(10);
        assert_eq!(
            (
                d.emberd_us,
                d.sandboxes_us,
                d.bench_us,
                d.machine_us,
                d.other_us
            ),
            (100.0, 200.0, 100.0, 1000.0, 600.0)
        );
        assert_eq!(
            (d.emberd_sys_us, d.sandboxes_sys_us, d.ember_us()),
            (50.0, 150.0, 300.0)
        );
        // A counter that went backwards (a reset cgroup) counts as zero.
        assert_eq!(Snapshot::default().since(&a), Snapshot::default());
    }
}
