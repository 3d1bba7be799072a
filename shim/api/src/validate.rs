//! Input validation for everything that arrives over the API. Each check
//! returns a message that names the offending input.

/// Language runtimes this build can run.
pub const RUNTIMES: &[&str] = &["python3", "node"];
/// Handler of Python functions deployed without one.
pub const DEFAULT_HANDLER: &str = "main.handler";
/// Handler of Node.js functions deployed without one.
pub const DEFAULT_NODE_HANDLER: &str = "index.handler";

/// The handler a function of `runtime` gets when it names none.
pub fn default_handler(runtime: &str) -> &'static str {
    match runtime {
        "node" => DEFAULT_NODE_HANDLER,
        _ => DEFAULT_HANDLER,
    }
}

/// `fork` or `specialized`; fork needs a runtime that can fork.
pub fn mode(m: &str, runtime: &str, can_fork: bool) -> Result<ember_proto::Mode, String> {
    match m {
        "specialized" => Ok(ember_proto::Mode::Specialized),
        "fork" if can_fork => Ok(ember_proto::Mode::Fork),
        "fork" => Err(format!(
            "mode \"fork\" is not available for runtime {runtime}: it cannot fork a warm interpreter; use \"specialized\""
        )),
        other => Err(format!(
            "invalid mode {other:?}: expected \"fork\" or \"specialized\""
        )),
    }
}
pub const MAX_TIMEOUT_MS: u64 = 900_000;

pub fn function_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid function name {name:?}: use 1-64 letters, digits, '-' or '_', starting with a letter or digit"
        ))
    }
}

pub fn runtime(rt: &str) -> Result<(), String> {
    if RUNTIMES.contains(&rt) {
        Ok(())
    } else {
        Err(format!(
            "unknown runtime {rt:?} (available: {})",
            RUNTIMES.join(", ")
        ))
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

/// Python: `module.function`, where module may be dotted
/// (`pkg.mod.function`). Node.js: `path/to/file.function`, the file under
/// the code root without its extension.
pub fn handler(h: &str, language: ember_runtimes::Language) -> Result<(), String> {
    let ok = h.len() <= 256
        && match language {
            ember_runtimes::Language::Python => h.contains('.') && h.split('.').all(is_identifier),
            ember_runtimes::Language::Node => match h.rsplit_once('.') {
                Some((file, func)) => {
                    is_identifier(func)
                        && !file.is_empty()
                        && file.split('/').all(|part| {
                            !part.is_empty()
                                && part != "."
                                && part != ".."
                                && part.bytes().all(|b| {
                                    b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.'
                                })
                        })
                }
                None => false,
            },
        };
    if ok {
        Ok(())
    } else {
        let example = match language {
            ember_runtimes::Language::Python => DEFAULT_HANDLER,
            ember_runtimes::Language::Node => DEFAULT_NODE_HANDLER,
        };
        Err(format!(
            "invalid handler {h:?}: expected {}, e.g. {example}",
            match language {
                ember_runtimes::Language::Python => "module.function",
                ember_runtimes::Language::Node =>
                    "file.function (file relative to the code root, no extension)",
            }
        ))
    }
}

pub fn profile(name: &str) -> Result<(), String> {
    ember_profiles::Profile::by_name(name)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Allowed ranges of the per-function limits (inclusive).
pub const MEMORY_MB: (u64, u64) = (16, 65_536);
pub const PIDS: (u64, u64) = (1, 32_768);
pub const CPU_SHARES: (u64, u64) = (2, 262_144);

fn in_range(what: &str, v: u64, (lo, hi): (u64, u64)) -> Result<(), String> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(format!("invalid {what} {v}: must be {lo}..={hi}"))
    }
}

/// Per-function limits; output and event caps may not exceed the daemon's.
/// The most a function may ask for: the operator's caps (emberd flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionCaps {
    pub memory_mb: u64,
    pub pids: u64,
    pub cpu_shares: u64,
    pub max_output_bytes: u64,
    pub max_event_bytes: u64,
}

/// `v` within the absolute range `(lo, hi)` and under the operator's `cap`
/// (named by its emberd `flag`).
fn capped(what: &str, v: u64, (lo, hi): (u64, u64), cap: u64, flag: &str) -> Result<(), String> {
    in_range(what, v, (lo, hi))?;
    if v > cap {
        return Err(format!(
            "invalid {what} {v}: this emberd allows at most {cap} (emberd {flag})"
        ));
    }
    Ok(())
}

pub fn limits(l: &crate::registry::FunctionLimits, caps: &FunctionCaps) -> Result<(), String> {
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

pub fn timeout_ms(t: u64) -> Result<(), String> {
    if (1..=MAX_TIMEOUT_MS).contains(&t) {
        Ok(())
    } else {
        Err(format!(
            "invalid timeout_ms {t}: must be 1..={MAX_TIMEOUT_MS}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(function_name("hello-world_2").is_ok());
        for bad in ["", "-x", "a/b", "a b", "..", &"x".repeat(65), "é"] {
            assert!(function_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn handlers() {
        use ember_runtimes::Language::{Node, Python};
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
        assert_eq!(mode("fork", "python3", true), Ok(ember_proto::Mode::Fork));
        assert_eq!(
            mode("specialized", "node", false),
            Ok(ember_proto::Mode::Specialized)
        );
        assert!(mode("fork", "node", false)
            .unwrap_err()
            .contains("cannot fork"));
        assert!(mode("forked", "python3", true)
            .unwrap_err()
            .contains("invalid mode"));
    }

    #[test]
    fn runtimes_and_timeouts() {
        assert!(runtime("python3").is_ok());
        assert!(runtime("node").is_ok());
        assert_eq!(default_handler("node"), "index.handler");
        assert!(runtime("cobol").unwrap_err().contains("python3"));
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
    fn profiles_and_limits() {
        assert!(profile("strict").is_ok());
        assert!(profile("lax").unwrap_err().contains("default, strict"));
        let ok = crate::registry::FunctionLimits::default();
        assert!(limits(&ok, &caps()).is_ok());
        for (bad, word) in [
            (
                crate::registry::FunctionLimits { memory_mb: 8, ..ok },
                "memory_mb",
            ),
            (crate::registry::FunctionLimits { pids: 0, ..ok }, "pids"),
            (
                crate::registry::FunctionLimits {
                    cpu_shares: 1,
                    ..ok
                },
                "cpu_shares",
            ),
            (
                crate::registry::FunctionLimits {
                    max_output_bytes: 2 << 20,
                    ..ok
                },
                "max_output_bytes",
            ),
            (
                crate::registry::FunctionLimits {
                    max_event_bytes: 0,
                    ..ok
                },
                "max_event_bytes",
            ),
        ] {
            let err = limits(&bad, &caps()).unwrap_err();
            assert!(err.contains(word), "{err}");
        }
    }

    #[test]
    fn the_operators_caps_bound_what_a_deploy_may_ask() {
        let ok = crate::registry::FunctionLimits::default();
        for (bad, flag) in [
            (
                crate::registry::FunctionLimits {
                    memory_mb: 65_536,
                    ..ok
                },
                "--max-function-memory-mb",
            ),
            (
                crate::registry::FunctionLimits { pids: 32_768, ..ok },
                "--max-function-pids",
            ),
            (
                crate::registry::FunctionLimits {
                    cpu_shares: 262_144,
                    ..ok
                },
                "--max-function-cpu-shares",
            ),
        ] {
            let err = limits(&bad, &caps()).unwrap_err();
            assert!(err.contains(flag) && err.contains("at most"), "{err}");
        }
        // At the cap is fine.
        let at = crate::registry::FunctionLimits {
            memory_mb: 4096,
            pids: 1024,
            cpu_shares: 4096,
            ..ok
        };
        assert!(limits(&at, &caps()).is_ok());
    }
}
