//! Sandbox profiles: what a sandbox may do, rendered as OCI runtime config.
//!
//! Owns the named profiles (namespaces, capabilities, rlimits, masked and
//! read-only paths, `no_new_privileges`) and per-sandbox cgroup limits, and
//! renders them into the `linux` section and the process settings of an OCI
//! `config.json`. It does not own root filesystems, mounts or the process
//! command line (see `ember-runtimes`), nor run anything.

use oci_spec::runtime::{
    get_default_maskedpaths, get_default_readonly_paths, Capability, Linux, LinuxBuilder,
    LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, PosixRlimitBuilder,
    PosixRlimitType, Process,
};
use std::collections::HashSet;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("unknown sandbox profile {name:?} (known: {known})")]
    Unknown { name: String, known: String },
    #[error("rendering profile {profile:?} as OCI config: {source}")]
    Render {
        profile: &'static str,
        source: oci_spec::OciSpecError,
    },
}

/// Names accepted by [`Profile::by_name`].
pub const PROFILE_NAMES: &[&str] = &["default"];

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

/// A named set of restrictions for a sandbox's processes.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: &'static str,
    /// Capabilities of the sandbox's PID 1 (the agent). The interpreter
    /// and user code run as an unprivileged user with none.
    pub capabilities: Vec<Capability>,
    pub nofile: u64,
}

impl Profile {
    /// The profile every sandbox gets unless configured otherwise: fresh
    /// pid, mount, network (no interfaces but a down loopback), ipc, uts and
    /// cgroup namespaces; only the capabilities the agent needs to drop to an
    /// unprivileged user and to kill leftovers; Docker's masked and
    /// read-only `/proc` paths.
    pub fn default_profile() -> Profile {
        Profile {
            name: "default",
            capabilities: vec![Capability::Kill, Capability::Setuid, Capability::Setgid],
            nofile: 1024,
        }
    }

    pub fn by_name(name: &str) -> Result<Profile, ProfileError> {
        match name {
            "default" => Ok(Profile::default_profile()),
            _ => Err(ProfileError::Unknown {
                name: name.to_string(),
                known: PROFILE_NAMES.join(", "),
            }),
        }
    }

    fn render_err(&self) -> impl FnOnce(oci_spec::OciSpecError) -> ProfileError {
        let profile = self.name;
        move |source| ProfileError::Render { profile, source }
    }

    /// The OCI `linux` section for a sandbox in cgroup `cgroups_path`.
    pub fn linux(&self, cgroups_path: &str, limits: &Limits) -> Result<Linux, ProfileError> {
        let e = || self.render_err();
        let namespaces = [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Cgroup,
        ]
        .into_iter()
        .map(|t| LinuxNamespaceBuilder::default().typ(t).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(e())?;
        let resources = LinuxResourcesBuilder::default()
            .devices(vec![LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .access("rwm")
                .build()
                .map_err(e())?])
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(limits.memory_bytes as i64)
                    // No swap: an over-limit sandbox is OOM-killed, not slowed.
                    .swap(limits.memory_bytes as i64)
                    .build()
                    .map_err(e())?,
            )
            .pids(
                LinuxPidsBuilder::default()
                    .limit(limits.pids)
                    .build()
                    .map_err(e())?,
            )
            .build()
            .map_err(e())?;
        LinuxBuilder::default()
            .namespaces(namespaces)
            .resources(resources)
            .cgroups_path(cgroups_path)
            // Mounts made in the sandbox never propagate anywhere.
            .rootfs_propagation("private")
            .masked_paths(get_default_maskedpaths())
            .readonly_paths(get_default_readonly_paths())
            .build()
            .map_err(e())
    }

    /// Apply capabilities, rlimits and `no_new_privileges` to the sandbox's
    /// init process.
    pub fn apply_process(&self, process: &mut Process) -> Result<(), ProfileError> {
        let e = || self.render_err();
        let caps: HashSet<Capability> = self.capabilities.iter().copied().collect();
        let capabilities = LinuxCapabilitiesBuilder::default()
            .bounding(caps.clone())
            .effective(caps.clone())
            .permitted(caps)
            .inheritable(HashSet::new())
            .ambient(HashSet::new())
            .build()
            .map_err(e())?;
        let nofile = PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .soft(self.nofile)
            .hard(self.nofile)
            .build()
            .map_err(e())?;
        process.set_capabilities(Some(capabilities));
        process.set_rlimits(Some(vec![nofile]));
        process.set_no_new_privileges(Some(true));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_profile_names_the_known_ones() {
        let err = Profile::by_name("nope").unwrap_err().to_string();
        assert!(err.contains("\"nope\"") && err.contains("default"), "{err}");
    }

    #[test]
    fn default_profile_renders_isolated_namespaces_and_limits() {
        let p = Profile::by_name("default").unwrap();
        let limits = Limits {
            memory_bytes: 64 << 20,
            pids: 32,
        };
        let linux = p.linux("/ember/x/sb1", &limits).unwrap();
        let json = serde_json::to_value(&linux).unwrap();
        let ns: Vec<&str> = json["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        for want in ["pid", "mount", "network", "ipc", "uts", "cgroup"] {
            assert!(ns.contains(&want), "missing {want} in {ns:?}");
        }
        assert_eq!(json["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(json["resources"]["pids"]["limit"], 32);
        assert_eq!(json["cgroupsPath"], "/ember/x/sb1");
        assert_eq!(json["rootfsPropagation"], "private");
        assert!(json["maskedPaths"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "/proc/kcore"));

        let mut process = Process::default();
        p.apply_process(&mut process).unwrap();
        let pj = serde_json::to_value(&process).unwrap();
        let bounding = pj["capabilities"]["bounding"].as_array().unwrap();
        assert!(bounding.iter().any(|c| c == "CAP_KILL"));
        assert!(!bounding.iter().any(|c| c == "CAP_SYS_ADMIN"));
        assert_eq!(pj["noNewPrivileges"], true);
    }
}
