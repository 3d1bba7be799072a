//! `/v1/functions`, `/v1/functions/{name}` (deploy, read, delete),
//! `/v1/functions/{name}/invoke`, `.../pause`, `.../resume` and
//! `/v1/test`.

use super::{read_body, AppState, OverHttp};
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ember_api::function::{Deleted, FunctionInfo, FunctionList};
use ember_api::{validate, DeployOptions, ErrorCode, FunctionRecord, Report};
use ember_core::{CodeSource, DeploySpec, TestError};
use serde::Deserialize;

pub(super) async fn list(State(d): State<AppState>) -> Result<Json<FunctionList>, ApiError> {
    Ok(Json(FunctionList {
        functions: d.functions()?,
    }))
}

pub(super) fn unknown_function(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::FunctionNotFound,
        format!("function {name:?} is not deployed"),
    )
}

pub(super) async fn get(
    State(d): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<FunctionInfo>, ApiError> {
    let record = d.function(&name)?.ok_or_else(|| unknown_function(&name))?;
    let zygote_state = d.zygote_state(&record);
    Ok(Json(FunctionInfo {
        record,
        zygote_state,
    }))
}

pub(super) async fn delete(
    State(d): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    if d.delete_function(&name)? {
        let why = ember_api::SessionEnd::FunctionDeleted;
        ember_core::invoke::session::end_all(&d, Some(&name), why, "its function was deleted")
            .await;
        Ok(Json(Deleted { deleted: name }))
    } else {
        Err(unknown_function(&name))
    }
}

/// `POST /v1/functions/{name}/pause`: refuse its invocations from now on
/// (those running finish) and release its bound sandboxes; idempotent.
pub(super) async fn pause(
    State(d): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<FunctionRecord>, ApiError> {
    let rec = d.pause(&name)?.ok_or_else(|| unknown_function(&name))?;
    // Its sessions hold warm sandboxes bound to it: released too.
    let why = ember_api::SessionEnd::FunctionPaused;
    ember_core::invoke::session::end_all(&d, Some(&name), why, "its function was paused").await;
    Ok(Json(rec))
}

/// `POST /v1/functions/{name}/resume`: invocations run again; idempotent.
pub(super) async fn resume(
    State(d): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<FunctionRecord>, ApiError> {
    let rec = d.resume(&name)?.ok_or_else(|| unknown_function(&name))?;
    Ok(Json(rec))
}

/// A JSON deploy body: the settings of [`DeployOptions`] plus `"code":
/// {"path": "/abs/dir"}`, `"code": {"archive": "<base64 tar.gz>"}` or
/// `"code": {"git": {"repo", "ref", "subdir"}}`, unknown keys refused.
/// `max_code` bounds the decoded archive.
fn deploy_json(body: &[u8], max_code: usize) -> Result<DeploySpec, ApiError> {
    let invalid = |m: String| ApiError::new(ErrorCode::InvalidJson, m);
    let mut v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| invalid(format!("deploy body: {e}")))?;
    let code = v
        .remove("code")
        .ok_or_else(|| invalid("deploy body: missing field `code`".into()))?;
    let code: CodeJson =
        serde_json::from_value(code).map_err(|e| invalid(format!("deploy body: code: {e}")))?;
    let options: DeployOptions = serde_json::from_value(serde_json::Value::Object(v))
        .map_err(|e| invalid(format!("deploy body: {e}")))?;
    let code = match (code.path, code.archive, code.git) {
        (Some(path), None, None) => CodeSource::Path(path.into()),
        (None, None, Some(git)) => CodeSource::Git(git),
        (None, Some(archive), None) => {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(archive.as_bytes())
                .map_err(|e| invalid(format!("deploy body: code.archive is not base64: {e}")))?;
            if bytes.len() > max_code {
                return Err(ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("code archive is {} bytes, limit is {max_code}", bytes.len()),
                ));
            }
            CodeSource::TarGz(bytes.into())
        }
        _ => {
            return Err(invalid(
                "deploy body: code needs exactly one of `path`, `archive` and `git`".into(),
            ))
        }
    };
    Ok(DeploySpec { options, code })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeJson {
    /// A host directory (Unix socket only).
    path: Option<String>,
    /// A tar.gz of the code, base64.
    archive: Option<String>,
    /// A git repository emberd clones as uid 65534 (Unix socket only).
    git: Option<ember_api::function::GitCode>,
}

/// Refuse a deploy or test that names a host path or a git repository,
/// over HTTP: it would copy host files into the store for whoever holds
/// the dashboard token. Only the Unix socket (root's) takes them.
fn host_path_allowed(
    spec: &DeploySpec,
    over_http: Option<axum::Extension<OverHttp>>,
) -> Result<(), ApiError> {
    match (&spec.code, over_http) {
        (CodeSource::TarGz(_), _) | (_, None) => Ok(()),
        (CodeSource::Path(_), Some(_)) => Err(ApiError::new(
            ErrorCode::HostPathForbidden,
            "code from a host path ({\"code\":{\"path\":...}}) is accepted only on emberd's Unix \
             socket; over HTTP, upload a tar.gz (application/gzip, or code.archive)",
        )),
        // A repository path names host files, and a URL makes emberd
        // fetch from wherever the caller says.
        (CodeSource::Git(_), Some(_)) => Err(ApiError::new(
            ErrorCode::HostPathForbidden,
            "code from a git repository ({\"code\":{\"git\":...}}) is accepted only on emberd's \
             Unix socket; over HTTP, upload a tar.gz (application/gzip, or code.archive)",
        )),
    }
}

pub(super) async fn put(
    State(d): State<AppState>,
    Path(name): Path<String>,
    over_http: Option<axum::Extension<OverHttp>>,
    query: Result<Query<DeployOptions>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    validate::function_name(&name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let q = super::query(query)?;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let body = read_body(body, &headers, d.max_code_bytes(), "code archive").await?;
    let spec = match ctype.as_str() {
        "application/json" => {
            if q != DeployOptions::default() {
                return Err(ApiError::bad_request(
                    "with a JSON body, give the settings in the body, not the query",
                ));
            }
            let spec = deploy_json(&body, d.max_code_bytes())?;
            host_path_allowed(&spec, over_http)?;
            spec
        }
        "application/gzip" | "application/x-gzip" | "application/x-tar+gzip" | "application/octet-stream" => {
            DeploySpec { options: q, code: CodeSource::TarGz(body) }
        }
        other => {
            return Err(ApiError::new(ErrorCode::UnsupportedMediaType,
                format!("content type {other:?}: send application/gzip (a tar.gz of the code) or application/json ({{\"code\":{{\"path\":...}}}})"),
            ))
        }
    };
    let (rec, created) = d.deploy(&name, spec).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(rec)).into_response())
}

pub(super) async fn invoke(
    State(d): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Report>, ApiError> {
    let limit = d.max_event_bytes();
    let body = read_body(body, &headers, limit, "event").await?;
    Ok(Json(ember_core::invoke::invoke(d, name, body).await?))
}

/// `POST /v1/test`: a deploy JSON body plus `name` and `event`; runs the
/// code once in a throwaway sandbox and answers like an invocation.
pub(super) async fn test(
    State(d): State<AppState>,
    over_http: Option<axum::Extension<OverHttp>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Report>, ApiError> {
    // An event and a base64 archive of the code.
    let limit = d.max_event_bytes() + d.max_code_bytes() / 3 * 4 + 64 * 1024;
    let body = read_body(body, &headers, limit, "test request").await?;
    let invalid = |m: String| ApiError::new(ErrorCode::InvalidJson, m);
    let mut v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&body).map_err(|e| invalid(format!("test body: {e}")))?;
    let name = match v.remove("name") {
        None => "test".to_string(),
        Some(serde_json::Value::String(s)) => s,
        Some(other) => {
            return Err(invalid(format!(
                "test body: name must be a string, not {other}"
            )))
        }
    };
    let event = v
        .remove("event")
        .map(|e| e.to_string())
        .unwrap_or_else(|| "{}".to_string());
    let event = ember_core::invoke::check_event(event.as_bytes(), d.max_event_bytes())?;
    let spec = deploy_json(
        &serde_json::to_vec(&v).unwrap_or_default(),
        d.max_code_bytes(),
    )?;
    host_path_allowed(&spec, over_http)?;
    match d.test_run(&name, spec, event).await {
        Ok(r) => Ok(Json(r)),
        Err(TestError::Deploy(e)) => Err(e.into()),
        Err(TestError::Invoke(e)) => Err(e.into()),
    }
}
