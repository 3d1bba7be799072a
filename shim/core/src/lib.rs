//! emberd's core: everything the daemon does, none of how it is asked.
//!
//! Owns the function registry (SQLite), deploys (unpacking into the code
//! store, the sandboxed build), the warm pools per language runtime and
//! backend with their sizing policy, the invocation path (take a sandbox,
//! thaw, inject, run, answer, put it back) and function zygotes,
//! invocation records and metrics, recovery of a previous run's leftovers
//! and the drain at shutdown. It is driven through [`Daemon`] and answers
//! in `ember-api`'s types.
//!
//! Does not own the HTTP API, the dashboard, listeners or signals
//! (`ember-server`), the command line ([`Settings`] is built by the
//! server from its flags and the config file), sandbox mechanics
//! (`ember-runtimes`) or code storage and mount injection
//! (`ember-injector`).

pub mod admission;
mod adopted;
pub mod daemon;
mod deploy;
pub mod git;
pub mod history;
pub mod invoke;
pub mod metrics;
mod pause;
pub mod pool;
mod recover;
pub mod registry;
pub mod sandboxes;
pub mod sessions;
pub mod settings;
mod shutdown;
mod start;
mod trial;
pub mod warn_limit;
pub mod zygotes;

pub use daemon::{CodeSource, Daemon, DaemonError, DeployError, DeploySpec};
pub use invoke::InvokeError;
pub use settings::Settings;
pub use trial::TestError;

/// The backend a sandbox runs on, as the API names it (`external` for one
/// adopted from another runtime).
pub(crate) fn backend_of(sb: &ember_runtimes::Sandbox) -> ember_api::Backend {
    if sb.external {
        ember_api::Backend::External
    } else {
        ember_api::Backend::by_name(sb.backend).unwrap_or(ember_api::Backend::External)
    }
}
