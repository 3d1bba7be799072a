//! The daemon's stop: refuse new work, let what runs finish within the
//! drain, end the sessions, destroy every sandbox, remove what this
//! daemon made. Apart from [`Daemon`] itself because it drives the
//! invocation path's session ending, which depends on the daemon.

use crate::daemon::Daemon;
use std::time::Duration;

/// How long stopped session calls may take to give their sandboxes back.
const SESSIONS_STOP: Duration = Duration::from_secs(5);

impl Daemon {
    /// Stop: refuse new invocations, let running ones finish (up to
    /// `grace`, or until `hurry` resolves), interrupt the rest, destroy
    /// every sandbox, remove this daemon's cgroups.
    pub async fn shutdown(&self, grace: Duration, hurry: impl std::future::Future<Output = ()>) {
        // All at once, so no pool takes new work while another drains.
        for pool in self.pools.values() {
            pool.close();
        }
        let drained = async {
            // Their running calls may finish within the drain, like
            // invocations; their sandboxes go with them.
            let why = ember_api::SessionEnd::Shutdown;
            crate::invoke::session::end_all(self, None, why, "emberd shut down").await;
            for pool in self.pools.values() {
                pool.wait_drained(grace).await;
            }
        };
        tokio::pin!(hurry);
        tokio::select! {
            _ = tokio::time::timeout(grace, drained) => {}
            _ = &mut hurry => tracing::info!("second signal: not waiting for running invocations"),
        }
        // Sessions whose calls outran the drain: those calls are stopped,
        // and the sessions recorded as ended by this shutdown (not found
        // open, as after a crash, by the next start).
        let why = ember_api::SessionEnd::Shutdown;
        let message = "emberd shut down; its call was stopped past the drain";
        let ending = crate::invoke::session::end_all_now(self, why, message);
        if tokio::time::timeout(SESSIONS_STOP, ending).await.is_err() {
            tracing::warn!("sessions still ending {SESSIONS_STOP:?} after the drain; the next start records them");
        }
        // Concurrently: one pool's teardown must not delay interrupting
        // another's invocations.
        let mut finishing = tokio::task::JoinSet::new();
        for pool in self.pools.values() {
            let pool = pool.clone();
            finishing.spawn(async move { pool.finish().await });
        }
        while finishing.join_next().await.is_some() {}
        self.history.flush();
        let left = self.cgroups.remove_tree(&self.settings.cgroup());
        for p in left {
            tracing::warn!(cgroup = %p.display(), "could not remove cgroup");
        }
        let run = &self.settings.run_dir;
        if let Err(e) = std::fs::remove_dir_all(run) {
            tracing::warn!(dir = %run.display(), "removing the run directory: {e}");
        }
        tracing::info!("emberd stopped");
    }
}
