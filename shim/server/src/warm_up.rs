//! At emberd's start, a bar of its pools filling (on a terminal only).

use ember_api::PoolStatus;
use ember_core::Daemon;
use ember_term::{gauge, multi};
use indicatif::ProgressBar;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the bar is brought up to date.
const TICK: Duration = Duration::from_millis(100);

/// Longest emberd shows its warm-up bar: a pool that cannot fill (a broken
/// backend) says so in the log, the bar just goes away.
const WARM_UP_LIMIT: Duration = Duration::from_secs(60);

/// Warm sandboxes against what the pools want, summed over pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Warmth {
    /// Idle generic sandboxes, each pool's counted up to its target.
    pub idle: u64,
    pub target: u64,
}

impl Warmth {
    pub fn of(pools: impl IntoIterator<Item = PoolStatus>) -> Warmth {
        pools.into_iter().fold(Warmth::default(), |w, p| {
            // Bound sandboxes serve one function only: not warm-up.
            let generic = p.idle.saturating_sub(p.bound).min(p.target);
            Warmth {
                idle: w.idle + generic as u64,
                target: w.target + p.target as u64,
            }
        })
    }

    pub fn reached(self) -> bool {
        self.idle >= self.target
    }
}

/// The line left above the logs once the pools are warm (none when there
/// was nothing to warm).
pub fn warmed_line(w: Warmth, took: Duration) -> Option<String> {
    (w.target > 0).then(|| {
        format!(
            "pools warm: {} sandbox{} in {:.1} s",
            w.target,
            if w.target == 1 { "" } else { "es" },
            took.as_secs_f64()
        )
    })
}

/// Follow `sample` on `bar` until the pools are warm (true) or `limit`
/// has passed (false).
pub async fn follow_warm_up(
    bar: &ProgressBar,
    mut sample: impl FnMut() -> Warmth,
    limit: Duration,
    every: Duration,
) -> bool {
    let started = Instant::now();
    loop {
        let w = sample();
        if w.target > 0 {
            bar.set_length(w.target);
        }
        bar.set_position(w.idle);
        if w.reached() {
            return true;
        }
        if started.elapsed() >= limit {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}

/// At emberd's start, show its pools filling ("warming pools", idle
/// sandboxes of their targets), only when stderr is a terminal.
pub fn spawn_warm_up(daemon: Arc<Daemon>) {
    if multi().is_hidden() {
        return;
    }
    tokio::spawn(async move {
        let started = Instant::now();
        let bar = multi().add(gauge("warming pools"));
        let sample = || Warmth::of(daemon.pools().map(|p| p.status()));
        let warm = follow_warm_up(&bar, sample, WARM_UP_LIMIT, TICK).await;
        bar.finish_and_clear();
        if let Some(line) = warm
            .then(|| warmed_line(sample(), started.elapsed()))
            .flatten()
        {
            // Not `MultiProgress::println`: with no bar left under it, its
            // line would lack a newline and the next log line would follow
            // on the same line.
            multi().suspend(|| eprintln!("{line}"));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(target: usize, idle: usize, bound: usize) -> PoolStatus {
        PoolStatus {
            runtime: ember_api::Language::Python,
            backend: ember_api::Backend::Runc,
            target,
            min_warm: target,
            max_warm: target,
            headroom: 0,
            max: 10,
            idle,
            bound,
            busy: 0,
            creating: 0,
            queued: 0,
            max_queue: 40,
            created_total: 0,
            destroyed_total: 0,
            create_failures_total: 0,
            warm_starts_total: 0,
            hot_starts_total: 0,
            cold_starts_total: 0,
            recycled_total: 0,
            adopted_total: 0,
            refused_total: 0,
        }
    }

    #[test]
    fn warmth_sums_generic_idle_sandboxes_up_to_each_target() {
        let w = Warmth::of([pool(2, 1, 0), pool(3, 5, 1), pool(2, 2, 2)]);
        // 1 of 2; 4 generic capped at 3; bound ones do not count.
        assert_eq!(w, Warmth { idle: 4, target: 7 });
        assert!(!w.reached());
        assert!(Warmth::of([pool(2, 2, 0), pool(0, 0, 0)]).reached());
        assert!(Warmth::of([]).reached());
    }

    #[test]
    fn warmed_line_names_the_sandboxes_and_time_or_nothing() {
        let w = Warmth { idle: 4, target: 4 };
        assert_eq!(
            warmed_line(w, Duration::from_millis(1250)).as_deref(),
            Some("pools warm: 4 sandboxes in 1.2 s")
        );
        let one = Warmth { idle: 1, target: 1 };
        assert_eq!(
            warmed_line(one, Duration::from_secs(2)).as_deref(),
            Some("pools warm: 1 sandbox in 2.0 s")
        );
        assert_eq!(warmed_line(Warmth::default(), Duration::ZERO), None);
    }

    #[tokio::test]
    async fn follow_warm_up_ends_when_warm_or_after_the_limit() {
        let bar = ProgressBar::hidden();
        let mut idle = 0;
        let filling = || {
            idle += 1;
            Warmth { idle, target: 3 }
        };
        let long = Duration::from_secs(10);
        assert!(follow_warm_up(&bar, filling, long, Duration::from_millis(1)).await);
        assert_eq!((bar.position(), bar.length()), (3, Some(3)));

        let stuck = || Warmth { idle: 1, target: 3 };
        let t = Instant::now();
        let short = Duration::from_millis(50);
        assert!(!follow_warm_up(&bar, stuck, short, Duration::from_millis(5)).await);
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(bar.position(), 1);
    }
}
