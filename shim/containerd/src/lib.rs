//! `containerd-shim-ember-v1`: a containerd shim v2 (runtime type
//! `io.containerd.ember.v1`) serving the task API v2 that containerd 1.6
//! speaks, so the CRI plugin (Kubernetes) runs pods on runc or gVisor's
//! runsc with ember's sandbox profiles.
//!
//! It owns containerd's side of a container's life: the shim's start,
//! serve and delete commands, one shim per pod (grouped by CRI's
//! sandbox-id annotation), the root filesystem mount, the processes'
//! streams (containerd's FIFOs handed straight to the process), exits (as
//! subreaper, or through `runsc wait` where every container of a gVisor
//! pod reports the sandbox's pid) and task events.
//!
//! It does not own what a container may do: every runtime command goes
//! through `ember-runtime` (crate `ember-oci-runtime`), which applies the
//! profile named by `dev.ember.profile` to bundles and exec'd processes and
//! turns `dev.ember.sandbox` containers into emberd's pool sandboxes. Which
//! runtime, and its flags, come from a TOML file named by the CRI runtime
//! entry's `ConfigPath` ([`config`]). See docs/containerd.md.

pub mod config;
pub mod container;
pub mod error;
pub mod events;
pub mod io;
pub mod process;
pub mod runtime;
pub mod service;
pub mod shim;
