//! Sandboxes and what runs in them.
//!
//! Owns three things, kept apart:
//! - sandbox backends (`backend`): the trait and its runc, crun and runsc
//!   implementation through one driver of their command line, and youki's
//!   libcontainer in process;
//! - sandbox mechanics shared by every backend: rendering a sandbox's OCI
//!   bundle (lean root filesystem of read-only host binds, the agent as
//!   PID 1, `bundle`, `sandbox_files`), user namespaces (`userns`),
//!   creating, adopting and destroying sandboxes (`sandbox`), freezing and
//!   per-invocation limits through cgroups (`cgroup`, `limits`), and the
//!   framed stdio connection to `ember-agent` (`agent_conn`);
//! - language runtimes (`language`): Python and Node.js interpreters, and
//!   what a deploy does for a language (dependency checks, the sandboxed
//!   build).
//!
//! Does not own pools, scheduling or the invocation path (`ember-core`),
//! code storage and injection (`ember-injector`), the agent binary itself
//! (`runtimes/agent`) or the interpreter bootstraps it runs
//! (`runtimes/bootstraps`).

pub mod agent_conn;
pub mod backend;
pub mod bundle;
pub mod cgroup;
pub mod error;
pub mod language;
pub mod limits;
pub mod liveness;
pub mod sandbox;
pub mod sandbox_files;
pub mod userns;

pub use agent_conn::{AgentConn, AgentConnError};
pub use backend::by_name::backend_by_name;
pub use backend::{Backend, BackendOptions, Injection};
pub use error::RuntimeError;
pub use language::{Interpreter, Language};
pub use liveness::DeadProcess;
pub use sandbox::{ExternalSandbox, Sandbox, SandboxConfig};
