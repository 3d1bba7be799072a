//! Sandbox backends, language runtimes and the connection to the agent
//! inside a sandbox.
//!
//! Owns: the language runtimes (Python, Node.js), their bootstraps and
//! deploy-time dependency installation; rendering a sandbox's OCI bundle
//! (lean root filesystem of read-only host binds, the agent as PID 1);
//! creating and destroying sandboxes through the backends (runc, crun,
//! runsc, libcontainer); freezing and thawing them via the cgroup freezer;
//! per-invocation cgroup limits; and the framed stdio connection to
//! `ember-agent`. Does not own pools, scheduling or code injection (see
//! `ember-shim` and `ember-injector`), nor the agent binary itself
//! (`runtimes/agent`).

pub mod agent_conn;
pub mod backend;
pub mod backends;
pub mod build;
pub mod bundle;
pub mod cgroup;
pub mod deps;
pub mod error;
pub mod language;
pub mod libcontainer;
pub mod limits;
pub mod oci_cli;
pub mod sandbox;
pub mod sandbox_files;
pub mod userns;

pub use agent_conn::{AgentConn, AgentConnError};
pub use backend::{Backend, BackendOptions, Injection};
pub use backends::{backend_by_name, BACKEND_NAMES};
pub use error::RuntimeError;
pub use language::{Interpreter, Language};
pub use sandbox::{ExternalSandbox, Sandbox, SandboxConfig};
