//! Invocation records, as `GET /v1/invocations` and
//! `GET /v1/functions/{name}/logs` show them.

use serde::{Deserialize, Serialize};

/// One invocation as stored and as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct InvocationRecord {
    pub id: String,
    pub function: String,
    /// Code digest the invocation ran (the deploy's version).
    pub digest: String,
    pub sandbox: Option<String>,
    pub backend: Option<String>,
    pub start: Option<String>,
    pub mode: Option<String>,
    /// `running`, `interrupted`, an invocation outcome (`ok`,
    /// `handler_error`, `timeout`, ...) or an API error code.
    pub outcome: String,
    pub error: Option<String>,
    pub timings_us: Option<serde_json::Value>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub result_bytes: u64,
    /// Unix milliseconds.
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// The session the invocation ran in, if it was a session's call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

impl InvocationRecord {
    /// A record of an invocation that has just started, nothing known yet
    /// but what it runs.
    pub fn started(id: &str, function: &str, digest: &str, started_at: i64) -> InvocationRecord {
        InvocationRecord {
            id: id.to_string(),
            function: function.to_string(),
            digest: digest.to_string(),
            sandbox: None,
            backend: None,
            start: None,
            mode: None,
            outcome: "running".into(),
            error: None,
            timings_us: None,
            stdout: String::new(),
            stderr: String::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            result_bytes: 0,
            started_at,
            finished_at: None,
            session: None,
        }
    }
}

/// `GET /v1/invocations`, `GET /v1/functions/{name}/logs`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InvocationList {
    pub invocations: Vec<InvocationRecord>,
}

/// `?function=&since=&limit=&output=` of the invocation record endpoints.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RecordQuery {
    pub function: Option<String>,
    /// Only the calls of this session.
    pub session: Option<String>,
    /// Unix milliseconds: only invocations started after it.
    pub since: Option<i64>,
    /// The newest this many (default 100, at most 10000).
    pub limit: Option<usize>,
    /// `false`: leave out `stdout` and `stderr` (default true).
    pub output: Option<bool>,
}
