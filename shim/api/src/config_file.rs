//! The configuration file (`/etc/ember/ember.toml` unless `--config` says
//! otherwise): per language runtime, the warm pool's bounds, how it follows
//! demand and its default backend; and how specialized sandboxes are
//! recycled. Flags give the defaults; a runtime's section overrides them
//! for that runtime. Unknown keys are errors, so a typo never passes
//! silently.
//!
//! ```toml
//! adopted_only = false  # true: serve adopted sandboxes only (emberd --adopted-only)
//!
//! [pools.python3]
//! backend = "runc"      # default backend of python3 functions
//! min_warm = 2          # warm sandboxes kept even when idle
//! max_warm = 6          # most warm sandboxes kept ahead of demand
//! max = 8               # most sandboxes at once (warm and busy)
//! headroom = 1          # warm sandboxes kept beyond those in use
//! idle_trim_ms = 10000  # unused this long: shrink back toward min_warm
//! max_queue = 32        # most invocations waiting; more get 429 (default 4 × max)
//!
//! [pools.node]
//! min_warm = 1
//!
//! [specialized]
//! max_invocations = 10000  # recycle a bound sandbox after this many
//! idle_ms = 300000         # or after this long unused
//!
//! [ember_runtime]          # the OCI runtime CLI for containerd and Docker
//! delegate = "runc"        # or "runsc"
//! ```

use crate::kinds::{Backend, Language};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where emberd looks when `--config` is not given. A missing file there
/// is fine (flags and built-in defaults apply); a missing file named by
/// `--config` is an error.
pub const DEFAULT_PATH: &str = "/etc/ember/ember.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {problem}")]
    Invalid {
        path: PathBuf,
        problem: ConfigProblem,
    },
}

/// What is wrong in a config file's text.
#[derive(Debug, thiserror::Error)]
pub enum ConfigProblem {
    #[error(transparent)]
    Toml(#[from] toml::de::Error),
    #[error("[pools.{0}]: unknown runtime (known: {known})", known = Language::names())]
    UnknownRuntime(String),
    #[error(
        "[pools.{runtime}] backend {backend:?}: unknown (known: {})",
        Backend::names()
    )]
    UnknownBackend { runtime: String, backend: String },
    #[error("[pools.{runtime}] min_warm {min_warm} is above max_warm {max_warm}")]
    WarmBounds {
        runtime: String,
        min_warm: usize,
        max_warm: usize,
    },
    #[error("[pools.{0}] max must be at least 1")]
    ZeroMax(String),
    #[error("[specialized] max_invocations must be at least 1")]
    ZeroMaxInvocations,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `true`: emberd serves invocations from adopted sandboxes only and
    /// creates none of its own (`emberd --adopted-only`).
    #[serde(default)]
    pub adopted_only: Option<bool>,
    /// Per language runtime (`python3`, `node`).
    #[serde(default)]
    pub pools: BTreeMap<String, PoolSection>,
    #[serde(default)]
    pub specialized: SpecializedSection,
    /// What `ember-runtime` (the OCI runtime CLI) hands commands to.
    #[serde(default)]
    pub ember_runtime: EmberRuntimeSection,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmberRuntimeSection {
    /// The runtime binary (default `runc`; `runsc` for gVisor).
    pub delegate: Option<String>,
    /// Global flags put before the caller's (default for runsc:
    /// `--platform=ptrace --network=none`).
    pub delegate_args: Option<Vec<String>>,
}

/// One runtime's pool settings; absent keys keep the flags' values.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    pub backend: Option<String>,
    pub min_warm: Option<usize>,
    pub max_warm: Option<usize>,
    pub max: Option<usize>,
    pub headroom: Option<usize>,
    pub idle_trim_ms: Option<u64>,
    /// Most invocations waiting for a sandbox; past it they are refused
    /// with `429 overloaded` (emberd --max-queue; default 4 × max).
    pub max_queue: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpecializedSection {
    pub max_invocations: Option<u64>,
    pub idle_ms: Option<u64>,
}

impl ConfigFile {
    /// Load the file `EMBER_CONFIG` names, else the default path (which
    /// may be absent); for programs without a `--config` flag.
    pub fn load_from_env() -> Result<ConfigFile, ConfigFileError> {
        let named = std::env::var_os("EMBER_CONFIG").map(PathBuf::from);
        ConfigFile::load(named.as_deref())
    }

    /// Load `explicit` (must exist) or the default path (may be absent).
    pub fn load(explicit: Option<&Path>) -> Result<ConfigFile, ConfigFileError> {
        let (path, required) = match explicit {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ConfigFile::default())
            }
            Err(source) => return Err(ConfigFileError::Read { path, source }),
        };
        ConfigFile::parse(&text).map_err(|problem| ConfigFileError::Invalid { path, problem })
    }

    /// Parse and check the file's text.
    pub fn parse(text: &str) -> Result<ConfigFile, ConfigProblem> {
        let cfg: ConfigFile = toml::from_str(text)?;
        for (rt, p) in &cfg.pools {
            if Language::by_runtime(rt).is_none() {
                return Err(ConfigProblem::UnknownRuntime(rt.clone()));
            }
            if let Some(b) = &p.backend {
                if Backend::by_name(b).is_none() {
                    return Err(ConfigProblem::UnknownBackend {
                        runtime: rt.clone(),
                        backend: b.clone(),
                    });
                }
            }
            if let (Some(lo), Some(hi)) = (p.min_warm, p.max_warm) {
                if lo > hi {
                    return Err(ConfigProblem::WarmBounds {
                        runtime: rt.clone(),
                        min_warm: lo,
                        max_warm: hi,
                    });
                }
            }
            if p.max == Some(0) {
                return Err(ConfigProblem::ZeroMax(rt.clone()));
            }
        }
        if cfg.specialized.max_invocations == Some(0) {
            return Err(ConfigProblem::ZeroMaxInvocations);
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("config_file.rs");
        let start = doc.find("//! ```toml").unwrap();
        let end = doc[start + 10..].find("//! ```").unwrap() + start + 10;
        let text: String = doc[start..end]
            .lines()
            .skip(1)
            .map(|l| l.trim_start_matches("//!").trim_start())
            .collect::<Vec<_>>()
            .join("\n");
        let cfg = ConfigFile::parse(&text).unwrap();
        let py = &cfg.pools["python3"];
        assert_eq!(py.min_warm, Some(2));
        assert_eq!(py.max_warm, Some(6));
        assert_eq!(py.backend.as_deref(), Some("runc"));
        assert_eq!(py.max_queue, Some(32));
        assert_eq!(cfg.pools["node"].min_warm, Some(1));
        assert_eq!(cfg.specialized.max_invocations, Some(10000));
        assert_eq!(cfg.adopted_only, Some(false));
        let only = ConfigFile::parse("adopted_only = true\n").unwrap();
        assert_eq!(only.adopted_only, Some(true));
    }

    #[test]
    fn mistakes_are_named() {
        let e = ConfigFile::parse("[pools.python3]\nmin_wrm = 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("min_wrm"), "{e}");
        let e = ConfigFile::parse("[pools.ruby]\nmin_warm = 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ruby"), "{e}");
        let e = ConfigFile::parse("[pools.node]\nbackend = \"kata\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("kata"), "{e}");
        let e = ConfigFile::parse("[pools.node]\nmin_warm = 3\nmax_warm = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("min_warm 3"), "{e}");
        let e = ConfigFile::parse("[specialized]\nmax_invocations = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_invocations"), "{e}");
        let e = ConfigFile::parse("pools = 3").unwrap_err().to_string();
        assert!(!e.is_empty());
    }

    #[test]
    fn a_missing_default_file_is_fine_but_a_named_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let e = ConfigFile::load(Some(&missing)).unwrap_err().to_string();
        assert!(e.contains("nope.toml"), "{e}");
        std::fs::write(dir.path().join("ok.toml"), "[pools.node]\nmax = 3\n").unwrap();
        let cfg = ConfigFile::load(Some(&dir.path().join("ok.toml"))).unwrap();
        assert_eq!(cfg.pools["node"].max, Some(3));
    }
}
