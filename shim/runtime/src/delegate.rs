//! The runtime `ember-runtime` hands every command to (runc unless
//! configured): which binary and global flags, its argv, and its `state`
//! of a container.

use serde_json::Value;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The delegate's `state` of a container could not be had.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{binary} state {id}: {source}")]
    Run {
        binary: PathBuf,
        id: String,
        source: std::io::Error,
    },
    #[error("{binary} state {id}: {stderr}")]
    Failed {
        binary: PathBuf,
        id: String,
        stderr: String,
    },
    #[error("state of {id}: {source}")]
    Parse {
        id: String,
        source: serde_json::Error,
    },
}

/// The runtime `ember-runtime` hands every command to.
#[derive(Debug, Clone, PartialEq)]
pub struct Delegate {
    pub binary: PathBuf,
    /// Global flags put before the caller's (e.g. runsc's `--platform`).
    pub args: Vec<String>,
}

impl Delegate {
    /// `EMBER_RUNTIME_DELEGATE` (and `EMBER_RUNTIME_DELEGATE_ARGS`,
    /// space-separated), else the config file's `[ember_runtime]`, else runc.
    pub fn configured(file: &ember_api::config_file::ConfigFile) -> Delegate {
        let env_binary = std::env::var_os("EMBER_RUNTIME_DELEGATE").filter(|v| !v.is_empty());
        let env_args = std::env::var("EMBER_RUNTIME_DELEGATE_ARGS").ok();
        let section = &file.ember_runtime;
        let binary = env_binary
            .map(PathBuf::from)
            .or_else(|| section.delegate.clone().map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("runc"));
        let args = match env_args {
            Some(a) => a.split_whitespace().map(str::to_string).collect(),
            None if section.delegate_args.is_some() => {
                section.delegate_args.clone().unwrap_or_default()
            }
            // gVisor here needs ptrace and no network stack of its own.
            None if is_runsc(&binary) => {
                vec!["--platform=ptrace".into(), "--network=none".into()]
            }
            None => Vec::new(),
        };
        Delegate { binary, args }
    }

    /// Whether the delegate is gVisor's runsc (whose flags differ).
    pub fn is_runsc(&self) -> bool {
        is_runsc(&self.binary)
    }

    /// The delegate's `state` of container `id` (same `--root`).
    pub fn state(&self, global: &liboci_cli::GlobalOpts, id: &str) -> Result<Value, StateError> {
        let mut cmd = std::process::Command::new(&self.binary);
        cmd.args(&self.args);
        if let Some(root) = &global.root {
            cmd.arg("--root").arg(root);
        }
        let out = cmd
            .args(["state", id])
            .output()
            .map_err(|source| StateError::Run {
                binary: self.binary.clone(),
                id: id.to_string(),
                source,
            })?;
        if !out.status.success() {
            return Err(StateError::Failed {
                binary: self.binary.clone(),
                id: id.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        serde_json::from_slice(&out.stdout).map_err(|source| StateError::Parse {
            id: id.to_string(),
            source,
        })
    }

    /// The delegate's argv: its own global flags, then the caller's
    /// arguments unchanged but for ember's own `--ember-profile`.
    pub fn argv(&self, caller: &[OsString]) -> Vec<OsString> {
        let mut out: Vec<OsString> = self.args.iter().map(OsString::from).collect();
        let mut skip_value = false;
        for a in caller {
            if skip_value {
                skip_value = false;
                continue;
            }
            if a == "--ember-profile" {
                skip_value = true;
                continue;
            }
            if a.to_string_lossy().starts_with("--ember-profile=") {
                continue;
            }
            out.push(a.clone());
        }
        out
    }
}

fn is_runsc(binary: &Path) -> bool {
    binary.file_name().is_some_and(|n| n == "runsc")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delegate_is_runc_unless_configured() {
        let none = ember_api::config_file::ConfigFile::default();
        // Only meaningful when the environment does not name one.
        if std::env::var_os("EMBER_RUNTIME_DELEGATE").is_none() {
            let d = Delegate::configured(&none);
            assert_eq!(d.binary, PathBuf::from("runc"));
            assert!(d.args.is_empty());
            let mut file = none.clone();
            file.ember_runtime.delegate = Some("/usr/bin/runsc".into());
            let d = Delegate::configured(&file);
            assert_eq!(d.args, vec!["--platform=ptrace", "--network=none"]);
            let argv = d.argv(&[
                "--ember-profile".into(),
                "strict".into(),
                "--ember-profile=default".into(),
                "state".into(),
                "c1".into(),
            ]);
            assert_eq!(argv, ["--platform=ptrace", "--network=none", "state", "c1"]);
        }
    }
}
