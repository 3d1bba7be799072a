//! After a successful `start`: a container annotated `dev.ember.sandbox`
//! registers with emberd (`POST /v1/sandboxes`), which connects to its
//! agent and adopts it into the runtime's pool.

use crate::delegate::StateError;
use crate::{AGENT_RUN_DIR, SANDBOX_ANNOTATION};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Why a started sandbox could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot read {bundle}/config.json")]
    Config { bundle: PathBuf },
    #[error("the container has no cgroupfs cgroupsPath (the systemd cgroup driver is not supported for sandboxes)")]
    NoCgroupfsPath,
    #[error("{0}")]
    Runtime(std::io::Error),
    #[error("{0}")]
    Client(ember_api::client::ClientError),
    /// emberd's error message.
    #[error("{0}")]
    Refused(String),
}

/// Where emberd's API is: `EMBER_SOCKET`, else its default.
pub fn emberd_socket() -> PathBuf {
    std::env::var_os("EMBER_SOCKET")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/ember/ember.sock"))
}

/// After a successful `start`: if the container is an ember sandbox, tell
/// emberd to adopt it. `state` is the delegate's `state` JSON of it.
pub fn register_if_sandbox(
    state: &Value,
    socket: &Path,
) -> Result<Option<String>, crate::RuntimeCliError> {
    let Some(runtime) = state["annotations"][SANDBOX_ANNOTATION].as_str() else {
        return Ok(None);
    };
    let id = state["id"].as_str().unwrap_or_default().to_string();
    register(state, runtime, &id, socket).map_err(|source| crate::RuntimeCliError::Register {
        id: id.clone(),
        socket: socket.to_path_buf(),
        source: Box::new(source),
    })?;
    Ok(Some(id))
}

fn register(state: &Value, runtime: &str, id: &str, socket: &Path) -> Result<(), RegisterError> {
    let bundle = PathBuf::from(state["bundle"].as_str().unwrap_or_default());
    let config: Value = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| RegisterError::Config {
            bundle: bundle.clone(),
        })?;
    let cgroups_path = config["linux"]["cgroupsPath"]
        .as_str()
        .filter(|p| p.starts_with('/'))
        .ok_or(RegisterError::NoCgroupfsPath)?
        .to_string();
    let body = serde_json::json!({
        "id": id,
        "runtime": runtime,
        "pid": state["pid"].as_u64().unwrap_or(0),
        "socket": bundle.join(AGENT_RUN_DIR).join("agent.sock"),
        "cgroups_path": cgroups_path,
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RegisterError::Runtime)?;
    let client = ember_api::client::Client::new(socket);
    let answer = rt
        .block_on(client.request(
            hyper::Method::POST,
            "/v1/sandboxes",
            Some("application/json"),
            body.to_string(),
        ))
        .map_err(RegisterError::Client)?;
    if !answer.status.is_success() {
        return Err(RegisterError::Refused(answer.error_message()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn registration_needs_a_cgroupfs_path() {
        let bundle = tempfile::tempdir().unwrap();
        std::fs::write(
            bundle.path().join("config.json"),
            json!({"linux": {"cgroupsPath": "system.slice:ctr:x"}}).to_string(),
        )
        .unwrap();
        let state = json!({
            "id": "x", "pid": 1, "bundle": bundle.path(),
            "annotations": { SANDBOX_ANNOTATION: "python3" },
        });
        let e = register_if_sandbox(&state, Path::new("/nonexistent.sock"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("systemd cgroup driver"), "{e}");
        let plain = json!({ "id": "y", "pid": 1, "bundle": "/x", "annotations": {} });
        assert_eq!(
            register_if_sandbox(&plain, Path::new("/nonexistent.sock")).unwrap(),
            None
        );
    }
}
