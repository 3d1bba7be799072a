//! What one pool holds, behind its lock: the idle sandboxes, the busy
//! ones, the creations under way and the sizes it keeps to.
//!
//! The state is generic over [`Slot`], the little a sandbox must tell
//! about itself for the pool to size, choose and report: the pool stores
//! real [`Sandbox`]es, the policy tests plain structs. This module owns
//! the counting (totals, generic capacity, demand); what to do with the
//! counts is [`super::policy`]'s.

use super::PoolSettings;
use ember_api::{Backend, StartKind};
use ember_runtimes::Sandbox;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A sandbox as the pool's policy and status see it. Implemented by
/// [`Sandbox`]; a fake in the policy tests, so the policy runs without
/// root, runtimes or timers.
pub(crate) trait Slot {
    fn id(&self) -> &str;
    /// The binding key (`function@deploy`) it is bound to; `None`: generic.
    fn bound(&self) -> Option<&str>;
    /// When it last went back to the pool (creation time until then).
    fn last_used(&self) -> Instant;
    fn invocations(&self) -> u64;
    /// Owned by someone else: never trimmed, only its owner ends it.
    fn external(&self) -> bool;
    fn pid(&self) -> u32;
    fn created(&self) -> Instant;
    fn backend(&self) -> Backend;
    /// It came back from an invocation at `now`.
    fn mark_used(&mut self, now: Instant);
}

impl Slot for Sandbox {
    fn id(&self) -> &str {
        &self.id
    }
    fn bound(&self) -> Option<&str> {
        self.bound.as_deref()
    }
    fn last_used(&self) -> Instant {
        self.last_used
    }
    fn invocations(&self) -> u64 {
        self.invocations
    }
    fn external(&self) -> bool {
        self.external
    }
    fn pid(&self) -> u32 {
        self.init_pid
    }
    fn created(&self) -> Instant {
        self.created
    }
    fn backend(&self) -> Backend {
        crate::backend_of(self)
    }
    fn mark_used(&mut self, now: Instant) {
        self.invocations += 1;
        self.last_used = now;
    }
}

/// A sandbox lent to an invocation. The sandbox itself is the
/// invocation's; the pool keeps what it needs to count, report and kill.
pub(super) struct BusyInfo {
    /// How it was handed out; only starts that took a generic sandbox
    /// count as demand for more.
    pub start: StartKind,
    /// It comes back bound to a function.
    pub bound: bool,
    /// The binding key it was taken for (specialized mode).
    pub key: Option<String>,
    /// Its function was redeployed or deleted while it ran: it must not
    /// come back bound to the old code.
    pub unbound: bool,
    /// The invocation has answered; the sandbox is warming its next worker
    /// and comes back to the pool within milliseconds.
    pub returning: bool,
    pub function: String,
    pub invocation: String,
    /// Fired by [`super::Pool::kill`]; the invocation ends at once.
    pub kill: Arc<Notify>,
    pub since: Instant,
    pub pid: u32,
    pub created: Instant,
    pub invocations: u64,
    /// The sandbox's backend (`external` for adopted ones).
    pub backend: Backend,
}

impl BusyInfo {
    /// `sb` lent at `now` to `invocation` of `function`, to be bound to
    /// `key` if any.
    pub fn new<S: Slot>(
        sb: &S,
        function: &str,
        invocation: &str,
        start: StartKind,
        key: Option<&str>,
        now: Instant,
    ) -> BusyInfo {
        BusyInfo {
            start,
            bound: key.is_some(),
            key: key.map(str::to_string),
            unbound: false,
            returning: false,
            function: function.to_string(),
            invocation: invocation.to_string(),
            kill: Arc::new(Notify::new()),
            since: now,
            pid: sb.pid(),
            created: sb.created(),
            invocations: sb.invocations(),
            backend: sb.backend(),
        }
    }
}

pub(super) struct State<S> {
    pub idle: VecDeque<S>,
    pub busy: HashMap<String, BusyInfo>,
    /// Creations under way (refill and cold starts).
    pub creating: usize,
    /// Busy sandboxes that are on their way back (see `BusyInfo`).
    pub returning: usize,
    /// Generic sandboxes wanted now, between `min_warm` and `max_warm`.
    pub target: usize,
    pub min_warm: usize,
    pub max_warm: usize,
    pub headroom: usize,
    pub max: usize,
    /// Last time demand held the target up.
    pub last_demand: Instant,
    /// Busy sandboxes made for one invocation only (`ember test`): never
    /// go back to the pool, never count as demand.
    pub throwaway: HashSet<String>,
    /// Busy sandboxes held by a session for its whole life: outside the
    /// pool's sizes (the session limits bound them), never back to the
    /// pool, never demand.
    pub sessions: HashSet<String>,
    /// See [`PoolSettings::idle_trim`].
    pub idle_trim: Duration,
    /// See [`PoolSettings::specialized_max_invocations`] (at least 1).
    pub specialized_max_invocations: u64,
    /// See [`PoolSettings::specialized_idle`].
    pub specialized_idle: Duration,
    /// See [`PoolSettings::adopted_only`]: the pool never creates a
    /// sandbox, it serves from adopted ones only.
    pub adopted_only: bool,
    /// Sandboxes thawed on request (`POST /v1/sandboxes/{id}/thaw`, before
    /// an `exec` or `kill` of their container): never frozen again.
    pub keep_thawed: HashSet<String>,
    /// Invocations admitted (`policy::admit`) and not yet ended: running,
    /// or waiting for a sandbox.
    pub admitted: usize,
    /// See [`PoolSettings::max_queue`]; `None`: 4 × `max`, following a
    /// resize.
    pub max_queue: Option<usize>,
    /// Recent mean time a sandbox was lent to an invocation, for the
    /// Retry-After of a refusal.
    pub mean_busy: Option<Duration>,
}

impl<S: Slot> State<S> {
    /// An empty pool sized by `settings`, its target at `min_warm`.
    pub fn new(settings: &PoolSettings, now: Instant) -> State<S> {
        State {
            idle: VecDeque::new(),
            busy: HashMap::new(),
            creating: 0,
            returning: 0,
            target: settings.min_warm,
            min_warm: settings.min_warm,
            max_warm: settings.max_warm.max(settings.min_warm),
            headroom: settings.headroom,
            max: settings.max.max(1),
            last_demand: now,
            throwaway: HashSet::new(),
            sessions: HashSet::new(),
            idle_trim: settings.idle_trim,
            specialized_max_invocations: settings.specialized_max_invocations.max(1),
            specialized_idle: settings.specialized_idle,
            adopted_only: settings.adopted_only,
            keep_thawed: HashSet::new(),
            admitted: 0,
            max_queue: settings.max_queue,
            mean_busy: None,
        }
    }

    /// Sandboxes counted against `max`: all but the sessions'.
    pub fn total(&self) -> usize {
        self.idle.len() + self.busy.len() + self.creating - self.sessions.len()
    }

    /// Lent for one invocation only, or to a session: never comes back.
    fn apart(&self, id: &str) -> bool {
        self.throwaway.contains(id) || self.sessions.contains(id)
    }

    /// Remove and return the idle sandboxes `doomed` picks, the others
    /// keeping their order.
    pub fn take_idle(&mut self, doomed: impl Fn(&S) -> bool) -> Vec<S> {
        let (out, keep): (Vec<S>, Vec<S>) = std::mem::take(&mut self.idle)
            .into_iter()
            .partition(|sb| doomed(sb));
        self.idle = keep.into();
        out
    }

    /// Idle sandboxes that are generic (no function bound).
    pub fn generic_idle(&self) -> usize {
        self.idle.iter().filter(|sb| sb.bound().is_none()).count()
    }

    /// Generic capacity: idle generic sandboxes, creations, and busy ones
    /// that come back generic.
    pub fn generic(&self) -> usize {
        self.generic_idle()
            + self.creating
            + self
                .busy
                .iter()
                .filter(|(id, b)| !b.bound && !self.apart(id))
                .count()
    }

    /// Sandboxes bound to `key` or taken to be bound to it (idle or busy).
    pub fn bound_to(&self, key: &str) -> usize {
        self.idle
            .iter()
            .filter(|sb| sb.bound() == Some(key))
            .count()
            + self
                .busy
                .values()
                .filter(|b| b.key.as_deref() == Some(key))
                .count()
    }

    /// How many invocations run at once: `max`, or with `adopted_only`
    /// the adopted sandboxes there are (the pool makes none).
    pub fn capacity(&self) -> usize {
        match self.adopted_only {
            true => self.total(),
            false => self.max,
        }
    }

    /// Most invocations that may wait for a sandbox.
    pub fn queue_bound(&self) -> usize {
        self.max_queue.unwrap_or(self.max.saturating_mul(4))
    }

    /// Admitted invocations beyond the capacity: they wait.
    pub fn queued(&self) -> usize {
        self.admitted.saturating_sub(self.capacity())
    }

    /// Invocations holding a sandbox they did not find bound to them.
    pub fn demand(&self) -> usize {
        self.busy
            .iter()
            .filter(|(id, b)| b.start != StartKind::Warm && !self.apart(id))
            .count()
    }
}
