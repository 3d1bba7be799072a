//! Sandbox backends. The trait: what emberd needs from a container runtime
//! to keep a pool of sandboxes; the CLI-driven implementation (runc, crun,
//! runsc, through one driver of their command line, `cli_driver.rs`);
//! youki's libcontainer in process (`libcontainer.rs`); and `by_name.rs`,
//! which says which backend a name means.
//!
//! Freezing and thawing go through the sandbox's cgroup for every backend
//! (`cgroup.rs`): a file write, no runtime process on the hot path. How code
//! reaches `/fn` differs: runc and crun sandboxes share the host kernel's
//! mount namespaces, so code is mounted into the sandbox's namespace; a
//! runsc sandbox's files are served by gVisor's gofer, so code is placed in
//! a per-sandbox host directory that is bound at `/fn` (docs/backends.md).

pub mod by_name;
pub mod cli_driver;
pub mod libcontainer;

use crate::agent_conn::AgentConn;
use crate::backend::cli_driver::{CliDriver, ContainerInfo};
use crate::error::RuntimeError;
use std::path::{Path, PathBuf};

/// How code gets into a sandbox of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injection {
    /// Clone the code tree as a read-only mount and attach it at `/fn` in
    /// the sandbox's mount namespace (reached through its init pid).
    MountNamespace,
    /// Link the code tree into the sandbox's host directory, which the
    /// bundle binds read-only at `/fn`; `/tmp` is a tmpfs inside the
    /// sandbox that the agent empties after each invocation.
    HostDirectory,
}

/// A container runtime that can hold ember sandboxes.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// `runc`, `crun`, `runsc`.
    fn name(&self) -> &'static str;
    fn injection(&self) -> Injection;
    /// Whether the sandbox cgroup's pids counter counts the function's
    /// processes (runc, crun) or the runtime's own host threads (runsc:
    /// the Sentry's), where a per-invocation pids limit would starve it.
    fn pids_limit_applies(&self) -> bool {
        self.injection() == Injection::MountNamespace
    }
    /// Create and start the container of `bundle` detached, its init
    /// keeping our stdio pipes (the agent connection). Returns the host pid
    /// of the container's init (for runsc: of the sandbox process).
    async fn run(&self, id: &str, bundle: &Path) -> Result<(u32, AgentConn), RuntimeError>;
    /// Kill and remove a container; one the runtime does not know is fine.
    async fn delete(&self, id: &str) -> Result<(), RuntimeError>;
    /// Containers in this backend's state root.
    async fn list(&self) -> Result<Vec<ContainerInfo>, RuntimeError>;
    /// The runtime's own pause (for comparison with the cgroup freezer).
    async fn pause(&self, id: &str) -> Result<(), RuntimeError>;
    async fn resume(&self, id: &str) -> Result<(), RuntimeError>;
}

/// Settings for building a backend.
#[derive(Debug, Clone, Default)]
pub struct BackendOptions {
    /// The runtime binary (default: the backend's name, from `PATH`).
    pub binary: Option<PathBuf>,
    /// The runtime's state root (default: the runtime's own).
    pub root: Option<PathBuf>,
    /// runsc's `--platform` (`ptrace`, `kvm`, `systrap`).
    pub runsc_platform: String,
}

/// A CLI-driven backend: runc, crun or runsc.
#[derive(Debug, Clone)]
pub struct CliBackend {
    pub(crate) name: &'static str,
    pub(crate) injection: Injection,
    pub cli: CliDriver,
}

#[async_trait::async_trait]
impl Backend for CliBackend {
    fn name(&self) -> &'static str {
        self.name
    }

    fn injection(&self) -> Injection {
        self.injection
    }

    async fn run(&self, id: &str, bundle: &Path) -> Result<(u32, AgentConn), RuntimeError> {
        self.cli.run_detached(id, bundle).await
    }

    async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        self.cli.delete_force(id).await
    }

    async fn list(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        self.cli.list().await
    }

    async fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        self.cli.simple("pause", id).await
    }

    async fn resume(&self, id: &str) -> Result<(), RuntimeError> {
        self.cli.simple("resume", id).await
    }
}
