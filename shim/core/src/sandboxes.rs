//! Sandboxes from the outside: adopting one made by someone else
//! (`ember-runtime` under containerd) and the kill switch.

use crate::daemon::Daemon;
use crate::pool::KillError;
use ember_api::pool::{AdoptRequest, KilledInvocation};
use ember_api::{ErrorCode, Language};
use std::time::Duration;

/// Why a sandbox could not be adopted.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("invalid sandbox id {0:?}: 1-128 of A-Z a-z 0-9 - _ .")]
    InvalidId(String),
    #[error("socket {socket:?} and cgroups_path {cgroups_path:?} must be absolute")]
    NotAbsolute {
        socket: String,
        cgroups_path: String,
    },
    #[error("a sandbox {0:?} is already in a pool")]
    Exists(String),
    #[error("no pool for runtime {0:?}")]
    NoPool(String),
    #[error("adopting sandbox {id:?}: {source}")]
    Sandbox {
        id: String,
        source: ember_runtimes::RuntimeError,
    },
    #[error(transparent)]
    Closing(crate::pool::PoolError),
}

impl AdoptError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AdoptError::InvalidId(_) | AdoptError::NotAbsolute { .. } => ErrorCode::InvalidRequest,
            AdoptError::Exists(_) => ErrorCode::SandboxExists,
            AdoptError::NoPool(_) => ErrorCode::PoolNotFound,
            AdoptError::Sandbox { .. } => ErrorCode::SandboxFailed,
            AdoptError::Closing(_) => ErrorCode::ShuttingDown,
        }
    }
}

/// Why the kill switch did nothing.
#[derive(Debug, thiserror::Error)]
pub enum KillSwitchError {
    #[error("no sandbox {0:?}; see GET /v1/sandboxes")]
    NoSandbox(String),
    #[error(transparent)]
    NotRunning(#[from] KillError),
}

impl KillSwitchError {
    pub fn code(&self) -> ErrorCode {
        match self {
            KillSwitchError::NoSandbox(_) => ErrorCode::SandboxNotFound,
            KillSwitchError::NotRunning(_) => ErrorCode::NotRunning,
        }
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Daemon {
    /// Take in a sandbox made by someone else, with ember's agent
    /// listening on `req.socket`, into the pool of its runtime.
    pub async fn adopt(&self, req: &AdoptRequest) -> Result<(), AdoptError> {
        if !valid_id(&req.id) {
            return Err(AdoptError::InvalidId(req.id.clone()));
        }
        if !req.socket.starts_with('/') || !req.cgroups_path.starts_with('/') {
            return Err(AdoptError::NotAbsolute {
                socket: req.socket.clone(),
                cgroups_path: req.cgroups_path.clone(),
            });
        }
        if self
            .pools()
            .any(|p| p.sandboxes().iter().any(|s| s.id == req.id))
        {
            return Err(AdoptError::Exists(req.id.clone()));
        }
        let pool = Language::by_runtime(&req.runtime)
            .and_then(|l| self.pool(l, None))
            .ok_or_else(|| AdoptError::NoPool(req.runtime.clone()))?;
        let ext = ember_runtimes::ExternalSandbox {
            id: req.id.clone(),
            pid: req.pid,
            socket: req.socket.clone().into(),
            cgroups_path: req.cgroups_path.clone(),
        };
        let sb = ember_runtimes::Sandbox::adopt(&ext, &self.cgroups(), Duration::from_secs(30))
            .await
            .map_err(|source| AdoptError::Sandbox {
                id: req.id.clone(),
                source,
            })?;
        pool.adopt(sb).map_err(AdoptError::Closing)
    }

    /// End the invocation sandbox `id` runs, sandbox and all.
    pub fn kill(&self, id: &str) -> Result<KilledInvocation, KillSwitchError> {
        for pool in self.pools() {
            if let Some(killed) = pool.kill(id)? {
                return Ok(killed);
            }
        }
        Err(KillSwitchError::NoSandbox(id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sandbox_ids_are_short_and_plain() {
        assert!(super::valid_id("ember-abc_1.2"));
        for bad in ["", "a/b", "a b", &"x".repeat(129)] {
            assert!(!super::valid_id(bad), "{bad:?}");
        }
    }
}
