//! Sessions: the book of open sessions, their limits and the sweeper's
//! policy.
//!
//! A session holds one sandbox for its whole life: taken from its
//! function's pool at open (generic, then given the function's code and a
//! `/tmp` of its own), used by that session's calls alone, one at a time,
//! with its runner and `/tmp` kept between calls, and destroyed when the
//! session ends, never given back. The sandbox lies in the session's
//! [`Session::slot`]: a call takes it out and puts it back once the
//! sandbox is idle again; a call that fails leaves the slot empty, which
//! ends the session. How a call runs is the invocation path's
//! (`invoke::session`); this module keeps the count, the limits and the
//! clocks.

use crate::pool::Pool;
use crate::registry::FunctionRecord;
use crate::settings::SessionDefaults;
use ember_api::pool::SandboxState;
use ember_api::{SessionEnd, SessionInfo};
use ember_runtimes::Sandbox;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a session could not open: a limit is reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionLimit {
    #[error("function {function:?} has {open} sessions open, its limit (max_sessions)")]
    Function { function: String, open: usize },
    #[error("emberd has {open} sessions open, its limit (--max-sessions)")]
    Daemon { open: usize },
}

/// Whether one more session of a function may open: `of_function` and
/// `total` are open (or opening) now.
pub fn admit(
    total: usize,
    max_total: usize,
    of_function: usize,
    max_function: Option<u32>,
) -> Result<(), Refusal> {
    if let Some(max) = max_function {
        if of_function >= max as usize {
            return Err(Refusal::Function);
        }
    }
    if total >= max_total {
        return Err(Refusal::Daemon);
    }
    Ok(())
}

/// Which limit [`admit`] hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Function,
    Daemon,
}

/// Whether a session is over: idle past `idle` (counted from its last
/// call's end, or its opening), or open past `lifetime`. A session in a
/// call is never idle; its lifetime still runs out.
pub fn expiry(
    now: Instant,
    opened: Instant,
    last_used: Instant,
    busy: bool,
    idle: Duration,
    lifetime: Duration,
) -> Option<SessionEnd> {
    if now.saturating_duration_since(opened) >= lifetime {
        Some(SessionEnd::Lifetime)
    } else if !busy && now.saturating_duration_since(last_used) >= idle {
        Some(SessionEnd::Idle)
    } else {
        None
    }
}

/// The sandbox of an open session, between its calls.
pub(crate) type Slot = Arc<tokio::sync::Mutex<Option<Sandbox>>>;

/// Consume a wake-up stored in `n`, if one is.
fn take_permit(n: &tokio::sync::Notify) {
    use std::future::Future;
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    // A `Notified` takes a stored permit at its first poll.
    let _ = std::pin::pin!(n.notified()).poll(&mut cx);
}

/// One open session.
pub struct Session {
    pub id: String,
    /// The function as it was deployed when the session opened: its code,
    /// handler and limits serve every call.
    pub func: FunctionRecord,
    pub(crate) pool: Arc<Pool>,
    pub sandbox: String,
    pub created_at: i64,
    opened: Instant,
    pub idle: Duration,
    pub lifetime: Duration,
    pub(crate) slot: Slot,
    /// Where its sandbox's memory use is read, call or no call.
    limits: ember_runtimes::limits::CgroupLimits,
    /// Keeps the session's code in the store while it is open.
    pub(crate) pin: Mutex<Option<ember_injector::Pin>>,
    use_: Mutex<Use>,
}

#[derive(Debug, Clone)]
struct Use {
    last_used: Instant,
    last_used_at: i64,
    invocations: u64,
    /// The invocation id of the call running, if one is.
    running: Option<String>,
    /// The running call has answered; its sandbox is on its way back.
    answered: bool,
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: String,
        func: FunctionRecord,
        pool: Arc<Pool>,
        sb: Sandbox,
        pin: ember_injector::Pin,
        policy: (Duration, Duration),
    ) -> Session {
        let now = crate::registry::now_ms();
        Session {
            id,
            func,
            pool,
            sandbox: sb.id.clone(),
            limits: sb.limits.clone(),
            created_at: now,
            opened: Instant::now(),
            idle: policy.0,
            lifetime: policy.1,
            slot: Arc::new(tokio::sync::Mutex::new(Some(sb))),
            pin: Mutex::new(Some(pin)),
            use_: Mutex::new(Use {
                last_used: Instant::now(),
                last_used_at: now,
                invocations: 0,
                running: None,
                answered: false,
            }),
        }
    }

    /// The code pin, once, when the session ends.
    pub(crate) fn take_pin(&self) -> Option<ember_injector::Pin> {
        self.pin.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn use_(&self) -> std::sync::MutexGuard<'_, Use> {
        self.use_.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Call `invocation` begins: counted, and the session is busy (never
    /// idle). Returns the calls before it.
    pub(crate) fn call_begins(&self, invocation: &str) -> u64 {
        let mut u = self.use_();
        u.running = Some(invocation.to_string());
        u.answered = false;
        u.invocations += 1;
        u.invocations - 1
    }

    /// A call has ended (its sandbox is back in the slot, or gone).
    pub(crate) fn call_ends(&self) {
        let mut u = self.use_();
        u.running = None;
        u.last_used = Instant::now();
        u.last_used_at = crate::registry::now_ms();
        // A kill that came as the call ended was for it, not for the next
        // one; under the lock `kill_call` takes, so none comes after this.
        if let Some(kill) = self.pool.kill_signal(&self.sandbox) {
            take_permit(&kill);
        }
    }

    pub fn busy(&self) -> bool {
        self.use_().running.is_some()
    }

    /// The running call has answered its caller: from here on there is
    /// nothing of it to kill.
    pub(crate) fn call_answered(&self) {
        self.use_().answered = true;
    }

    /// Stop the call running in this session: which call it was. Or, when
    /// none runs, the sandbox's state: between calls (`Session`; no kill
    /// waits for the next call) or back from an answered one
    /// (`Returning`).
    pub(crate) fn kill_call(&self) -> Result<String, SandboxState> {
        let u = self.use_();
        let call = u.running.clone().ok_or(SandboxState::Session)?;
        if u.answered {
            return Err(SandboxState::Returning);
        }
        if let Some(kill) = self.pool.kill_signal(&self.sandbox) {
            kill.notify_one();
        }
        Ok(call)
    }

    /// Whether the sweeper should end it now, and why.
    pub fn expired(&self, now: Instant) -> Option<SessionEnd> {
        let u = self.use_().clone();
        expiry(
            now,
            self.opened,
            u.last_used,
            u.running.is_some(),
            self.idle,
            self.lifetime,
        )
    }

    /// As the API shows it.
    pub fn info(&self) -> SessionInfo {
        let u = self.use_().clone();
        let memory_bytes = self.limits.memory_usage().ok();
        let idle_end = u.last_used_at + self.idle.as_millis() as i64;
        let life_end = self.created_at + self.lifetime.as_millis() as i64;
        SessionInfo {
            id: self.id.clone(),
            function: self.func.name.clone(),
            digest: self.func.digest.clone(),
            sandbox: Some(self.sandbox.clone()),
            open: true,
            created_at: self.created_at,
            last_used_at: u.last_used_at,
            invocations: u.invocations,
            busy: u.running.is_some(),
            memory_bytes,
            idle_timeout_s: self.idle.as_secs(),
            max_lifetime_s: self.lifetime.as_secs(),
            expires_at: Some(if u.running.is_some() {
                life_end
            } else {
                idle_end.min(life_end)
            }),
            ended_at: None,
            end_reason: None,
            end_message: None,
        }
    }
}

/// Open sessions, and the openings under way (which count toward the
/// limits until they open or fail).
#[derive(Default)]
struct Book {
    open: HashMap<String, Arc<Session>>,
    /// Open or opening, per function.
    per_function: HashMap<String, usize>,
    total: usize,
}

/// Every open session of the daemon.
pub struct Sessions {
    book: Mutex<Book>,
    pub defaults: SessionDefaults,
}

/// A place among the sessions, taken before a session's sandbox is; given
/// back on drop unless the session opened.
pub struct Reservation<'a> {
    sessions: &'a Sessions,
    function: String,
    kept: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.sessions.book().forget(&self.function);
        }
    }
}

impl Book {
    fn forget(&mut self, function: &str) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.per_function.get_mut(function) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_function.remove(function);
            }
        }
    }
}

impl Sessions {
    pub fn new(defaults: SessionDefaults) -> Sessions {
        Sessions {
            book: Mutex::new(Book::default()),
            defaults,
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The idle timeout and lifetime of `func`'s sessions.
    pub fn policy(&self, func: &FunctionRecord) -> (Duration, Duration) {
        let p = &func.sessions;
        (
            Duration::from_secs(p.session_idle_s.unwrap_or(self.defaults.idle_s)),
            Duration::from_secs(p.session_lifetime_s.unwrap_or(self.defaults.lifetime_s)),
        )
    }

    /// Take a place for one more session of `func`, or say which limit
    /// is reached.
    pub fn reserve(&self, func: &FunctionRecord) -> Result<Reservation<'_>, SessionLimit> {
        let mut b = self.book();
        let of_function = b.per_function.get(&func.name).copied().unwrap_or(0);
        match admit(
            b.total,
            self.defaults.max,
            of_function,
            func.sessions.max_sessions,
        ) {
            Err(Refusal::Function) => {
                return Err(SessionLimit::Function {
                    function: func.name.clone(),
                    open: of_function,
                })
            }
            Err(Refusal::Daemon) => return Err(SessionLimit::Daemon { open: b.total }),
            Ok(()) => {}
        }
        b.total += 1;
        *b.per_function.entry(func.name.clone()).or_default() += 1;
        Ok(Reservation {
            sessions: self,
            function: func.name.clone(),
            kept: false,
        })
    }

    /// The session opened in `place`.
    pub(crate) fn opened(&self, mut place: Reservation<'_>, s: Arc<Session>) {
        place.kept = true;
        self.book().open.insert(s.id.clone(), s);
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.book().open.get(id).cloned()
    }

    /// Take `id` out of the book (once: the first ender wins).
    pub(crate) fn remove(&self, id: &str) -> Option<Arc<Session>> {
        let mut b = self.book();
        let s = b.open.remove(id)?;
        b.forget(&s.func.name);
        Some(s)
    }

    /// Open sessions (of `function`), oldest first.
    pub fn list(&self, function: Option<&str>) -> Vec<Arc<Session>> {
        let mut v: Vec<Arc<Session>> = self
            .book()
            .open
            .values()
            .filter(|s| function.is_none_or(|f| s.func.name == f))
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        v
    }

    /// Open sessions per function, for `/metrics`.
    pub fn open_by_function(&self) -> Vec<(String, usize)> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for s in self.book().open.values() {
            *counts.entry(s.func.name.clone()).or_default() += 1;
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort();
        v
    }

    /// Open sessions the sweeper should end now, and why.
    pub fn expired(&self, now: Instant) -> Vec<(String, SessionEnd)> {
        self.book()
            .open
            .values()
            .filter_map(|s| s.expired(now).map(|why| (s.id.clone(), why)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_kill_left_over_from_a_call_is_taken_and_a_later_one_is_not_lost() {
        let n = tokio::sync::Notify::new();
        take_permit(&n); // none stored: nothing happens
        n.notify_one();
        take_permit(&n);
        let stale = tokio::time::timeout(Duration::from_millis(50), n.notified()).await;
        assert!(stale.is_err(), "the stored kill was not taken");
        n.notify_one();
        let fresh = tokio::time::timeout(Duration::from_millis(50), n.notified()).await;
        assert!(fresh.is_ok(), "a kill after the take was lost");
    }

    #[test]
    fn the_function_limit_comes_before_the_daemons() {
        assert_eq!(admit(0, 32, 0, None), Ok(()));
        assert_eq!(admit(31, 32, 5, None), Ok(()));
        assert_eq!(admit(32, 32, 0, None), Err(Refusal::Daemon));
        assert_eq!(admit(3, 32, 2, Some(2)), Err(Refusal::Function));
        assert_eq!(admit(32, 32, 2, Some(2)), Err(Refusal::Function));
        assert_eq!(admit(3, 32, 1, Some(2)), Ok(()));
        assert_eq!(admit(0, 0, 0, None), Err(Refusal::Daemon));
    }

    #[test]
    fn sessions_expire_when_idle_or_past_their_lifetime() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let (idle, life) = (s(10), s(100));
        // Fresh.
        assert_eq!(expiry(t0, t0, t0, false, idle, life), None);
        // Unused for its idle timeout.
        assert_eq!(
            expiry(t0 + s(10), t0, t0, false, idle, life),
            Some(SessionEnd::Idle)
        );
        // Used recently: not idle.
        assert_eq!(expiry(t0 + s(15), t0, t0 + s(10), false, idle, life), None);
        // In a call: never idle...
        assert_eq!(expiry(t0 + s(50), t0, t0, true, idle, life), None);
        // ...but its lifetime runs out all the same.
        assert_eq!(
            expiry(t0 + s(100), t0, t0 + s(99), true, idle, life),
            Some(SessionEnd::Lifetime)
        );
        // Lifetime wins over idle when both are due.
        assert_eq!(
            expiry(t0 + s(200), t0, t0, false, idle, life),
            Some(SessionEnd::Lifetime)
        );
    }
}
