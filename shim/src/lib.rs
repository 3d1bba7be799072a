//! `emberd` and the `ember` CLI.
//!
//! Owns the daemon: warm pools of sandboxes per language runtime and
//! backend that follow demand and bind sandboxes to functions in
//! specialized mode, the invocation path (thaw, inject, run, eject,
//! freeze), the function registry in SQLite, the configuration file,
//! recovery of a previous run's leftovers, and the HTTP/1.1 + JSON API on a
//! Unix socket (`docs/api.md`), served over loopback HTTP with a web
//! dashboard when asked (`--http`); and the CLI that speaks that API. Sandbox
//! mechanics live in `ember-runtimes`, code storage and mount injection in
//! `ember-injector`.

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod config_file;
pub mod daemon;
pub mod dashboard;
pub mod deploy;
pub mod history;
pub mod invoke;
pub mod metrics;
pub mod oci_runtime;
pub mod pool;
pub mod progress;
pub mod registry;
pub mod validate;
pub mod zygotes;
