//! Rate-limited warnings: a failure that repeats for every invocation (a
//! full disk, a refusal under load) must not write a line each time. At
//! most one line per key per [`INTERVAL`]; the next one says how many
//! were suppressed in between.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The least time between two lines of one key.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// When each key last logged, and how many lines it held back since.
pub struct WarnLimit {
    interval: Duration,
    keys: Mutex<HashMap<String, (Instant, u64)>>,
}

impl WarnLimit {
    pub fn new(interval: Duration) -> WarnLimit {
        WarnLimit {
            interval,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a line of `key` may go out now: `Some(n)` with the number
    /// suppressed since the last, `None` to hold it back.
    pub fn admit(&self, key: &str) -> Option<u64> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match keys.get_mut(key) {
            Some((last, held)) if now.duration_since(*last) < self.interval => {
                *held += 1;
                None
            }
            Some((last, held)) => {
                *last = now;
                Some(std::mem::take(held))
            }
            None => {
                // Bounded: keys are codes and fixed names, but be safe.
                if keys.len() > 1024 {
                    keys.clear();
                }
                keys.insert(key.to_string(), (now, 0));
                Some(0)
            }
        }
    }
}

static GLOBAL: std::sync::LazyLock<WarnLimit> =
    std::sync::LazyLock::new(|| WarnLimit::new(INTERVAL));

/// A WARN line, unless one of `key` went out less than [`INTERVAL`] ago.
pub fn warn(key: &str, message: std::fmt::Arguments<'_>) {
    match GLOBAL.admit(key) {
        Some(0) => tracing::warn!("{message}"),
        Some(n) => tracing::warn!(suppressed = n, "{message} ({n} similar lines suppressed)"),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_per_interval_with_the_count_held_back() {
        let l = WarnLimit::new(Duration::from_millis(50));
        assert_eq!(l.admit("a"), Some(0));
        assert_eq!(l.admit("a"), None);
        assert_eq!(l.admit("a"), None);
        assert_eq!(l.admit("b"), Some(0), "keys are apart");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(l.admit("a"), Some(2));
        assert_eq!(l.admit("a"), None);
    }
}
