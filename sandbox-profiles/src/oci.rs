//! Rendering a profile as OCI runtime config: the `linux` section of a
//! sandbox's `config.json` and its init process settings.

use crate::intersect::intersect;
use crate::seccomp::sandbox_rules;
use crate::{Limits, Profile, ProfileError};
use oci_spec::runtime::{
    get_default_maskedpaths, get_default_readonly_paths, Arch, Capability, Linux, LinuxBuilder,
    LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, LinuxSeccomp, LinuxSeccompAction,
    LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscallBuilder,
    PosixRlimitBuilder, PosixRlimitType, Process,
};
use serde_json::Value;
use std::collections::HashSet;

/// Paths hidden beyond Docker's (`get_default_maskedpaths`): host details
/// a function has no use for, readable by any user on the host.
pub const MASKED_BEYOND_DOCKER: &[(&str, &str)] = &[
    ("/proc/config.gz", "the host kernel's build configuration"),
    (
        "/proc/kallsyms",
        "kernel symbol names (addresses are zeroed for users)",
    ),
    ("/proc/modules", "the host's loaded kernel modules"),
    ("/proc/zoneinfo", "the host's memory zones"),
    ("/sys/kernel/vmcoreinfo", "kernel layout for crash dumps"),
    ("/sys/kernel/notes", "the host kernel's build id"),
    ("/sys/module", "the host's modules and their parameters"),
    (
        "/sys/devices/virtual/dmi",
        "hardware vendor, product and board names",
    ),
];

fn masked_paths() -> Vec<String> {
    let mut paths = get_default_maskedpaths();
    paths.extend(MASKED_BEYOND_DOCKER.iter().map(|(p, _)| p.to_string()));
    paths
}

impl Profile {
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
            .masked_paths(masked_paths())
            .readonly_paths(get_default_readonly_paths())
            .seccomp(self.oci_seccomp()?)
            .build()
            .map_err(e())
    }

    /// Apply capabilities, rlimits and `no_new_privileges` to the sandbox's
    /// init process.
    pub fn apply_process(&self, process: &mut Process) -> Result<(), ProfileError> {
        let e = || self.render_err();
        // The same set as AGENT_CAPABILITIES (a test keeps them equal).
        let caps: HashSet<Capability> = [Capability::Kill, Capability::Setgid, Capability::Setuid]
            .into_iter()
            .collect();
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

    /// The seccomp filter for a container whose bundle has filter `bundle`
    /// (its `linux.seccomp`): what both allow ([`crate::intersect`]), so
    /// the profile never lets through what the bundle refuses. Without
    /// one, the profile's own ([`Profile::oci_seccomp`]).
    pub fn seccomp_within(&self, bundle: Option<&Value>) -> Result<Value, ProfileError> {
        let own = serde_json::to_value(self.oci_seccomp()?).map_err(|e| ProfileError::Seccomp {
            message: format!("rendering profile {:?}'s filter as JSON: {e}", self.name),
        })?;
        match bundle.filter(|b| !b.is_null()) {
            None => Ok(own),
            Some(b) => intersect(b, &own).map_err(|source| ProfileError::Intersect {
                profile: self.name,
                source,
            }),
        }
    }

    /// The sandbox-level seccomp filter (runc compiles it with libseccomp):
    /// an allow-list, everything else fails with `EPERM`.
    pub fn oci_seccomp(&self) -> Result<LinuxSeccomp, ProfileError> {
        let e = || self.render_err();
        let mut syscalls = Vec::new();
        for rule in sandbox_rules(self.strict) {
            let args = rule
                .args
                .iter()
                .map(|&(index, op, value, value_two)| {
                    let op = match op {
                        "eq" => LinuxSeccompOperator::ScmpCmpEq,
                        "ne" => LinuxSeccompOperator::ScmpCmpNe,
                        _ => LinuxSeccompOperator::ScmpCmpMaskedEq,
                    };
                    LinuxSeccompArgBuilder::default()
                        .index(index as usize)
                        .value(value)
                        .value_two(value_two)
                        .op(op)
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(e())?;
            let mut b = LinuxSyscallBuilder::default()
                .names(rule.names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .action(if rule.errno.is_some() {
                    LinuxSeccompAction::ScmpActErrno
                } else {
                    LinuxSeccompAction::ScmpActAllow
                });
            if let Some(errno) = rule.errno {
                b = b.errno_ret(errno);
            }
            if !args.is_empty() {
                b = b.args(args);
            }
            syscalls.push(b.build().map_err(e())?);
        }
        LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActErrno)
            .default_errno_ret(libc::EPERM as u32)
            // x86_64 only: 32-bit entry points (int 0x80, x32) would
            // bypass rules written for the 64-bit numbers.
            .architectures(vec![Arch::ScmpArchX86_64])
            .syscalls(syscalls)
            .build()
            .map_err(e())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for (path, _) in MASKED_BEYOND_DOCKER {
            assert!(
                json["maskedPaths"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p == path),
                "{path} not masked"
            );
        }

        let mut process = Process::default();
        p.apply_process(&mut process).unwrap();
        let pj = serde_json::to_value(&process).unwrap();
        let bounding = pj["capabilities"]["bounding"].as_array().unwrap();
        let mut names: Vec<&str> = bounding.iter().map(|c| c.as_str().unwrap()).collect();
        names.sort_unstable();
        assert_eq!(names, crate::AGENT_CAPABILITIES);
        assert!(!bounding.iter().any(|c| c == "CAP_SYS_ADMIN"));
        assert_eq!(pj["noNewPrivileges"], true);
    }

    fn allowed(seccomp: &serde_json::Value) -> Vec<String> {
        seccomp["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "SCMP_ACT_ALLOW" && r.get("args").is_none())
            .flat_map(|r| r["names"].as_array().unwrap().iter())
            .map(|n| n.as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn sandbox_seccomp_is_an_allow_list_without_the_kernel_surface() {
        for name in crate::PROFILE_NAMES {
            let p = Profile::by_name(name).unwrap();
            let s = serde_json::to_value(p.oci_seccomp().unwrap()).unwrap();
            assert_eq!(s["defaultAction"], "SCMP_ACT_ERRNO");
            assert_eq!(s["architectures"], serde_json::json!(["SCMP_ARCH_X86_64"]));
            let allow = allowed(&s);
            for must in [
                "read",
                "write",
                "execve",
                "wait4",
                "rt_sigreturn",
                "exit_group",
            ] {
                assert!(allow.iter().any(|n| n == must), "{name} lacks {must}");
            }
            for never in crate::KERNEL_SURFACE {
                assert!(!allow.iter().any(|n| n == never), "{name} allows {never}");
            }
            // clone only without namespace flags; clone3 answers ENOSYS.
            let rules = s["syscalls"].as_array().unwrap();
            let clone = rules
                .iter()
                .find(|r| r["names"] == serde_json::json!(["clone"]))
                .unwrap();
            assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
            assert_eq!(clone["args"][0]["valueTwo"], 0);
            let clone3 = rules
                .iter()
                .find(|r| r["names"] == serde_json::json!(["clone3"]))
                .unwrap();
            assert_eq!(clone3["errnoRet"], libc::ENOSYS);
        }
        let strict =
            serde_json::to_value(Profile::strict_profile().oci_seccomp().unwrap()).unwrap();
        let allow = allowed(&strict);
        assert!(!allow.iter().any(|n| n == "ptrace" || n == "socket"));
    }
}
