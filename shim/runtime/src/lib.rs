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
//! ember sandbox ([`sandbox`], its socket in a short host directory,
//! [`sandbox_dir`]; never a pod's pause container, [`sandbox_runtime`])
//! and registering it with emberd once started ([`register`], its cgroup
//! found whatever the cgroup driver, [`systemd_cgroup`], over [`emberd`]);
//! thawing such a sandbox before an `exec` or `kill` ([`thaw`]) and
//! removing its directory on `delete`; restricting processes `exec`'d into
//! a container with a profile ([`exec`]); running the delegate runtime
//! (runc unless configured, [`delegate`]) with the very same arguments
//! (for such an `exec`, the same but restricted; `checkpoint` unparsed,
//! [`cli::PASSTHROUGH`]); and reporting its own errors where the shim
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
pub mod emberd;
mod error;
pub mod exec;
pub mod register;
pub mod report;
pub mod sandbox;
pub mod sandbox_dir;
pub mod systemd_cgroup;
pub mod thaw;

pub use bundle::{apply_profile_to_bundle, prepare_bundle, read_config, requested_profile};
pub use cli::{RuntimeCli, RuntimeCommand};
pub use delegate::{Delegate, StateError};
pub use emberd::emberd_socket;
pub use error::RuntimeCliError;
pub use register::{register_if_sandbox, RegisterError};
pub use report::report_error;
pub use sandbox::{agent_path, make_sandbox, SandboxError};
pub use sandbox_dir::SandboxDir;

/// The annotation naming the ember profile to apply to a container.
pub const PROFILE_ANNOTATION: &str = "dev.ember.profile";

/// The annotation that makes a container an ember sandbox of a language
/// runtime (`python3`, `node`): its process becomes ember's agent, which
/// emberd adopts into that runtime's pool once the container starts.
pub const SANDBOX_ANNOTATION: &str = "dev.ember.sandbox";

/// CRI's annotation of a container's kind: `sandbox` for a pod's pause
/// container, `container` for its others (containerd).
pub const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

/// CRI-O's spelling of [`CRI_CONTAINER_TYPE`].
pub const CRIO_CONTAINER_TYPE: &str = "io.kubernetes.cri-o.ContainerType";

/// The language runtime a container's `annotations` make it an ember
/// sandbox of: its `dev.ember.sandbox`, unless it is a pod's pause
/// container (the kubelet passes pod annotations to every container of
/// the pod, the pause container included, which stays as it is).
pub fn sandbox_runtime(annotations: &serde_json::Value) -> Option<&str> {
    let pause = [CRI_CONTAINER_TYPE, CRIO_CONTAINER_TYPE]
        .iter()
        .any(|key| annotations[*key] == "sandbox");
    annotations[SANDBOX_ANNOTATION].as_str().filter(|_| !pause)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn a_pods_pause_container_is_never_a_sandbox() {
        let ann = |kind: &str, value: &str| json!({"dev.ember.sandbox": "python3", kind: value});
        for (kind, value, runtime) in [
            (super::CRI_CONTAINER_TYPE, "sandbox", None),
            (super::CRIO_CONTAINER_TYPE, "sandbox", None),
            (super::CRI_CONTAINER_TYPE, "container", Some("python3")),
            (super::CRIO_CONTAINER_TYPE, "container", Some("python3")),
            ("other", "x", Some("python3")),
        ] {
            assert_eq!(
                super::sandbox_runtime(&ann(kind, value)),
                runtime,
                "{kind}={value}"
            );
        }
        assert_eq!(super::sandbox_runtime(&json!({})), None);
        assert_eq!(super::sandbox_runtime(&serde_json::Value::Null), None);
    }
}
