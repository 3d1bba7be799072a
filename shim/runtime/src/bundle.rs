//! A bundle before `create`/`run`: read its `config.json`, find the
//! profile it asks for, make it an ember sandbox if annotated so, apply
//! the profile (`ember_profiles::apply`) and write it back in place.

use crate::sandbox::{agent_path, make_sandbox};
use crate::sandbox_dir::SandboxDir;
use crate::{sandbox_runtime, RuntimeCliError, PROFILE_ANNOTATION};
use ember_profiles::apply::{apply_profile, check_mount_namespace};
use ember_profiles::Profile;
use serde_json::Value;
use std::path::Path;

/// Prepare a bundle before `create`/`run`, in place: a bundle annotated
/// `dev.ember.sandbox` becomes an ember sandbox (see [`make_sandbox`]),
/// its socket in `dir`, unless it is a pod's pause container; the profile
/// named by `dev.ember.profile` (or `fallback`, from `--ember-profile`;
/// `default` for sandboxes) is applied. Returns the profile applied, or
/// `None` when the bundle asks for nothing (it is then left byte for byte
/// as it was).
pub fn apply_profile_to_bundle(
    bundle: &Path,
    fallback: Option<&str>,
    dir: &SandboxDir,
) -> Result<Option<&'static str>, RuntimeCliError> {
    prepare_bundle(bundle, fallback, None, dir)
}

/// [`apply_profile_to_bundle`] with the agent binary a sandbox bundle binds
/// in (`None`: [`agent_path`]).
pub fn prepare_bundle(
    bundle: &Path,
    fallback: Option<&str>,
    agent: Option<&Path>,
    dir: &SandboxDir,
) -> Result<Option<&'static str>, RuntimeCliError> {
    let path = bundle.join("config.json");
    let mut config = read_config(&path)?;
    let Some(name) = requested_profile(&config, fallback) else {
        return Ok(None);
    };
    let profile = Profile::by_name(&name).map_err(|source| RuntimeCliError::BadProfile {
        path: path.clone(),
        name: name.clone(),
        source,
    })?;
    let restrict = |source| RuntimeCliError::Restrict {
        path: path.clone(),
        source,
    };
    // Before the sandbox rewrite writes anything into the bundle.
    check_mount_namespace(&config, &profile).map_err(restrict)?;
    if let Some(runtime) = sandbox_runtime(&config["annotations"]).map(str::to_string) {
        let agent = agent.map(Path::to_path_buf).unwrap_or_else(agent_path);
        make_sandbox(&mut config, bundle, &runtime, &agent, dir).map_err(|source| {
            RuntimeCliError::BadSandbox {
                path: path.clone(),
                runtime,
                source: Box::new(source),
            }
        })?;
    }
    apply_profile(&mut config, &profile).map_err(restrict)?;
    write_config(bundle, &path, &config)?;
    Ok(Some(profile.name))
}

/// Replace, never half-write: the delegate reads it next.
fn write_config(bundle: &Path, path: &Path, config: &Value) -> Result<(), RuntimeCliError> {
    let out = serde_json::to_vec_pretty(config).map_err(|source| RuntimeCliError::BadConfig {
        path: path.to_path_buf(),
        source,
    })?;
    let tmp = bundle.join(".config.json.ember");
    std::fs::write(&tmp, out)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| RuntimeCliError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// A bundle's `config.json`, parsed.
pub fn read_config(path: &Path) -> Result<Value, RuntimeCliError> {
    let text = std::fs::read(path).map_err(|source| RuntimeCliError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| RuntimeCliError::BadConfig {
        path: path.to_path_buf(),
        source,
    })
}

/// The profile a container's config asks for: its `dev.ember.profile`
/// annotation, else `fallback` (`--ember-profile`), else `default` for an
/// ember sandbox (`dev.ember.sandbox`, not a pod's pause container).
/// `None`: no profile applies.
pub fn requested_profile(config: &Value, fallback: Option<&str>) -> Option<String> {
    let annotations = &config["annotations"];
    annotations[PROFILE_ANNOTATION]
        .as_str()
        .or(fallback)
        .or(sandbox_runtime(annotations).map(|_| "default"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CRI_CONTAINER_TYPE, SANDBOX_ANNOTATION};
    use serde_json::json;

    /// A sandbox directory under `base`, for container `c1`.
    fn sandbox_dir(base: &Path) -> SandboxDir {
        SandboxDir::of(&base.join("a"), None, "c1")
    }

    fn bundle_config() -> Value {
        json!({
            "ociVersion": "1.0.2",
            "process": {
                "args": ["/bin/sh"],
                "cwd": "/",
                "capabilities": {
                    "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW", "CAP_SETUID"],
                    "effective": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"],
                    "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"]
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
    fn bundles_without_the_annotation_are_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let text = serde_json::to_vec_pretty(&bundle_config()).unwrap();
        std::fs::write(dir.path().join("config.json"), &text).unwrap();
        let sd = sandbox_dir(dir.path());
        assert_eq!(
            apply_profile_to_bundle(dir.path(), None, &sd).unwrap(),
            None
        );
        assert_eq!(std::fs::read(dir.path().join("config.json")).unwrap(), text);
        // `--ember-profile` applies where there is no annotation.
        assert_eq!(
            apply_profile_to_bundle(dir.path(), Some("default"), &sd).unwrap(),
            Some("default")
        );
        assert!(!sd.exists(), "no sandbox, no sandbox directory");
    }

    #[test]
    fn the_annotation_applies_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let sd = sandbox_dir(dir.path());
        let mut c = bundle_config();
        c["annotations"] = json!({ PROFILE_ANNOTATION: "strict" });
        std::fs::write(dir.path().join("config.json"), c.to_string()).unwrap();
        // The annotation wins over `--ember-profile`.
        assert_eq!(
            apply_profile_to_bundle(dir.path(), Some("default"), &sd).unwrap(),
            Some("strict")
        );
        let after: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(after["process"]["noNewPrivileges"], true);
        c["annotations"] = json!({ PROFILE_ANNOTATION: "lax" });
        std::fs::write(dir.path().join("config.json"), c.to_string()).unwrap();
        let e = apply_profile_to_bundle(dir.path(), None, &sd)
            .unwrap_err()
            .to_string();
        assert!(e.contains("lax") && e.contains("strict"), "{e}");
        std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
        assert!(matches!(
            apply_profile_to_bundle(dir.path(), None, &sd),
            Err(RuntimeCliError::BadConfig { .. })
        ));
    }

    #[test]
    fn a_bundle_sharing_a_mount_namespace_is_refused_untouched() {
        let bundle = tempfile::tempdir().unwrap();
        std::fs::create_dir(bundle.path().join("rootfs")).unwrap();
        let agent = bundle.path().join("ember-agent");
        std::fs::write(&agent, b"#!agent").unwrap();
        let mut c = bundle_config();
        c["linux"]["namespaces"] = json!([{"type": "pid"}]);
        c["annotations"] = json!({ PROFILE_ANNOTATION: "strict", SANDBOX_ANNOTATION: "python3" });
        let text = serde_json::to_vec_pretty(&c).unwrap();
        std::fs::write(bundle.path().join("config.json"), &text).unwrap();
        let sd = sandbox_dir(bundle.path());
        let e = prepare_bundle(bundle.path(), None, Some(&agent), &sd).unwrap_err();
        assert!(matches!(e, RuntimeCliError::Restrict { .. }), "{e:?}");
        let e = e.to_string();
        assert!(
            e.contains(
                "ember profile \"strict\" needs the container to have its own mount namespace"
            ),
            "{e}"
        );
        assert_eq!(
            std::fs::read(bundle.path().join("config.json")).unwrap(),
            text
        );
        assert!(!bundle.path().join("rootfs/fn").exists());
        assert!(!sd.exists(), "a sandbox directory for a refused bundle");
    }

    #[test]
    fn a_sandbox_annotation_makes_an_ember_sandbox_of_the_container() {
        let bundle = tempfile::tempdir().unwrap();
        std::fs::create_dir(bundle.path().join("rootfs")).unwrap();
        let agent = bundle.path().join("ember-agent");
        std::fs::write(&agent, b"#!agent").unwrap();
        let mut c = bundle_config();
        c["annotations"] = json!({ SANDBOX_ANNOTATION: "python3" });
        c["mounts"] = json!([{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}]);
        std::fs::write(bundle.path().join("config.json"), c.to_string()).unwrap();
        let sd = sandbox_dir(bundle.path());
        let applied = prepare_bundle(bundle.path(), None, Some(&agent), &sd).unwrap();
        assert_eq!(
            applied,
            Some("default"),
            "sandboxes get the default profile"
        );
        let after: Value =
            serde_json::from_slice(&std::fs::read(bundle.path().join("config.json")).unwrap())
                .unwrap();
        let args: Vec<&str> = after["process"]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args[0], "/.ember/agent");
        assert!(args
            .windows(2)
            .any(|w| w == ["--python", "/usr/bin/python3"]));
        assert!(args
            .windows(2)
            .any(|w| w == ["--listen", "/.ember/run/agent.sock"]));
        assert_eq!(after["root"]["readonly"], true);
        let mounts = after["mounts"].as_array().unwrap();
        let dest = |d: &str| mounts.iter().find(|m| m["destination"] == d);
        assert_eq!(
            dest("/.ember/agent").unwrap()["source"],
            agent.to_str().unwrap()
        );
        assert!(dest("/usr").unwrap()["options"]
            .as_array()
            .unwrap()
            .contains(&json!("ro")));
        assert!(dest("/tmp").is_none(), "the image's /tmp mount is dropped");
        assert_eq!(
            dest("/.ember/run").unwrap()["source"],
            sd.run_dir().to_str().unwrap()
        );
        for d in ["rootfs/fn", "rootfs/tmp", "rootfs/.ember/run"] {
            assert!(bundle.path().join(d).is_dir(), "{d}");
        }
        assert!(sd.run_dir().is_dir());
        // A runtime ember does not have, or a missing agent, is refused.
        c["annotations"] = json!({ SANDBOX_ANNOTATION: "ruby" });
        std::fs::write(bundle.path().join("config.json"), c.to_string()).unwrap();
        let e = prepare_bundle(bundle.path(), None, Some(&agent), &sd)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ruby") && e.contains("python3"), "{e}");
        c["annotations"] = json!({ SANDBOX_ANNOTATION: "python3" });
        std::fs::write(bundle.path().join("config.json"), c.to_string()).unwrap();
        let nope = bundle.path().join("nope");
        let e = prepare_bundle(bundle.path(), None, Some(&nope), &sd)
            .unwrap_err()
            .to_string();
        assert!(e.contains("EMBER_AGENT"), "{e}");
    }

    #[test]
    fn a_pods_pause_container_is_left_as_it_is() {
        let bundle = tempfile::tempdir().unwrap();
        std::fs::create_dir(bundle.path().join("rootfs")).unwrap();
        let agent = bundle.path().join("ember-agent");
        std::fs::write(&agent, b"#!agent").unwrap();
        let sd = sandbox_dir(bundle.path());
        let mut c = bundle_config();
        // The kubelet passes pod annotations to the pause container too.
        c["annotations"] = json!({ SANDBOX_ANNOTATION: "python3", CRI_CONTAINER_TYPE: "sandbox" });
        let text = serde_json::to_vec_pretty(&c).unwrap();
        std::fs::write(bundle.path().join("config.json"), &text).unwrap();
        let applied = prepare_bundle(bundle.path(), None, Some(&agent), &sd).unwrap();
        assert_eq!(applied, None);
        assert_eq!(
            std::fs::read(bundle.path().join("config.json")).unwrap(),
            text
        );
        assert!(!sd.exists() && !bundle.path().join("rootfs/fn").exists());
        // A profile asked for still applies, and only it.
        c["annotations"][PROFILE_ANNOTATION] = json!("strict");
        std::fs::write(bundle.path().join("config.json"), c.to_string()).unwrap();
        let applied = prepare_bundle(bundle.path(), None, Some(&agent), &sd).unwrap();
        assert_eq!(applied, Some("strict"));
        let after = read_config(&bundle.path().join("config.json")).unwrap();
        assert_eq!(after["process"]["args"], json!(["/bin/sh"]));
        assert_eq!(after["process"]["noNewPrivileges"], true);
        assert!(!sd.exists());
    }

    #[test]
    fn a_shared_pid_namespace_is_refused_with_the_reason() {
        let bundle = tempfile::tempdir().unwrap();
        std::fs::create_dir(bundle.path().join("rootfs")).unwrap();
        let agent = bundle.path().join("ember-agent");
        std::fs::write(&agent, b"#!agent").unwrap();
        let sd = sandbox_dir(bundle.path());
        for (namespaces, want) in [
            (
                json!([{"type": "pid", "path": "/proc/42/ns/pid"}, {"type": "mount"}]),
                "joins the pid namespace /proc/42/ns/pid",
            ),
            (json!([{"type": "mount"}]), "no pid namespace of its own"),
        ] {
            let mut c = bundle_config();
            c["linux"]["namespaces"] = namespaces;
            c["annotations"] = json!({ SANDBOX_ANNOTATION: "python3" });
            let text = serde_json::to_vec_pretty(&c).unwrap();
            std::fs::write(bundle.path().join("config.json"), &text).unwrap();
            let e = prepare_bundle(bundle.path(), None, Some(&agent), &sd)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want) && e.contains("PID 1"), "{e}");
            assert_eq!(
                std::fs::read(bundle.path().join("config.json")).unwrap(),
                text
            );
            assert!(!sd.exists());
        }
    }

    #[test]
    fn an_images_own_lib_directories_are_covered_by_the_hosts() {
        let bundle = tempfile::tempdir().unwrap();
        let rootfs = bundle.path().join("rootfs");
        for d in ["lib", "lib64"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        let agent = bundle.path().join("ember-agent");
        std::fs::write(&agent, b"#!agent").unwrap();
        let mut c = bundle_config();
        c["annotations"] = json!({ SANDBOX_ANNOTATION: "python3" });
        std::fs::write(bundle.path().join("config.json"), c.to_string()).unwrap();
        let sd = sandbox_dir(bundle.path());
        prepare_bundle(bundle.path(), None, Some(&agent), &sd).unwrap();
        let after = read_config(&bundle.path().join("config.json")).unwrap();
        let mounts = after["mounts"].as_array().unwrap();
        for d in ["/lib", "/lib64"] {
            let host = Path::new(d);
            let Ok(meta) = std::fs::symlink_metadata(host) else {
                continue;
            };
            let m = mounts
                .iter()
                .find(|m| m["destination"] == d)
                .unwrap_or_else(|| panic!("{d} not bound: {mounts:?}"));
            let source = if meta.file_type().is_symlink() {
                std::fs::canonicalize(host).unwrap()
            } else {
                host.to_path_buf()
            };
            assert_eq!(m["source"], source.to_str().unwrap(), "{m}");
            assert!(m["options"].as_array().unwrap().contains(&json!("ro")));
        }
    }
}
