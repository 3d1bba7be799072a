//! Talking to emberd from `ember-runtime` (a short-lived process with no
//! runtime of its own): one request on its Unix socket, with a deadline.

use ember_api::client::{Answer, Client, ClientError};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why emberd gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum EmberdError {
    #[error("starting a runtime to talk to emberd: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("emberd at {socket} did not answer {path} within {} ms", .after.as_millis())]
    Timeout {
        socket: PathBuf,
        path: String,
        after: Duration,
    },
}

/// Where emberd's API is: `EMBER_SOCKET`, else its default.
pub fn emberd_socket() -> PathBuf {
    std::env::var_os("EMBER_SOCKET")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/ember/ember.sock"))
}

/// `POST path` with a JSON `body` (empty: none) to emberd at `socket`,
/// waiting at most `within`.
pub fn post(
    socket: &Path,
    path: &str,
    body: String,
    within: Duration,
) -> Result<Answer, EmberdError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(EmberdError::Runtime)?;
    let client = Client::new(socket);
    let content_type = (!body.is_empty()).then_some("application/json");
    let request = client.request(hyper::Method::POST, path, content_type, body);
    match rt.block_on(async { tokio::time::timeout(within, request).await }) {
        Ok(answer) => Ok(answer?),
        Err(_) => Err(EmberdError::Timeout {
            socket: socket.to_path_buf(),
            path: path.to_string(),
            after: within,
        }),
    }
}
