//! Error answers: a core error becomes an [`ApiError`], whose
//! [`ErrorCode`] gets its HTTP status here and only here.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ember_api::{ErrorBody, ErrorCode, Report};
use ember_core::registry::RegistryError;
use ember_core::{DeployError, InvokeError};

/// The HTTP status of an error code.
pub fn status(code: ErrorCode) -> StatusCode {
    use ErrorCode as C;
    match code {
        C::InvalidRequest
        | C::InvalidJson
        | C::InvalidEvent
        | C::InvalidCode
        | C::InvalidRequirements
        | C::BuildFailed
        | C::BuildTimeout
        | C::BuildOom
        | C::BuildPids => StatusCode::BAD_REQUEST,
        C::GitUnreachable | C::GitRefNotFound | C::GitSubdirNotFound | C::GitFailed => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        C::Unauthorized => StatusCode::UNAUTHORIZED,
        C::HostPathForbidden => StatusCode::FORBIDDEN,
        C::NotFound
        | C::FunctionNotFound
        | C::PoolNotFound
        | C::SandboxNotFound
        | C::SessionNotFound => StatusCode::NOT_FOUND,
        C::SessionEnded => StatusCode::GONE,
        C::SessionBusy => StatusCode::CONFLICT,
        C::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        C::RebuildRequired
        | C::SandboxExists
        | C::VersionMismatch
        | C::NotRunning
        | C::Killed
        | C::FunctionPaused => StatusCode::CONFLICT,
        C::PayloadTooLarge | C::BuildDiskFull => StatusCode::PAYLOAD_TOO_LARGE,
        C::Overloaded | C::SessionLimit => StatusCode::TOO_MANY_REQUESTS,
        C::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        C::SandboxFailed | C::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        C::HandlerError | C::Crashed | C::ResultTooLarge | C::Oom | C::Pids => {
            StatusCode::BAD_GATEWAY
        }
        C::PoolExhausted
        | C::BackendUnavailable
        | C::ShuttingDown
        | C::Interrupted
        | C::HistoryFull => StatusCode::SERVICE_UNAVAILABLE,
        C::Timeout => StatusCode::GATEWAY_TIMEOUT,
    }
}

/// An API error: stable code, human message, and for failed invocations
/// the invocation report (stdout, stderr, timings).
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub invocation: Option<Box<Report>>,
    /// The id of the invocation the error ended, if it had a record.
    pub invocation_id: Option<String>,
    /// Seconds to wait before trying again (`Retry-After`), for a refusal
    /// by admission control.
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            invocation: None,
            invocation_id: None,
            retry_after_s: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidRequest, message)
    }

    pub fn status(&self) -> StatusCode {
        status(self.code)
    }

    /// The answer's body.
    pub fn body(self) -> ErrorBody {
        match self.invocation {
            Some(r) => ErrorBody::failed(self.code, self.message, r),
            None => {
                let mut body = ErrorBody::new(self.code, self.message);
                body.error.invocation_id = self.invocation_id;
                body
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() && self.invocation.is_none() {
            if self.code.is_refusal() {
                // One per refused invocation under load: rate-limited.
                ember_core::warn_limit::warn(
                    self.code.as_str(),
                    format_args!("{}: {}", self.code, self.message),
                );
            } else {
                tracing::warn!(code = self.code.as_str(), "{}", self.message);
            }
        }
        let retry_after = self.retry_after_s;
        let mut response = (status, Json(self.body())).into_response();
        if let Some(s) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, s.into());
        }
        response
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        ApiError::new(ErrorCode::Internal, e.to_string())
    }
}

impl From<InvokeError> for ApiError {
    fn from(e: InvokeError) -> Self {
        let code = e.code();
        let message = e.to_string();
        let retry_after_s = e.retry_after_s();
        let invocation = match e {
            InvokeError::Failed(r) => Some(r),
            _ => None,
        };
        ApiError {
            code,
            message,
            invocation,
            invocation_id: None,
            retry_after_s,
        }
    }
}

impl From<ember_core::invoke::InvocationError> for ApiError {
    fn from(e: ember_core::invoke::InvocationError) -> Self {
        ApiError {
            invocation_id: e.id,
            ..ApiError::from(e.error)
        }
    }
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> Self {
        ApiError::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_api::Outcome;

    #[test]
    fn every_code_has_the_status_docs_api_md_gives_it() {
        let doc = include_str!("../../../docs/api.md");
        let table = doc
            .split("## Error codes")
            .nth(1)
            .expect("error code table");
        for code in ErrorCode::ALL {
            let row = table
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", code.as_str())))
                .unwrap_or_else(|| panic!("{code} is not in docs/api.md"));
            let documented: u16 = row.split('|').nth(2).unwrap().trim().parse().unwrap();
            assert_eq!(status(*code).as_u16(), documented, "{code}");
        }
    }

    #[test]
    fn failed_invocations_answer_their_outcome_with_the_report() {
        let report: Report = serde_json::from_value(serde_json::json!({
            "id": "i", "function": "f", "sandbox": "s", "backend": "runc",
            "start": "warm", "mode": "fork", "profile": "default", "outcome": "timeout",
            "limits_hit": ["timeout"], "stdout": "out", "stderr": "", "stdout_truncated": false,
            "stderr_truncated": false, "timings_us": ember_api::Timings::default(),
        }))
        .unwrap();
        assert_eq!(report.outcome, Outcome::Timeout);
        let e = ApiError::from(InvokeError::Failed(Box::new(report)));
        assert_eq!(e.status(), StatusCode::GATEWAY_TIMEOUT);
        let body = serde_json::to_value(e.body()).unwrap();
        assert_eq!(body["error"]["code"], "timeout");
        assert_eq!(body["error"]["message"], "function \"f\" timed out");
        assert_eq!(body["invocation"]["stdout"], "out");
        assert_eq!(body["invocation"]["limits_hit"][0], "timeout");
    }

    #[test]
    fn refusals_map_to_their_codes() {
        let cases = [
            (
                InvokeError::UnknownFunction("f".into()),
                404,
                "function_not_found",
            ),
            (InvokeError::BadEvent("x".into()), 400, "invalid_event"),
            (
                InvokeError::Paused {
                    function: "f".into(),
                },
                409,
                "function_paused",
            ),
            (
                InvokeError::EventTooLarge { size: 9, limit: 1 },
                413,
                "payload_too_large",
            ),
            (
                InvokeError::RebuildRequired {
                    function: "f".into(),
                },
                409,
                "rebuild_required",
            ),
            (
                InvokeError::NoPool {
                    function: "f".into(),
                    runtime: ember_api::Language::Python,
                    backend: ember_api::Backend::Runsc,
                },
                503,
                "backend_unavailable",
            ),
        ];
        for (e, status, code) in cases {
            let e = ApiError::from(e);
            assert_eq!((e.status().as_u16(), e.code.as_str()), (status, code));
        }
        let refused = ember_core::admission::Refused {
            scope: ember_core::admission::Scope::Function("f".into()),
            running: 1,
            queued: 0,
            bound: 0,
            retry_after_s: 3,
        };
        let e = ApiError::from(ember_core::invoke::InvocationError {
            id: None,
            error: InvokeError::Overloaded(refused),
        });
        assert_eq!((e.status().as_u16(), e.code.as_str()), (429, "overloaded"));
        let response = e.into_response();
        assert_eq!(response.headers()["retry-after"], "3");
        let invalid = DeployError::from(ember_api::validate::Invalid::Mode("x".into()));
        assert_eq!(ApiError::from(invalid).status(), StatusCode::BAD_REQUEST);
    }
}
