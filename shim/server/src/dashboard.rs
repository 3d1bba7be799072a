//! The optional web dashboard (`emberd --http ADDR:PORT`): a static page
//! plus the very API of the Unix socket, over TCP.
//!
//! The page is a client of `/v1/...` like any other; it needs nothing the
//! socket does not offer. Because a TCP port on loopback is open to every
//! local user while the socket is root's alone (0660), every API request
//! over HTTP needs a bearer token: a random one per start, written to
//! `<state-dir>/dashboard-token` (0600; never logged). The page itself and
//! its script are public; they hold no data. Deploys and tests from a host
//! path are refused over HTTP: they would copy host files for whoever
//! holds the token.
//!
//! The listener is bounded so that local users who hold no token cannot
//! starve emberd: at most [`MAX_CONNECTIONS`] connections at once (more
//! are closed as they come), each closed when it sends no complete
//! request head within [`HEADER_TIMEOUT`] (idle keep-alive included), and
//! a refused request closes its connection.

use crate::routes::OverHttp;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ember_core::Daemon;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the dashboard's listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("dashboard address {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "dashboard address {0} is not a loopback address: the dashboard has no \
         authentication and can deploy and invoke, so it listens on 127.0.0.1 or ::1 only \
         (reach it from elsewhere through an SSH tunnel or an authenticating proxy)"
    )]
    HttpNotLoopback(SocketAddr),
    #[error("dashboard token {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
}

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

/// Scripts, styles and requests from this origin only; never framed (the
/// invoke button must not be clickjacked).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'none'";

/// Bind the dashboard's listener. Only loopback addresses: the token keeps
/// other local users out, but it would cross the network in clear text.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, DashboardError> {
    if !addr.ip().is_loopback() {
        return Err(DashboardError::HttpNotLoopback(addr));
    }
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DashboardError::Http { addr, source })
}

/// A fresh random token, written to `path` readable by root alone.
pub fn publish_token(path: &Path) -> Result<String, DashboardError> {
    let mut raw = [0u8; 24];
    let io = |source| DashboardError::Token {
        path: path.to_path_buf(),
        source,
    };
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut raw))
        .map_err(io)?;
    let token = hex::encode(raw);
    let _ = std::fs::remove_file(path);
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?
    };
    writeln!(f, "{token}").map_err(io)?;
    Ok(token)
}

/// Where the token of a daemon on `state_dir` is kept.
pub fn token_path(state_dir: &Path) -> PathBuf {
    state_dir.join("dashboard-token")
}

/// Most HTTP connections open at once.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a connection may take to send a request head, or stay idle
/// between requests.
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long the listener waits before accepting again when the process is
/// out of file descriptors.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// Serve the page and the API on `listener` until `shutdown` resolves,
/// then let requests in flight finish.
pub async fn serve(
    daemon: Arc<Daemon>,
    listener: tokio::net::TcpListener,
    token: String,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let token: Arc<str> = token.into();
    let app = crate::routes::router(daemon)
        .route("/", get(page))
        .route("/dashboard.js", get(script))
        .route("/dashboard.css", get(style))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let token = token.clone();
                async move { guard(&token, req, next).await }
            },
        ));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: the sandboxes need descriptors
                    // more than a web page does.
                    tracing::warn!("dashboard accept: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Over the limit: closed at once, before any byte is read.
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = conn.await {
                tracing::debug!("dashboard connection: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The static files are public; everything else needs the token.
async fn guard(token: &str, req: Request, next: Next) -> Response {
    let public = req.method() == Method::GET
        && matches!(req.uri().path(), "/" | "/dashboard.js" | "/dashboard.css");
    if !public && !authorized(token, req.headers().get(header::AUTHORIZATION)) {
        let mut res = crate::error::ApiError::new(
            ember_api::ErrorCode::Unauthorized,
            "the HTTP API needs `Authorization: Bearer <token>`; the token is in \
             <state-dir>/dashboard-token, readable by root",
        )
        .into_response();
        // Nothing more from a client without the token on this connection.
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return res;
    }
    let mut req = req;
    req.extensions_mut().insert(OverHttp);
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Whether `value` is `Bearer <token>`, compared in constant time.
fn authorized(token: &str, value: Option<&HeaderValue>) -> bool {
    let Some(given) = value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn page() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE)
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
}

async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_authorized() {
        let t = "abc123";
        let h = |s: &str| Some(HeaderValue::from_str(s).unwrap());
        assert!(authorized(t, h("Bearer abc123").as_ref()));
        assert!(!authorized(t, h("Bearer abc124").as_ref()));
        assert!(!authorized(t, h("Bearer abc1234").as_ref()));
        assert!(!authorized(t, h("Bearer ").as_ref()));
        assert!(!authorized(t, h("Basic abc123").as_ref()));
        assert!(!authorized(t, h("abc123").as_ref()));
        assert!(!authorized(t, None));
    }

    #[tokio::test]
    async fn non_loopback_addresses_are_refused_with_the_reason() {
        let e = bind("0.0.0.0:0".parse().unwrap()).await.unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("0.0.0.0:0") && msg.contains("loopback"),
            "{msg}"
        );
        assert!(bind("127.0.0.1:0".parse().unwrap()).await.is_ok());
    }

    #[test]
    fn the_token_file_is_fresh_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = token_path(dir.path());
        let a = publish_token(&p).unwrap();
        let b = publish_token(&p).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 48);
        assert_eq!(std::fs::read_to_string(&p).unwrap().trim(), b);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn the_page_loads_only_its_own_script_and_style() {
        assert!(PAGE.contains(r#"src="/dashboard.js""#));
        assert!(PAGE.contains(r#"href="/dashboard.css""#));
        // The CSP forbids inline script; the page must not rely on any.
        assert!(!PAGE.contains("<script>"));
        assert!(!PAGE.contains("onclick="));
    }
}
