//! `GET /v1/health`.

use crate::kinds::{Backend, Language};
use serde::{Deserialize, Serialize};

/// Whether emberd serves or drains.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    /// SIGTERM: running invocations finish, new ones get `shutting_down`.
    Draining,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    pub status: HealthStatus,
    pub version: String,
    /// This daemon's instance tag (its sandboxes' id prefix).
    pub instance: String,
    /// Runtimes with a pool.
    pub runtimes: Vec<Language>,
    /// Backends this daemon runs.
    pub backends: Vec<Backend>,
}
