//! Memory of paused sandboxes: RSS and PSS of every host process that
//! belongs to one (its cgroup's processes; for runsc also the Sentry and
//! gofer, found by their bundle path), read from /proc.

use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct SandboxMemory {
    pub id: String,
    pub processes: usize,
    pub rss_kib: u64,
    pub pss_kib: u64,
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let file = if key == "Pss:" {
        format!("/proc/{pid}/smaps_rollup")
    } else {
        format!("/proc/{pid}/status")
    };
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix(key)
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// Processes of sandbox `id`: its cgroup's, plus any process whose command
/// line names its bundle (runsc's sandbox and gofer processes).
fn pids(tag: &str, id: &str, bundle: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = Vec::new();
    for root in [
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup",
    ] {
        let procs = Path::new(root).join(format!("ember/{tag}/{id}/cgroup.procs"));
        if let Ok(t) = std::fs::read_to_string(procs) {
            pids.extend(t.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            break;
        }
    }
    let needle = bundle.to_string_lossy().into_owned();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&needle) {
                pids.push(pid);
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Memory of sandboxes `ids` of emberd instance `tag` (bundles under its
/// run directory).
pub fn measure(tag: &str, ids: &[String]) -> Vec<SandboxMemory> {
    let bundles = crate::hot::Emberd::run_dir(tag).join("sandboxes");
    ids.iter()
        .map(|id| {
            let bundle = bundles.join(id);
            let pids = pids(tag, id, &bundle);
            SandboxMemory {
                id: id.clone(),
                processes: pids.len(),
                rss_kib: pids.iter().map(|&p| status_kib(p, "VmRSS:")).sum(),
                pss_kib: pids.iter().map(|&p| status_kib(p, "Pss:")).sum(),
            }
        })
        .collect()
}
