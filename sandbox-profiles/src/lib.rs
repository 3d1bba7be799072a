//! Sandbox profiles: what a sandbox and the function code in it may do.
//!
//! Owns the named profiles (`default`, `strict`): namespaces, capabilities,
//! rlimits, masked and read-only paths, `no_new_privileges`, the seccomp
//! rules, and per-sandbox cgroup limits. A profile renders two things: the
//! OCI `linux` section and process settings of a sandbox (feature `oci`),
//! and the BPF programs a worker installs on itself before user code runs
//! (always available, so the static agent can build them without
//! `oci-spec`). With `oci` it also applies a profile to a container's own
//! OCI config, only ever taking permissions away ([`apply`], for
//! `ember-runtime`). It does not own root filesystems, mounts, the process
//! command line (see `ember-runtimes`), reading or writing bundles, nor
//! run or install anything.
//!
//! Why each rule exists is written down in `docs/isolation.md`.

#[cfg(feature = "oci")]
pub mod apply;
#[cfg(feature = "oci")]
pub mod intersect;
#[cfg(feature = "oci")]
mod oci;
pub mod seccomp;
pub mod syscalls;

pub use seccomp::{WorkerRules, KERNEL_SURFACE, STRICT_EXTRA};

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("unknown sandbox profile {name:?} (known: {known})")]
    Unknown { name: String, known: String },
    #[cfg(feature = "oci")]
    #[error("rendering profile {profile:?} as OCI config: {source}")]
    Render {
        profile: &'static str,
        source: oci_spec::OciSpecError,
    },
    #[error("building seccomp filter: {message}")]
    Seccomp { message: String },
    #[cfg(feature = "oci")]
    #[error("restricting the container's seccomp filter by profile {profile:?}: {source}")]
    Intersect {
        profile: &'static str,
        source: intersect::IntersectError,
    },
}

/// Names accepted by [`Profile::by_name`].
pub const PROFILE_NAMES: &[&str] = &["default", "strict"];

/// cgroup limits of one sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub pids: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 512 * 1024 * 1024,
            pids: 256,
        }
    }
}

/// Capabilities of a sandbox's PID 1 (the agent): drop to the unprivileged
/// user that runs the interpreter (`SETUID`, `SETGID`, given up once the
/// zygote runs) and kill what an invocation leaves behind (`KILL`). The
/// interpreter and user code run as that user with none.
pub const AGENT_CAPABILITIES: &[&str] = &["CAP_KILL", "CAP_SETGID", "CAP_SETUID"];

/// A named set of restrictions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: &'static str,
    /// `strict`: for untrusted code (see [`STRICT_EXTRA`]).
    pub strict: bool,
    /// `RLIMIT_NOFILE` of the sandbox.
    pub nofile: u64,
}

impl Profile {
    /// Fresh pid, mount, network (no interfaces but a down loopback), ipc,
    /// uts and cgroup namespaces; the agent's three capabilities; Docker's
    /// masked and read-only `/proc` paths; a seccomp allow-list close to
    /// Docker's default; workers refuse [`KERNEL_SURFACE`].
    pub fn default_profile() -> Profile {
        Profile {
            name: "default",
            strict: false,
            nofile: 1024,
        }
    }

    /// `default`, and workers also refuse [`STRICT_EXTRA`] and every socket
    /// family but `AF_UNIX`.
    pub fn strict_profile() -> Profile {
        Profile {
            name: "strict",
            strict: true,
            nofile: 256,
        }
    }

    pub fn by_name(name: &str) -> Result<Profile, ProfileError> {
        match name {
            "default" => Ok(Profile::default_profile()),
            "strict" => Ok(Profile::strict_profile()),
            _ => Err(ProfileError::Unknown {
                name: name.to_string(),
                known: PROFILE_NAMES.join(", "),
            }),
        }
    }

    /// The rules of the filters a worker installs before user code runs.
    pub fn worker_rules(&self) -> WorkerRules {
        WorkerRules::for_profile(self.strict)
    }

    /// The filters a worker installs for this profile once it knows its
    /// function, on top of [`worker_base_program`], as BPF bytes in
    /// installation order (none for `default`).
    pub fn worker_programs(&self) -> Result<Vec<Vec<u8>>, ProfileError> {
        match WorkerRules::extra(self.strict) {
            None => Ok(Vec::new()),
            Some(rules) => Ok(rules
                .compile()?
                .iter()
                .map(seccomp::program_bytes)
                .collect()),
        }
    }
}

/// The filter every worker installs as soon as it is forked (the rules
/// common to all profiles), as BPF bytes.
pub fn worker_base_program() -> Result<Vec<u8>, ProfileError> {
    let progs = WorkerRules::base().compile()?;
    Ok(progs.iter().flat_map(seccomp::program_bytes).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_profile_names_the_known_ones() {
        let err = Profile::by_name("nope").unwrap_err().to_string();
        assert!(
            err.contains("\"nope\"") && err.contains("default") && err.contains("strict"),
            "{err}"
        );
    }

    #[test]
    fn every_named_profile_compiles_to_bpf() {
        let base = worker_base_program().unwrap();
        assert!(!base.is_empty());
        for name in PROFILE_NAMES {
            let mut progs = Profile::by_name(name).unwrap().worker_programs().unwrap();
            assert_eq!(progs.len(), usize::from(*name == "strict"), "{name}");
            progs.push(base.clone());
            for p in &progs {
                assert!(
                    !p.is_empty() && p.len() % 8 == 0,
                    "{name}: {} bytes",
                    p.len()
                );
                // The kernel refuses programs longer than BPF_MAXINSNS.
                assert!(p.len() / 8 <= 4096, "{name}: {} instructions", p.len() / 8);
            }
        }
    }

    #[test]
    fn strict_refuses_more_than_default() {
        let d = Profile::default_profile().worker_rules();
        let s = Profile::strict_profile().worker_rules();
        for n in &d.eperm {
            assert!(s.eperm.contains(n), "strict lets {n} through");
        }
        for n in ["ptrace", "execve", "process_vm_readv", "memfd_create"] {
            assert!(s.eperm.contains(&n) && !d.eperm.contains(&n), "{n}");
        }
        assert!(s.unix_sockets_only && !d.unix_sockets_only);
        for n in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "bpf",
            "keyctl",
            "add_key",
            "perf_event_open",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "userfaultfd",
            "io_uring_setup",
            "io_uring_enter",
        ] {
            assert!(d.eperm.contains(&n), "default lets {n} through");
        }
    }
}
