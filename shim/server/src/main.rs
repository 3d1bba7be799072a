//! emberd, the ember daemon: see `emberd --help` and docs/api.md.
//!
//! Owns the daemon's faces: its command line and the [`Settings`] built
//! from it (`config`), the HTTP/1.1 + JSON API on a Unix socket
//! (`routes`), which HTTP status each error code gets (`error`), the
//! `--http` dashboard (`dashboard`), the warm-up bar (`warm_up`), and its
//! life: listeners, signals, drain (`serve`). The only crate that names
//! both the core and HTTP.
//!
//! Does not own what the daemon does (`ember-core`), nor the wire types
//! (`ember-api`).
//!
//! [`Settings`]: ember_core::Settings

use clap::Parser;
mod config;
mod dashboard;
mod error;
mod routes;
mod serve;
mod warm_up;

use config::DaemonConfig;
use ember_api::Backend;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cfg = DaemonConfig::parse();
    raise_fd_limit();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        // Log lines go around the warm-up bar (only drawn on a terminal).
        .with_writer(|| ember_term::LogWriter)
        .init();
    // The libcontainer backend's creator must be forked while emberd has a
    // single thread (before the async runtime); it also lets recovery find
    // a previous run's libcontainer sandboxes.
    let settings = cfg.settings()?;
    let root = match (settings.default_backend(), &settings.runtime_root) {
        (Backend::Libcontainer, Some(root)) => root.clone(),
        _ => settings.run_dir.join("libcontainer"),
    };
    if let Err(e) = ember_runtimes::backend::libcontainer::start_creator(&root) {
        if settings.backends.contains(&Backend::Libcontainer) {
            return Err(anyhow::anyhow!("starting the libcontainer backend: {e}"));
        }
        tracing::warn!("libcontainer backend unavailable: {e}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve::run(cfg, settings))?;
    Ok(())
}

/// Raise the soft limit on open files to the hard one: every sandbox holds
/// pipes, a namespace and cgroup files, and the dashboard's connections
/// (at most `dashboard::MAX_CONNECTIONS`) must leave plenty for them.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
