//! `ember-runtime`: the OCI runtime command line (runc's shape: global
//! flags, then `create`, `start`, `state`, `kill`, `delete`, `pause`,
//! `resume`, `exec`, `ps`, `features`, `spec`, ...) in front of a real
//! runtime, so containerd's runc v2 shim (`BinaryName`) and Docker
//! (`--runtime`) can use ember's sandbox profiles.
//!
//! What this crate owns: parsing the command line ([`cli`], with youki's
//! `liboci-cli`, so a malformed call is refused in the same terms);
//! reading and writing a bundle's `config.json` on `create` and `run`
//! ([`bundle`]) to apply the profile it names in its `dev.ember.profile`
//! annotation; turning a bundle annotated `dev.ember.sandbox` into an
//! ember sandbox ([`sandbox`]) and registering it with emberd once started
//! ([`register`]); restricting processes `exec`'d into such a container
//! ([`exec`]); running the delegate runtime (runc unless configured,
//! [`delegate`]) with the very same arguments (for such an `exec`, the
//! same but restricted); and reporting its own errors where the shim
//! looks ([`report`]). Exit codes, `state` JSON, logs and error output are
//! therefore the delegate's own, which is what the shim parses.
//!
//! What it does not own: what a profile does to an OCI config or process
//! (`ember_profiles::apply`: a profile only ever takes permissions away),
//! the layout of ember's sandboxes (the agent path, the sandbox user, the
//! host directories and interpreters come from `ember_runtimes`), emberd's
//! API types (`ember_api`), nor running containers itself.

pub mod bundle;
pub mod cli;
pub mod delegate;
mod error;
pub mod exec;
pub mod register;
pub mod report;
pub mod sandbox;

pub use bundle::{apply_profile_to_bundle, prepare_bundle, read_config, requested_profile};
pub use cli::{RuntimeCli, RuntimeCommand};
pub use delegate::{Delegate, StateError};
pub use error::RuntimeCliError;
pub use register::{emberd_socket, register_if_sandbox, RegisterError};
pub use report::report_error;
pub use sandbox::{agent_path, make_sandbox, SandboxError};

/// The annotation naming the ember profile to apply to a container.
pub const PROFILE_ANNOTATION: &str = "dev.ember.profile";

/// The annotation that makes a container an ember sandbox of a language
/// runtime (`python3`, `node`): its process becomes ember's agent, which
/// emberd adopts into that runtime's pool once the container starts.
pub const SANDBOX_ANNOTATION: &str = "dev.ember.sandbox";

/// Host directory, inside the bundle, holding the agent's socket.
const AGENT_RUN_DIR: &str = "ember-run";
