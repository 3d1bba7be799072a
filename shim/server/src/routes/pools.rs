//! `/v1/pools`, `/v1/pools/{runtime}`, `/v1/sandboxes` (list, adopt),
//! `/v1/sandboxes/{id}/kill` and `/v1/sandboxes/{id}/thaw`.

use super::{read_body, AppState};
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use ember_api::pool::{
    AdoptRequest, Adopted, AdoptedSandbox, Killed, PoolList, PoolQuery, PoolSize, SandboxList,
    Thawed, ThawedSandbox,
};
use ember_api::{Backend, ErrorCode, Language, PoolStatus};
use ember_core::pool::Pool;
use ember_core::sandboxes::AdoptError;
use ember_core::Daemon;
use std::sync::Arc;

pub(super) async fn list(State(d): State<AppState>) -> Json<PoolList> {
    Json(PoolList {
        pools: d.pools().map(|p| p.status()).collect(),
    })
}

fn unknown_pool(runtime: &str, backend: Option<&str>, backends: &[Backend]) -> ApiError {
    let backends: Vec<&str> = backends.iter().map(|b| b.as_str()).collect();
    let runtimes: Vec<&str> = Language::ALL.iter().map(|l| l.runtime_name()).collect();
    ApiError::new(
        ErrorCode::PoolNotFound,
        format!(
            "no pool for runtime {runtime:?}{} (runtimes: {}; backends: {})",
            backend
                .map(|b| format!(" on backend {b:?}"))
                .unwrap_or_default(),
            runtimes.join(", "),
            backends.join(", ")
        ),
    )
}

/// The pool of `runtime` on the queried backend, or a 404 naming what
/// exists.
fn pool_of(d: &Daemon, runtime: &str, backend: Option<&str>) -> Result<Arc<Pool>, ApiError> {
    let language = Language::by_runtime(runtime);
    let backend_ok = backend.map(|b| Backend::by_name(b).ok_or(()));
    let found = match (language, backend_ok) {
        (Some(l), None) => d.pool(l, None),
        (Some(l), Some(Ok(b))) => d.pool(l, Some(b)),
        _ => None,
    };
    found
        .cloned()
        .ok_or_else(|| unknown_pool(runtime, backend, d.backends()))
}

pub(super) async fn get(
    State(d): State<AppState>,
    Path(runtime): Path<String>,
    q: Result<Query<PoolQuery>, QueryRejection>,
) -> Result<Json<PoolStatus>, ApiError> {
    let q = super::query(q)?;
    let pool = pool_of(&d, &runtime, q.backend.as_deref())?;
    Ok(Json(pool.status()))
}

pub(super) async fn put(
    State(d): State<AppState>,
    Path(runtime): Path<String>,
    q: Result<Query<PoolQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PoolStatus>, ApiError> {
    let q = super::query(q)?;
    let pool = pool_of(&d, &runtime, q.backend.as_deref())?;
    let body = read_body(body, &headers, 64 * 1024, "pool settings").await?;
    let size: PoolSize = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("pool settings: {e}")))?;
    if size.max == Some(0) || size.target.unwrap_or(0) > 256 || size.max.unwrap_or(0) > 256 {
        return Err(ApiError::bad_request(
            "target must be 0..=256 and max 1..=256",
        ));
    }
    Ok(Json(pool.set_size(size.target, size.max)))
}

pub(super) async fn sandboxes(State(d): State<AppState>) -> Json<SandboxList> {
    Json(SandboxList {
        sandboxes: d.pools().flat_map(|p| p.sandboxes()).collect(),
    })
}

/// `POST /v1/sandboxes`: take in a sandbox made by someone else (see
/// [`AdoptRequest`]).
pub(super) async fn adopt(
    State(d): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Adopted>), ApiError> {
    let body = read_body(body, &headers, 64 * 1024, "adopt request").await?;
    let req: AdoptRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("adopt body: {e}")))?;
    if let Err(e) = d.adopt(&req).await {
        return Err(match e {
            AdoptError::NoPool(runtime) => unknown_pool(&runtime, None, d.backends()),
            e => ApiError::new(e.code(), e.to_string()),
        });
    }
    let adopted = AdoptedSandbox {
        id: req.id,
        runtime: req.runtime,
        pid: req.pid,
    };
    Ok((StatusCode::CREATED, Json(Adopted { adopted })))
}

pub(super) async fn kill(
    State(d): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Killed>, ApiError> {
    match d.kill(&id) {
        Ok(killed) => Ok(Json(Killed { killed })),
        Err(e) => Err(ApiError::new(e.code(), e.to_string())),
    }
}

/// `POST /v1/sandboxes/{id}/thaw`: thawed, and never frozen again (its
/// owner execs into it or signals it next).
pub(super) async fn thaw(
    State(d): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Thawed>, ApiError> {
    match d.thaw(&id) {
        Ok(state) => Ok(Json(Thawed {
            thawed: ThawedSandbox { id, state },
        })),
        Err(e) => Err(ApiError::new(e.code(), e.to_string())),
    }
}
