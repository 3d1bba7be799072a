//! `GET /v1/health`.

use crate::kinds::{Backend, Language};
use serde::{Deserialize, Serialize};

/// Whether emberd serves or drains.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    /// Serving, but something needs attention (`history` says what).
    Degraded,
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
    /// Whether invocation records are written.
    #[serde(default)]
    pub history: HistoryHealth,
}

/// Whether invocation records reach SQLite.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HistoryState {
    #[default]
    Ok,
    /// Writes fail (a full state filesystem, say): records wait in memory
    /// and in the journal, and are written when they can be.
    Degraded,
}

/// The invocation history's health.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct HistoryHealth {
    pub status: HistoryState,
    /// Records waiting to be written.
    pub waiting: u64,
    /// Why the last write failed, while degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
