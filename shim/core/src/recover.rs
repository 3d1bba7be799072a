//! Recovery at start: whatever a previous daemon on the same state dir
//! left behind (after a crash or SIGKILL) is removed before any pool
//! starts.

use crate::settings::Settings;
use ember_api::Backend;
use ember_runtimes::cgroup::CgroupLayout;
use std::time::Duration;

/// Remove every container, bundle and cgroup a previous daemon on this
/// state dir left behind.
pub(crate) async fn recover(cgroups: &CgroupLayout, settings: &Settings) {
    let cfg = settings;
    let prefix = &format!("ember-{}", settings.tag);
    let mut removed = 0;
    // Thaw first: the previous run may have died with sandboxes frozen, and
    // a runtime asked about a frozen container can block (runsc does).
    cgroups.thaw_tree(&settings.cgroup());
    // A runtime process the previous run started (a sandbox being created
    // when it was killed) outlives it; wait for it to finish, or the
    // container it makes would appear after the sweep below.
    wait_for_runtime_processes(&format!("{prefix}-"), Duration::from_secs(15)).await;
    // Every backend, not only today's: the previous run may have used
    // another. One whose binary is not installed has nothing to remove.
    // Only this daemon's own roots (and, for containers of emberd versions
    // that used them, runc's and crun's default roots, which answer even
    // with frozen containers): another daemon's containers are never
    // listed, so a frozen gVisor sandbox of theirs cannot stall this start.
    let legacy = [Backend::Runc, Backend::Crun].map(|b| {
        (
            b.as_str(),
            ember_runtimes::BackendOptions {
                root: None,
                ..cfg.backend_options(b)
            },
        )
    });
    let own = Backend::RUNNABLE
        .iter()
        .map(|b| (b.as_str(), cfg.backend_options(*b)));
    for (name, options) in own.chain(legacy) {
        if options.root.as_ref().is_some_and(|r| !r.exists()) {
            continue;
        }
        let Ok(backend) = ember_runtimes::backend_by_name(name, &options) else {
            continue;
        };
        match backend.list().await {
            Ok(list) => {
                let leftovers: Vec<_> = list
                    .iter()
                    .filter(|c| c.id.starts_with(&format!("{prefix}-")))
                    .collect();
                // runc's and crun's pid is the container's init: killed
                // first, every container is stopped by the time it is
                // deleted, which spares runc's 100 ms wait per container.
                // (runsc's is its sandbox process, left to runsc.)
                if matches!(name, "runc" | "crun") {
                    let pids: Vec<u32> = leftovers
                        .iter()
                        .filter(|c| c.pid > 0)
                        .map(|c| c.pid as u32)
                        .collect();
                    ember_runtimes::sandbox::kill_and_wait(&pids, Duration::from_millis(500)).await;
                }
                for c in leftovers {
                    match backend.delete(&c.id).await {
                        Ok(()) => removed += 1,
                        Err(e) => {
                            tracing::warn!(sandbox = %c.id, backend = name, "removing leftover sandbox: {e}")
                        }
                    }
                }
            }
            Err(ember_runtimes::RuntimeError::Spawn { .. }) => {}
            Err(e) => tracing::warn!(backend = name, "listing leftover sandboxes: {e}"),
        }
    }
    // Bundles and builds in the run directory, runsc's host directories
    // in the state dir (where older versions also kept bundles).
    for dir in [cfg.bundles_dir(), cfg.builds_dir(), cfg.host_dirs()] {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                ember_runtimes::sandbox::remove_bundle(&e.path());
            }
        }
    }
    let left = cgroups.remove_tree(&settings.cgroup());
    for p in &left {
        tracing::warn!(cgroup = %p.display(), "could not remove leftover cgroup");
    }
    if removed > 0 {
        tracing::info!(removed, "removed sandboxes left by a previous run");
    }
}

/// Wait (up to `limit`) until no runc, crun or runsc process works on a
/// container whose id starts with `prefix`.
async fn wait_for_runtime_processes(prefix: &str, limit: Duration) {
    let busy = || -> Vec<i32> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                    return false;
                };
                let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
                let runtime = args.first().is_some_and(|a| {
                    let name = a.rsplit(|b| *b == b'/').next().unwrap_or(a);
                    matches!(name, b"runc" | b"crun" | b"runsc")
                });
                runtime && args.iter().any(|a| a.starts_with(prefix.as_bytes()))
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + limit;
    loop {
        let pids = busy();
        if pids.is_empty() {
            return;
        }
        if std::time::Instant::now() > deadline {
            tracing::warn!(?pids, "runtime processes of the previous run still running");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
