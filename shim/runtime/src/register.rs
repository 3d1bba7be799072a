//! After a successful `start`: a container annotated `dev.ember.sandbox`
//! (not a pod's pause container) registers with emberd (`POST
//! /v1/sandboxes`, with `ember-runtime`'s version, which emberd must
//! share), which connects to its agent and adopts it into the runtime's
//! pool.

use crate::delegate::StateError;
use crate::emberd::{post, EmberdError};
use crate::sandbox_dir::{SandboxDir, SandboxDirError};
use crate::sandbox_runtime;
use crate::systemd_cgroup::{cgroupfs_path, CgroupPathError};
use ember_api::pool::AdoptRequest;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long emberd may take to adopt a sandbox (it waits up to 30 s for
/// the agent to be ready).
const ADOPT_WITHIN: Duration = Duration::from_secs(45);

/// Why a started sandbox could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot read {bundle}/config.json")]
    Config { bundle: PathBuf },
    #[error("{bundle}/config.json has no linux.cgroupsPath: emberd freezes and limits a sandbox through its cgroup")]
    NoCgroupsPath { bundle: PathBuf },
    #[error(transparent)]
    CgroupPath(#[from] CgroupPathError),
    #[error(transparent)]
    Dir(#[from] SandboxDirError),
    #[error(transparent)]
    Emberd(#[from] EmberdError),
    /// emberd's error message.
    #[error("{0}")]
    Refused(String),
}

/// After a successful `start`: if the container is an ember sandbox, tell
/// emberd to adopt it. `state` is the delegate's `state` JSON of it, `dir`
/// its sandbox directory.
pub fn register_if_sandbox(
    state: &Value,
    socket: &Path,
    dir: &SandboxDir,
) -> Result<Option<String>, crate::RuntimeCliError> {
    let Some(runtime) = sandbox_runtime(&state["annotations"]) else {
        return Ok(None);
    };
    let id = state["id"].as_str().unwrap_or_default().to_string();
    register(state, runtime, &id, socket, dir).map_err(|source| {
        crate::RuntimeCliError::Register {
            id: id.clone(),
            socket: socket.to_path_buf(),
            source: Box::new(source),
        }
    })?;
    Ok(Some(id))
}

fn register(
    state: &Value,
    runtime: &str,
    id: &str,
    socket: &Path,
    dir: &SandboxDir,
) -> Result<(), RegisterError> {
    let bundle = PathBuf::from(state["bundle"].as_str().unwrap_or_default());
    let cgroups_path = cgroupfs_path(&bundle_cgroups_path(&bundle)?)?;
    // For `exec` and `kill` to thaw it when emberd cannot.
    dir.save_cgroup(&cgroups_path)?;
    let req = AdoptRequest {
        id: id.to_string(),
        runtime: runtime.to_string(),
        pid: state["pid"].as_u64().unwrap_or(0) as u32,
        socket: dir.socket().to_string_lossy().into_owned(),
        cgroups_path,
        version: Some(env!("CARGO_PKG_VERSION").to_string()),
    };
    let body = serde_json::to_string(&req).unwrap_or_default();
    let answer = post(socket, "/v1/sandboxes", body, ADOPT_WITHIN)?;
    if !answer.status.is_success() {
        return Err(RegisterError::Refused(answer.error_message()));
    }
    Ok(())
}

/// The `linux.cgroupsPath` of the bundle's config, as the runtime got it.
fn bundle_cgroups_path(bundle: &Path) -> Result<String, RegisterError> {
    let config: Value = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| RegisterError::Config {
            bundle: bundle.to_path_buf(),
        })?;
    config["linux"]["cgroupsPath"]
        .as_str()
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .ok_or_else(|| RegisterError::NoCgroupsPath {
            bundle: bundle.to_path_buf(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CRI_CONTAINER_TYPE, SANDBOX_ANNOTATION};
    use serde_json::json;

    #[test]
    fn registration_names_what_it_lacks() {
        let bundle = tempfile::tempdir().unwrap();
        let dir = SandboxDir::of(&bundle.path().join("a"), None, "x");
        dir.create().unwrap();
        let state = json!({
            "id": "x", "pid": 1, "bundle": bundle.path(),
            "annotations": { SANDBOX_ANNOTATION: "python3" },
        });
        let nowhere = Path::new("/nonexistent.sock");
        let e = register_if_sandbox(&state, nowhere, &dir)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
        let write = |cgroups_path: &str| {
            let config = json!({"linux": {"cgroupsPath": cgroups_path}});
            std::fs::write(bundle.path().join("config.json"), config.to_string()).unwrap();
        };
        write("k8s.io/x");
        let e = register_if_sandbox(&state, nowhere, &dir)
            .unwrap_err()
            .to_string();
        assert!(e.contains("slice:prefix:name"), "{e}");
        // A systemd path resolves; then emberd is not there.
        write("system.slice:ctr:x");
        let e = register_if_sandbox(&state, nowhere, &dir)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot connect to emberd"), "{e}");
        assert_eq!(dir.cgroup().as_deref(), Some("/system.slice/ctr-x.scope"));
        let plain = json!({ "id": "y", "pid": 1, "bundle": "/x", "annotations": {} });
        assert_eq!(register_if_sandbox(&plain, nowhere, &dir).unwrap(), None);
        let pause = json!({ "id": "p", "pid": 1, "bundle": "/x",
            "annotations": { SANDBOX_ANNOTATION: "python3", CRI_CONTAINER_TYPE: "sandbox" } });
        assert_eq!(register_if_sandbox(&pause, nowhere, &dir).unwrap(), None);
    }
}
