//! emberd: see `emberd --help` and docs/api.md.

use clap::Parser;
use ember_shim::config::DaemonConfig;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cfg = DaemonConfig::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(ember_shim::daemon::run(cfg))?;
    Ok(())
}
