//! What a pool reports: its sizes and lifetime counters
//! ([`PoolStatus`]) and one line per sandbox ([`SandboxStatus`]), built
//! from its [`State`] under the pool's lock.

use super::state::{Slot, State};
use ember_api::pool::{PoolStatus, SandboxState, SandboxStatus};
use ember_api::{Backend, Language};
use std::sync::atomic::{AtomicU64, Ordering};

/// Lifetime counters of one pool, bumped outside its lock.
#[derive(Default)]
pub(super) struct Counters {
    pub created: AtomicU64,
    pub destroyed: AtomicU64,
    pub create_failures: AtomicU64,
    pub warm: AtomicU64,
    pub hot: AtomicU64,
    pub cold: AtomicU64,
    pub recycled: AtomicU64,
    pub adopted: AtomicU64,
    /// Invocations refused because the queue was full.
    pub refused: AtomicU64,
}

pub(super) fn pool_status<S: Slot>(
    st: &State<S>,
    runtime: Language,
    backend: Backend,
    counters: &Counters,
) -> PoolStatus {
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    PoolStatus {
        runtime,
        backend,
        target: st.target,
        min_warm: st.min_warm,
        max_warm: st.max_warm,
        headroom: st.headroom,
        max: st.max,
        idle: st.idle.len(),
        bound: st.idle.iter().filter(|sb| sb.bound().is_some()).count(),
        busy: st.busy.len(),
        creating: st.creating,
        queued: st.queued(),
        max_queue: st.queue_bound(),
        created_total: load(&counters.created),
        destroyed_total: load(&counters.destroyed),
        create_failures_total: load(&counters.create_failures),
        warm_starts_total: load(&counters.warm),
        hot_starts_total: load(&counters.hot),
        cold_starts_total: load(&counters.cold),
        recycled_total: load(&counters.recycled),
        adopted_total: load(&counters.adopted),
        refused_total: load(&counters.refused),
    }
}

/// Every sandbox of the pool, idle and busy, sorted by id.
pub(super) fn sandboxes<S: Slot>(st: &State<S>, runtime: Language) -> Vec<SandboxStatus> {
    let mut out: Vec<SandboxStatus> = st
        .idle
        .iter()
        .map(|sb| SandboxStatus {
            id: sb.id().to_string(),
            runtime,
            backend: sb.backend(),
            state: SandboxState::Idle,
            pid: sb.pid(),
            age_ms: sb.created().elapsed().as_millis() as u64,
            invocations: sb.invocations(),
            bound_to: sb.bound().map(bound_function),
            function: None,
            invocation: None,
            busy_ms: None,
        })
        .collect();
    out.extend(st.busy.iter().map(|(id, b)| SandboxStatus {
        id: id.clone(),
        runtime,
        backend: b.backend,
        state: if st.sessions.contains(id) {
            SandboxState::Session
        } else if b.returning {
            SandboxState::Returning
        } else {
            SandboxState::Busy
        },
        pid: b.pid,
        age_ms: b.created.elapsed().as_millis() as u64,
        invocations: b.invocations,
        bound_to: b.bound.then(|| b.function.clone()),
        function: Some(b.function.clone()),
        invocation: Some(b.invocation.clone()),
        busy_ms: Some(b.since.elapsed().as_millis() as u64),
    }));
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// The function name of a binding key (`function@deploy`).
fn bound_function(key: &str) -> String {
    key.rsplit_once('@')
        .map(|(f, _)| f)
        .unwrap_or(key)
        .to_string()
}
