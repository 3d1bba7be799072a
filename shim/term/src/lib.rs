//! Progress on stderr for the long actions of ember's terminal front ends:
//! `ember deploy`/`test`/`demo`, emberd's pool warm-up at start, and the
//! bench's phases. Owns the bars' look and a log writer that draws under
//! them; does not own what they measure.
//!
//! indicatif draws only when stderr is a terminal (and `TERM` is neither
//! unset nor `dumb`); otherwise every bar here is hidden and draws nothing,
//! so output piped to a file, a test or a CI log is exactly what it was
//! without progress. Progress never goes to stdout.

use indicatif::{MultiProgress, ProgressBar, ProgressFinish, ProgressStyle};
use std::borrow::Cow;
use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

const SPINNER_TEMPLATE: &str = "{spinner} {msg} ({elapsed})";
const BAR_TEMPLATE: &str = "{spinner} {msg} [{bar:30}] {pos}/{len} ({elapsed}, eta {eta})";

/// How often a visible spinner moves on its own (it has no steps to show).
const TICK: Duration = Duration::from_millis(100);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse() {
        for t in [SPINNER_TEMPLATE, BAR_TEMPLATE] {
            assert!(ProgressStyle::with_template(t).is_ok(), "{t}");
        }
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
