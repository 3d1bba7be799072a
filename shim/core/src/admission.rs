//! Admission control: how many invocations may wait, and for how long a
//! refused one should stay away.
//!
//! Two queues stand before a sandbox. A function deployed with
//! `max_concurrency` has a gate of its own: that many of its invocations
//! run at once, up to `max_queue` more wait for a slot. Every pool runs at
//! most `max` invocations at once, and up to `max_queue` more (emberd
//! `--max-queue`, default 4 × `max`) wait for a sandbox. Past either bound
//! an invocation is refused at once (`429 overloaded`, with a
//! `Retry-After`) instead of piling up until `--queue-timeout-ms`: a
//! small node keeps answering under a flood, and the client learns when
//! to come back.
//!
//! Admission happens before an invocation has a record, so a refused one
//! takes no history row and is named by no id.
//!
//! The deciding ([`admit`], [`retry_after_s`], [`next_mean`]) is pure
//! and unit-tested; [`Gates`] holds the functions' gates, the pool its
//! own count (`pool::Pool::admit`); the invocation path goes through
//! both (`invoke::admit`).

use ember_api::{Backend, FunctionRecord, Language};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The mean invocation time assumed before any was measured.
pub const DEFAULT_MEAN: Duration = Duration::from_secs(1);

/// Weight of the newest duration in the running mean: recent enough to
/// follow a change of load, smooth enough that one outlier does not
/// swing the Retry-After.
const MEAN_WEIGHT: f64 = 0.2;

/// Whose queue refused an invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Pool { runtime: Language, backend: Backend },
    Function(String),
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Pool { runtime, backend } => write!(f, "pool {runtime}/{backend}"),
            Scope::Function(name) => write!(f, "function {name:?}"),
        }
    }
}

/// An invocation refused at once because a queue was full.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{scope} is overloaded: {running} invocations run at once and {queued} already wait \
     (queue bound {bound}); retry in {retry_after_s} s"
)]
pub struct Refused {
    pub scope: Scope,
    pub running: usize,
    pub queued: usize,
    pub bound: usize,
    /// Seconds the client should wait before trying again (at least 1).
    pub retry_after_s: u64,
}

/// Where an arriving invocation goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// A slot is free: it runs at once.
    Run,
    /// It waits, `position`th in the queue (1 is next).
    Wait { position: usize },
    /// The queue holds `queued` already, its bound: refused.
    Refuse { queued: usize },
}

/// Where an invocation goes when `in_flight` are already admitted
/// (running or waiting), `concurrency` may run at once and `bound` may
/// wait.
pub fn admit(in_flight: usize, concurrency: usize, bound: usize) -> Admit {
    let queued = in_flight.saturating_sub(concurrency);
    if in_flight < concurrency {
        Admit::Run
    } else if queued < bound {
        Admit::Wait {
            position: queued + 1,
        }
    } else {
        Admit::Refuse { queued }
    }
}

/// Seconds until a refused invocation may find room: the queue ahead of
/// it (`position`, itself included) drains `concurrency` at a time, each
/// taking `mean` (the recent mean invocation time; [`DEFAULT_MEAN`]
/// before any). Rounded up, at least 1: `Retry-After` is whole seconds,
/// and 0 would invite a retry storm.
pub fn retry_after_s(mean: Option<Duration>, position: usize, concurrency: usize) -> u64 {
    let mean = mean.unwrap_or(DEFAULT_MEAN).as_secs_f64();
    let secs = mean * position as f64 / concurrency.max(1) as f64;
    (secs.ceil() as u64).max(1)
}

/// The running mean after one more invocation took `sample`.
pub fn next_mean(old: Option<Duration>, sample: Duration) -> Duration {
    match old {
        None => sample,
        Some(m) => m.mul_f64(1.0 - MEAN_WEIGHT) + sample.mul_f64(MEAN_WEIGHT),
    }
}

/// The refusal of an invocation that [`admit`] turned away.
pub fn refusal(
    scope: Scope,
    queued: usize,
    concurrency: usize,
    bound: usize,
    mean: Option<Duration>,
) -> Refused {
    Refused {
        scope,
        running: concurrency,
        queued,
        bound,
        retry_after_s: retry_after_s(mean, queued + 1, concurrency),
    }
}

/// Waiting at a function's gate ran past the queue timeout.
#[derive(Debug, thiserror::Error)]
#[error(
    "no slot of function {function:?} (max_concurrency {max_concurrency}) became free within \
     {waited_ms} ms"
)]
pub struct GateTimeout {
    pub function: String,
    pub max_concurrency: usize,
    pub waited_ms: u64,
}

/// Why an invocation was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error(transparent)]
    Timeout(#[from] GateTimeout),
}

/// One function's gate.
struct Gate {
    /// Its `max_concurrency`, and the semaphore holding that many slots
    /// (fair: waiters get slots in arrival order).
    limit: usize,
    slots: Arc<Semaphore>,
    /// Admitted invocations, running or waiting for a slot.
    in_flight: usize,
    /// Recent mean time an invocation held a slot.
    mean: Option<Duration>,
}

/// The gates of the functions deployed with `max_concurrency`.
#[derive(Default)]
pub struct Gates {
    gates: Arc<Mutex<HashMap<String, Gate>>>,
}

/// An invocation through its function's gate; frees its slot when dropped.
pub struct FunctionTicket {
    gates: Arc<Mutex<HashMap<String, Gate>>>,
    name: String,
    slot: Option<OwnedSemaphorePermit>,
    since: Instant,
}

impl std::fmt::Debug for FunctionTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionTicket")
            .field("name", &self.name)
            .field("running", &self.slot.is_some())
            .finish()
    }
}

impl Drop for FunctionTicket {
    fn drop(&mut self) {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = gates.get_mut(&self.name) {
            g.in_flight = g.in_flight.saturating_sub(1);
            if self.slot.is_some() {
                g.mean = Some(next_mean(g.mean, self.since.elapsed()));
            }
        }
        // The slot goes back to its semaphore after the count is down.
        self.slot.take();
    }
}

impl Gates {
    /// Through `func`'s gate, waiting up to `timeout` for a slot; `None`
    /// when the function has no `max_concurrency`.
    pub async fn enter(
        &self,
        func: &FunctionRecord,
        timeout: Duration,
    ) -> Result<Option<FunctionTicket>, AdmitError> {
        let (Some(limit), Some(bound)) = (
            func.concurrency.max_concurrency,
            func.concurrency.queue_bound(),
        ) else {
            return Ok(None);
        };
        let (limit, bound) = (limit as usize, bound as usize);
        let slots = self.admit(&func.name, limit, bound)?;
        let mut ticket = FunctionTicket {
            gates: Arc::clone(&self.gates),
            name: func.name.clone(),
            slot: None,
            since: Instant::now(),
        };
        let started = Instant::now();
        match tokio::time::timeout(timeout, slots.acquire_owned()).await {
            Ok(Ok(slot)) => {
                ticket.slot = Some(slot);
                ticket.since = Instant::now();
                Ok(Some(ticket))
            }
            // The semaphore is never closed; a timeout is the only way.
            _ => Err(GateTimeout {
                function: func.name.clone(),
                max_concurrency: limit,
                waited_ms: started.elapsed().as_millis() as u64,
            }
            .into()),
        }
    }

    /// Count one more invocation of `name` in, or refuse it; returns the
    /// semaphore to take a slot of. A redeploy that changed the limit
    /// gets a new semaphore (invocations under the old one finish there).
    fn admit(&self, name: &str, limit: usize, bound: usize) -> Result<Arc<Semaphore>, Refused> {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        let g = gates.entry(name.to_string()).or_insert_with(|| Gate {
            limit,
            slots: Arc::new(Semaphore::new(limit)),
            in_flight: 0,
            mean: None,
        });
        if g.limit != limit {
            g.limit = limit;
            g.slots = Arc::new(Semaphore::new(limit));
        }
        match admit(g.in_flight, limit, bound) {
            Admit::Refuse { queued } => Err(refusal(
                Scope::Function(name.to_string()),
                queued,
                limit,
                bound,
                g.mean,
            )),
            Admit::Run | Admit::Wait { .. } => {
                g.in_flight += 1;
                Ok(Arc::clone(&g.slots))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocations_run_then_wait_up_to_the_bound_then_are_refused() {
        // 2 at once, 3 may wait.
        assert_eq!(admit(0, 2, 3), Admit::Run);
        assert_eq!(admit(1, 2, 3), Admit::Run);
        assert_eq!(admit(2, 2, 3), Admit::Wait { position: 1 });
        assert_eq!(admit(4, 2, 3), Admit::Wait { position: 3 });
        assert_eq!(admit(5, 2, 3), Admit::Refuse { queued: 3 });
        assert_eq!(admit(9, 2, 3), Admit::Refuse { queued: 7 });
    }

    #[test]
    fn a_zero_bound_refuses_whatever_cannot_run_at_once() {
        assert_eq!(admit(0, 1, 0), Admit::Run);
        assert_eq!(admit(1, 1, 0), Admit::Refuse { queued: 0 });
    }

    #[test]
    fn retry_after_is_the_queue_ahead_drained_at_the_concurrency() {
        let s = Duration::from_secs;
        // 4 ahead of 1 slot, 1 s each: 4 s.
        assert_eq!(retry_after_s(Some(s(1)), 4, 1), 4);
        // Twice the slots: half the wait.
        assert_eq!(retry_after_s(Some(s(1)), 4, 2), 2);
        // Rounded up to whole seconds.
        assert_eq!(retry_after_s(Some(Duration::from_millis(700)), 3, 2), 2);
        // Never under 1 s, however fast the function.
        assert_eq!(retry_after_s(Some(Duration::from_millis(5)), 1, 8), 1);
        assert_eq!(retry_after_s(Some(Duration::ZERO), 0, 0), 1);
        // Nothing measured yet: 1 s an invocation.
        assert_eq!(retry_after_s(None, 3, 1), 3);
    }

    #[test]
    fn the_mean_follows_recent_durations() {
        let ms = Duration::from_millis;
        assert_eq!(next_mean(None, ms(500)), ms(500));
        let m = next_mean(Some(ms(1000)), ms(2000));
        assert_eq!(m, ms(1200));
        let mut m = Some(ms(1000));
        for _ in 0..50 {
            m = Some(next_mean(m, ms(100)));
        }
        assert!(m.unwrap() < ms(110), "{m:?}");
    }

    #[test]
    fn a_refusal_names_its_queue_and_when_to_come_back() {
        let r = refusal(
            Scope::Function("slow".into()),
            2,
            1,
            2,
            Some(Duration::from_millis(1500)),
        );
        assert_eq!(r.retry_after_s, 5);
        let text = r.to_string();
        assert!(text.contains("function \"slow\""), "{text}");
        assert!(text.contains("2 already wait"), "{text}");
        assert!(text.contains("retry in 5 s"), "{text}");
        let pool = Scope::Pool {
            runtime: Language::Python,
            backend: Backend::Runc,
        };
        assert_eq!(pool.to_string(), "pool python3/runc");
    }

    fn func(max_concurrency: Option<u32>, max_queue: Option<u32>) -> FunctionRecord {
        serde_json::from_value(serde_json::json!({
            "name": "f", "runtime": "python3", "handler": "main.handler", "timeout_ms": 1000,
            "profile": "default", "mode": "fork", "zygote": true, "limits": {},
            "max_concurrency": max_concurrency, "max_queue": max_queue,
            "digest": "aa", "created_at": 1, "updated_at": 1,
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_gate_runs_its_limit_queues_its_bound_and_refuses_the_rest() {
        let gates = Gates::default();
        let f = func(Some(1), Some(1));
        let t = Duration::from_millis(50);
        let first = gates.enter(&f, t).await.unwrap().expect("a gate");
        // The second waits for the first's slot and times out...
        let second = gates.enter(&f, t).await;
        assert!(matches!(second, Err(AdmitError::Timeout(_))), "{second:?}");
        // ...while it waits, a third is refused at once.
        let g2 = Gates {
            gates: Arc::clone(&gates.gates),
        };
        let waiting = tokio::spawn(async move {
            let f = func(Some(1), Some(1));
            g2.enter(&f, Duration::from_secs(5))
                .await
                .map(|t| t.is_some())
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        match gates.enter(&f, t).await {
            Err(AdmitError::Refused(r)) => {
                assert_eq!((r.queued, r.bound, r.running), (1, 1, 1));
                assert!(r.retry_after_s >= 1);
            }
            other => panic!("not refused: {:?}", other.map(|t| t.is_some())),
        }
        // The first done, the waiting one gets its slot.
        drop(first);
        assert!(waiting.await.unwrap().unwrap());
        assert!(gates.enter(&func(None, None), t).await.unwrap().is_none());
    }
}
