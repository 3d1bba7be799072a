//! The pool policy over fake sandboxes: every time is an offset from one
//! `Instant`, so nothing sleeps and nothing needs root or a runtime.

use super::*;
use crate::pool::PoolSettings;
use ember_api::Backend;
use std::time::Duration;

const TRIM: Duration = Duration::from_secs(60);
const SPECIALIZED_IDLE: Duration = Duration::from_secs(300);
const MAX_INVOCATIONS: u64 = 5;

struct Fake {
    id: String,
    bound: Option<String>,
    last_used: Instant,
    invocations: u64,
    external: bool,
}

impl Slot for Fake {
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
        1
    }
    fn created(&self) -> Instant {
        self.last_used
    }
    fn backend(&self) -> Backend {
        Backend::External
    }
    fn mark_used(&mut self, now: Instant) {
        self.invocations += 1;
        self.last_used = now;
    }
}

/// A pool's sizes and the instant its clock starts at.
struct Pool {
    st: State<Fake>,
    t0: Instant,
    seq: usize,
}

/// `secs` after `t0`.
fn at(t0: Instant, secs: u64) -> Instant {
    t0 + Duration::from_secs(secs)
}

fn settings(min_warm: usize, max_warm: usize, headroom: usize, max: usize) -> PoolSettings {
    PoolSettings {
        min_warm,
        max_warm,
        headroom,
        max,
        queue_timeout: Duration::from_secs(5),
        idle_trim: TRIM,
        specialized_max_invocations: MAX_INVOCATIONS,
        specialized_idle: SPECIALIZED_IDLE,
        freeze_after: Duration::from_millis(10),
        adopted_only: false,
        max_queue: None,
    }
}

impl Pool {
    fn new(min_warm: usize, max_warm: usize, headroom: usize, max: usize) -> Pool {
        let t0 = Instant::now();
        Pool {
            st: State::new(&settings(min_warm, max_warm, headroom, max), t0),
            t0,
            seq: 0,
        }
    }

    fn at(&self, secs: u64) -> Instant {
        at(self.t0, secs)
    }

    /// Put an idle sandbox last used `secs` after the start; returns its id.
    fn idle(&mut self, bound: Option<&str>, secs: u64) -> String {
        self.seq += 1;
        let id = format!("sb{}", self.seq);
        self.st.idle.push_back(Fake {
            id: id.clone(),
            bound: bound.map(str::to_string),
            last_used: self.at(secs),
            invocations: 0,
            external: false,
        });
        id
    }

    fn idle_ids(&self) -> Vec<&str> {
        self.st.idle.iter().map(|sb| sb.id.as_str()).collect()
    }

    /// Ask for a sandbox at `secs`; `returning_wait` as in [`acquire`].
    fn ask(&mut self, want: Want, secs: u64, returning_wait: bool) -> Pick<Fake> {
        let now = self.at(secs);
        let req = Request {
            function: want_function(want),
            invocation: "inv",
            want,
        };
        acquire(&mut self.st, &req, now, returning_wait)
    }

    /// Ask, expect an idle sandbox handed out, and return its id and kind.
    fn take(&mut self, want: Want, secs: u64) -> (Fake, StartKind) {
        match self.ask(want, secs, false).step {
            Step::Take(sb, kind) => (sb, kind),
            Step::Create => panic!("expected an idle sandbox, got a creation"),
            Step::Wait => panic!("expected an idle sandbox, got a wait"),
        }
    }
}

/// The function of a want: `f` for fork, the part of the key before `@`.
fn want_function(want: Want) -> &'static str {
    match want {
        Want::Fork => "f",
        Want::Bound { key, .. } => match key.split_once('@') {
            Some(("g", _)) => "g",
            Some(("fx", _)) => "fx",
            _ => "f",
        },
    }
}

fn bound(key: &'static str) -> Want<'static> {
    Want::Bound { key, spread: false }
}

fn spread(key: &'static str) -> Want<'static> {
    Want::Bound { key, spread: true }
}

fn step_name<S>(step: &Step<S>) -> &'static str {
    match step {
        Step::Take(_, StartKind::Warm) => "warm",
        Step::Take(_, StartKind::Hot) => "hot",
        Step::Take(_, StartKind::Cold) => "cold",
        Step::Create => "create",
        Step::Wait => "wait",
    }
}

#[test]
fn demand_raises_the_target_to_use_plus_headroom_up_to_max_warm() {
    let mut p = Pool::new(1, 4, 2, 10);
    for _ in 0..6 {
        p.idle(None, 0);
    }
    assert_eq!(p.st.target, 1);
    p.take(Want::Fork, 1);
    assert_eq!(p.st.target, 3, "one in use plus headroom 2");
    p.take(Want::Fork, 1);
    assert_eq!(p.st.target, 4);
    p.take(Want::Fork, 1);
    assert_eq!(p.st.target, 4, "capped at max_warm");
}

#[test]
fn warm_starts_and_throwaways_are_not_demand() {
    let mut p = Pool::new(0, 10, 1, 10);
    p.idle(Some("f@1"), 0);
    let (sb, kind) = p.take(bound("f@1"), 1);
    assert_eq!(kind, StartKind::Warm);
    assert_eq!(p.st.demand(), 0);
    assert_eq!(p.st.target, 1, "the headroom only, not the warm start");
    let info = BusyInfo::new(&sb, "t", "inv", StartKind::Cold, None, p.at(1));
    p.st.busy.insert("throwaway".into(), info);
    p.st.throwaway.insert("throwaway".into());
    assert_eq!(p.st.demand(), 0);
    p.st.throwaway.clear();
    assert_eq!(
        p.st.demand(),
        1,
        "the same start counts once it is no throwaway"
    );
}

#[test]
fn target_falls_back_to_min_warm_after_idle_trim_without_demand() {
    let mut p = Pool::new(1, 8, 2, 10);
    for _ in 0..4 {
        p.idle(None, 0);
    }
    let (a, _) = p.take(Want::Fork, 10);
    let (b, _) = p.take(Want::Fork, 10);
    assert_eq!(p.st.target, 4);
    for mut sb in [a, b] {
        assert_eq!(
            release(&mut p.st, &mut sb, true, false, at(p.t0, 11)),
            Return::Keep
        );
        p.st.idle.push_back(sb);
    }
    // Demand was last seen at 10 s.
    assert_eq!(follow_demand_down(&mut p.st, at(p.t0, 69)), None);
    assert_eq!(p.st.target, 4);
    assert_eq!(follow_demand_down(&mut p.st, at(p.t0, 70)), Some((4, 1)));
    assert_eq!(p.st.target, 1);
}

#[test]
fn target_falls_back_only_to_use_plus_headroom_while_in_use() {
    let mut p = Pool::new(0, 8, 1, 10);
    for _ in 0..4 {
        p.idle(None, 0);
    }
    let taken: Vec<Fake> = (0..4).map(|_| p.take(Want::Fork, 0).0).collect();
    assert_eq!(p.st.target, 5, "four in use plus headroom 1");
    for mut sb in taken.into_iter().take(2) {
        release(&mut p.st, &mut sb, true, false, at(p.t0, 1));
    }
    assert_eq!(p.st.demand(), 2);
    assert_eq!(follow_demand_down(&mut p.st, at(p.t0, 60)), Some((5, 3)));
}

#[test]
fn refill_keeps_headroom_beyond_busy_sandboxes() {
    let mut p = Pool::new(0, 10, 2, 10);
    p.idle(None, 0);
    p.idle(None, 0);
    p.take(Want::Fork, 0);
    p.take(Want::Fork, 0);
    assert_eq!(p.st.target, 4, "two busy plus headroom 2");
    let mut made = 0;
    while refill_due(&mut p.st) {
        made += 1;
        assert!(made <= 10, "refill does not stop");
    }
    assert_eq!(made, 2, "two free sandboxes beyond the two busy");
    assert_eq!(p.st.creating, 2);
}

#[test]
fn refill_never_exceeds_max() {
    let mut p = Pool::new(5, 5, 0, 3);
    p.idle(Some("g@1"), 0);
    let mut made = 0;
    while refill_due(&mut p.st) {
        made += 1;
        assert!(made <= 10, "refill does not stop");
    }
    assert_eq!(made, 2, "one slot is a bound sandbox, max 3");
    assert_eq!(p.st.total(), 3);
}

#[test]
fn creations_stop_at_max_and_then_invocations_wait() {
    let mut p = Pool::new(0, 0, 0, 2);
    let steps: Vec<&str> = (0..3)
        .map(|_| step_name(&p.ask(Want::Fork, 0, false).step))
        .collect();
    assert_eq!(steps, ["create", "create", "wait"]);
    assert_eq!(p.st.total(), 2);
}

#[test]
fn fork_takes_a_generic_sandbox_never_a_bound_one() {
    let mut p = Pool::new(0, 4, 0, 10);
    p.idle(Some("f@1"), 0);
    let generic = p.idle(None, 0);
    let (sb, kind) = p.take(Want::Fork, 1);
    assert_eq!((sb.id.as_str(), kind), (generic.as_str(), StartKind::Hot));
    assert_eq!(step_name(&p.ask(Want::Fork, 1, false).step), "create");
}

#[test]
fn bound_prefers_its_own_sandbox_over_a_generic_one() {
    let mut p = Pool::new(0, 4, 0, 10);
    p.idle(None, 0);
    p.idle(Some("g@1"), 0);
    let own = p.idle(Some("f@1"), 0);
    let (sb, kind) = p.take(bound("f@1"), 1);
    assert_eq!((sb.id.as_str(), kind), (own.as_str(), StartKind::Warm));
    assert_eq!(p.st.bound_to("f@1"), 1, "busy, taken for its key");
}

#[test]
fn bound_without_its_own_takes_a_generic_one_to_bind() {
    let mut p = Pool::new(0, 4, 0, 10);
    p.idle(Some("g@1"), 0);
    let generic = p.idle(None, 0);
    let (sb, kind) = p.take(bound("f@1"), 1);
    assert_eq!((sb.id.as_str(), kind), (generic.as_str(), StartKind::Hot));
    assert!(p.st.busy[&generic].bound, "it comes back bound");
    assert_eq!(p.st.busy[&generic].key.as_deref(), Some("f@1"));
}

/// `f@1`'s only bound sandbox is busy and on its way back; one generic
/// sandbox is idle.
fn own_returning() -> Pool {
    let mut p = Pool::new(0, 4, 0, 10);
    p.idle(Some("f@1"), 0);
    p.idle(None, 0);
    let (sb, _) = p.take(bound("f@1"), 1);
    p.st.busy.get_mut(&sb.id).expect("busy").returning = true;
    p.st.returning += 1;
    p
}

#[test]
fn bound_waits_for_its_own_returning_sandbox_within_the_short_wait() {
    let mut p = own_returning();
    assert_eq!(step_name(&p.ask(bound("f@1"), 1, true).step), "wait");
    assert_eq!(p.st.generic_idle(), 1, "the generic sandbox is left");
    // After the short wait it binds the generic one.
    assert_eq!(step_name(&p.ask(bound("f@1"), 1, false).step), "hot");
}

#[test]
fn spread_takes_a_generic_sandbox_rather_than_wait_for_its_only_one() {
    let mut p = own_returning();
    assert_eq!(step_name(&p.ask(spread("f@1"), 1, true).step), "hot");
    // Now two are bound to f@1: the third asker waits for one of them.
    p.idle(None, 0);
    assert_eq!(step_name(&p.ask(spread("f@1"), 1, true).step), "wait");
}

#[test]
fn a_returning_sandbox_is_worth_the_short_wait_before_creating() {
    let mut p = own_returning();
    p.st.idle.clear();
    assert_eq!(step_name(&p.ask(Want::Fork, 1, true).step), "wait");
    assert_eq!(step_name(&p.ask(Want::Fork, 1, false).step), "create");
}

#[test]
fn an_older_deploy_of_the_function_is_recycled_on_sight() {
    let mut p = Pool::new(0, 4, 0, 10);
    let old = p.idle(Some("f@1"), 0);
    let other = p.idle(Some("g@1"), 0);
    let lookalike = p.idle(Some("fx@1"), 0);
    let current = p.idle(Some("f@2"), 0);
    let pick = p.ask(bound("f@2"), 1, false);
    let doomed: Vec<&str> = pick.doomed.iter().map(|sb| sb.id.as_str()).collect();
    assert_eq!(doomed, [old.as_str()]);
    assert!(matches!(pick.step, Step::Take(ref sb, StartKind::Warm) if sb.id == current));
    assert_eq!(p.idle_ids(), [other.as_str(), lookalike.as_str()]);
}

#[test]
fn a_full_pool_evicts_the_least_recently_used_bound_sandbox() {
    let mut p = Pool::new(0, 4, 0, 3);
    let newer = p.idle(Some("g@1"), 20);
    let older = p.idle(Some("h@1"), 10);
    p.idle(None, 0);
    p.take(Want::Fork, 30); // full: two bound idle, one busy
    let pick = p.ask(bound("f@1"), 30, false);
    assert_eq!(step_name(&pick.step), "create");
    let doomed: Vec<&str> = pick.doomed.iter().map(|sb| sb.id.as_str()).collect();
    assert_eq!(doomed, [older.as_str()]);
    assert_eq!(p.idle_ids(), [newer.as_str()]);
    assert_eq!(p.st.total(), 3, "the eviction's slot is the creation's");
    // While that creation is under way, nothing more is evicted.
    let pick = p.ask(bound("k@1"), 30, false);
    assert_eq!(step_name(&pick.step), "wait");
    assert!(pick.doomed.is_empty());
    assert_eq!(p.idle_ids(), [newer.as_str()]);
}

#[test]
fn a_full_pool_with_nothing_bound_idle_waits() {
    let mut p = Pool::new(0, 4, 0, 1);
    p.idle(None, 0);
    p.take(Want::Fork, 0);
    assert_eq!(step_name(&p.ask(bound("f@1"), 0, false).step), "wait");
    assert_eq!(p.st.creating, 0);
}

/// A bound sandbox with `invocations` so far, busy for `key`.
fn busy_bound(p: &mut Pool, key: &'static str, invocations: u64) -> Fake {
    p.idle(Some(key), 0);
    p.st.idle.back_mut().expect("just put").invocations = invocations;
    p.take(bound(key), 1).0
}

#[test]
fn a_bound_sandbox_is_recycled_after_max_invocations() {
    let mut p = Pool::new(0, 4, 0, 10);
    let mut sb = busy_bound(&mut p, "f@1", MAX_INVOCATIONS - 2);
    assert_eq!(
        release(&mut p.st, &mut sb, true, false, at(p.t0, 2)),
        Return::Keep
    );
    p.st.idle.push_back(sb);
    let mut sb = p.take(bound("f@1"), 3).0;
    assert_eq!(
        release(&mut p.st, &mut sb, true, false, at(p.t0, 4)),
        Return::Recycle
    );
    assert_eq!(sb.invocations, MAX_INVOCATIONS);
    assert!(p.st.busy.is_empty());
}

#[test]
fn a_generic_sandbox_has_no_invocation_limit() {
    let mut p = Pool::new(0, 4, 0, 10);
    p.idle(None, 0);
    p.st.idle[0].invocations = MAX_INVOCATIONS * 10;
    let mut sb = p.take(Want::Fork, 1).0;
    assert_eq!(
        release(&mut p.st, &mut sb, true, false, at(p.t0, 2)),
        Return::Keep
    );
}

#[test]
fn released_sandboxes_are_destroyed_when_unhealthy_closing_full_or_throwaway() {
    let mut p = Pool::new(0, 4, 0, 10);
    let mut sb = busy_bound(&mut p, "f@1", 0);
    assert_eq!(
        release(&mut p.st, &mut sb, false, false, at(p.t0, 2)),
        Return::Destroy
    );
    let mut sb = busy_bound(&mut p, "f@1", 0);
    assert_eq!(
        release(&mut p.st, &mut sb, true, true, at(p.t0, 2)),
        Return::Destroy
    );
    let mut sb = busy_bound(&mut p, "f@1", 0);
    p.st.throwaway.insert(sb.id.clone());
    assert_eq!(
        release(&mut p.st, &mut sb, true, false, at(p.t0, 2)),
        Return::Destroy
    );
    let mut sb = busy_bound(&mut p, "f@1", 0);
    p.st.max = 1;
    p.st.creating = 1;
    assert_eq!(
        release(&mut p.st, &mut sb, true, false, at(p.t0, 2)),
        Return::Destroy
    );
    p.st.creating = 0;
    let mut sb = busy_bound(&mut p, "f@1", 0);
    assert_eq!(
        release(&mut p.st, &mut sb, true, false, at(p.t0, 2)),
        Return::Keep
    );
}

#[test]
fn releasing_a_returning_sandbox_settles_the_returning_count() {
    let mut p = own_returning();
    let id = p.st.busy.keys().next().cloned().expect("busy");
    let mut sb = Fake {
        id,
        bound: Some("f@1".into()),
        last_used: p.at(0),
        invocations: 0,
        external: false,
    };
    release(&mut p.st, &mut sb, true, false, at(p.t0, 2));
    assert_eq!(p.st.returning, 0);
    assert_eq!(sb.last_used, at(p.t0, 2));
}

#[test]
fn unbind_recycles_idle_now_and_busy_on_release() {
    let mut p = Pool::new(0, 4, 0, 10);
    let mut busy = busy_bound(&mut p, "f@1", 0);
    let idle = p.idle(Some("f@1"), 0);
    let other = p.idle(Some("fx@1"), 0);
    let doomed = unbind(&mut p.st, "f");
    assert_eq!(
        doomed.iter().map(|sb| sb.id.as_str()).collect::<Vec<_>>(),
        [idle.as_str()]
    );
    assert_eq!(p.idle_ids(), [other.as_str()]);
    assert_eq!(
        release(&mut p.st, &mut busy, true, false, at(p.t0, 2)),
        Return::Recycle
    );
}

#[test]
fn bound_sandboxes_idle_for_specialized_idle_are_recycled() {
    let mut p = Pool::new(0, 4, 0, 10);
    let stale = p.idle(Some("f@1"), 0);
    let fresh = p.idle(Some("g@1"), 100);
    let generic = p.idle(None, 0);
    let now = p.at(SPECIALIZED_IDLE.as_secs());
    let out = stale_bound(&mut p.st, now);
    assert_eq!(
        out.iter().map(|sb| sb.id.as_str()).collect::<Vec<_>>(),
        [stale.as_str()]
    );
    assert_eq!(p.idle_ids(), [fresh.as_str(), generic.as_str()]);
}

#[test]
fn trim_takes_the_oldest_unused_generic_sandboxes_above_the_target() {
    let mut p = Pool::new(1, 4, 0, 10);
    let a = p.idle(None, 20);
    let b = p.idle(None, 10);
    let recent = p.idle(None, 50);
    let bound_old = p.idle(Some("f@1"), 0);
    p.idle(None, 0);
    p.st.idle.back_mut().expect("just put").external = true;
    let external = p.st.idle.back().expect("just put").id.clone();
    // At 80 s, `a` and `b` have been unused for idle_trim, `recent` not.
    let out = trim_extra(&mut p.st, at(p.t0, 80));
    assert_eq!(
        out.iter().map(|sb| sb.id.as_str()).collect::<Vec<_>>(),
        [b.as_str(), a.as_str()]
    );
    assert_eq!(
        p.idle_ids(),
        [recent.as_str(), bound_old.as_str(), external.as_str()]
    );
}

#[test]
fn trim_stops_at_the_target() {
    let mut p = Pool::new(2, 4, 0, 10);
    p.idle(None, 0);
    p.idle(None, 1);
    let keep = p.idle(None, 2);
    p.take(Want::Fork, 3); // busy generic counts toward the target
    let out = trim_extra(&mut p.st, at(p.t0, 100));
    assert_eq!(out.len(), 1, "one busy plus one idle is the target of 2");
    assert_eq!(p.idle_ids(), [keep.as_str()]);
}

#[test]
fn resize_drops_idle_sandboxes_beyond_the_new_sizes() {
    let mut p = Pool::new(3, 4, 0, 10);
    let first = p.idle(None, 0);
    p.idle(None, 0);
    let bound_one = p.idle(Some("f@1"), 0);
    p.idle(None, 0);
    let out = resize(&mut p.st, Some(1), None);
    assert_eq!(out.len(), 2);
    assert_eq!((p.st.target, p.st.min_warm), (1, 1));
    assert_eq!(p.idle_ids(), [first.as_str(), bound_one.as_str()]);
    let out = resize(&mut p.st, None, Some(1));
    assert_eq!(
        out.iter().map(|sb| sb.id.as_str()).collect::<Vec<_>>(),
        [bound_one.as_str()]
    );
    assert_eq!(p.st.total(), 1);
}

#[test]
fn an_adopted_only_pool_never_creates_and_waits_for_adopted_sandboxes() {
    let mut p = Pool::new(0, 0, 0, 1);
    p.st.adopted_only = true;
    assert!(!refill_due(&mut p.st), "no refill of its own");
    assert!(matches!(p.ask(Want::Fork, 0, false).step, Step::Wait));
    let bound = Want::Bound {
        key: "f@1",
        spread: false,
    };
    p.idle(Some("g@1"), 0);
    p.st.idle.back_mut().expect("just put").external = true;
    // A full pool evicts nothing: the bound sandbox is someone's container.
    let pick = p.ask(bound, 1, false);
    assert!(matches!(pick.step, Step::Wait) && pick.doomed.is_empty());
    assert_eq!(p.st.creating, 0);
    let adopted = p.idle(None, 2);
    p.st.idle.back_mut().expect("just put").external = true;
    let (sb, kind) = p.take(Want::Fork, 3);
    assert_eq!((sb.id.as_str(), kind), (adopted.as_str(), StartKind::Hot));
}

#[test]
fn adopted_sandboxes_come_back_whatever_the_pools_maximum() {
    let mut p = Pool::new(0, 0, 0, 1);
    p.idle(None, 0);
    p.st.idle.back_mut().expect("just put").external = true;
    p.idle(None, 0);
    p.st.idle.back_mut().expect("just put").external = true;
    let (mut sb, _) = p.take(Want::Fork, 1);
    assert_eq!(p.st.total(), 2, "over the maximum of 1");
    assert_eq!(
        release(&mut p.st, &mut sb, true, false, at(p.t0, 2)),
        Return::Keep
    );
    // A drain lets an adopted one go (its agent waits for the next
    // emberd), unless it is bound to a function.
    p.st.busy.insert(sb.id.clone(), busy_info(&sb));
    assert_eq!(
        release(&mut p.st, &mut sb, true, true, at(p.t0, 3)),
        Return::LetGo
    );
    sb.bound = Some("f@1".into());
    p.st.busy.insert(sb.id.clone(), busy_info(&sb));
    assert_eq!(
        release(&mut p.st, &mut sb, true, true, at(p.t0, 3)),
        Return::Destroy
    );
    sb.bound = None;
    sb.external = false;
    p.st.busy.insert(sb.id.clone(), busy_info(&sb));
    assert_eq!(
        release(&mut p.st, &mut sb, true, false, at(p.t0, 3)),
        Return::Destroy,
        "one of the pool's own is not kept over the maximum"
    );
}

fn busy_info(sb: &Fake) -> BusyInfo {
    BusyInfo::new(sb, "f", "inv", StartKind::Hot, None, Instant::now())
}

#[test]
fn a_pool_admits_its_maximum_and_queue_then_refuses() {
    let mut p = Pool::new(0, 0, 0, 2);
    p.st.max_queue = Some(3);
    for _ in 0..5 {
        admit(&mut p.st).expect("2 run, 3 wait");
    }
    assert_eq!((p.st.admitted, p.st.queued()), (5, 3));
    let r = admit(&mut p.st).unwrap_err();
    assert_eq!((r.queued, r.capacity, r.bound), (3, 2, 3));
    // Nothing measured yet: 1 s an invocation, 4 ahead, 2 at a time.
    assert_eq!(r.retry_after_s, 2);
    assert_eq!(p.st.admitted, 5, "a refusal is not counted in");
    leave(&mut p.st);
    admit(&mut p.st).expect("room again");
}

#[test]
fn the_default_queue_is_four_times_the_maximum_and_follows_a_resize() {
    let mut p = Pool::new(0, 0, 0, 2);
    assert_eq!(p.st.queue_bound(), 8);
    resize(&mut p.st, None, Some(3));
    assert_eq!(p.st.queue_bound(), 12);
    p.st.max_queue = Some(0);
    admit(&mut p.st).unwrap();
    admit(&mut p.st).unwrap();
    admit(&mut p.st).unwrap();
    assert!(admit(&mut p.st).is_err(), "no queue: only what runs");
}

#[test]
fn an_adopted_only_pool_runs_as_many_as_it_has_adopted() {
    let mut p = Pool::new(0, 0, 0, 8);
    p.st.adopted_only = true;
    p.st.max_queue = Some(1);
    p.idle(None, 0);
    admit(&mut p.st).unwrap();
    admit(&mut p.st).unwrap();
    assert_eq!(p.st.queued(), 1);
    assert!(admit(&mut p.st).is_err());
}

#[test]
fn the_retry_after_follows_how_long_sandboxes_are_lent() {
    let mut p = Pool::new(0, 0, 0, 1);
    p.st.max_queue = Some(1);
    p.idle(None, 0);
    let (mut sb, _) = p.take(Want::Fork, 0);
    let since = p.st.busy[&sb.id].since;
    release(
        &mut p.st,
        &mut sb,
        true,
        false,
        since + Duration::from_secs(3),
    );
    assert_eq!(p.st.mean_busy, Some(Duration::from_secs(3)));
    admit(&mut p.st).unwrap();
    admit(&mut p.st).unwrap();
    // 2 ahead (the waiting one and itself), 3 s each, 1 at a time.
    assert_eq!(admit(&mut p.st).unwrap_err().retry_after_s, 6);
}

#[test]
fn a_sessions_sandbox_counts_against_no_size_and_never_comes_back() {
    let mut p = Pool::new(1, 4, 0, 2);
    p.idle(None, 0);
    let (mut sb, kind) = p.take(Want::Fork, 1);
    assert_eq!(kind, StartKind::Hot);
    assert_eq!(p.st.total(), 1, "lent for an invocation: counted");
    assert_eq!(p.st.demand(), 1);
    // Given to a session: out of the sizes, no demand, no generic capacity.
    p.st.sessions.insert(sb.id.clone());
    assert_eq!(p.st.total(), 0);
    assert_eq!(p.st.demand(), 0);
    assert_eq!(p.st.generic(), 0);
    assert!(refill_due(&mut p.st), "the pool makes up for it");
    // Even healthy, it is destroyed when the session lets go of it, and
    // no longer held.
    assert_eq!(
        release(&mut p.st, &mut sb, true, false, at(p.t0, 2)),
        Return::Destroy
    );
    assert!(p.st.sessions.is_empty());
    assert_eq!(p.st.total(), 1, "only the creation the refill reserved");
}
