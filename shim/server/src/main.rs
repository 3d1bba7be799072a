//! emberd: see `emberd --help` and docs/api.md.

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
