//! The pool's sizing and admission policy, as pure functions over its
//! [`State`]: how far demand raises the target and when it falls back,
//! which idle sandbox an invocation gets for its [`Want`], when it may
//! create one or must make room or wait, which idle sandboxes are trimmed
//! and which bound ones recycled.
//!
//! Nothing here sleeps, spawns or touches a sandbox: the time is passed
//! in, and sandboxes to destroy are handed back to the caller
//! ([`super::Pool`]), which does the creating, destroying, freezing and
//! waking. So the policy is unit-tested over a fake [`Slot`] (see the
//! tests below), without root, runtimes or timers.
//!
//! ```text
//! let pick = policy::acquire(&mut st, &request, Instant::now(), returning_wait);
//! match pick.step { Step::Take(sb, kind) => .., Step::Create => .., Step::Wait => .. }
//! ```

use super::state::{BusyInfo, Slot, State};
use super::Want;
use crate::admission::{self, Admit};
use ember_api::StartKind;
use std::time::Instant;

/// One invocation asking for a sandbox.
#[derive(Debug, Clone, Copy)]
pub(super) struct Request<'a> {
    pub function: &'a str,
    pub invocation: &'a str,
    pub want: Want<'a>,
}

impl Request<'_> {
    /// The binding key the sandbox is taken for, if any.
    fn key(&self) -> Option<&str> {
        match self.want {
            Want::Fork => None,
            Want::Bound { key, .. } => Some(key),
        }
    }
}

/// What an invocation does next.
pub(super) enum Step<S> {
    /// Run in this sandbox, already taken from the idle queue and
    /// recorded busy.
    Take(S, StartKind),
    /// Create a sandbox (a creation is reserved in `creating`; the caller
    /// gives it back whether or not creation succeeds).
    Create,
    /// Wait for a sandbox to come back or a slot to free up.
    Wait,
}

/// The outcome of [`acquire`]: the step, and the idle bound sandboxes it
/// took out of the pool to recycle whatever the step (an older deploy's,
/// or one evicted to make room).
pub(super) struct Pick<S> {
    pub step: Step<S>,
    pub doomed: Vec<S>,
}

/// Raise the target to what is in use plus headroom, within
/// `[min_warm, max_warm]` (never lowers it): a rising load finds
/// sandboxes already made.
pub(super) fn note_demand<S: Slot>(st: &mut State<S>, now: Instant) {
    let demand = st.demand();
    let want = (demand + st.headroom).clamp(st.min_warm, st.max_warm.max(st.min_warm));
    if want > st.target {
        st.target = want;
    }
    if demand + st.headroom >= st.target {
        st.last_demand = now;
    }
}

/// Record `sb` as lent to `req` (it was taken idle or just created) and
/// count the demand.
pub(super) fn lend<S: Slot>(
    st: &mut State<S>,
    sb: &S,
    req: &Request,
    kind: StartKind,
    now: Instant,
) {
    let info = BusyInfo::new(sb, req.function, req.invocation, kind, req.key(), now);
    st.busy.insert(sb.id().to_string(), info);
    note_demand(st, now);
}

/// Choose for `req`: an idle sandbox bound to its key (warm), an idle
/// generic one (hot), a creation (cold, evicting the least recently used
/// idle bound sandbox if the pool is full), or a wait.
///
/// `returning_wait`: the invocation is still within its short wait for
/// a sandbox on its way back, which beats creating one (tens of
/// milliseconds) or binding another (loading the function again).
pub(super) fn acquire<S: Slot>(
    st: &mut State<S>,
    req: &Request,
    now: Instant,
    returning_wait: bool,
) -> Pick<S> {
    let mut doomed = match req.want {
        Want::Bound { key, .. } => old_deploys(st, req.function, key),
        Want::Fork => Vec::new(),
    };
    let own_returning = req.key().is_some_and(|key| {
        st.busy
            .values()
            .any(|b| b.returning && b.key.as_deref() == Some(key))
    });
    if let Some((i, kind)) = idle_choice(st, req, own_returning && returning_wait) {
        let sb = st.idle.remove(i).expect("index from position");
        lend(st, &sb, req, kind, now);
        return Pick {
            step: Step::Take(sb, kind),
            doomed,
        };
    }
    let wait_for_returning = (st.returning > 0 || own_returning) && returning_wait;
    let step = if wait_for_returning || st.adopted_only {
        // Only adopted sandboxes serve: wait for one to come back or in.
        Step::Wait
    } else if st.total() < st.max {
        st.creating += 1;
        Step::Create
    } else if st.creating == 0 {
        // Full, and nothing on its way: make room.
        match evict_lru_bound(st) {
            Some(sb) => {
                doomed.push(sb);
                st.creating += 1;
                Step::Create
            }
            None => Step::Wait,
        }
    } else {
        Step::Wait
    };
    Pick { step, doomed }
}

/// Take the idle sandboxes bound to an older deploy of `function` than
/// `key`: they can never serve again.
fn old_deploys<S: Slot>(st: &mut State<S>, function: &str, key: &str) -> Vec<S> {
    let prefix = format!("{function}@");
    st.take_idle(|sb| {
        sb.bound()
            .is_some_and(|b| b.starts_with(&prefix) && b != key)
    })
}

/// The idle sandbox for `req`, if one fits: bound to its key first, else
/// generic, unless its own bound sandbox is on its way back
/// (`own_returning_soon`) and the request does not spread.
fn idle_choice<S: Slot>(
    st: &State<S>,
    req: &Request,
    own_returning_soon: bool,
) -> Option<(usize, StartKind)> {
    if let Want::Bound { key, .. } = req.want {
        if let Some(i) = st.idle.iter().position(|sb| sb.bound() == Some(key)) {
            return Some((i, StartKind::Warm));
        }
    }
    let spread = match req.want {
        Want::Bound { key, spread: true } => st.bound_to(key) < 2,
        _ => false,
    };
    if own_returning_soon && !spread {
        return None;
    }
    st.idle
        .iter()
        .position(|sb| sb.bound().is_none())
        .map(|i| (i, StartKind::Hot))
}

/// Take the least recently used idle bound sandbox, to make room in a
/// full pool.
fn evict_lru_bound<S: Slot>(st: &mut State<S>) -> Option<S> {
    let victim = st
        .idle
        .iter()
        .enumerate()
        .filter(|(_, sb)| sb.bound().is_some())
        .min_by_key(|(_, sb)| sb.last_used())
        .map(|(i, _)| i)?;
    st.idle.remove(victim)
}

/// Whether the refill task should create a sandbox now, reserving the
/// creation if so. Busy generic sandboxes come back: they count toward
/// the target. Bound ones serve only their function.
pub(super) fn refill_due<S: Slot>(st: &mut State<S>) -> bool {
    let need = !st.adopted_only && st.generic() < st.target && st.total() < st.max;
    if need {
        st.creating += 1;
    }
    need
}

/// Follow demand down: after `idle_trim` without demand the target falls
/// back to what is in use plus headroom (`min_warm` with nothing in use).
/// Returns `(from, to)` when it lowered the target.
pub(super) fn follow_demand_down<S: Slot>(
    st: &mut State<S>,
    now: Instant,
) -> Option<(usize, usize)> {
    if now.saturating_duration_since(st.last_demand) < st.idle_trim {
        return None;
    }
    let demand = st.demand();
    let floor = if demand > 0 { demand + st.headroom } else { 0 };
    let lower = floor.clamp(st.min_warm, st.max_warm.max(st.min_warm));
    st.last_demand = now;
    if lower < st.target {
        let from = st.target;
        st.target = lower;
        Some((from, lower))
    } else {
        None
    }
}

/// Take the idle generic sandboxes above the target that have been unused
/// for `idle_trim`, least recently used first. External ones are never
/// trimmed.
pub(super) fn trim_extra<S: Slot>(st: &mut State<S>, now: Instant) -> Vec<S> {
    let mut out = Vec::new();
    loop {
        let generic_idle = st.generic_idle();
        let busy_generic = st.busy.values().filter(|b| !b.bound).count();
        if generic_idle + busy_generic <= st.target || generic_idle == 0 {
            break;
        }
        let oldest = st
            .idle
            .iter()
            .enumerate()
            .filter(|(_, sb)| sb.bound().is_none() && !sb.external())
            .min_by_key(|(_, sb)| sb.last_used())
            .map(|(i, sb)| (i, now.saturating_duration_since(sb.last_used())));
        match oldest {
            Some((i, age)) if age >= st.idle_trim => out.extend(st.idle.remove(i)),
            _ => break,
        }
    }
    out
}

/// Take the idle bound sandboxes unused for `specialized_idle`, to recycle.
pub(super) fn stale_bound<S: Slot>(st: &mut State<S>, now: Instant) -> Vec<S> {
    let limit = st.specialized_idle;
    st.take_idle(|sb| {
        sb.bound().is_some() && now.saturating_duration_since(sb.last_used()) >= limit
    })
}

/// Resize: `target` sets the warm floor (`min_warm`, and the target), `max`
/// the most sandboxes. Returns the idle sandboxes that no longer fit:
/// generic ones beyond the target, then any beyond the maximum, newest in
/// the queue first, never external ones.
pub(super) fn resize<S: Slot>(
    st: &mut State<S>,
    target: Option<usize>,
    max: Option<usize>,
) -> Vec<S> {
    if let Some(m) = max {
        st.max = m.max(1);
    }
    if let Some(t) = target {
        st.min_warm = t;
        st.max_warm = st.max_warm.max(t);
        st.target = t;
    }
    let mut extra = Vec::new();
    loop {
        let over_target = st.generic_idle() > st.target;
        let over_max = st.total() > st.max && !st.idle.is_empty();
        if !over_target && !over_max {
            break;
        }
        let pick = if over_target {
            st.idle
                .iter()
                .rposition(|sb| sb.bound().is_none() && !sb.external())
        } else {
            st.idle.iter().rposition(|sb| !sb.external())
        };
        match pick.and_then(|i| st.idle.remove(i)) {
            Some(sb) => extra.push(sb),
            None => break,
        }
    }
    extra
}

/// `function` was redeployed or deleted: mark its busy sandboxes so they
/// are recycled when released, and take its idle ones to recycle now.
pub(super) fn unbind<S: Slot>(st: &mut State<S>, function: &str) -> Vec<S> {
    let prefix = format!("{function}@");
    for b in st.busy.values_mut() {
        if b.key.as_deref().is_some_and(|k| k.starts_with(&prefix)) {
            b.unbound = true;
        }
    }
    st.take_idle(|sb| sb.bound().is_some_and(|b| b.starts_with(&prefix)))
}

/// Count one more invocation in, or refuse it when `queue_bound` already
/// wait (the refusal's numbers and its Retry-After, from the recent mean
/// time a sandbox is lent). Whoever is admitted is counted out with
/// [`leave`].
pub(super) fn admit<S: Slot>(st: &mut State<S>) -> Result<(), Refusal> {
    let (capacity, bound) = (st.capacity(), st.queue_bound());
    match admission::admit(st.admitted, capacity, bound) {
        Admit::Refuse { queued } => Err(Refusal {
            queued,
            capacity,
            bound,
            retry_after_s: admission::retry_after_s(st.mean_busy, queued + 1, capacity),
        }),
        Admit::Run | Admit::Wait { .. } => {
            st.admitted += 1;
            Ok(())
        }
    }
}

/// An admitted invocation ended.
pub(super) fn leave<S: Slot>(st: &mut State<S>) {
    st.admitted = st.admitted.saturating_sub(1);
}

/// Why [`admit`] refused: `queued` wait already, `bound` may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Refusal {
    pub queued: usize,
    pub capacity: usize,
    pub bound: usize,
    pub retry_after_s: u64,
}

/// What becomes of a sandbox given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Return {
    /// Healthy but bound to code it must not serve again (redeployed, or
    /// `specialized_max_invocations` reached): destroy it as recycled.
    Recycle,
    /// Back to the idle queue (the caller pushes it).
    Keep,
    /// Unhealthy, a throwaway, the pool closing or full: destroy it.
    Destroy,
    /// Healthy, generic and adopted, the pool closing: its container is
    /// its owner's, and its agent waits for the next emberd.
    LetGo,
}

/// Take `sb` back from its invocation at `now`: it is no longer busy, and
/// one more invocation is counted on it.
pub(super) fn release<S: Slot>(
    st: &mut State<S>,
    sb: &mut S,
    healthy: bool,
    closing: bool,
    now: Instant,
) -> Return {
    sb.mark_used(now);
    let info = st.busy.remove(sb.id());
    let session = st.sessions.remove(sb.id());
    if let Some(b) = info
        .as_ref()
        .filter(|_| !st.throwaway.contains(sb.id()) && !session)
    {
        let lent = now.saturating_duration_since(b.since);
        st.mean_busy = Some(admission::next_mean(st.mean_busy, lent));
    }
    if info.as_ref().is_some_and(|b| b.returning) {
        st.returning -= 1;
    }
    let unbound = info.is_some_and(|b| b.unbound);
    let throwaway = st.throwaway.remove(sb.id());
    let healthy = healthy && !throwaway && !session;
    let stale =
        sb.bound().is_some() && (unbound || sb.invocations() >= st.specialized_max_invocations);
    // An adopted sandbox is its owner's to end: it comes back however
    // many there are (`max` bounds what the pool makes).
    let room = sb.external() || st.total() < st.max;
    if stale && healthy {
        Return::Recycle
    } else if healthy && closing && sb.external() && sb.bound().is_none() {
        Return::LetGo
    } else if healthy && !closing && room {
        Return::Keep
    } else {
        Return::Destroy
    }
}

#[cfg(test)]
mod tests;
