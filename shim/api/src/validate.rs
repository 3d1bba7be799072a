//! Input checks for everything that arrives over the API. Each check
//! fails with an [`Invalid`] that names the offending input; the daemon
//! answers it as `invalid_request`.

use crate::function::{Concurrency, FunctionLimits};
use crate::kinds::{Language, Mode};

/// Why an input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("invalid function name {0:?}: use 1-64 letters, digits, '-' or '_', starting with a letter or digit")]
    FunctionName(String),
    #[error("unknown runtime {0:?} (available: {known})", known = Language::names())]
    Runtime(String),
    #[error("mode \"fork\" is not available for runtime {0}: it cannot fork a warm interpreter; use \"specialized\"")]
    CannotFork(Language),
    #[error("invalid mode {0:?}: expected \"fork\" or \"specialized\"")]
    Mode(String),
    #[error("invalid handler {handler:?}: expected {shape}, e.g. {example}")]
    Handler {
        handler: String,
        shape: &'static str,
        example: &'static str,
    },
    #[error("invalid {what} {value}: must be {lo}..={hi}")]
    OutOfRange {
        what: &'static str,
        value: u64,
        lo: u64,
        hi: u64,
    },
    #[error("max_queue {0} without max_concurrency: a function's queue bounds the invocations waiting for one of its slots; set max_concurrency too")]
    QueueWithoutConcurrency(u32),
    #[error("invalid {what} {value}: this emberd allows at most {cap} (emberd {flag})")]
    OverCap {
        what: &'static str,
        value: u64,
        cap: u64,
        flag: &'static str,
    },
}

/// The runtime named `rt`.
pub fn runtime(rt: &str) -> Result<Language, Invalid> {
    Language::by_runtime(rt).ok_or_else(|| Invalid::Runtime(rt.to_string()))
}

/// `fork` or `specialized`; fork needs a runtime that can fork.
pub fn mode(m: &str, language: Language) -> Result<Mode, Invalid> {
    match Mode::by_name(m) {
        Some(Mode::Fork) if !language.can_fork() => Err(Invalid::CannotFork(language)),
        Some(mode) => Ok(mode),
        None => Err(Invalid::Mode(m.to_string())),
    }
}

pub const MAX_TIMEOUT_MS: u64 = 900_000;

pub fn function_name(name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Invalid::FunctionName(name.to_string()))
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

/// A Node.js handler's file part: a relative path without `.` or `..`.
fn is_node_file(file: &str) -> bool {
    !file.is_empty()
        && file.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        })
}

/// Python: `module.function`, where module may be dotted
/// (`pkg.mod.function`). Node.js: `path/to/file.function`, the file under
/// the code root without its extension.
pub fn handler(h: &str, language: Language) -> Result<(), Invalid> {
    let ok = h.len() <= 256
        && match language {
            Language::Python => h.contains('.') && h.split('.').all(is_identifier),
            Language::Node => h
                .rsplit_once('.')
                .is_some_and(|(file, func)| is_identifier(func) && is_node_file(file)),
        };
    if ok {
        return Ok(());
    }
    Err(Invalid::Handler {
        handler: h.to_string(),
        shape: match language {
            Language::Python => "module.function",
            Language::Node => "file.function (file relative to the code root, no extension)",
        },
        example: language.default_handler(),
    })
}

/// Allowed ranges of the per-function limits (inclusive).
pub const MEMORY_MB: (u64, u64) = (16, 65_536);
pub const PIDS: (u64, u64) = (1, 32_768);
pub const CPU_SHARES: (u64, u64) = (2, 262_144);

fn in_range(what: &'static str, value: u64, (lo, hi): (u64, u64)) -> Result<(), Invalid> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(Invalid::OutOfRange {
            what,
            value,
            lo,
            hi,
        })
    }
}

/// The most a function may ask for: the operator's caps (emberd flags).
/// Output and event caps may not exceed the daemon's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionCaps {
    pub memory_mb: u64,
    pub pids: u64,
    pub cpu_shares: u64,
    pub max_output_bytes: u64,
    pub max_event_bytes: u64,
}

/// `value` within the absolute range and under the operator's `cap`
/// (named by its emberd `flag`).
fn capped(
    what: &'static str,
    value: u64,
    range: (u64, u64),
    cap: u64,
    flag: &'static str,
) -> Result<(), Invalid> {
    in_range(what, value, range)?;
    if value > cap {
        return Err(Invalid::OverCap {
            what,
            value,
            cap,
            flag,
        });
    }
    Ok(())
}

pub fn limits(l: &FunctionLimits, caps: &FunctionCaps) -> Result<(), Invalid> {
    capped(
        "memory_mb",
        l.memory_mb,
        MEMORY_MB,
        caps.memory_mb,
        "--max-function-memory-mb",
    )?;
    capped("pids", l.pids, PIDS, caps.pids, "--max-function-pids")?;
    capped(
        "cpu_shares",
        l.cpu_shares,
        CPU_SHARES,
        caps.cpu_shares,
        "--max-function-cpu-shares",
    )?;
    in_range(
        "max_output_bytes",
        l.max_output_bytes,
        (0, caps.max_output_bytes),
    )?;
    in_range(
        "max_event_bytes",
        l.max_event_bytes,
        (1, caps.max_event_bytes),
    )
}

/// Allowed ranges of a function's own concurrency limit and queue bound.
pub const MAX_CONCURRENCY: (u64, u64) = (1, 10_000);
pub const MAX_QUEUE: (u64, u64) = (0, 100_000);

/// A function's concurrency limit and queue bound: each in range, and a
/// queue only behind a limit (nothing waits at a function without one).
pub fn concurrency(c: &Concurrency) -> Result<(), Invalid> {
    if let Some(n) = c.max_concurrency {
        in_range("max_concurrency", n.into(), MAX_CONCURRENCY)?;
    }
    match (c.max_concurrency, c.max_queue) {
        (None, Some(q)) => Err(Invalid::QueueWithoutConcurrency(q)),
        (_, Some(q)) => in_range("max_queue", q.into(), MAX_QUEUE),
        (_, None) => Ok(()),
    }
}

/// Allowed ranges of a function's session settings: a week at most, and
/// as many sessions as the daemon-wide cap allows.
pub const SESSION_SECONDS: (u64, u64) = (1, 7 * 24 * 3600);
pub const MAX_SESSIONS: (u64, u64) = (1, 10_000);

/// A function's session idle timeout, lifetime and limit, each in range.
pub fn session_policy(p: &crate::SessionPolicy) -> Result<(), Invalid> {
    if let Some(s) = p.session_idle_s {
        in_range("session_idle_s", s, SESSION_SECONDS)?;
    }
    if let Some(s) = p.session_lifetime_s {
        in_range("session_lifetime_s", s, SESSION_SECONDS)?;
    }
    if let Some(n) = p.max_sessions {
        in_range("max_sessions", n.into(), MAX_SESSIONS)?;
    }
    Ok(())
}

pub fn timeout_ms(t: u64) -> Result<(), Invalid> {
    in_range("timeout_ms", t, (1, MAX_TIMEOUT_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_needs_a_limit_before_a_queue() {
        let c = |max_concurrency, max_queue| Concurrency {
            max_concurrency,
            max_queue,
        };
        assert!(concurrency(&c(None, None)).is_ok());
        assert!(concurrency(&c(Some(1), Some(0))).is_ok());
        assert!(concurrency(&c(Some(2), None)).is_ok());
        let e = concurrency(&c(None, Some(3))).unwrap_err();
        assert_eq!(e, Invalid::QueueWithoutConcurrency(3));
        assert!(e.to_string().contains("max_concurrency"), "{e}");
        let e = concurrency(&c(Some(0), None)).unwrap_err().to_string();
        assert!(e.contains("max_concurrency 0"), "{e}");
        let e = concurrency(&c(Some(1), Some(100_001)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_queue 100001"), "{e}");
        assert_eq!(c(Some(3), None).queue_bound(), Some(12));
        assert_eq!(c(Some(3), Some(0)).queue_bound(), Some(0));
        assert_eq!(c(None, None).queue_bound(), None);
    }

    #[test]
    fn names() {
        assert!(function_name("hello-world_2").is_ok());
        for bad in ["", "-x", "a/b", "a b", "..", &"x".repeat(65), "é"] {
            assert!(function_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn handlers() {
        use crate::kinds::Language::{Node, Python};
        assert!(handler("main.handler", Python).is_ok());
        assert!(handler("pkg.sub.run_it", Python).is_ok());
        for bad in [
            "main",
            "main.",
            ".handler",
            "main.hand-ler",
            "os.system('x')",
            "a..b",
            "app/main.run",
        ] {
            assert!(handler(bad, Python).is_err(), "{bad:?} accepted");
        }
        assert!(handler("index.handler", Node).is_ok());
        assert!(handler("src/api-v2/app.main", Node).is_ok());
        for bad in [
            "index",
            "index.",
            "../up.handler",
            "a/../b.handler",
            "/abs.handler",
            "a//b.handler",
            "index.hand-ler",
            "in dex.handler",
        ] {
            assert!(handler(bad, Node).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn modes() {
        assert_eq!(mode("fork", Language::Python), Ok(Mode::Fork));
        assert_eq!(mode("specialized", Language::Node), Ok(Mode::Specialized));
        assert!(mode("fork", Language::Node)
            .unwrap_err()
            .to_string()
            .contains("cannot fork"));
        assert!(mode("forked", Language::Python)
            .unwrap_err()
            .to_string()
            .contains("invalid mode"));
    }

    #[test]
    fn runtimes_and_timeouts() {
        assert_eq!(runtime("python3"), Ok(Language::Python));
        assert_eq!(runtime("node"), Ok(Language::Node));
        assert_eq!(Language::Node.default_handler(), "index.handler");
        assert!(runtime("cobol")
            .unwrap_err()
            .to_string()
            .contains("python3"));
        assert_eq!(
            timeout_ms(0).unwrap_err().to_string(),
            "invalid timeout_ms 0: must be 1..=900000"
        );
        assert!(timeout_ms(0).is_err());
        assert!(timeout_ms(MAX_TIMEOUT_MS + 1).is_err());
        assert!(timeout_ms(3000).is_ok());
    }

    fn caps() -> FunctionCaps {
        FunctionCaps {
            memory_mb: 4096,
            pids: 1024,
            cpu_shares: 4096,
            max_output_bytes: 1 << 20,
            max_event_bytes: 6 << 20,
        }
    }

    #[test]
    fn limits_are_in_range() {
        let ok = FunctionLimits::default();
        assert!(limits(&ok, &caps()).is_ok());
        for (bad, word) in [
            (FunctionLimits { memory_mb: 8, ..ok }, "memory_mb"),
            (FunctionLimits { pids: 0, ..ok }, "pids"),
            (
                FunctionLimits {
                    cpu_shares: 1,
                    ..ok
                },
                "cpu_shares",
            ),
            (
                FunctionLimits {
                    max_output_bytes: 2 << 20,
                    ..ok
                },
                "max_output_bytes",
            ),
            (
                FunctionLimits {
                    max_event_bytes: 0,
                    ..ok
                },
                "max_event_bytes",
            ),
        ] {
            let err = limits(&bad, &caps()).unwrap_err().to_string();
            assert!(err.contains(word), "{err}");
        }
    }

    #[test]
    fn the_operators_caps_bound_what_a_deploy_may_ask() {
        let ok = FunctionLimits::default();
        for (bad, flag) in [
            (
                FunctionLimits {
                    memory_mb: 65_536,
                    ..ok
                },
                "--max-function-memory-mb",
            ),
            (FunctionLimits { pids: 32_768, ..ok }, "--max-function-pids"),
            (
                FunctionLimits {
                    cpu_shares: 262_144,
                    ..ok
                },
                "--max-function-cpu-shares",
            ),
        ] {
            let err = limits(&bad, &caps()).unwrap_err().to_string();
            assert!(err.contains(flag) && err.contains("at most"), "{err}");
        }
        // At the cap is fine.
        let at = FunctionLimits {
            memory_mb: 4096,
            pids: 1024,
            cpu_shares: 4096,
            ..ok
        };
        assert!(limits(&at, &caps()).is_ok());
    }
}
