//! Progress on stderr for the long actions: `ember deploy`/`test`/`demo`,
//! emberd's pool warm-up at start, and the bench's phases.
//!
//! indicatif draws only when stderr is a terminal (and `TERM` is neither
//! unset nor `dumb`); otherwise every bar here is hidden and draws nothing,
//! so output piped to a file, a test or a CI log is exactly what it was
//! without progress. Progress never goes to stdout.

use crate::daemon::Daemon;
use crate::pool::PoolStatus;
use indicatif::{MultiProgress, ProgressBar, ProgressFinish, ProgressStyle};
use std::borrow::Cow;
use std::io::Write;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const SPINNER_TEMPLATE: &str = "{spinner} {msg} ({elapsed})";
const BAR_TEMPLATE: &str = "{spinner} {msg} [{bar:30}] {pos}/{len} ({elapsed}, eta {eta})";

/// How often a visible spinner moves on its own (it has no steps to show).
const TICK: Duration = Duration::from_millis(100);

/// Longest emberd shows its warm-up bar: a pool that cannot fill (a broken
/// backend) says so in the log, the bar just goes away.
const WARM_UP_LIMIT: Duration = Duration::from_secs(60);

fn style(template: &str) -> ProgressStyle {
    // The templates are constants checked by a unit test: the fallback is
    // never expected, but a bad one must not take a command down.
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .progress_chars("=> ")
}

/// Cleared when finished or dropped (an early `?` included), so an error
/// printed afterwards starts on a clean line.
fn start(bar: ProgressBar) -> ProgressBar {
    let bar = bar.with_finish(ProgressFinish::AndClear);
    // The ticker is a thread: none for a hidden bar.
    if !bar.is_hidden() {
        bar.enable_steady_tick(TICK);
    }
    bar
}

/// A spinner with a message and the time elapsed, for a wait of unknown
/// length.
pub fn spinner(message: impl Into<Cow<'static, str>>) -> ProgressBar {
    start(
        ProgressBar::new_spinner()
            .with_style(style(SPINNER_TEMPLATE))
            .with_message(message),
    )
}

/// A bar of `len` steps with a message, `pos/len` and an estimate of the
/// time left.
pub fn bar(len: u64, message: impl Into<Cow<'static, str>>) -> ProgressBar {
    start(
        ProgressBar::new(len)
            .with_style(style(BAR_TEMPLATE))
            .with_message(message),
    )
}

/// A bar whose length is not known yet (set it once it is): drawn empty
/// until then, where a bar of length 0 would be drawn full.
pub fn gauge(message: impl Into<Cow<'static, str>>) -> ProgressBar {
    start(
        ProgressBar::no_length()
            .with_style(style(BAR_TEMPLATE))
            .with_message(message),
    )
}

/// emberd's bars and log lines share stderr through this.
pub fn multi() -> &'static MultiProgress {
    static MULTI: OnceLock<MultiProgress> = OnceLock::new();
    MULTI.get_or_init(MultiProgress::new)
}

/// A writer for emberd's tracing output: each log line is written with the
/// bars lifted off stderr and drawn again below it, so a line never lands
/// inside a bar. Without a terminal it writes straight through.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // tracing's fmt layer hands over one whole line per call. Without
        // a terminal (a daemon's usual stderr) indicatif stays out of it.
        let multi = multi();
        if multi.is_hidden() {
            std::io::stderr().write_all(buf)?;
        } else {
            multi.suspend(|| std::io::stderr().write_all(buf))?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

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
            runtime: "python3".into(),
            backend: "runc",
            target,
            min_warm: target,
            max_warm: target,
            headroom: 0,
            max: 10,
            idle,
            bound,
            busy: 0,
            creating: 0,
            created_total: 0,
            destroyed_total: 0,
            create_failures_total: 0,
            warm_starts_total: 0,
            hot_starts_total: 0,
            cold_starts_total: 0,
            recycled_total: 0,
            adopted_total: 0,
        }
    }

    #[test]
    fn templates_parse() {
        for t in [SPINNER_TEMPLATE, BAR_TEMPLATE] {
            assert!(ProgressStyle::with_template(t).is_ok(), "{t}");
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

    #[test]
    fn bars_are_hidden_without_a_terminal() {
        // cargo test captures stderr into a pipe, or CI does: either way
        // not a terminal, and nothing may be drawn.
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() && std::env::var("TERM").is_ok_and(|t| t != "dumb") {
            return;
        }
        assert!(spinner("x").is_hidden());
        assert!(bar(3, "x").is_hidden());
        assert!(gauge("x").is_hidden());
        assert!(multi().is_hidden());
    }
}
