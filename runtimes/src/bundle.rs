//! The OCI bundle of a sandbox: a lean root filesystem made of read-only
//! binds of the host's `/usr` and `/etc` (plus `/bin`, `/lib`... as the
//! host has them), empty mount points `/fn` and `/tmp`, and the agent
//! binary bound at `/.ember/agent` as PID 1. No network, no writable path:
//! the only writable place a function ever gets is the per-invocation
//! tmpfs that the injector puts on `/tmp`.

use crate::error::RuntimeError;
use crate::language::Interpreter;
use ember_profiles::{Limits, Profile};
use oci_spec::runtime::{
    Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use std::fs;
use std::path::{Path, PathBuf};

/// Where the agent appears inside the sandbox.
pub const AGENT_PATH: &str = "/.ember/agent";
/// Host directories that become read-only binds (or symlinks, where the
/// host has a symlink, as merged-/usr systems do).
const HOST_DIRS: &[&str] = &[
    "/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];
/// Unprivileged user the interpreter and user code run as.
pub const SANDBOX_UID: u32 = 65534;

pub struct BundleSpec<'a> {
    pub dir: &'a Path,
    pub agent: &'a Path,
    pub interpreter: &'a Interpreter,
    pub cgroups_path: &'a str,
    pub profile: &'a Profile,
    pub limits: Limits,
    /// For backends injecting through host directories: the one to bind
    /// read-only at `/fn` and the one (a size-limited tmpfs on the host) to
    /// bind read-write at `/tmp`; the daemon empties both after each
    /// invocation.
    pub host_code: Option<(&'a Path, &'a Path)>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError + '_ {
    move |source| RuntimeError::Bundle {
        path: path.to_path_buf(),
        source,
    }
}

/// Create the bundle directory: `rootfs/` skeleton and `config.json`.
pub fn write_bundle(spec: &BundleSpec<'_>) -> Result<PathBuf, RuntimeError> {
    let rootfs = spec.dir.join("rootfs");
    for d in ["proc", "dev", "sys", "fn", "tmp", ".ember"] {
        let p = rootfs.join(d);
        fs::create_dir_all(&p).map_err(io(&p))?;
    }
    let agent_target = rootfs.join(AGENT_PATH.trim_start_matches('/'));
    fs::write(&agent_target, b"").map_err(io(&agent_target))?;

    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=64k"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
    ];
    for dir in host_dirs(&rootfs)? {
        mounts.push(mount(
            &dir,
            &dir,
            "bind",
            &["bind", "ro", "nosuid", "nodev"],
        ));
    }
    mounts.push(mount(
        AGENT_PATH,
        &spec.agent.to_string_lossy(),
        "bind",
        &["bind", "ro", "nosuid", "nodev"],
    ));
    if let Some((code_dir, tmp_dir)) = spec.host_code {
        fs::create_dir_all(code_dir).map_err(io(code_dir))?;
        mounts.push(mount(
            "/fn",
            &code_dir.to_string_lossy(),
            "bind",
            &["bind", "ro", "nosuid", "nodev"],
        ));
        mounts.push(mount(
            "/tmp",
            &tmp_dir.to_string_lossy(),
            "bind",
            &["bind", "rw", "nosuid", "nodev"],
        ));
    }

    let oci = render(spec, mounts)?;
    let config = spec.dir.join("config.json");
    let json = serde_json::to_vec_pretty(&oci).map_err(|e| RuntimeError::Bundle {
        path: config.clone(),
        source: e.into(),
    })?;
    fs::write(&config, json).map_err(io(&config))?;
    Ok(config)
}

/// Lay out the host directories ember's root filesystems share: where the
/// host has a symlink (`/bin -> usr/bin` on merged-/usr systems) the same
/// symlink is made under `rootfs`; real directories get a mount point and
/// are returned, to be bound read-only.
pub fn host_dirs(rootfs: &Path) -> Result<Vec<String>, RuntimeError> {
    let mut binds = Vec::new();
    for dir in HOST_DIRS {
        let host = Path::new(dir);
        let Ok(meta) = fs::symlink_metadata(host) else {
            continue;
        };
        let inside = rootfs.join(dir.trim_start_matches('/'));
        if meta.file_type().is_symlink() {
            let target = fs::read_link(host).map_err(io(host))?;
            if fs::symlink_metadata(&inside).is_err() {
                std::os::unix::fs::symlink(&target, &inside).map_err(io(&inside))?;
            }
        } else if meta.is_dir() {
            fs::create_dir_all(&inside).map_err(io(&inside))?;
            binds.push(dir.to_string());
        }
    }
    Ok(binds)
}

fn mount(dest: &str, source: &str, typ: &str, opts: &[&str]) -> Mount {
    MountBuilder::default()
        .destination(dest)
        .source(source)
        .typ(typ)
        .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .expect("mount builder has every field set")
}

fn render(spec: &BundleSpec<'_>, mounts: Vec<Mount>) -> Result<Spec, RuntimeError> {
    let bad = |e: oci_spec::OciSpecError| RuntimeError::Bundle {
        path: spec.dir.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    };
    let mut process = ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(0u32)
                .gid(0u32)
                .build()
                .map_err(bad)?,
        )
        .args(vec![
            AGENT_PATH.to_string(),
            spec.interpreter.agent_args()[0].clone(),
            spec.interpreter.agent_args()[1].clone(),
            "--uid".into(),
            SANDBOX_UID.to_string(),
            "--gid".into(),
            SANDBOX_UID.to_string(),
        ])
        .env(vec!["PATH=/usr/local/bin:/usr/bin:/bin".to_string()])
        .cwd("/")
        .build()
        .map_err(bad)?;
    spec.profile.apply_process(&mut process)?;
    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(true)
                .build()
                .map_err(bad)?,
        )
        .hostname("ember")
        .process(process)
        .mounts(mounts)
        .linux(spec.profile.linux(spec.cgroups_path, &spec.limits)?)
        .build()
        .map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_is_read_only_with_agent_as_pid1() {
        let dir = tempfile::tempdir().unwrap();
        let profile = Profile::default_profile();
        let config = write_bundle(&BundleSpec {
            dir: dir.path(),
            agent: Path::new("/opt/ember-agent"),
            interpreter: &Interpreter {
                language: crate::language::Language::Python,
                path: "/usr/bin/python3".into(),
            },
            cgroups_path: "/ember/t/sb",
            profile: &profile,
            limits: Limits::default(),
            host_code: None,
        })
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&fs::read(config).unwrap()).unwrap();
        assert_eq!(v["root"]["readonly"], true);
        assert_eq!(v["process"]["args"][0], AGENT_PATH);
        let mounts = v["mounts"].as_array().unwrap();
        let usr = mounts.iter().find(|m| m["destination"] == "/usr").unwrap();
        assert!(usr["options"].as_array().unwrap().iter().any(|o| o == "ro"));
        let agent = mounts
            .iter()
            .find(|m| m["destination"] == AGENT_PATH)
            .unwrap();
        assert_eq!(agent["source"], "/opt/ember-agent");
        assert!(dir.path().join("rootfs/fn").is_dir());
        assert!(dir.path().join("rootfs/tmp").is_dir());
        // Nothing in the bundle gives the sandbox a network interface.
        assert!(v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "network" && n.get("path").is_none()));
        assert!(!mounts.iter().any(|m| m["destination"] == "/fn"));
    }

    #[test]
    fn host_directory_bundles_bind_fn_and_mount_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let code = dir.path().join("fn");
        let tmp = dir.path().join("tmp");
        let profile = Profile::default_profile();
        let config = write_bundle(&BundleSpec {
            dir: dir.path(),
            agent: Path::new("/opt/ember-agent"),
            interpreter: &Interpreter {
                language: crate::language::Language::Python,
                path: "/usr/bin/python3".into(),
            },
            cgroups_path: "/ember/t/sb",
            profile: &profile,
            limits: Limits::default(),
            host_code: Some((&code, &tmp)),
        })
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&fs::read(config).unwrap()).unwrap();
        let mounts = v["mounts"].as_array().unwrap();
        let fnm = mounts.iter().find(|m| m["destination"] == "/fn").unwrap();
        assert_eq!(fnm["source"], code.to_str().unwrap());
        assert!(fnm["options"].as_array().unwrap().iter().any(|o| o == "ro"));
        let tmpm = mounts.iter().find(|m| m["destination"] == "/tmp").unwrap();
        assert_eq!(tmpm["source"], tmp.to_str().unwrap());
        assert!(tmpm["options"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o == "rw"));
        assert!(code.is_dir());
    }
}
