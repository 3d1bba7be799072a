//! A small HTTP/1.1 client for emberd's Unix socket, used by the CLI, the
//! benches and the tests.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot connect to emberd at {path}: {source} (is emberd running? see `emberd --help`)"
    )]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to emberd at {path}: {message}")]
    Http { path: PathBuf, message: String },
}

/// One answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
    /// The `Retry-After` header in seconds (a `429 overloaded` has one).
    pub retry_after: Option<u64>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The `error.message` of an error answer, or the raw body.
    pub fn error_message(&self) -> String {
        let v = self.json();
        match v["error"]["message"].as_str() {
            Some(m) => m.to_string(),
            None => String::from_utf8_lossy(&self.body).into_owned(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Client {
        Client {
            socket: socket.to_path_buf(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// One request on a fresh connection (closed afterwards).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Result<Answer, ClientError> {
        let mut conn = Connection::open(&self.socket).await?;
        conn.request(method, path, content_type, body).await
    }

    pub async fn get(&self, path: &str) -> Result<Answer, ClientError> {
        self.request(Method::GET, path, None, Bytes::new()).await
    }
}

/// A kept-alive HTTP/1.1 connection to emberd, for callers that send many
/// requests (benches, orchestrators): no connect or handshake per request.
pub struct Connection {
    socket: PathBuf,
    sender: http1::SendRequest<Full<Bytes>>,
}

impl Connection {
    pub async fn open(socket: &Path) -> Result<Connection, ClientError> {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|source| ClientError::Connect {
                path: socket.to_path_buf(),
                source,
            })?;
        let (sender, conn) =
            http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| ClientError::Http {
                    path: socket.to_path_buf(),
                    message: e.to_string(),
                })?;
        tokio::spawn(conn);
        Ok(Connection {
            socket: socket.to_path_buf(),
            sender,
        })
    }

    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Result<Answer, ClientError> {
        let http = |message: String| ClientError::Http {
            path: self.socket.clone(),
            message,
        };
        self.sender.ready().await.map_err(|e| http(e.to_string()))?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "ember");
        if let Some(ct) = content_type {
            req = req.header(hyper::header::CONTENT_TYPE, ct);
        }
        let req = req
            .body(Full::new(body.into()))
            .map_err(|e| http(e.to_string()))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| http(e.to_string()))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| http(e.to_string()))?
            .to_bytes();
        Ok(Answer {
            status,
            body,
            retry_after,
        })
    }
}
