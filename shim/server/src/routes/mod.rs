//! The HTTP/1.1 + JSON API on the Unix socket (documented in
//! `docs/api.md`, described by `GET /v1/openapi.json`). Every error is
//! `{"error": {"code", "message"}}` with the status `crate::error` gives
//! its code; nothing a client sends can take the daemon down.

mod functions;
mod pools;
mod records;
mod sessions;

use crate::error::ApiError;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::routing::{get, post};
use axum::{Json, Router};
use ember_api::health::{Health, HealthStatus, HistoryHealth, HistoryState};
use ember_api::ErrorCode;
use ember_core::Daemon;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::sync::Arc;

type AppState = Arc<Daemon>;

/// Requests that came over HTTP (not the Unix socket): handlers that must
/// not serve them look for this extension.
#[derive(Debug, Clone, Copy)]
pub struct OverHttp;

pub fn router(daemon: AppState) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/functions", get(functions::list))
        .route(
            "/v1/functions/{name}",
            get(functions::get)
                .put(functions::put)
                .delete(functions::delete),
        )
        .route("/v1/functions/{name}/invoke", post(functions::invoke))
        .route("/v1/functions/{name}/pause", post(functions::pause))
        .route("/v1/functions/{name}/resume", post(functions::resume))
        .route("/v1/functions/{name}/sessions", post(sessions::open))
        .route("/v1/sessions", get(sessions::list))
        .route(
            "/v1/sessions/{id}",
            get(sessions::get).delete(sessions::close),
        )
        .route("/v1/sessions/{id}/invoke", post(sessions::invoke))
        .route("/v1/test", post(functions::test))
        .route("/v1/functions/{name}/logs", get(records::function_logs))
        .route("/v1/invocations", get(records::list))
        .route("/metrics", get(records::metrics))
        .route("/v1/pools", get(pools::list))
        .route("/v1/pools/{runtime}", get(pools::get).put(pools::put))
        .route("/v1/sandboxes", get(pools::sandboxes).post(pools::adopt))
        .route("/v1/sandboxes/{id}/kill", post(pools::kill))
        .route("/v1/sandboxes/{id}/thaw", post(pools::thaw))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(daemon)
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such endpoint; see docs/api.md")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this endpoint; see docs/api.md",
    )
}

async fn health(State(d): State<AppState>) -> Json<Health> {
    let history = history_health(d.history_status());
    Json(Health {
        status: match (d.draining(), history.status) {
            (true, _) => HealthStatus::Draining,
            (false, HistoryState::Degraded) => HealthStatus::Degraded,
            (false, HistoryState::Ok) => HealthStatus::Ok,
        },
        version: env!("CARGO_PKG_VERSION").to_string(),
        instance: d.tag().to_string(),
        runtimes: d.runtimes(),
        backends: d.backends().to_vec(),
        history,
    })
}

fn history_health(s: ember_core::history::HistoryStatus) -> HistoryHealth {
    HistoryHealth {
        status: match s.degraded {
            true => HistoryState::Degraded,
            false => HistoryState::Ok,
        },
        waiting: s.waiting as u64,
        error: s.error,
    }
}

async fn openapi() -> Json<serde_json::Value> {
    Json(ember_api::openapi::document(|code| {
        crate::error::status(code).as_u16()
    }))
}

/// Read a body up to `limit` bytes; more is a 413, not a truncation.
pub(crate) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    what: &str,
) -> Result<bytes::Bytes, ApiError> {
    let too_large = |size: String| {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("{what} is {size} bytes, limit is {limit}"),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Err(too_large(len.to_string()));
        }
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(too_large("more than that".into()))
        }
        Err(e) => Err(ApiError::bad_request(format!("reading {what}: {e}"))),
    }
}

/// The query string, or a 400 naming what is wrong with it.
pub(crate) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("query string: {}", e.body_text())))
}

/// Serve the API on `listener` until `shutdown` resolves, then wait for
/// in-flight requests.
pub async fn serve(
    daemon: AppState,
    listener: tokio::net::UnixListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(daemon))
        .with_graceful_shutdown(shutdown)
        .await
}
