//! Warm pools: per runtime and backend, a set of paused sandboxes kept at a
//! target size by a background task, handed out to invocations and taken
//! back.
//!
//! A sandbox is either idle (frozen, in the queue), busy (lent to one
//! invocation) or being created. An idle sandbox is *generic* (no code; any
//! function's code is swapped in) or *bound* to one function in
//! specialized mode (its code stays loaded). An invocation that finds no
//! fitting idle sandbox creates one itself if the pool is under its maximum
//! (a cold start, reported as such), recycles a sandbox bound to another
//! function if the pool is full, or waits for one to come back.
//!
//! The target follows demand: it is the generic sandboxes in use plus
//! `headroom`, within `[min_warm, max_warm]`, so a rising load finds
//! sandboxes already made; after `idle_trim` without new demand it falls
//! back and idle extras are destroyed.
//!
//! This module owns the doing: creating, destroying, freezing, waking
//! waiters, the refill task and the drain. The deciding is
//! `policy`'s (pure functions over the pool's `state`, unit-tested
//! over fake sandboxes); what the pool reports is built in `status`.

mod policy;
mod state;
mod status;

use crate::adopted::AdoptedRecords;
use ember_api::pool::{KilledInvocation, PoolStatus, SandboxState, SandboxStatus};
use ember_api::{Backend, Language, StartKind};
use ember_runtimes::cgroup::CgroupLayout;
use ember_runtimes::{RuntimeError, Sandbox, SandboxConfig};
use policy::{Request, Return, Step};
use state::{BusyInfo, State};
use status::Counters;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::Instrument;

/// How long an invocation waits for a returning sandbox before it
/// creates a new one.
const RETURNING_WAIT: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("no sandbox of runtime {runtime} became free within {waited_ms} ms ({max} busy)")]
    Exhausted {
        runtime: Language,
        waited_ms: u64,
        max: usize,
    },
    #[error("no adopted sandbox of runtime {runtime} became free within {waited_ms} ms ({adopted} adopted, all busy): this emberd runs with --adopted-only and makes no sandbox of its own; start more containers annotated dev.ember.sandbox={runtime} through ember-runtime (docs/containerd.md)")]
    NoAdopted {
        runtime: Language,
        waited_ms: u64,
        adopted: usize,
    },
    #[error("this emberd runs with --adopted-only and makes no sandbox of its own, so it cannot run code in a sandbox of its own (`ember test`): deploy the function and invoke it")]
    AdoptedOnly { runtime: Language },
    #[error("emberd is shutting down: pool {runtime} takes no new invocations")]
    ShuttingDown { runtime: Language },
    #[error("creating a {runtime} sandbox: {source}")]
    Create {
        runtime: Language,
        source: RuntimeError,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum KillError {
    #[error("sandbox {sandbox} is not running an invocation (it is {})", .state.as_str())]
    NotRunning {
        sandbox: String,
        state: SandboxState,
    },
}

/// What an invocation needs from the pool.
#[derive(Debug, Clone, Copy)]
pub enum Want<'a> {
    /// A generic sandbox (fork mode).
    Fork,
    /// A sandbox bound to `key` (`function@deploy`: its specialized
    /// runner or its function zygote), or a generic one to bind.
    /// `spread`: while the function's only bound sandbox is on its way
    /// back, take a generic one (which is bound in turn) rather than wait:
    /// a function called back to back then alternates between two bound
    /// sandboxes, each returning while the other serves (fork mode, where
    /// nothing is kept between invocations; a specialized runner's state
    /// is worth the short wait).
    Bound { key: &'a str, spread: bool },
}

/// Sizes and waits of one pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Warm generic sandboxes kept even when idle.
    pub min_warm: usize,
    /// Most warm sandboxes kept ahead of demand.
    pub max_warm: usize,
    /// Free sandboxes kept beyond those in use while there is load.
    pub headroom: usize,
    /// Most sandboxes at once (warm, bound and busy).
    pub max: usize,
    /// Longest an invocation waits for a sandbox.
    pub queue_timeout: Duration,
    /// Without demand for this long the target falls back to `min_warm`;
    /// idle sandboxes above it unused this long are destroyed.
    pub idle_trim: Duration,
    /// A bound sandbox is recycled after this many invocations...
    pub specialized_max_invocations: u64,
    /// ...or after this long unused.
    pub specialized_idle: Duration,
    /// A sandbox back from an invocation is frozen once it has been idle
    /// this long (it stays thawed while work keeps coming).
    pub freeze_after: Duration,
    /// Serve from adopted sandboxes only: never create one (no warm pool,
    /// no cold start, no throwaway), wait for an adopted one instead.
    pub adopted_only: bool,
    /// Most invocations waiting for a sandbox; past it they are refused
    /// at once. `None`: 4 × `max`.
    pub max_queue: Option<usize>,
}

impl PoolSettings {
    /// A runtime's pool settings: its config file section (and the file's
    /// specialized recycling rules) over the daemon's defaults.
    pub fn from_section(
        d: &crate::settings::PoolDefaults,
        section: &ember_api::config_file::PoolSection,
        specialized: &ember_api::config_file::SpecializedSection,
    ) -> PoolSettings {
        // Sizes are of sandboxes the pool makes: an adopted-only pool makes none.
        let own = |n: usize| if d.adopted_only { 0 } else { n };
        let min_warm = own(section.min_warm.unwrap_or(d.min_warm));
        PoolSettings {
            min_warm,
            max_warm: own(section.max_warm.unwrap_or(d.max_warm)).max(min_warm),
            headroom: own(section.headroom.unwrap_or(d.headroom)),
            max: section.max.unwrap_or(d.max),
            queue_timeout: Duration::from_millis(d.queue_timeout_ms),
            idle_trim: Duration::from_millis(section.idle_trim_ms.unwrap_or(d.idle_trim_ms)),
            specialized_max_invocations: specialized
                .max_invocations
                .unwrap_or(d.specialized_max_invocations),
            specialized_idle: Duration::from_millis(
                specialized.idle_ms.unwrap_or(d.specialized_idle_ms),
            ),
            freeze_after: Duration::from_millis(d.freeze_after_ms),
            adopted_only: d.adopted_only,
            max_queue: section.max_queue.or(d.max_queue),
        }
    }
}

/// An invocation admitted into a pool ([`Pool::admit`]); counts it out
/// when dropped.
pub struct PoolTicket {
    pool: Arc<Pool>,
}

impl Drop for PoolTicket {
    fn drop(&mut self) {
        policy::leave(&mut self.pool.lock());
    }
}

pub struct Pool {
    pub runtime: Language,
    pub backend: Backend,
    cfg: SandboxConfig,
    cgroups: CgroupLayout,
    id_prefix: String,
    seq: AtomicU64,
    state: Mutex<State<Sandbox>>,
    /// A sandbox came back or a slot was freed.
    returned: Notify,
    /// The refill task should look again.
    refill: Notify,
    closing: AtomicBool,
    counters: Counters,
    queue_timeout: Duration,
    freeze_after: Duration,
    reaper: Mutex<JoinSet<()>>,
    /// Where adopted sandboxes are remembered across restarts (set once
    /// by the daemon; see [`Pool::keep_records`]).
    records: std::sync::OnceLock<AdoptedRecords>,
}

impl Pool {
    pub fn new(
        runtime: Language,
        backend: Backend,
        cfg: SandboxConfig,
        cgroups: CgroupLayout,
        id_prefix: String,
        settings: PoolSettings,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            runtime,
            backend,
            cfg,
            cgroups,
            id_prefix,
            seq: AtomicU64::new(0),
            state: Mutex::new(State::new(&settings, Instant::now())),
            returned: Notify::new(),
            refill: Notify::new(),
            closing: AtomicBool::new(false),
            counters: Counters::default(),
            queue_timeout: settings.queue_timeout,
            freeze_after: settings.freeze_after,
            reaper: Mutex::new(JoinSet::new()),
            records: std::sync::OnceLock::new(),
        })
    }

    /// Forget adopted sandboxes in `records` once this pool lets them go
    /// for good (their container ended, or an invocation left them
    /// unusable); a shutdown keeps them, for the next emberd.
    pub fn keep_records(&self, records: AdoptedRecords) {
        let _ = self.records.set(records);
    }

    /// The adopted sandbox `id` is gone for good.
    fn forget_adopted(&self, id: &str) {
        self.lock().keep_thawed.remove(id);
        if let Some(r) = self.records.get() {
            r.remove(id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<Sandbox>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn sandbox_config(&self) -> &SandboxConfig {
        &self.cfg
    }

    /// Fixed-width numbers: no sandbox id is a prefix of another, which
    /// runsc needs (it resolves ids by prefix and refuses an ambiguous
    /// one, so `...-1` could not be deleted while `...-10` existed).
    fn next_id(&self) -> String {
        format!(
            "{}-{:06}",
            self.id_prefix,
            self.seq.fetch_add(1, Ordering::Relaxed) % 1_000_000
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
                    runtime: self.runtime,
                    source,
                })
            }
        }
    }

    /// Count an invocation in before it begins, or refuse it at once when
    /// the pool runs all it can and `max_queue` more already wait.
    pub fn admit(self: &Arc<Self>) -> Result<PoolTicket, crate::admission::Refused> {
        let refusal = policy::admit(&mut self.lock());
        match refusal {
            Ok(()) => Ok(PoolTicket { pool: self.clone() }),
            Err(r) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                Err(crate::admission::Refused {
                    scope: crate::admission::Scope::Pool {
                        runtime: self.runtime,
                        backend: self.backend,
                    },
                    running: r.capacity,
                    queued: r.queued,
                    bound: r.bound,
                    retry_after_s: r.retry_after_s,
                })
            }
        }
    }

    /// Take a sandbox for `function`: one bound to it (warm), an idle
    /// generic one (hot), a new one (cold, recycling a sandbox bound to
    /// another function if the pool is full), or the next one returned.
    /// Returns how long it waited. The choice is `policy::acquire`'s;
    /// this loop creates, recycles and waits.
    pub async fn acquire(
        self: &Arc<Self>,
        function: &str,
        invocation: &str,
        want: Want<'_>,
    ) -> Result<(Sandbox, StartKind, Duration), PoolError> {
        let started = Instant::now();
        let deadline = started + self.queue_timeout;
        // Waiting a moment for a sandbox that is about to come back beats
        // creating one (tens of milliseconds).
        let returning_until = started + RETURNING_WAIT;
        let req = Request {
            function,
            invocation,
            want,
        };
        loop {
            if self.closing.load(Ordering::SeqCst) {
                return Err(PoolError::ShuttingDown {
                    runtime: self.runtime,
                });
            }
            // Listen before looking, so a sandbox returned between the
            // look and the wait still wakes this invocation.
            let notified = self.returned.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let pick = {
                let now = Instant::now();
                policy::acquire(&mut self.lock(), &req, now, now < returning_until)
            };
            self.recycle(pick.doomed);
            match pick.step {
                Step::Take(sb, kind) => return Ok(self.took(sb, kind, started)),
                Step::Create => return self.cold_start(&req, started).await,
                Step::Wait => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.exhausted(started));
            }
            let mut wait = deadline - now;
            if now < returning_until {
                wait = wait.min(returning_until - now);
            }
            let _ = tokio::time::timeout(wait, notified).await;
        }
    }

    /// Why no sandbox came in time.
    fn exhausted(&self, started: Instant) -> PoolError {
        let st = self.lock();
        let waited_ms = started.elapsed().as_millis() as u64;
        if st.adopted_only {
            return PoolError::NoAdopted {
                runtime: self.runtime,
                waited_ms,
                adopted: st.total(),
            };
        }
        PoolError::Exhausted {
            runtime: self.runtime,
            waited_ms,
            max: st.max,
        }
    }

    /// Count a start from an idle sandbox, and have the refill task make
    /// up for it.
    fn took(
        &self,
        sb: Sandbox,
        kind: StartKind,
        started: Instant,
    ) -> (Sandbox, StartKind, Duration) {
        let counter = match kind {
            StartKind::Warm => &self.counters.warm,
            _ => &self.counters.hot,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.refill.notify_one();
        (sb, kind, started.elapsed())
    }

    /// Create a sandbox for `req`, in the creation [`policy::acquire`]
    /// reserved for it. A failure frees the slot for the next waiter.
    async fn cold_start(
        &self,
        req: &Request<'_>,
        started: Instant,
    ) -> Result<(Sandbox, StartKind, Duration), PoolError> {
        let res = self.create().await;
        let mut st = self.lock();
        st.creating -= 1;
        match res {
            Ok(sb) => {
                policy::lend(&mut st, &sb, req, StartKind::Cold, Instant::now());
                self.counters.cold.fetch_add(1, Ordering::Relaxed);
                drop(st);
                self.refill.notify_one();
                Ok((sb, StartKind::Cold, started.elapsed()))
            }
            Err(e) => {
                drop(st);
                self.returned.notify_one();
                Err(e)
            }
        }
    }

    /// A sandbox of this pool's kind that is not part of it: created for
    /// one invocation, busy while it runs, destroyed when released.
    pub async fn create_throwaway(
        self: &Arc<Self>,
        function: &str,
        invocation: &str,
    ) -> Result<(Sandbox, StartKind, Duration), PoolError> {
        let started = Instant::now();
        if self.closing.load(Ordering::SeqCst) {
            return Err(PoolError::ShuttingDown {
                runtime: self.runtime,
            });
        }
        if self.lock().adopted_only {
            return Err(PoolError::AdoptedOnly {
                runtime: self.runtime,
            });
        }
        let sb = self.create().await?;
        // Busy like any other, so the kill switch and the sandbox list see
        // it; `release` finds it over the maximum-free accounting and
        // destroys it.
        let mut st = self.lock();
        let info = BusyInfo::new(
            &sb,
            function,
            invocation,
            StartKind::Cold,
            None,
            Instant::now(),
        );
        st.busy.insert(sb.id.clone(), info);
        st.throwaway.insert(sb.id.clone());
        Ok((sb, StartKind::Cold, started.elapsed()))
    }

    /// Add a sandbox someone else created (containerd, through
    /// `ember-runtime`) to the pool, frozen and idle, like one of its own.
    /// It counts toward the pool's sizes but is never trimmed: only its
    /// owner ends it (or an invocation that leaves it unusable).
    pub fn adopt(self: &Arc<Self>, mut sb: Sandbox) -> Result<(), PoolError> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(PoolError::ShuttingDown {
                runtime: self.runtime,
            });
        }
        if let Err(e) = sb.freezer.freeze() {
            let id = sb.id.clone();
            self.destroy_later(sb);
            return Err(PoolError::Create {
                runtime: self.runtime,
                source: RuntimeError::Agent {
                    id,
                    message: format!("freezing it: {e}"),
                },
            });
        }
        sb.frozen = true;
        self.counters.adopted.fetch_add(1, Ordering::Relaxed);
        tracing::info!(sandbox = %sb.id, pid = sb.init_pid, "adopted external sandbox");
        self.lock().idle.push_back(sb);
        self.returned.notify_one();
        Ok(())
    }

    /// Destroy bound sandboxes that cannot serve any more (stale deploy,
    /// room needed, recycling limits).
    fn recycle(self: &Arc<Self>, doomed: Vec<Sandbox>) {
        for sb in doomed {
            tracing::info!(sandbox = %sb.id, bound = ?sb.bound, invocations = sb.invocations, "recycling specialized sandbox");
            self.counters.recycled.fetch_add(1, Ordering::Relaxed);
            self.destroy_later(sb);
        }
    }

    /// Recycle the sandboxes bound to `function` (it was redeployed or
    /// deleted): idle ones now, busy ones when they are released (a
    /// deleted function's key never misses again, so waiting for that
    /// would keep them until the idle timeout).
    pub fn unbind(self: &Arc<Self>, function: &str) {
        let doomed = policy::unbind(&mut self.lock(), function);
        if !doomed.is_empty() {
            self.recycle(doomed);
            self.refill.notify_one();
        }
    }

    /// Give the sandbox `id`, lent to open `session`, to that session for
    /// its whole life: it leaves the pool's sizes (the pool makes up for
    /// it) and comes back only to be destroyed. Shown as `session`, with
    /// the session's id for an invocation.
    pub fn give_to_session(&self, id: &str, session: &str) {
        let mut st = self.lock();
        if let Some(b) = st.busy.get_mut(id) {
            b.invocation = session.to_string();
            st.sessions.insert(id.to_string());
        }
        drop(st);
        self.refill.notify_one();
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
                    state: SandboxState::Returning,
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
                state: SandboxState::Idle,
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
        let mut st = self.lock();
        let closing = self.closing.load(Ordering::SeqCst);
        match policy::release(&mut st, &mut sb, healthy, closing, Instant::now()) {
            Return::Recycle => {
                drop(st);
                self.recycle(vec![sb]);
                self.refill.notify_one();
            }
            Return::Keep => {
                let thawed = (!sb.frozen).then(|| sb.id.clone());
                st.idle.push_back(sb);
                drop(st);
                if let Some(id) = thawed {
                    self.freeze_when_idle(id);
                }
            }
            Return::Destroy => {
                drop(st);
                self.destroy_later(sb);
                self.refill.notify_one();
            }
            Return::LetGo => {
                drop(st);
                tracing::info!(sandbox = %sb.id, "letting adopted sandbox go");
                sb.let_go();
            }
        }
        self.returned.notify_one();
    }

    /// Freeze sandbox `id` once it has sat idle for `freeze_after`; if an
    /// invocation took it meanwhile, its own return schedules the next
    /// try. Back-to-back invocations so skip a freeze and a thaw each
    /// (a cgroup-wide stop and wake of every process in the sandbox).
    fn freeze_when_idle(self: &Arc<Self>, id: String) {
        let pool = self.clone();
        let after = self.freeze_after;
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let mut st = pool.lock();
            let Some(i) = st.idle.iter().position(|sb| sb.id == id) else {
                return;
            };
            if st.keep_thawed.contains(&id) {
                return;
            }
            let sb = &mut st.idle[i];
            if sb.frozen || sb.last_used.elapsed() < after || !sb.alive() {
                return;
            }
            match sb.freezer.request_freeze() {
                Ok(()) => sb.frozen = true,
                Err(e) => {
                    tracing::warn!(sandbox = %id, "freeze failed, discarding sandbox: {e}");
                    let sb = st.idle.remove(i).expect("index from position");
                    drop(st);
                    pool.destroy_later(sb);
                    pool.refill.notify_one();
                }
            }
        });
    }

    fn destroy_later(self: &Arc<Self>, sb: Sandbox) {
        let pool = self.clone();
        if sb.external {
            self.forget_adopted(&sb.id);
        }
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
            if !policy::refill_due(&mut self.lock()) {
                self.trim_idle();
                let _ =
                    tokio::time::timeout(Duration::from_millis(250), self.refill.notified()).await;
                continue;
            }
            let res = self.create().await;
            // `creating` drops only once the new sandbox is in the queue or
            // handed to the reaper: shutdown waits for it, so no sandbox
            // made during shutdown escapes its cleanup.
            match res {
                Ok(mut sb) => match sb.freezer.freeze() {
                    Ok(()) if !self.closing.load(Ordering::SeqCst) => {
                        failures = 0;
                        sb.frozen = true;
                        let mut st = self.lock();
                        st.idle.push_back(sb);
                        st.creating -= 1;
                        drop(st);
                        self.returned.notify_one();
                    }
                    Ok(()) => {
                        self.destroy_later(sb);
                        self.lock().creating -= 1;
                    }
                    Err(e) => {
                        tracing::warn!(sandbox = %sb.id, "freezing new sandbox: {e}");
                        self.destroy_later(sb);
                        self.lock().creating -= 1;
                    }
                },
                Err(_) => {
                    self.lock().creating -= 1;
                    // Back off so a broken runtime does not spin the CPU.
                    failures += 1;
                    let wait = Duration::from_millis(200 * u64::from(failures.min(25)));
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Follow demand down: after `idle_trim` without demand the target
    /// falls back toward `min_warm`, and idle generic sandboxes above it
    /// unused for `idle_trim` are destroyed, oldest use first. Bound
    /// sandboxes unused for `specialized_idle` are recycled.
    fn trim_idle(self: &Arc<Self>) {
        let (extra, stale) = {
            let mut st = self.lock();
            let now = Instant::now();
            if let Some((from, to)) = policy::follow_demand_down(&mut st, now) {
                tracing::info!(runtime = %self.runtime, from, to, "pool target follows demand down");
            }
            let extra = policy::trim_extra(&mut st, now);
            (extra, policy::stale_bound(&mut st, now))
        };
        self.drop_gone_external();
        for sb in extra {
            tracing::info!(sandbox = %sb.id, "trimming idle sandbox above pool target");
            self.destroy_later(sb);
        }
        self.recycle(stale);
    }

    /// External sandboxes whose owner ended them: forget them.
    fn drop_gone_external(&self) {
        let gone = self.lock().take_idle(|sb| sb.external && !sb.alive());
        for sb in gone {
            // Its other processes die with its init only if they can
            // run: a cgroup frozen meanwhile would keep them (and its
            // owner's delete) waiting for ever.
            let _ = sb.freezer.thaw();
            tracing::info!(sandbox = %sb.id, "external sandbox is gone; removed from the pool");
            self.counters.destroyed.fetch_add(1, Ordering::Relaxed);
            self.forget_adopted(&sb.id);
        }
    }

    /// Thaw sandbox `id` and never freeze it again (its owner is about to
    /// `exec` into it or signal it: neither works in a frozen cgroup).
    /// `None`: no such sandbox in this pool; else what it is doing.
    pub fn thaw(&self, id: &str) -> Option<Result<SandboxState, RuntimeError>> {
        let mut st = self.lock();
        let state = if let Some(b) = st.busy.get(id) {
            match b.returning {
                true => SandboxState::Returning,
                false => SandboxState::Busy,
            }
        } else {
            let sb = st.idle.iter_mut().find(|sb| sb.id == id)?;
            if let Err(e) = sb.freezer.thaw() {
                return Some(Err(e));
            }
            sb.frozen = false;
            SandboxState::Idle
        };
        // A busy sandbox runs thawed; this keeps it so once it is back.
        st.keep_thawed.insert(id.to_string());
        tracing::info!(
            sandbox = id,
            state = state.as_str(),
            "thawed on request; no longer frozen"
        );
        Some(Ok(state))
    }

    /// Resize: `target` sets the warm floor (`min_warm`, and the target
    /// if above it), `max` the most sandboxes.
    pub fn set_size(self: &Arc<Self>, target: Option<usize>, max: Option<usize>) -> PoolStatus {
        let extra = policy::resize(&mut self.lock(), target, max);
        for sb in extra {
            self.destroy_later(sb);
        }
        self.refill.notify_one();
        self.status()
    }

    pub fn status(&self) -> PoolStatus {
        status::pool_status(&self.lock(), self.runtime, self.backend, &self.counters)
    }

    pub fn sandboxes(&self) -> Vec<SandboxStatus> {
        status::sandboxes(&self.lock(), self.runtime)
    }

    /// Stop handing out sandboxes: every later acquisition (and waiting
    /// one) fails with [`PoolError::ShuttingDown`]. Busy sandboxes keep
    /// running their invocation.
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.returned.notify_waiters();
        self.refill.notify_waiters();
    }

    /// Whether a sandbox may be bound to a function now: only while the
    /// pool can still make another (binding must never push the next
    /// function into recycling a sandbox) and is not shutting down.
    pub fn may_bind(&self) -> bool {
        let st = self.lock();
        st.total() < st.max && !self.is_closing()
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// The end of a shutdown, after [`close`](Self::close) and the drain:
    /// interrupt the invocations still running, then destroy every
    /// sandbox and wait for that to finish.
    pub async fn finish(self: &Arc<Self>) {
        self.close();
        if !self.wait_drained(Duration::ZERO).await {
            let running: Vec<String> = {
                let st = self.lock();
                st.busy
                    .iter()
                    .filter(|(_, b)| !b.returning)
                    .map(|(id, b)| {
                        b.kill.notify_one();
                        id.clone()
                    })
                    .collect()
            };
            tracing::warn!(
                runtime = %self.runtime,
                ?running,
                "interrupting the invocations still running"
            );
            // An interrupted invocation releases its sandbox at once; one
            // that was returning finishes its cleanup.
            self.wait_drained(Duration::from_secs(10)).await;
        }
        let idle: Vec<Sandbox> = self.lock().idle.drain(..).collect();
        for sb in idle {
            if sb.external && sb.bound.is_none() {
                // Someone else's container: its agent waits for the next
                // emberd, which takes it back from its record.
                tracing::info!(sandbox = %sb.id, "letting adopted sandbox go");
                sb.let_go();
            } else {
                self.destroy_later(sb);
            }
        }
        let mut set = std::mem::take(&mut *self.reaper.lock().unwrap_or_else(|e| e.into_inner()));
        while set.join_next().await.is_some() {}
    }

    /// Wait up to `limit` for no sandbox to be busy or being created.
    pub async fn wait_drained(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let drained = {
                let st = self.lock();
                st.busy.is_empty() && st.creating == 0
            };
            if drained {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
