//! Pools and their sandboxes, as `GET /v1/pools` and `GET /v1/sandboxes`
//! show them, and what `PUT /v1/pools/{runtime}` and `POST /v1/sandboxes`
//! take.

use crate::kinds::{Backend, Language};
use serde::{Deserialize, Serialize};

/// A pool's state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PoolStatus {
    pub runtime: Language,
    pub backend: Backend,
    /// Generic sandboxes wanted now (follows demand).
    pub target: usize,
    pub min_warm: usize,
    pub max_warm: usize,
    pub headroom: usize,
    pub max: usize,
    pub idle: usize,
    /// Of `idle`: bound to a function (specialized mode, function zygotes).
    pub bound: usize,
    pub busy: usize,
    pub creating: usize,
    /// Invocations admitted beyond what the pool can run at once (`max`,
    /// or the adopted sandboxes with `--adopted-only`): they wait.
    /// (Default 0: an older emberd does not say.)
    #[serde(default)]
    pub queued: usize,
    /// Most invocations that may wait; past it they are refused at once
    /// (`429 overloaded`).
    #[serde(default)]
    pub max_queue: usize,
    pub created_total: u64,
    pub destroyed_total: u64,
    pub create_failures_total: u64,
    pub warm_starts_total: u64,
    pub hot_starts_total: u64,
    pub cold_starts_total: u64,
    /// Bound sandboxes destroyed to make room, or after their invocation
    /// or idle limit.
    pub recycled_total: u64,
    /// External sandboxes (containerd's, through `ember-runtime`) taken in.
    pub adopted_total: u64,
    /// Invocations refused because the queue was full.
    #[serde(default)]
    pub refused_total: u64,
}

/// What a sandbox is doing.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    /// In the pool, waiting for an invocation.
    Idle,
    /// Running an invocation.
    Busy,
    /// Its invocation has answered; it is being put back in shape.
    Returning,
    /// Held by a session (`invocation` names it) until the session ends;
    /// destroyed then.
    Session,
}

impl SandboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Idle => "idle",
            SandboxState::Busy => "busy",
            SandboxState::Returning => "returning",
            SandboxState::Session => "session",
        }
    }
}

/// One sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SandboxStatus {
    pub id: String,
    pub runtime: Language,
    pub backend: Backend,
    pub state: SandboxState,
    pub pid: u32,
    pub age_ms: u64,
    pub invocations: u64,
    /// The function a bound sandbox serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// The invocation a busy sandbox runs (what `kill` would end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_ms: Option<u64>,
}

/// `?backend=` of the pool endpoints (default: emberd's first backend).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PoolQuery {
    pub backend: Option<String>,
}

/// `GET /v1/pools`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PoolList {
    pub pools: Vec<PoolStatus>,
}

/// `PUT /v1/pools/{runtime}`: a new target (generic sandboxes kept warm)
/// and/or maximum.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolSize {
    pub target: Option<usize>,
    pub max: Option<usize>,
}

/// `GET /v1/sandboxes`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SandboxList {
    pub sandboxes: Vec<SandboxStatus>,
}

/// `POST /v1/sandboxes`: a sandbox created by someone else with ember's
/// agent listening on a socket (what `ember-runtime start` sends for a
/// container annotated `dev.ember.sandbox`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdoptRequest {
    pub id: String,
    pub runtime: String,
    pub pid: u32,
    pub socket: String,
    pub cgroups_path: String,
    /// The sender's version (`ember-runtime`'s crate version): emberd
    /// adopts only from an `ember-runtime` of its own version
    /// (`409 version_mismatch`). Absent from versions before the check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// The invocation the kill switch ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct KilledInvocation {
    pub sandbox: String,
    pub function: String,
    pub invocation: String,
}

/// `POST /v1/sandboxes`: what was adopted.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Adopted {
    pub adopted: AdoptedSandbox,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AdoptedSandbox {
    pub id: String,
    pub runtime: String,
    pub pid: u32,
}

/// `POST /v1/sandboxes/{id}/kill`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Killed {
    pub killed: KilledInvocation,
}

/// `POST /v1/sandboxes/{id}/thaw`: the sandbox is thawed and stays so.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Thawed {
    pub thawed: ThawedSandbox,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ThawedSandbox {
    pub id: String,
    /// What it was doing (`idle`, `busy`, `returning`); it keeps doing it.
    pub state: SandboxState,
}

#[cfg(test)]
mod tests {
    use super::SandboxState;

    #[test]
    fn sandbox_states_name_themselves_as_they_serialize() {
        for s in [
            SandboxState::Idle,
            SandboxState::Busy,
            SandboxState::Returning,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
