//! `/v1/functions/{name}/sessions` and `/v1/sessions[/{id}[/invoke]]`:
//! open a session, call it, list, read and end sessions.

use super::{query, read_body, AppState};
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use ember_api::{Report, SessionInfo, SessionList, SessionQuery};
use ember_core::invoke::session;

/// `POST /v1/functions/{name}/sessions`: 201 and the open session.
pub(super) async fn open(
    State(d): State<AppState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<SessionInfo>), ApiError> {
    let info = session::open(d, name).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// `POST /v1/sessions/{id}/invoke`: one call, answered as an invocation.
pub(super) async fn invoke(
    State(d): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Report>, ApiError> {
    let body = read_body(body, &headers, d.max_event_bytes(), "event").await?;
    Ok(Json(session::invoke(d, id, body).await?))
}

/// `GET /v1/sessions?function=&ended=`.
pub(super) async fn list(
    State(d): State<AppState>,
    q: Result<Query<SessionQuery>, QueryRejection>,
) -> Result<Json<SessionList>, ApiError> {
    let q = query(q)?;
    let sessions = session::list(&d, q.function.as_deref(), q.ended.unwrap_or(false))?;
    Ok(Json(SessionList { sessions }))
}

/// `GET /v1/sessions/{id}`: open or ended.
pub(super) async fn get(
    State(d): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SessionInfo>, ApiError> {
    Ok(Json(session::info(&d, &id)?))
}

/// `DELETE /v1/sessions/{id}`: end it (a running call is stopped) and
/// destroy its sandbox; answers the ended session.
pub(super) async fn close(
    State(d): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SessionInfo>, ApiError> {
    Ok(Json(session::close(&d, &id).await?))
}
