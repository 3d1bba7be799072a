//! `/v1/invocations`, `/v1/functions/{name}/logs` and `/metrics`.

use super::AppState;
use crate::error::ApiError;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ember_api::records::RecordQuery;
use ember_api::ErrorCode;
use ember_core::Daemon;
use serde_json::json;

fn records(
    d: &Daemon,
    function: Option<&str>,
    q: &RecordQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::bad_request(format!(
            "invalid limit {limit}: must be 1..=10000"
        )));
    }
    let output = q.output.unwrap_or(true);
    let filter = ember_core::history::Filter {
        function,
        since_ms: q.since,
        session: q.session.as_deref(),
    };
    let list = d
        .records(&filter, limit, output)
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let mut v = json!({ "invocations": list });
    if !output {
        for r in v["invocations"].as_array_mut().into_iter().flatten() {
            if let Some(o) = r.as_object_mut() {
                o.remove("stdout");
                o.remove("stderr");
            }
        }
    }
    Ok(Json(v))
}

/// [`records`] on a blocking thread: it waits for the history writer.
async fn settled(
    d: &AppState,
    function: Option<String>,
    q: RecordQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    let d = d.clone();
    tokio::task::spawn_blocking(move || records(&d, function.as_deref(), &q))
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("reading history: {e}")))?
}

pub(super) async fn list(
    State(d): State<AppState>,
    q: Result<Query<RecordQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = super::query(q)?;
    let function = q.function.clone();
    settled(&d, function, q).await
}

pub(super) async fn function_logs(
    State(d): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<RecordQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = super::query(q)?;
    if q.function.is_some() {
        return Err(ApiError::bad_request("the function is in the path"));
    }
    let answer = settled(&d, Some(name.clone()), q).await?;
    // A deleted function's records stay readable; a name never seen is 404.
    if answer.0["invocations"]
        .as_array()
        .is_some_and(Vec::is_empty)
        && d.function(&name)?.is_none()
    {
        return Err(super::functions::unknown_function(&name));
    }
    Ok(answer)
}

pub(super) async fn metrics(State(d): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        d.metrics_text(),
    )
        .into_response()
}
