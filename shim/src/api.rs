//! The HTTP/1.1 + JSON API on the Unix socket (documented in
//! `docs/api.md`). Every error is `{"error": {"code", "message"}}` with a
//! fitting status; nothing a client sends can take the daemon down.

use crate::daemon::{CodeSource, Daemon, DeployError, DeployOptions, DeploySpec};
use crate::invoke::{self, InvokeError, Report};
use crate::pool::PoolError;
use crate::registry::RegistryError;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

type AppState = Arc<Daemon>;

/// An API error: status, stable code, human message, and for failed
/// invocations the invocation report (stdout, stderr, timings).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub invocation: Option<Box<Report>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            invocation: None,
        }
    }
    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() && self.invocation.is_none() {
            tracing::warn!(code = self.code, "{}", self.message);
        }
        let mut body = json!({ "error": { "code": self.code, "message": self.message } });
        if let Some(r) = &self.invocation {
            if let Some(e) = &r.error {
                body["error"]["type"] = json!(e.kind);
                body["error"]["traceback"] = json!(e.traceback);
            }
            body["invocation"] = serde_json::to_value(r).unwrap_or_default();
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
}

impl From<InvokeError> for ApiError {
    fn from(e: InvokeError) -> Self {
        let message = e.to_string();
        let (status, code) = invoke_error_code(&e);
        let invocation = match e {
            InvokeError::Failed(r) => Some(r),
            _ => None,
        };
        ApiError {
            status,
            code,
            message,
            invocation,
        }
    }
}

/// The HTTP status and stable code of an invocation error (also what an
/// invocation record's `outcome` says when no report exists).
pub fn invoke_error_code(e: &InvokeError) -> (StatusCode, &'static str) {
    match e {
        InvokeError::UnknownFunction(_) => (StatusCode::NOT_FOUND, "function_not_found"),
        InvokeError::BadEvent(_) => (StatusCode::BAD_REQUEST, "invalid_event"),
        InvokeError::EventTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        InvokeError::Pool(PoolError::Exhausted { .. }) => {
            (StatusCode::SERVICE_UNAVAILABLE, "pool_exhausted")
        }
        InvokeError::Pool(PoolError::ShuttingDown { .. }) => {
            (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
        }
        InvokeError::Pool(PoolError::Create { .. }) | InvokeError::Sandbox { .. } => {
            (StatusCode::INTERNAL_SERVER_ERROR, "sandbox_failed")
        }
        InvokeError::NoPool { .. } => (StatusCode::SERVICE_UNAVAILABLE, "backend_unavailable"),
        InvokeError::Registry(_) | InvokeError::CodeMissing { .. } => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        }
        InvokeError::RebuildRequired { .. } => (StatusCode::CONFLICT, "rebuild_required"),
        InvokeError::Failed(r) => match r.outcome {
            "timeout" => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            "crashed" => (StatusCode::BAD_GATEWAY, "crashed"),
            "result_too_large" => (StatusCode::BAD_GATEWAY, "result_too_large"),
            "oom" => (StatusCode::BAD_GATEWAY, "oom"),
            "pids" => (StatusCode::BAD_GATEWAY, "pids"),
            "killed" => (StatusCode::CONFLICT, "killed"),
            "interrupted" => (StatusCode::SERVICE_UNAVAILABLE, "interrupted"),
            _ => (StatusCode::BAD_GATEWAY, "handler_error"),
        },
    }
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> Self {
        use ember_injector::StoreError as S;
        use ember_runtimes::build::BuildError as B;
        let m = e.to_string();
        match &e {
            DeployError::Invalid(_) => ApiError::bad_request(m),
            DeployError::Requirements(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_requirements", m)
            }
            DeployError::Build(B::Failed { .. }) => {
                ApiError::new(StatusCode::BAD_REQUEST, "build_failed", m)
            }
            DeployError::Build(B::Timeout(_)) => {
                ApiError::new(StatusCode::BAD_REQUEST, "build_timeout", m)
            }
            DeployError::Build(B::Oom(_)) => ApiError::new(StatusCode::BAD_REQUEST, "build_oom", m),
            DeployError::Build(B::Pids(_)) => {
                ApiError::new(StatusCode::BAD_REQUEST, "build_pids", m)
            }
            DeployError::Build(B::DiskFull(_)) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "build_disk_full", m)
            }
            DeployError::Build(B::Sandbox(_) | B::Dir { .. }) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "sandbox_failed",
                e.to_string(),
            ),
            DeployError::Store(S::TooLarge { .. })
            | DeployError::Store(S::TooManyEntries { .. }) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                e.to_string(),
            ),
            DeployError::Store(S::Io { .. }) | DeployError::Registry(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
            DeployError::Store(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_code", e.to_string())
            }
        }
    }
}

pub fn router(daemon: AppState) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/functions", get(list_functions))
        .route(
            "/v1/functions/{name}",
            get(get_function).put(put_function).delete(delete_function),
        )
        .route("/v1/functions/{name}/invoke", post(invoke_function))
        .route("/v1/test", post(test_function))
        .route("/v1/functions/{name}/logs", get(function_logs))
        .route("/v1/invocations", get(list_invocations))
        .route("/metrics", get(metrics))
        .route("/v1/pools", get(list_pools))
        .route("/v1/pools/{runtime}", get(get_pool).put(put_pool))
        .route("/v1/sandboxes", get(list_sandboxes).post(adopt_sandbox))
        .route("/v1/sandboxes/{id}/kill", post(kill_sandbox))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(daemon)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see docs/api.md",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint; see docs/api.md",
    )
}

async fn health(State(d): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({
        "status": if d.draining() { "draining" } else { "ok" },
        "version": env!("CARGO_PKG_VERSION"),
        "instance": d.tag,
        "runtimes": d.runtimes(),
        "backends": d.backends,
    }))
}

/// Read a body up to `limit` bytes; more is a 413, not a truncation.
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    what: &str,
) -> Result<bytes::Bytes, ApiError> {
    let too_large = |size: String| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
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

async fn list_functions(State(d): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(json!({ "functions": d.registry.list()? })))
}

fn unknown_function(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "function_not_found",
        format!("function {name:?} is not deployed"),
    )
}

async fn get_function(
    State(d): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let rec = d
        .registry
        .get(&name)?
        .ok_or_else(|| unknown_function(&name))?;
    let zygote = d.zygote_state(&rec);
    let mut v = serde_json::to_value(rec).unwrap_or_default();
    v["zygote_state"] = serde_json::to_value(zygote).unwrap_or_default();
    Ok(Json(v))
}

async fn delete_function(
    State(d): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if d.delete_function(&name)? {
        Ok(Json(json!({ "deleted": name })))
    } else {
        Err(unknown_function(&name))
    }
}

/// A JSON deploy body: the settings of [`DeployOptions`] plus `"code":
/// {"path": "/abs/dir"}` or `"code": {"archive": "<base64 tar.gz>"}`,
/// unknown keys refused. `max_code` bounds the decoded archive.
fn deploy_json(body: &[u8], max_code: usize) -> Result<DeploySpec, ApiError> {
    let invalid = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", m);
    let mut v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| invalid(format!("deploy body: {e}")))?;
    let code = v
        .remove("code")
        .ok_or_else(|| invalid("deploy body: missing field `code`".into()))?;
    let code: CodeJson =
        serde_json::from_value(code).map_err(|e| invalid(format!("deploy body: code: {e}")))?;
    let options: DeployOptions = serde_json::from_value(serde_json::Value::Object(v))
        .map_err(|e| invalid(format!("deploy body: {e}")))?;
    let code = match (code.path, code.archive) {
        (Some(path), None) => CodeSource::Path(path.into()),
        (None, Some(archive)) => {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(archive.as_bytes())
                .map_err(|e| invalid(format!("deploy body: code.archive is not base64: {e}")))?;
            if bytes.len() > max_code {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("code archive is {} bytes, limit is {max_code}", bytes.len()),
                ));
            }
            CodeSource::TarGz(bytes.into())
        }
        _ => {
            return Err(invalid(
                "deploy body: code needs exactly one of `path` and `archive`".into(),
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
}

/// Refuse a deploy or test that names a host path, over HTTP: it would copy
/// host files into the store for whoever holds the dashboard token. Only
/// the Unix socket (root's) takes host paths.
fn host_path_allowed(
    spec: &DeploySpec,
    over_http: Option<axum::Extension<crate::dashboard::OverHttp>>,
) -> Result<(), ApiError> {
    match (&spec.code, over_http) {
        (CodeSource::TarGz(_), _) | (_, None) => Ok(()),
        (CodeSource::Path(_), Some(_)) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "host_path_forbidden",
            "code from a host path ({\"code\":{\"path\":...}}) is accepted only on emberd's Unix \
             socket; over HTTP, upload a tar.gz (application/gzip, or code.archive)",
        )),
    }
}

async fn put_function(
    State(d): State<AppState>,
    Path(name): Path<String>,
    over_http: Option<axum::Extension<crate::dashboard::OverHttp>>,
    query: Result<Query<DeployOptions>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    crate::validate::function_name(&name).map_err(ApiError::bad_request)?;
    let Query(q) =
        query.map_err(|e| ApiError::bad_request(format!("query string: {}", e.body_text())))?;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let body = read_body(body, &headers, d.cfg.max_code_bytes, "code archive").await?;
    let spec = match ctype.as_str() {
        "application/json" => {
            if q != DeployOptions::default() {
                return Err(ApiError::bad_request(
                    "with a JSON body, give the settings in the body, not the query",
                ));
            }
            let spec = deploy_json(&body, d.cfg.max_code_bytes)?;
            host_path_allowed(&spec, over_http)?;
            spec
        }
        "application/gzip" | "application/x-gzip" | "application/x-tar+gzip" | "application/octet-stream" => {
            DeploySpec { options: q, code: CodeSource::TarGz(body) }
        }
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
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

async fn invoke_function(
    State(d): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Report>, ApiError> {
    let limit = d.cfg.max_event_bytes;
    let body = read_body(body, &headers, limit, "event").await?;
    Ok(Json(invoke::invoke(d, name, body).await?))
}

/// `POST /v1/test`: a deploy JSON body plus `name` and `event`; runs the
/// code once in a throwaway sandbox and answers like an invocation.
async fn test_function(
    State(d): State<AppState>,
    over_http: Option<axum::Extension<crate::dashboard::OverHttp>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Report>, ApiError> {
    // An event and a base64 archive of the code.
    let limit = d.cfg.max_event_bytes + d.cfg.max_code_bytes / 3 * 4 + 64 * 1024;
    let body = read_body(body, &headers, limit, "test request").await?;
    let invalid = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", m);
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
    let event = invoke::check_event(event.as_bytes(), d.cfg.max_event_bytes)?;
    let spec = deploy_json(
        &serde_json::to_vec(&v).unwrap_or_default(),
        d.cfg.max_code_bytes,
    )?;
    host_path_allowed(&spec, over_http)?;
    match d.test_run(&name, spec, event).await {
        Ok(r) => Ok(Json(r)),
        Err(crate::daemon::TestError::Deploy(e)) => Err(e.into()),
        Err(crate::daemon::TestError::Invoke(e)) => Err(e.into()),
    }
}

/// `?function=&since=&limit=&output=` of the invocation record endpoints.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordQuery {
    function: Option<String>,
    /// Unix milliseconds: only invocations started after it.
    since: Option<i64>,
    /// The newest this many (default 100, at most 10000).
    limit: Option<usize>,
    /// `false`: leave out `stdout` and `stderr` (default true).
    output: Option<bool>,
}

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
    let list = d
        .history
        .list(function, q.since, limit, output)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
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

async fn list_invocations(
    State(d): State<AppState>,
    q: Result<Query<RecordQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) =
        q.map_err(|e| ApiError::bad_request(format!("query string: {}", e.body_text())))?;
    records(&d, q.function.as_deref(), &q)
}

async fn function_logs(
    State(d): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<RecordQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) =
        q.map_err(|e| ApiError::bad_request(format!("query string: {}", e.body_text())))?;
    if q.function.is_some() {
        return Err(ApiError::bad_request("the function is in the path"));
    }
    let answer = records(&d, Some(&name), &q)?;
    // A deleted function's records stay readable; a name never seen is 404.
    if answer.0["invocations"]
        .as_array()
        .is_some_and(Vec::is_empty)
        && d.registry.get(&name)?.is_none()
    {
        return Err(unknown_function(&name));
    }
    Ok(answer)
}

async fn metrics(State(d): State<AppState>) -> Response {
    let pools: Vec<_> = d.pools().map(|p| p.status()).collect();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        d.metrics.render(&pools),
    )
        .into_response()
}

async fn list_pools(State(d): State<AppState>) -> Json<serde_json::Value> {
    let pools: Vec<_> = d.pools().map(|p| p.status()).collect();
    Json(json!({ "pools": pools }))
}

fn unknown_pool(runtime: &str, backend: Option<&str>, backends: &[String]) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "pool_not_found",
        format!(
            "no pool for runtime {runtime:?}{} (runtimes: {}; backends: {})",
            backend
                .map(|b| format!(" on backend {b:?}"))
                .unwrap_or_default(),
            crate::validate::RUNTIMES.join(", "),
            backends.join(", ")
        ),
    )
}

/// `?backend=` of the pool endpoints (default: emberd's first backend).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolQuery {
    backend: Option<String>,
}

fn pool_of<'a>(
    d: &'a Daemon,
    runtime: &str,
    q: Result<Query<PoolQuery>, QueryRejection>,
) -> Result<&'a std::sync::Arc<crate::pool::Pool>, ApiError> {
    let Query(q) =
        q.map_err(|e| ApiError::bad_request(format!("query string: {}", e.body_text())))?;
    d.pool(runtime, q.backend.as_deref())
        .ok_or_else(|| unknown_pool(runtime, q.backend.as_deref(), &d.backends))
}

async fn get_pool(
    State(d): State<AppState>,
    Path(runtime): Path<String>,
    q: Result<Query<PoolQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let pool = pool_of(&d, &runtime, q)?;
    Ok(Json(
        serde_json::to_value(pool.status()).unwrap_or_default(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolSize {
    target: Option<usize>,
    max: Option<usize>,
}

async fn put_pool(
    State(d): State<AppState>,
    Path(runtime): Path<String>,
    q: Result<Query<PoolQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let pool = pool_of(&d, &runtime, q)?.clone();
    let body = read_body(body, &headers, 64 * 1024, "pool settings").await?;
    let size: PoolSize = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("pool settings: {e}"),
        )
    })?;
    if size.max == Some(0) || size.target.unwrap_or(0) > 256 || size.max.unwrap_or(0) > 256 {
        return Err(ApiError::bad_request(
            "target must be 0..=256 and max 1..=256",
        ));
    }
    Ok(Json(
        serde_json::to_value(pool.set_size(size.target, size.max)).unwrap_or_default(),
    ))
}

async fn list_sandboxes(State(d): State<AppState>) -> Json<serde_json::Value> {
    let all: Vec<_> = d.pools().flat_map(|p| p.sandboxes()).collect();
    Json(json!({ "sandboxes": all }))
}

/// `POST /v1/sandboxes`: a sandbox created by someone else with ember's
/// agent listening on a socket (what `ember-runtime start` sends for a
/// container annotated `dev.ember.sandbox`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdoptRequest {
    id: String,
    runtime: String,
    pid: u32,
    socket: String,
    cgroups_path: String,
}

async fn adopt_sandbox(
    State(d): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let body = read_body(body, &headers, 64 * 1024, "adopt request").await?;
    let req: AdoptRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("adopt body: {e}"),
        )
    })?;
    let valid_id = !req.id.is_empty()
        && req.id.len() <= 128
        && req
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid_id {
        return Err(ApiError::bad_request(format!(
            "invalid sandbox id {:?}: 1-128 of A-Z a-z 0-9 - _ .",
            req.id
        )));
    }
    if !req.socket.starts_with('/') || !req.cgroups_path.starts_with('/') {
        return Err(ApiError::bad_request(format!(
            "socket {:?} and cgroups_path {:?} must be absolute",
            req.socket, req.cgroups_path
        )));
    }
    if d.pools()
        .any(|p| p.sandboxes().iter().any(|s| s.id == req.id))
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "sandbox_exists",
            format!("a sandbox {:?} is already in a pool", req.id),
        ));
    }
    let pool = d
        .pool(&req.runtime, None)
        .ok_or_else(|| unknown_pool(&req.runtime, None, &d.backends))?;
    let ext = ember_runtimes::ExternalSandbox {
        id: req.id.clone(),
        pid: req.pid,
        socket: req.socket.into(),
        cgroups_path: req.cgroups_path,
    };
    let sb = ember_runtimes::Sandbox::adopt(&ext, &d.cgroups(), std::time::Duration::from_secs(30))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "sandbox_failed",
                format!("adopting sandbox {:?}: {e}", req.id),
            )
        })?;
    pool.adopt(sb).map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            e.to_string(),
        )
    })?;
    let adopted = json!({ "adopted": { "id": req.id, "runtime": req.runtime, "pid": req.pid } });
    Ok((StatusCode::CREATED, Json(adopted)))
}

async fn kill_sandbox(
    State(d): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    for pool in d.pools() {
        match pool.kill(&id) {
            Ok(Some(killed)) => {
                return Ok(Json(json!({ "killed": killed })));
            }
            Ok(None) => {}
            Err(e) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "not_running",
                    e.to_string(),
                ))
            }
        }
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "sandbox_not_found",
        format!("no sandbox {id:?}; see GET /v1/sandboxes"),
    ))
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
