//! Sandboxes from the outside: adopting one made by someone else
//! (`ember-runtime` under containerd), taking adopted ones back after a
//! restart, thawing one for its owner, and the kill switch.

use crate::adopted::{pid_start, AdoptedRecord, AdoptedRecords};
use crate::daemon::Daemon;
use crate::pool::KillError;
use ember_api::pool::{AdoptRequest, KilledInvocation, SandboxState};
use ember_api::{ErrorCode, Language};
use std::sync::Arc;
use std::time::Duration;

/// This emberd's version: `ember-runtime` registers sandboxes only with
/// an emberd of its own (the workspace's one version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long an adopted sandbox's agent may take to be ready.
const ADOPT_READY: Duration = Duration::from_secs(30);

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
    #[error("ember-runtime {} registered sandbox {id:?}, but this emberd is {VERSION}: install ember-runtime and emberd of the same version (scripts/setup)", .runtime.as_deref().unwrap_or("of a version before 0.1.0 (it sent none)"))]
    VersionMismatch { id: String, runtime: Option<String> },
    #[error("sandbox {id:?}: process {pid} is not the one adopted (it ended, its pid was reused)")]
    PidChanged { id: String, pid: u32 },
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
            AdoptError::VersionMismatch { .. } => ErrorCode::VersionMismatch,
            AdoptError::PidChanged { .. } => ErrorCode::SandboxFailed,
            AdoptError::NoPool(_) => ErrorCode::PoolNotFound,
            AdoptError::Sandbox { .. } => ErrorCode::SandboxFailed,
            AdoptError::Closing(_) => ErrorCode::ShuttingDown,
        }
    }
}

/// Why a sandbox was not thawed.
#[derive(Debug, thiserror::Error)]
pub enum ThawError {
    #[error("no sandbox {0:?}; see GET /v1/sandboxes")]
    NoSandbox(String),
    #[error("thawing sandbox {id:?}: {source}")]
    Freezer {
        id: String,
        source: ember_runtimes::RuntimeError,
    },
}

impl ThawError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ThawError::NoSandbox(_) => ErrorCode::SandboxNotFound,
            ThawError::Freezer { .. } => ErrorCode::SandboxFailed,
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

/// The id and paths of a registration are usable.
fn check_request(req: &AdoptRequest) -> Result<(), AdoptError> {
    if !valid_id(&req.id) {
        return Err(AdoptError::InvalidId(req.id.clone()));
    }
    if !req.socket.starts_with('/') || !req.cgroups_path.starts_with('/') {
        return Err(AdoptError::NotAbsolute {
            socket: req.socket.clone(),
            cgroups_path: req.cgroups_path.clone(),
        });
    }
    Ok(())
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
    /// listening on `req.socket`, into the pool of its runtime, and
    /// remember it for the next emberd. Only from an `ember-runtime` of
    /// this emberd's version.
    pub async fn adopt(&self, req: &AdoptRequest) -> Result<(), AdoptError> {
        if req.version.as_deref() != Some(VERSION) {
            return Err(AdoptError::VersionMismatch {
                id: req.id.clone(),
                runtime: req.version.clone(),
            });
        }
        let pid_start = pid_start(req.pid).unwrap_or(0);
        self.take_in(req).await?;
        let record = AdoptedRecord {
            request: req.clone(),
            pid_start,
        };
        if let Err(e) = self.adopted_records().save(&record) {
            tracing::warn!(sandbox = %req.id, "{e}; a restart of emberd will not take it back");
        }
        Ok(())
    }

    /// Check `req` and put the sandbox in its runtime's pool.
    async fn take_in(&self, req: &AdoptRequest) -> Result<(), AdoptError> {
        check_request(req)?;
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
        let sb = ember_runtimes::Sandbox::adopt(&ext, &self.cgroups(), ADOPT_READY)
            .await
            .map_err(|source| AdoptError::Sandbox {
                id: req.id.clone(),
                source,
            })?;
        pool.adopt(sb).map_err(AdoptError::Closing)
    }

    /// Where adopted sandboxes are remembered.
    pub(crate) fn adopted_records(&self) -> AdoptedRecords {
        AdoptedRecords::new(&self.settings.state_dir)
    }

    /// Take back the sandboxes a previous emberd on this state dir had
    /// adopted (their agents wait for the next emberd), all at once;
    /// forget those that are gone. Returns how many came back.
    pub async fn readopt(self: &Arc<Self>) -> usize {
        let records = self.adopted_records();
        let mut tasks = tokio::task::JoinSet::new();
        for record in records.load() {
            let daemon = self.clone();
            tasks.spawn(async move { daemon.readopt_one(record).await });
        }
        let mut back = 0;
        while let Some(r) = tasks.join_next().await {
            back += usize::from(matches!(r, Ok(true)));
        }
        back
    }

    /// Take back one remembered sandbox, or forget it.
    async fn readopt_one(&self, record: AdoptedRecord) -> bool {
        let req = &record.request;
        let res = match pid_start(req.pid) == Some(record.pid_start) {
            true => self.take_in(req).await,
            false => Err(AdoptError::PidChanged {
                id: req.id.clone(),
                pid: req.pid,
            }),
        };
        match res {
            Ok(()) => {
                tracing::info!(sandbox = %req.id, "took back a sandbox adopted before the restart");
                true
            }
            Err(e) => {
                tracing::info!(sandbox = %req.id, "not taking back a sandbox adopted before the restart: {e}");
                self.adopted_records().remove(&req.id);
                false
            }
        }
    }

    /// Thaw sandbox `id` for its owner (before an `exec` into it or a
    /// signal to it) and keep it thawed from now on.
    pub fn thaw(&self, id: &str) -> Result<SandboxState, ThawError> {
        for pool in self.pools() {
            if let Some(res) = pool.thaw(id) {
                return res.map_err(|source| ThawError::Freezer {
                    id: id.to_string(),
                    source,
                });
            }
        }
        Err(ThawError::NoSandbox(id.to_string()))
    }

    /// End the invocation sandbox `id` runs, sandbox and all. A session's
    /// sandbox runs only its session's calls: the one running is stopped
    /// (and the session with it); between calls there is nothing to kill
    /// (`DELETE /v1/sessions/{id}` closes a session).
    pub fn kill(&self, id: &str) -> Result<KilledInvocation, KillSwitchError> {
        if let Some(s) = self
            .sessions
            .list(None)
            .into_iter()
            .find(|s| s.sandbox == id)
        {
            let invocation = s.kill_call().map_err(|state| KillError::NotRunning {
                sandbox: id.to_string(),
                state,
            })?;
            return Ok(KilledInvocation {
                sandbox: id.to_string(),
                function: s.func.name.clone(),
                invocation,
            });
        }
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
    fn a_mismatched_version_names_both() {
        let e = super::AdoptError::VersionMismatch {
            id: "c1".into(),
            runtime: Some("0.0.9".into()),
        };
        let m = e.to_string();
        assert!(m.contains("0.0.9") && m.contains(super::VERSION), "{m}");
        assert_eq!(e.code(), ember_api::ErrorCode::VersionMismatch);
        let m = super::AdoptError::VersionMismatch {
            id: "c1".into(),
            runtime: None,
        }
        .to_string();
        assert!(m.contains("sent none") && m.contains(super::VERSION), "{m}");
    }

    #[test]
    fn sandbox_ids_are_short_and_plain() {
        assert!(super::valid_id("ember-abc_1.2"));
        for bad in ["", "a/b", "a b", &"x".repeat(129)] {
            assert!(!super::valid_id(bad), "{bad:?}");
        }
    }
}
