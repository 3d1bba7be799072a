//! emberd's life: bind the socket (and the dashboard's port), start the
//! core, serve until SIGTERM or SIGINT, drain, and clean up. The one place
//! that names both the core and the server.

use crate::config::DaemonConfig;
use ember_core::settings::Settings;
use ember_core::{Daemon, DaemonError};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why emberd could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error("socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another emberd is already serving on {0}")]
    SocketInUse(PathBuf),
    #[error(transparent)]
    Dashboard(#[from] crate::dashboard::DashboardError),
}

/// Run emberd until SIGTERM or SIGINT, then drain: the API keeps
/// answering (new invocations get `503 shutting_down`) while running
/// invocations finish, up to `--drain-timeout-ms`; then every sandbox is
/// removed, the listeners close and the socket is deleted.
pub async fn run(cfg: DaemonConfig, settings: Settings) -> Result<(), ServeError> {
    let socket = cfg.socket.clone();
    let sock_err = |source| ServeError::Socket {
        path: socket.clone(),
        source,
    };
    // Registered once, before anything can be reached: the first signal
    // starts the drain (even one sent the moment the socket answers), a
    // second one (none is missed in between) cuts it short.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    clear_socket(&socket)?;
    // Bound before any sandbox exists, so a taken port fails fast.
    let http = match cfg.http {
        Some(addr) => Some(crate::dashboard::bind(addr).await?),
        None => None,
    };
    let grace = Duration::from_millis(cfg.drain_timeout_ms);
    let token_path = crate::dashboard::token_path(&settings.state_dir);
    let daemon = Daemon::start(settings).await?;
    let http = match http {
        Some(l) => {
            let token = dashboard_token(&l, &token_path)?;
            Some((l, token))
        }
        None => None,
    };
    let listener = listen(&socket).map_err(sock_err)?;
    tracing::info!(socket = %socket.display(), "serving");
    crate::warm_up::spawn_warm_up(daemon.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut api = tokio::spawn(crate::routes::serve(
        daemon.clone(),
        listener,
        stopped(stop_rx.clone()),
    ));
    let dashboard = http.map(|(l, token)| {
        tokio::spawn(crate::dashboard::serve(
            daemon.clone(),
            l,
            token,
            stopped(stop_rx.clone()),
        ))
    });
    let failed = tokio::select! {
        _ = term.recv() => {
            tracing::info!("SIGTERM: draining");
            None
        }
        _ = int.recv() => {
            tracing::info!("SIGINT: draining");
            None
        }
        r = &mut api => Some(r),
    };
    let hurry = async {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    daemon.shutdown(grace, hurry).await;
    let _ = stop_tx.send(true);
    let served = match failed {
        Some(r) => r,
        None => api.await,
    };
    if let Some(d) = dashboard {
        if let Ok(Err(e)) = d.await {
            tracing::warn!("dashboard listener: {e}");
        }
    }
    let _ = std::fs::remove_file(&socket);
    match served {
        Ok(r) => r.map_err(sock_err),
        Err(e) => Err(sock_err(std::io::Error::other(e))),
    }
}

/// Remove a stale socket file (one nobody answers on) and create its
/// directory; a live one means another emberd serves there.
fn clear_socket(socket: &Path) -> Result<(), ServeError> {
    let sock_err = |source| ServeError::Socket {
        path: socket.to_path_buf(),
        source,
    };
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(ServeError::SocketInUse(socket.to_path_buf()));
        }
        std::fs::remove_file(socket).map_err(sock_err)?;
    }
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(sock_err)?;
    }
    Ok(())
}

/// The API's socket, for root and its group only.
fn listen(socket: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let listener = tokio::net::UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// A fresh dashboard token in its file, and where the dashboard is.
fn dashboard_token(l: &tokio::net::TcpListener, token_path: &Path) -> Result<String, ServeError> {
    let token = crate::dashboard::publish_token(token_path)?;
    if let Ok(addr) = l.local_addr() {
        // Never the token itself: logs are read by more people than root.
        tracing::info!(
            token_file = %token_path.display(),
            "dashboard on http://{addr}/ (open http://{addr}/#token=<the token in token_file>)"
        );
    }
    Ok(token)
}
