//! Error answers: `{"error": {"code", "message"}}`, with a stable code
//! from a closed set. Which HTTP status a code gets is the server's
//! business (`ember-server`), not this crate's.

use crate::invocation::{Outcome, Report};
use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($($variant:ident => $name:literal: $meaning:literal,)*) => {
        /// The stable `error.code` of an error answer.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $(#[doc = $meaning] $variant,)*
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $name,)* }
            }

            /// What the code means, as docs/api.md says.
            pub fn meaning(self) -> &'static str {
                match self { $(ErrorCode::$variant => $meaning,)* }
            }
        }
    };
}

error_codes! {
    InvalidRequest => "invalid_request": "a field, name, path or query parameter fails validation",
    InvalidJson => "invalid_json": "a JSON request body does not parse or has unknown fields",
    InvalidEvent => "invalid_event": "the invoke body is not JSON",
    InvalidCode => "invalid_code": "the code archive or directory is unusable",
    InvalidRequirements => "invalid_requirements": "requirements.txt names something other than packages and versions",
    BuildFailed => "build_failed": "the deploy build failed",
    BuildTimeout => "build_timeout": "the deploy build ran past --build-timeout-ms",
    BuildOom => "build_oom": "the deploy build ran out of memory",
    BuildPids => "build_pids": "the deploy build hit its process limit",
    BuildDiskFull => "build_disk_full": "the code and what the build adds do not fit in --build-disk-mb",
    HostPathForbidden => "host_path_forbidden": "a deploy or test from a host path or a git repository over HTTP",
    GitUnreachable => "git_unreachable": "git (as uid 65534) cannot clone the deploy's repository",
    GitRefNotFound => "git_ref_not_found": "the deploy's git ref names no commit of the repository",
    GitSubdirNotFound => "git_subdir_not_found": "the deploy's subdir is not a directory at that commit",
    GitFailed => "git_failed": "git failed or ran past --git-timeout-s on the deploy's repository",
    RebuildRequired => "rebuild_required": "the function's code was built by an older emberd: deploy it again",
    NotFound => "not_found": "no such endpoint",
    FunctionNotFound => "function_not_found": "no such function",
    PoolNotFound => "pool_not_found": "no pool for that runtime",
    SandboxNotFound => "sandbox_not_found": "no sandbox with that id",
    SandboxExists => "sandbox_exists": "a sandbox with that id is already in a pool",
    VersionMismatch => "version_mismatch": "ember-runtime and emberd are of different versions",
    NotRunning => "not_running": "the sandbox to kill runs no invocation",
    Killed => "killed": "the invocation was ended by the kill switch",
    Unauthorized => "unauthorized": "over HTTP: no or a wrong bearer token",
    MethodNotAllowed => "method_not_allowed": "endpoint exists, method does not",
    PayloadTooLarge => "payload_too_large": "a body or unpacked code over its limit",
    UnsupportedMediaType => "unsupported_media_type": "deploy body of another content type",
    HandlerError => "handler_error": "the handler raised",
    Crashed => "crashed": "the worker died without a result",
    ResultTooLarge => "result_too_large": "the result is over the limit",
    Oom => "oom": "the worker ran out of memory",
    Pids => "pids": "the handler hit its process limit",
    PoolExhausted => "pool_exhausted": "no sandbox free in time",
    FunctionPaused => "function_paused": "refused at once: the function is paused (POST /v1/functions/{name}/resume resumes it); nothing ran",
    SessionNotFound => "session_not_found": "no session with that id",
    SessionEnded => "session_ended": "the session has ended (its end_reason says why); open another",
    SessionLimit => "session_limit": "refused at once: the function's or emberd's open sessions are at their limit",
    SessionBusy => "session_busy": "a call of the session ran past --queue-timeout-ms; the next waits for it",
    Overloaded => "overloaded": "refused at once: the pool's or the function's wait queue is full; retry after Retry-After seconds",
    HistoryFull => "history_full": "the invocation history cannot record more (the state filesystem is full); nothing ran",
    BackendUnavailable => "backend_unavailable": "the function's backend is not running in this emberd",
    ShuttingDown => "shutting_down": "emberd is draining",
    Interrupted => "interrupted": "emberd shut down while the invocation ran",
    Timeout => "timeout": "the handler ran out of time",
    SandboxFailed => "sandbox_failed": "a sandbox failed; it is replaced",
    Internal => "internal": "registry or store failure",
}

impl ErrorCode {
    /// An invocation refused before it ran user code: it leaves no
    /// invocation record (and its answer no `invocation_id`).
    pub fn is_refusal(self) -> bool {
        matches!(
            self,
            ErrorCode::PoolExhausted
                | ErrorCode::FunctionPaused
                | ErrorCode::ShuttingDown
                | ErrorCode::Overloaded
                | ErrorCode::HistoryFull
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Outcome {
    /// The error code of an invocation that ended this way (`None`: it
    /// succeeded).
    pub fn error_code(self) -> Option<ErrorCode> {
        Some(match self {
            Outcome::Ok => return None,
            Outcome::HandlerError => ErrorCode::HandlerError,
            Outcome::Timeout => ErrorCode::Timeout,
            Outcome::Crashed => ErrorCode::Crashed,
            Outcome::ResultTooLarge => ErrorCode::ResultTooLarge,
            Outcome::Oom => ErrorCode::Oom,
            Outcome::Pids => ErrorCode::Pids,
            Outcome::Killed => ErrorCode::Killed,
            Outcome::Interrupted => ErrorCode::Interrupted,
        })
    }
}

/// The `error` object of an error answer.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    /// A failed invocation's exception type, when the handler raised.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
    /// The id of the invocation the error ended, once it had a record
    /// (`GET /v1/invocations/{id}`); absent for requests refused before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
}

/// An error answer; failed invocations carry their report.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation: Option<Box<Report>>,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code,
                message: message.into(),
                kind: None,
                traceback: None,
                invocation_id: None,
            },
            invocation: None,
        }
    }

    /// The answer to a failed invocation: its code and message, the
    /// handler's exception if it raised, and the whole report.
    pub fn failed(code: ErrorCode, message: impl Into<String>, report: Box<Report>) -> ErrorBody {
        let mut body = ErrorBody::new(code, message);
        if let Some(e) = &report.error {
            body.error.kind = Some(e.kind.clone());
            body.error.traceback = Some(e.traceback.clone());
        }
        body.error.invocation_id = Some(report.id.clone());
        body.invocation = Some(report);
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_to_their_names() {
        for c in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
        let names: std::collections::BTreeSet<_> =
            ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len(), "codes are distinct");
    }

    #[test]
    fn every_failed_outcome_has_the_code_of_its_name() {
        for o in Outcome::ALL {
            match o.error_code() {
                None => assert_eq!(o, Outcome::Ok),
                Some(c) => assert_eq!(c.as_str(), o.as_str()),
            }
        }
    }

    #[test]
    fn an_error_body_is_code_and_message() {
        let b = ErrorBody::new(
            ErrorCode::FunctionNotFound,
            "function \"x\" is not deployed",
        );
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"error":{"code":"function_not_found","message":"function \"x\" is not deployed"}}"#
        );
    }
}
