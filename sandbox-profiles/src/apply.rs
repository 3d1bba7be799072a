//! Applying a profile to a container's OCI runtime config (a bundle's
//! `config.json`, as JSON) and to the processes later exec'd into it, for
//! an OCI runtime in front of runc (`ember-runtime`): it only ever takes
//! permissions away. The bundle's seccomp filter is intersected with the
//! profile's ([`crate::intersect`]), capabilities are cut set by set to the
//! profile's (never added), `noNewPrivileges` is set and the profile's
//! masked and read-only paths are added. Namespaces, mounts, resources and
//! the process itself stay the bundle's. A bundle without a mount
//! namespace of its own is refused: masked and read-only paths are mounts,
//! they cannot hold there. Reading and writing the bundle is the caller's.
//!
//! ```
//! use ember_profiles::{apply::apply_profile, Profile};
//! use serde_json::json;
//! let mut config = json!({
//!     "process": {"args": ["/bin/sh"], "cwd": "/",
//!                 "capabilities": {"bounding": ["CAP_KILL", "CAP_SYS_ADMIN"]}},
//!     "linux": {"namespaces": [{"type": "mount"}]},
//! });
//! apply_profile(&mut config, &Profile::strict_profile()).unwrap();
//! assert_eq!(config["process"]["noNewPrivileges"], true);
//! assert_eq!(config["process"]["capabilities"]["bounding"], json!(["CAP_KILL"]));
//! ```

use crate::{Limits, Profile, ProfileError};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum RestrictError {
    #[error("{field} is not a JSON {expected}")]
    Shape {
        field: &'static str,
        expected: &'static str,
    },
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(
        "ember profile {profile:?} needs the container to have its own mount namespace \
         ({reason}): the profile's masked and read-only paths are mount-namespace rules"
    )]
    SharedMountNamespace {
        profile: &'static str,
        reason: String,
    },
}

/// Apply `profile` to a container's config (see the module doc).
pub fn apply_profile(config: &mut Value, profile: &Profile) -> Result<(), RestrictError> {
    check_mount_namespace(config, profile)?;
    let caps = AllowedCaps::of(profile)?;
    let linux = config
        .as_object_mut()
        .ok_or(RestrictError::Shape {
            field: "config",
            expected: "object",
        })?
        .entry("linux")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or(RestrictError::Shape {
            field: "linux",
            expected: "object",
        })?;
    let seccomp = profile.seccomp_within(linux.get("seccomp"))?;
    linux.insert("seccomp".into(), seccomp);
    add_paths(linux, profile)?;
    if let Some(process) = config.get_mut("process").and_then(Value::as_object_mut) {
        restrict_process(process, &caps);
    }
    // No process (a config for `exec` only): nothing more to restrict.
    Ok(())
}

/// Refuse a config whose container would share a mount namespace (none
/// listed, or one joined by `path`).
pub fn check_mount_namespace(config: &Value, profile: &Profile) -> Result<(), RestrictError> {
    let mount = config["linux"]["namespaces"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["type"] == "mount"));
    let reason = match mount.map(|n| n["path"].as_str().unwrap_or_default()) {
        None => "linux.namespaces has no \"mount\"".to_string(),
        Some("") => return Ok(()),
        Some(path) => format!("linux.namespaces joins the mount namespace at {path}"),
    };
    Err(RestrictError::SharedMountNamespace {
        profile: profile.name,
        reason,
    })
}

/// Add the profile's masked and read-only paths to the bundle's own.
fn add_paths(linux: &mut Map<String, Value>, profile: &Profile) -> Result<(), RestrictError> {
    let reference = profile.linux("/ember-runtime", &Limits::default())?;
    for (key, extra) in [
        ("maskedPaths", reference.masked_paths()),
        ("readonlyPaths", reference.readonly_paths()),
    ] {
        let list = linux
            .entry(key)
            .or_insert_with(|| Value::Array(Vec::new()))
            .as_array_mut()
            .ok_or(RestrictError::Shape {
                field: key,
                expected: "list",
            })?;
        for p in extra.iter().flatten() {
            if !list.iter().any(|v| v == p) {
                list.push(Value::String(p.clone()));
            }
        }
    }
    Ok(())
}

/// An OCI process (the config's, or an `exec --process` file): no new
/// privileges, and capabilities cut to the profile's, set by set. A
/// process without `capabilities` keeps none listed: the runtime then
/// gives it the container's, already cut.
pub fn restrict_process(process: &mut Map<String, Value>, caps: &AllowedCaps) {
    process.insert("noNewPrivileges".into(), Value::Bool(true));
    if let Some(sets) = process
        .get_mut("capabilities")
        .and_then(Value::as_object_mut)
    {
        caps.restrict(sets);
    }
}

/// The capabilities a profile leaves a process, per OCI capability set
/// (`bounding`, `effective`, `inheritable`, `permitted`, `ambient`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedCaps(BTreeMap<&'static str, Vec<String>>);

impl AllowedCaps {
    pub fn of(profile: &Profile) -> Result<AllowedCaps, ProfileError> {
        let mut process = oci_spec::runtime::Process::default();
        profile.apply_process(&mut process)?;
        let caps = process.capabilities().as_ref();
        let names = |set: Option<&std::collections::HashSet<oci_spec::runtime::Capability>>| {
            let mut v: Vec<String> = set
                .into_iter()
                .flatten()
                .map(|c| format!("CAP_{c}"))
                .collect();
            v.sort();
            v
        };
        Ok(AllowedCaps(BTreeMap::from([
            ("bounding", names(caps.and_then(|c| c.bounding().as_ref()))),
            (
                "effective",
                names(caps.and_then(|c| c.effective().as_ref())),
            ),
            (
                "inheritable",
                names(caps.and_then(|c| c.inheritable().as_ref())),
            ),
            (
                "permitted",
                names(caps.and_then(|c| c.permitted().as_ref())),
            ),
            ("ambient", names(caps.and_then(|c| c.ambient().as_ref()))),
        ])))
    }

    /// Cut a process's `capabilities` object to these, set by set (a set
    /// the profile does not know is emptied).
    pub fn restrict(&self, sets: &mut Map<String, Value>) {
        for (set, list) in sets.iter_mut() {
            let allowed = self.0.get(set.as_str()).map_or(&[][..], Vec::as_slice);
            if let Some(items) = list.as_array_mut() {
                items.retain(|c| c.as_str().is_some_and(|c| allowed.iter().any(|a| a == c)));
            }
        }
    }

    /// Whether the profile's bounding set has `cap`, spelt as `exec --cap`
    /// takes it (`CAP_KILL`, or `kill`).
    pub fn allows(&self, cap: &str) -> bool {
        let upper = cap.to_ascii_uppercase();
        let name = if upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        };
        self.0.get("bounding").is_some_and(|b| b.contains(&name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bundle_config() -> Value {
        json!({
            "ociVersion": "1.0.2",
            "process": {
                "args": ["/bin/sh"],
                "cwd": "/",
                "capabilities": {
                    "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW", "CAP_SETUID"],
                    "effective": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"],
                    "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"],
                    "inheritable": ["CAP_KILL"],
                    "ambient": ["CAP_KILL"]
                }
            },
            "root": {"path": "rootfs"},
            "linux": {
                "namespaces": [{"type": "pid"}, {"type": "mount"}],
                "maskedPaths": ["/proc/kcore", "/proc/custom"],
                "resources": {"memory": {"limit": 1000000}}
            }
        })
    }

    #[test]
    fn a_profile_restricts_but_keeps_the_bundle_otherwise() {
        let mut c = bundle_config();
        apply_profile(&mut c, &Profile::strict_profile()).unwrap();
        assert_eq!(c["process"]["noNewPrivileges"], true);
        let caps = &c["process"]["capabilities"];
        assert_eq!(
            caps["bounding"],
            json!(["CAP_KILL", "CAP_SETUID"]),
            "only capabilities the profile allows remain, none added"
        );
        assert_eq!(caps["effective"], json!(["CAP_KILL"]));
        assert_eq!(caps["inheritable"], json!([]), "the profile's is empty");
        assert_eq!(caps["ambient"], json!([]));
        assert_eq!(c["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        let allowed: usize = c["linux"]["seccomp"]["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["names"].as_array().map_or(0, Vec::len))
            .sum();
        assert!(allowed > 200, "the profile's allow-list: {allowed} names");
        let masked = c["linux"]["maskedPaths"].as_array().unwrap();
        assert!(masked.contains(&json!("/proc/custom")), "bundle's own kept");
        assert!(masked.contains(&json!("/proc/keys")), "profile's added");
        assert_eq!(
            masked.iter().filter(|p| *p == "/proc/kcore").count(),
            1,
            "no duplicates"
        );
        assert_eq!(
            c["linux"]["namespaces"],
            json!([{"type": "pid"}, {"type": "mount"}])
        );
        assert_eq!(c["linux"]["resources"]["memory"]["limit"], 1000000);
        assert_eq!(c["process"]["args"], json!(["/bin/sh"]));
    }

    #[test]
    fn the_bundles_seccomp_denials_survive_the_profile() {
        let mut c = bundle_config();
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
        });
        apply_profile(&mut c, &Profile::default_profile()).unwrap();
        let s = &c["linux"]["seccomp"];
        assert_eq!(s["defaultAction"], "SCMP_ACT_ERRNO");
        let rules = s["syscalls"].as_array().unwrap();
        let has = |name: &str| {
            rules
                .iter()
                .find(|r| r["names"].as_array().unwrap().contains(&json!(name)))
                .cloned()
        };
        let mkdir = has("mkdir").expect("a rule for mkdir");
        assert_eq!(
            (&mkdir["action"], &mkdir["errnoRet"]),
            (&json!("SCMP_ACT_ERRNO"), &json!(13))
        );
        assert_eq!(has("read").unwrap()["action"], "SCMP_ACT_ALLOW");
        assert!(has("mount").is_none(), "the profile's default refuses it");
        // An unreadable filter is refused, not replaced.
        let mut c = bundle_config();
        c["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_SOMETIMES"});
        let e = apply_profile(&mut c, &Profile::default_profile())
            .unwrap_err()
            .to_string();
        assert!(e.contains("SCMP_ACT_SOMETIMES"), "{e}");
    }

    #[test]
    fn a_shared_mount_namespace_is_refused_naming_the_profile() {
        let strict = Profile::strict_profile();
        let mut c = bundle_config();
        c["linux"]["namespaces"] = json!([{"type": "pid"}]);
        let e = apply_profile(&mut c, &strict).unwrap_err().to_string();
        assert_eq!(
            e,
            "ember profile \"strict\" needs the container to have its own mount namespace \
             (linux.namespaces has no \"mount\"): the profile's masked and read-only paths \
             are mount-namespace rules"
        );
        assert!(c["linux"].get("seccomp").is_none(), "nothing applied");
        c["linux"]["namespaces"] = json!([{"type": "mount", "path": "/proc/1/ns/mnt"}]);
        let e = check_mount_namespace(&c, &strict).unwrap_err().to_string();
        assert!(
            e.contains("joins the mount namespace at /proc/1/ns/mnt"),
            "{e}"
        );
        c["linux"]["namespaces"] = json!([{"type": "mount", "path": ""}]);
        check_mount_namespace(&c, &strict).unwrap();
        assert!(check_mount_namespace(&json!({}), &strict).is_err());
    }

    #[test]
    fn a_process_file_is_cut_to_the_profiles_capabilities() {
        let caps = AllowedCaps::of(&Profile::strict_profile()).unwrap();
        // containerd's default set, in all five sets, as kubectl exec sends it.
        let default: Vec<&str> = vec![
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FSETID",
            "CAP_FOWNER",
            "CAP_MKNOD",
            "CAP_NET_RAW",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETFCAP",
            "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE",
            "CAP_SYS_CHROOT",
            "CAP_KILL",
            "CAP_AUDIT_WRITE",
        ];
        let mut p = json!({
            "args": ["sh"], "cwd": "/", "noNewPrivileges": false,
            "capabilities": {
                "bounding": default, "effective": default, "permitted": default,
                "inheritable": default, "ambient": default
            }
        });
        restrict_process(p.as_object_mut().unwrap(), &caps);
        assert_eq!(p["noNewPrivileges"], true);
        let want = json!(["CAP_SETGID", "CAP_SETUID", "CAP_KILL"]);
        for set in ["bounding", "effective", "permitted"] {
            assert_eq!(p["capabilities"][set], want, "{set}");
        }
        for set in ["inheritable", "ambient"] {
            assert_eq!(p["capabilities"][set], json!([]), "{set}");
        }
        // No capabilities listed: none added (the container's apply).
        let mut p = json!({"args": ["sh"], "cwd": "/"});
        restrict_process(p.as_object_mut().unwrap(), &caps);
        assert!(p.get("capabilities").is_none());
        assert!(caps.allows("CAP_KILL") && caps.allows("setuid"));
        assert!(!caps.allows("CAP_SYS_ADMIN") && !caps.allows("NET_RAW"));
    }
}
