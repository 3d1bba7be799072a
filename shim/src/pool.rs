//! Warm pools: per runtime, a set of paused sandboxes kept at a target
//! size by a background task, handed out to invocations and taken back.
//!
//! A sandbox is either idle (frozen, in the queue), busy (lent to one
//! invocation) or being created. An invocation that finds no idle sandbox
//! creates one itself if the pool is under its maximum (a cold start,
//! reported as such) or waits for one to come back.

use ember_runtimes::cgroup::CgroupLayout;
use ember_runtimes::{RuntimeError, Sandbox, SandboxConfig};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::Instrument;

/// How long an invocation waits for a returning sandbox before it
/// creates a new one.
const RETURNING_WAIT: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StartKind {
    /// A warm sandbox from the pool.
    Hot,
    /// The pool was empty: a sandbox was created for this invocation.
    Cold,
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("no sandbox of runtime {runtime} became free within {waited_ms} ms ({max} busy)")]
    Exhausted {
        runtime: String,
        waited_ms: u64,
        max: usize,
    },
    #[error("pool {runtime} is shutting down")]
    ShuttingDown { runtime: String },
    #[error("creating a {runtime} sandbox: {source}")]
    Create {
        runtime: String,
        source: RuntimeError,
    },
}

/// What [`Pool::kill`] ended.
#[derive(Debug, Clone, Serialize)]
pub struct KilledInvocation {
    pub sandbox: String,
    pub function: String,
    pub invocation: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KillError {
    #[error("sandbox {sandbox} is not running an invocation (it is {state})")]
    NotRunning {
        sandbox: String,
        state: &'static str,
    },
}

struct BusyInfo {
    /// The invocation has answered; the sandbox is warming its next worker
    /// and comes back to the pool within milliseconds.
    returning: bool,
    function: String,
    invocation: String,
    /// Fired by [`Pool::kill`]; the invocation ends at once.
    kill: Arc<Notify>,
    since: Instant,
    pid: u32,
    created: Instant,
    invocations: u64,
}

#[derive(Default)]
struct State {
    idle: VecDeque<Sandbox>,
    busy: HashMap<String, BusyInfo>,
    /// Creations under way (refill and cold starts).
    creating: usize,
    /// Busy sandboxes that are on their way back (see `BusyInfo`).
    returning: usize,
    target: usize,
    max: usize,
}

impl State {
    fn total(&self) -> usize {
        self.idle.len() + self.busy.len() + self.creating
    }
}

#[derive(Default)]
struct Counters {
    created: AtomicU64,
    destroyed: AtomicU64,
    create_failures: AtomicU64,
    hot: AtomicU64,
    cold: AtomicU64,
}

/// Sizes and waits of one pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Warm sandboxes to keep.
    pub target: usize,
    /// Most sandboxes at once (warm and busy).
    pub max: usize,
    /// Longest an invocation waits for a sandbox.
    pub queue_timeout: Duration,
    /// Idle sandboxes above the target are destroyed after this long unused.
    pub idle_trim: Duration,
}

pub struct Pool {
    pub runtime: String,
    cfg: SandboxConfig,
    cgroups: CgroupLayout,
    id_prefix: String,
    seq: AtomicU64,
    state: Mutex<State>,
    /// A sandbox came back or a slot was freed.
    returned: Notify,
    /// The refill task should look again.
    refill: Notify,
    closing: AtomicBool,
    counters: Counters,
    queue_timeout: Duration,
    idle_trim: Duration,
    reaper: Mutex<JoinSet<()>>,
}

/// A pool's state as the API shows it.
#[derive(Debug, Serialize)]
pub struct PoolStatus {
    pub runtime: String,
    pub backend: &'static str,
    pub target: usize,
    pub max: usize,
    pub idle: usize,
    pub busy: usize,
    pub creating: usize,
    pub created_total: u64,
    pub destroyed_total: u64,
    pub create_failures_total: u64,
    pub hot_starts_total: u64,
    pub cold_starts_total: u64,
}

#[derive(Debug, Serialize)]
pub struct SandboxStatus {
    pub id: String,
    pub runtime: String,
    pub backend: &'static str,
    pub state: &'static str,
    pub pid: u32,
    pub age_ms: u64,
    pub invocations: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// The invocation a busy sandbox runs (what `kill` would end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invocation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub busy_ms: Option<u64>,
}

impl Pool {
    pub fn new(
        runtime: &str,
        cfg: SandboxConfig,
        cgroups: CgroupLayout,
        id_prefix: String,
        settings: PoolSettings,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            runtime: runtime.to_string(),
            cfg,
            cgroups,
            id_prefix,
            seq: AtomicU64::new(0),
            state: Mutex::new(State {
                target: settings.target,
                max: settings.max.max(1),
                ..State::default()
            }),
            returned: Notify::new(),
            refill: Notify::new(),
            closing: AtomicBool::new(false),
            counters: Counters::default(),
            queue_timeout: settings.queue_timeout,
            idle_trim: settings.idle_trim,
            reaper: Mutex::new(JoinSet::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn sandbox_config(&self) -> &SandboxConfig {
        &self.cfg
    }

    fn next_id(&self) -> String {
        format!(
            "{}-{}",
            self.id_prefix,
            self.seq.fetch_add(1, Ordering::Relaxed)
        )
    }

    async fn create(&self) -> Result<Sandbox, PoolError> {
        let id = self.next_id();
        let span = tracing::info_span!("create_sandbox", sandbox = %id, runtime = %self.runtime);
        match Sandbox::create(&self.cfg, &self.cgroups, &id)
            .instrument(span)
            .await
        {
            Ok(sb) => {
                self.counters.created.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    sandbox = %id,
                    create_ms = sb.create_us as f64 / 1000.0,
                    preload_ms = sb.ready.preload_us as f64 / 1000.0,
                    "sandbox ready"
                );
                Ok(sb)
            }
            Err(source) => {
                self.counters
                    .create_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(sandbox = %id, "sandbox creation failed: {source}");
                Err(PoolError::Create {
                    runtime: self.runtime.clone(),
                    source,
                })
            }
        }
    }

    /// Take a sandbox for `function`: an idle one (hot), a new one (cold),
    /// or the next one returned. Returns how long it waited.
    pub async fn acquire(
        &self,
        function: &str,
        invocation: &str,
    ) -> Result<(Sandbox, StartKind, Duration), PoolError> {
        let started = Instant::now();
        let deadline = started + self.queue_timeout;
        // Waiting a moment for a sandbox that is about to come back beats
        // creating one (tens of milliseconds).
        let returning_until = started + RETURNING_WAIT;
        loop {
            if self.closing.load(Ordering::SeqCst) {
                return Err(PoolError::ShuttingDown {
                    runtime: self.runtime.clone(),
                });
            }
            let notified = self.returned.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let cold = {
                let mut st = self.lock();
                if let Some(sb) = st.idle.pop_front() {
                    st.busy
                        .insert(sb.id.clone(), busy_info(&sb, function, invocation));
                    drop(st);
                    self.counters.hot.fetch_add(1, Ordering::Relaxed);
                    self.refill.notify_one();
                    return Ok((sb, StartKind::Hot, started.elapsed()));
                }
                let wait_for_returning = st.returning > 0 && Instant::now() < returning_until;
                if !wait_for_returning && st.total() < st.max {
                    st.creating += 1;
                    true
                } else {
                    false
                }
            };
            if cold {
                let res = self.create().await;
                let mut st = self.lock();
                st.creating -= 1;
                return match res {
                    Ok(sb) => {
                        st.busy
                            .insert(sb.id.clone(), busy_info(&sb, function, invocation));
                        self.counters.cold.fetch_add(1, Ordering::Relaxed);
                        Ok((sb, StartKind::Cold, started.elapsed()))
                    }
                    Err(e) => {
                        drop(st);
                        self.returned.notify_one();
                        Err(e)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                let max = self.lock().max;
                return Err(PoolError::Exhausted {
                    runtime: self.runtime.clone(),
                    waited_ms: started.elapsed().as_millis() as u64,
                    max,
                });
            }
            let mut wait = deadline - now;
            if now < returning_until {
                wait = wait.min(returning_until - now);
            }
            let _ = tokio::time::timeout(wait, notified).await;
        }
    }

    /// The kill switch of the busy sandbox `id` (see [`Pool::kill`]).
    pub fn kill_signal(&self, id: &str) -> Option<Arc<Notify>> {
        self.lock().busy.get(id).map(|b| b.kill.clone())
    }

    /// End the invocation running in sandbox `id` at once: its invocation
    /// answers `killed` and the sandbox is destroyed. `Ok(None)`: no such
    /// sandbox in this pool.
    pub fn kill(&self, id: &str) -> Result<Option<KilledInvocation>, KillError> {
        let st = self.lock();
        if let Some(b) = st.busy.get(id) {
            if b.returning {
                return Err(KillError::NotRunning {
                    sandbox: id.to_string(),
                    state: "returning",
                });
            }
            b.kill.notify_one();
            return Ok(Some(KilledInvocation {
                sandbox: id.to_string(),
                function: b.function.clone(),
                invocation: b.invocation.clone(),
            }));
        }
        if st.idle.iter().any(|sb| sb.id == id) {
            return Err(KillError::NotRunning {
                sandbox: id.to_string(),
                state: "idle",
            });
        }
        Ok(None)
    }

    /// The invocation on `id` has answered its caller; the sandbox will be
    /// released once its next worker is warm.
    pub fn mark_returning(&self, id: &str) {
        let mut st = self.lock();
        if let Some(b) = st.busy.get_mut(id) {
            if !b.returning {
                b.returning = true;
                st.returning += 1;
            }
        }
    }

    /// Give a sandbox back. A healthy one (already frozen by the caller)
    /// goes back to the queue; an unhealthy one is destroyed in the
    /// background and the pool refilled.
    pub fn release(self: &Arc<Self>, mut sb: Sandbox, healthy: bool) {
        sb.invocations += 1;
        sb.last_used = Instant::now();
        let mut st = self.lock();
        if st.busy.remove(&sb.id).is_some_and(|b| b.returning) {
            st.returning -= 1;
        }
        if healthy && !self.closing.load(Ordering::SeqCst) && st.total() < st.max {
            st.idle.push_back(sb);
            drop(st);
        } else {
            drop(st);
            self.destroy_later(sb);
            self.refill.notify_one();
        }
        self.returned.notify_one();
    }

    fn destroy_later(self: &Arc<Self>, sb: Sandbox) {
        let pool = self.clone();
        let mut reaper = self.reaper.lock().unwrap_or_else(|e| e.into_inner());
        // Drop finished reaps so the set does not grow without bound.
        while reaper.try_join_next().is_some() {}
        reaper.spawn(async move {
            let id = sb.id.clone();
            if let Err(e) = sb.destroy(pool.cfg.backend.as_ref()).await {
                tracing::warn!(sandbox = %id, "destroying sandbox: {e}");
            }
            pool.counters.destroyed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(sandbox = %id, "sandbox destroyed");
        });
    }

    /// Keep the pool at its target size, one creation at a time (creation
    /// is CPU-heavy; parallel creation would slow the hot path on a small
    /// machine).
    pub async fn refill_loop(self: Arc<Self>) {
        let mut failures = 0u32;
        loop {
            if self.closing.load(Ordering::SeqCst) {
                return;
            }
            let need = {
                let mut st = self.lock();
                // Busy sandboxes come back (fork mode): count them toward the target.
                let need = st.total() < st.target.min(st.max);
                if need {
                    st.creating += 1;
                }
                need
            };
            if !need {
                self.trim_idle();
                let _ =
                    tokio::time::timeout(Duration::from_millis(250), self.refill.notified()).await;
                continue;
            }
            let res = self.create().await;
            self.lock().creating -= 1;
            match res {
                Ok(sb) => match sb.freezer.freeze() {
                    Ok(()) if !self.closing.load(Ordering::SeqCst) => {
                        failures = 0;
                        self.lock().idle.push_back(sb);
                        self.returned.notify_one();
                    }
                    Ok(()) => self.destroy_later(sb),
                    Err(e) => {
                        tracing::warn!(sandbox = %sb.id, "freezing new sandbox: {e}");
                        self.destroy_later(sb);
                    }
                },
                Err(_) => {
                    // Back off so a broken runtime does not spin the CPU.
                    failures += 1;
                    let wait = Duration::from_millis(200 * u64::from(failures.min(25)));
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Destroy idle sandboxes above the target that have not been used
    /// for `idle_trim` (extras made by a burst), oldest use first.
    fn trim_idle(self: &Arc<Self>) {
        let extra: Vec<Sandbox> = {
            let mut st = self.lock();
            let mut out = Vec::new();
            while st.idle.len() > st.target {
                let oldest = st
                    .idle
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, sb)| sb.last_used)
                    .map(|(i, sb)| (i, sb.last_used.elapsed()));
                match oldest {
                    Some((i, age)) if age >= self.idle_trim => {
                        if let Some(sb) = st.idle.remove(i) {
                            out.push(sb);
                        }
                    }
                    _ => break,
                }
            }
            out
        };
        for sb in extra {
            tracing::info!(sandbox = %sb.id, "trimming idle sandbox above pool target");
            self.destroy_later(sb);
        }
    }

    pub fn set_size(self: &Arc<Self>, target: Option<usize>, max: Option<usize>) -> PoolStatus {
        {
            let mut st = self.lock();
            if let Some(m) = max {
                st.max = m.max(1);
            }
            if let Some(t) = target {
                st.target = t;
            }
            // Shrink: idle sandboxes beyond the target are dropped now.
            let mut extra = Vec::new();
            while st.idle.len() > st.target || (st.total() > st.max && !st.idle.is_empty()) {
                if let Some(sb) = st.idle.pop_back() {
                    extra.push(sb);
                }
            }
            drop(st);
            for sb in extra {
                self.destroy_later(sb);
            }
        }
        self.refill.notify_one();
        self.status()
    }

    pub fn status(&self) -> PoolStatus {
        let st = self.lock();
        PoolStatus {
            runtime: self.runtime.clone(),
            backend: self.cfg.backend.name(),
            target: st.target,
            max: st.max,
            idle: st.idle.len(),
            busy: st.busy.len(),
            creating: st.creating,
            created_total: self.counters.created.load(Ordering::Relaxed),
            destroyed_total: self.counters.destroyed.load(Ordering::Relaxed),
            create_failures_total: self.counters.create_failures.load(Ordering::Relaxed),
            hot_starts_total: self.counters.hot.load(Ordering::Relaxed),
            cold_starts_total: self.counters.cold.load(Ordering::Relaxed),
        }
    }

    pub fn sandboxes(&self) -> Vec<SandboxStatus> {
        let st = self.lock();
        let mut out: Vec<SandboxStatus> = st
            .idle
            .iter()
            .map(|sb| SandboxStatus {
                id: sb.id.clone(),
                runtime: self.runtime.clone(),
                backend: self.cfg.backend.name(),
                state: "idle",
                pid: sb.init_pid,
                age_ms: sb.created.elapsed().as_millis() as u64,
                invocations: sb.invocations,
                function: None,
                invocation: None,
                busy_ms: None,
            })
            .collect();
        out.extend(st.busy.iter().map(|(id, b)| SandboxStatus {
            id: id.clone(),
            runtime: self.runtime.clone(),
            backend: self.cfg.backend.name(),
            state: if b.returning { "returning" } else { "busy" },
            pid: b.pid,
            age_ms: b.created.elapsed().as_millis() as u64,
            invocations: b.invocations,
            function: Some(b.function.clone()),
            invocation: Some(b.invocation.clone()),
            busy_ms: Some(b.since.elapsed().as_millis() as u64),
        }));
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Stop handing out sandboxes, wait up to `grace` for busy ones to come
    /// back, then destroy every sandbox and wait for that to finish.
    pub async fn shutdown(self: &Arc<Self>, grace: Duration) {
        self.closing.store(true, Ordering::SeqCst);
        self.returned.notify_waiters();
        self.refill.notify_waiters();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            let drained = {
                let st = self.lock();
                st.busy.is_empty() && st.creating == 0
            };
            if drained {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let idle: Vec<Sandbox> = self.lock().idle.drain(..).collect();
        for sb in idle {
            self.destroy_later(sb);
        }
        let mut set = std::mem::take(&mut *self.reaper.lock().unwrap_or_else(|e| e.into_inner()));
        while set.join_next().await.is_some() {}
    }
}

fn busy_info(sb: &Sandbox, function: &str, invocation: &str) -> BusyInfo {
    BusyInfo {
        returning: false,
        function: function.to_string(),
        invocation: invocation.to_string(),
        kill: Arc::new(Notify::new()),
        since: Instant::now(),
        pid: sb.init_pid,
        created: sb.created,
        invocations: sb.invocations,
    }
}
