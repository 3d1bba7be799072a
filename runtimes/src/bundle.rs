//! The OCI bundle of a sandbox: a lean root filesystem made of read-only
//! binds of the host's `/usr` (plus `/bin`, `/lib`... as the host has
//! them), the daemon's generated `/etc` (`sandbox_files.rs`), empty mount
//! points `/fn` and `/tmp`, and the agent binary bound at `/.ember/agent`
//! as PID 1; its own user namespace (`userns.rs`) when the daemon gives it
//! a block of host ids. No network, no writable path: the only writable
//! place a function ever gets is the per-invocation tmpfs that the
//! injector puts on `/tmp`.

use crate::error::RuntimeError;
use crate::language::Interpreter;
use crate::sandbox_files::SandboxFiles;
use ember_profiles::{Limits, Profile};
use oci_spec::runtime::{
    LinuxIdMappingBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, Mount, MountBuilder,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use std::fs;
use std::path::{Path, PathBuf};

/// Where the agent appears inside the sandbox.
pub const AGENT_PATH: &str = "/.ember/agent";
/// Host directories that become read-only binds (or symlinks, where the
/// host has a symlink, as merged-/usr systems do). `/etc` is not among
/// them: emberd's sandboxes get a generated one, containers adopted
/// through `ember-runtime` keep their image's unless told otherwise.
const HOST_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];
/// Unprivileged user the interpreter and user code run as.
pub const SANDBOX_UID: u32 = 65534;

pub struct BundleSpec<'a> {
    pub dir: &'a Path,
    /// The daemon's shared files: agent, generated `/etc`, loader, `/proc`
    /// stand-ins.
    pub files: &'a SandboxFiles,
    pub interpreter: &'a Interpreter,
    /// The host id the sandbox's id 0 maps to (its own user namespace of
    /// [`crate::userns::IDS_PER_SANDBOX`] ids); `None`: no user namespace.
    pub userns: Option<u32>,
    /// The sandbox's processes run on the host kernel (runc, crun,
    /// libcontainer), not in gVisor's: bind the execute-only loader (gVisor
    /// reads executables through its file proxy, which could not), the
    /// `/proc/meminfo` and `/proc/loadavg` stand-ins (gVisor has its own)
    /// and `/dev/mqueue` (gVisor has no mqueue filesystem).
    pub host_kernel: bool,
    pub cgroups_path: &'a str,
    pub profile: &'a Profile,
    pub limits: Limits,
    /// For backends injecting through host directories: the one to bind
    /// read-only at `/fn` and the one (a size-limited tmpfs on the host) to
    /// bind read-write at `/tmp`; the daemon empties both after each
    /// invocation.
    pub host_code: Option<(&'a Path, &'a Path)>,
    /// A deploy build instead of a sandbox: its agent builds and exits.
    pub build: Option<BuildMounts<'a>>,
}

/// What a deploy build's bundle binds.
pub struct BuildMounts<'a> {
    /// The function's unpacked code (a size-limited tmpfs on the host),
    /// bound read-write at `/fn`.
    pub work: &'a Path,
    /// The operator's wheels, bound read-only at [`WHEELS_PATH`].
    pub wheels: Option<&'a Path>,
}

/// Where a deploy build sees the operator's wheels.
pub const WHEELS_PATH: &str = "/wheels";

/// Size of a deploy build's own `/tmp` (pip unpacks wheels there).
const BUILD_TMP: &str = "size=256m";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError + '_ {
    move |source| RuntimeError::Bundle {
        path: path.to_path_buf(),
        source,
    }
}

/// Create the bundle directory: `rootfs/` skeleton and `config.json`.
pub fn write_bundle(spec: &BundleSpec<'_>) -> Result<PathBuf, RuntimeError> {
    let rootfs = spec.dir.join("rootfs");
    for d in ["proc", "dev", "sys", "fn", "tmp", "etc", ".ember"] {
        let p = rootfs.join(d);
        fs::create_dir_all(&p).map_err(io(&p))?;
    }
    // Searchable by the sandbox's root, which in a user namespace is not
    // the host's; /tmp world-writable (runc gives a tmpfs mounted there the
    // mode of the directory under it).
    {
        use std::os::unix::fs::PermissionsExt;
        for d in [spec.dir, rootfs.as_path()] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).map_err(io(d))?;
        }
        let tmp = rootfs.join("tmp");
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).map_err(io(&tmp))?;
    }
    let agent_target = rootfs.join(AGENT_PATH.trim_start_matches('/'));
    fs::write(&agent_target, b"").map_err(io(&agent_target))?;

    let mut mounts = base_mounts(spec.host_kernel);
    for dir in host_dirs(&rootfs)? {
        mounts.push(ro_bind(&dir, Path::new(&dir)));
    }
    mounts.push(ro_bind("/etc", &spec.files.etc));
    mounts.push(ro_bind(AGENT_PATH, &spec.files.agent));
    if spec.host_kernel {
        if let Some((copy, inside)) = &spec.files.loader {
            mounts.push(ro_bind(&inside.to_string_lossy(), copy));
        }
        mounts.push(ro_bind("/proc/meminfo", &spec.files.meminfo));
        mounts.push(ro_bind("/proc/loadavg", &spec.files.loadavg));
    }
    if let Some(b) = &spec.build {
        mounts.push(mount(
            "/fn",
            &b.work.to_string_lossy(),
            "bind",
            &["bind", "rw", "nosuid", "nodev"],
        ));
        mounts.push(mount(
            "/tmp",
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", "mode=1777", BUILD_TMP],
        ));
        if let Some(w) = b.wheels {
            fs::create_dir_all(rootfs.join("wheels")).map_err(io(&rootfs))?;
            mounts.push(ro_bind(WHEELS_PATH, w));
        }
    }
    if let Some((code_dir, tmp_dir)) = spec.host_code {
        fs::create_dir_all(code_dir).map_err(io(code_dir))?;
        mounts.push(ro_bind("/fn", code_dir));
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

/// `/proc`, a small `/dev`, read-only `/sys`, and on the host kernel
/// `/dev/mqueue` (the IPC namespace's POSIX message queues, listed there
/// so the clean-state check can see what an invocation left).
fn base_mounts(host_kernel: bool) -> Vec<Mount> {
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
    if host_kernel {
        mounts.push(mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ));
    }
    mounts
}

fn ro_bind(dest: &str, source: &Path) -> Mount {
    mount(
        dest,
        &source.to_string_lossy(),
        "bind",
        &["bind", "ro", "nosuid", "nodev"],
    )
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
    let mut args = vec![
        AGENT_PATH.to_string(),
        spec.interpreter.agent_args()[0].clone(),
        spec.interpreter.agent_args()[1].clone(),
        "--uid".into(),
        SANDBOX_UID.to_string(),
        "--gid".into(),
        SANDBOX_UID.to_string(),
    ];
    if let Some(b) = &spec.build {
        args.push("--build".into());
        if b.wheels.is_some() {
            args.extend(["--wheels".to_string(), WHEELS_PATH.to_string()]);
        }
        // A build's process limit is the agent's RLIMIT_NPROC, counting
        // the agent (gVisor lets a user have one task over it); the cgroup
        // keeps room for the runtime's own processes while it starts the
        // sandbox (youki's takes two), see `limits` below.
        let pids = spec.limits.pids.max(1) as u64;
        let nproc = if spec.host_kernel { pids } else { pids - 1 };
        args.extend(["--nproc".to_string(), nproc.to_string()]);
    } else if !spec.host_kernel {
        // gVisor's cgroup holds its own threads, not the function's
        // processes: the sandbox's process limit becomes the Node.js
        // runner's RLIMIT_NPROC (Python workers get theirs per
        // invocation).
        args.extend(["--nproc".to_string(), spec.limits.pids.to_string()]);
    }
    let mut process = ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(0u32)
                .gid(0u32)
                .build()
                .map_err(bad)?,
        )
        .args(args)
        .env(vec!["PATH=/usr/local/bin:/usr/bin:/bin".to_string()])
        .cwd("/")
        .build()
        .map_err(bad)?;
    spec.profile.apply_process(&mut process)?;
    let limits = if spec.host_kernel && spec.build.is_some() {
        Limits {
            pids: spec.limits.pids + 2,
            ..spec.limits
        }
    } else if spec.host_kernel {
        spec.limits
    } else {
        // A pids limit on gVisor's cgroup would count the Sentry's and its
        // stubs' host threads (about five per guest process): a fork bomb
        // then kills the Sentry, not the fork. The daemon's parent cgroup
        // bounds all of them instead.
        Limits {
            pids: -1,
            ..spec.limits
        }
    };
    let mut linux = spec.profile.linux(spec.cgroups_path, &limits)?;
    if let Some(host_base) = spec.userns {
        add_user_namespace(&mut linux, host_base).map_err(bad)?;
    }
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
        .linux(linux)
        .build()
        .map_err(bad)
}

/// A user namespace of its own whose ids 0..65535 are host ids
/// `host_base..host_base + 65535`.
fn add_user_namespace(
    linux: &mut oci_spec::runtime::Linux,
    host_base: u32,
) -> Result<(), oci_spec::OciSpecError> {
    let map = LinuxIdMappingBuilder::default()
        .container_id(0u32)
        .host_id(host_base)
        .size(crate::userns::IDS_PER_SANDBOX)
        .build()?;
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    namespaces.push(
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::User)
            .build()?,
    );
    linux.set_namespaces(Some(namespaces));
    linux.set_uid_mappings(Some(vec![map]));
    linux.set_gid_mappings(Some(vec![map]));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> SandboxFiles {
        SandboxFiles {
            agent: PathBuf::from("/run/e/agent"),
            etc: PathBuf::from("/run/e/etc"),
            loader: Some((
                PathBuf::from("/run/e/loader"),
                PathBuf::from("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
            )),
            meminfo: PathBuf::from("/run/e/meminfo"),
            loadavg: PathBuf::from("/run/e/loadavg"),
        }
    }

    fn python() -> Interpreter {
        Interpreter {
            language: crate::language::Language::Python,
            path: "/usr/bin/python3".into(),
        }
    }

    fn source_of<'a>(mounts: &'a [serde_json::Value], dest: &str) -> &'a serde_json::Value {
        &mounts
            .iter()
            .find(|m| m["destination"] == dest)
            .unwrap_or_else(|| panic!("no mount at {dest}"))["source"]
    }

    #[test]
    fn bundle_is_read_only_with_agent_as_pid1() {
        let dir = tempfile::tempdir().unwrap();
        let profile = Profile::default_profile();
        let config = write_bundle(&BundleSpec {
            dir: dir.path(),
            files: &files(),
            interpreter: &python(),
            userns: None,
            host_kernel: true,
            cgroups_path: "/ember/t/sb",
            profile: &profile,
            limits: Limits::default(),
            host_code: None,
            build: None,
        })
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&fs::read(config).unwrap()).unwrap();
        assert_eq!(v["root"]["readonly"], true);
        assert_eq!(v["process"]["args"][0], AGENT_PATH);
        let mounts = v["mounts"].as_array().unwrap();
        let usr = mounts.iter().find(|m| m["destination"] == "/usr").unwrap();
        assert!(usr["options"].as_array().unwrap().iter().any(|o| o == "ro"));
        assert_eq!(source_of(mounts, AGENT_PATH), "/run/e/agent");
        // The generated /etc, never the host's.
        assert_eq!(source_of(mounts, "/etc"), "/run/e/etc");
        assert!(!mounts.iter().any(|m| m["source"] == "/etc"));
        assert_eq!(
            source_of(mounts, "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
            "/run/e/loader"
        );
        assert_eq!(source_of(mounts, "/proc/meminfo"), "/run/e/meminfo");
        assert_eq!(source_of(mounts, "/dev/mqueue"), "mqueue");
        assert!(dir.path().join("rootfs/fn").is_dir());
        assert!(dir.path().join("rootfs/tmp").is_dir());
        // Nothing in the bundle gives the sandbox a network interface.
        assert!(v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "network" && n.get("path").is_none()));
        assert!(!mounts.iter().any(|m| m["destination"] == "/fn"));
        assert!(v["linux"].get("uidMappings").is_none());
    }

    #[test]
    fn a_sandbox_with_a_block_of_ids_gets_its_own_user_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let profile = Profile::default_profile();
        let config = write_bundle(&BundleSpec {
            dir: dir.path(),
            files: &files(),
            interpreter: &python(),
            userns: Some(0x6001_0000),
            host_kernel: false,
            cgroups_path: "/ember/t/sb",
            profile: &profile,
            limits: Limits::default(),
            host_code: None,
            build: None,
        })
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&fs::read(config).unwrap()).unwrap();
        assert!(v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "user"));
        for key in ["uidMappings", "gidMappings"] {
            assert_eq!(
                v["linux"][key],
                serde_json::json!([{"containerID": 0, "hostID": 0x6001_0000u32, "size": 65536}]),
                "{key}"
            );
        }
        let mounts = v["mounts"].as_array().unwrap();
        assert!(!mounts.iter().any(|m| m["destination"] == "/proc/meminfo"));
    }

    #[test]
    fn host_directory_bundles_bind_fn_and_mount_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let code = dir.path().join("fn");
        let tmp = dir.path().join("tmp");
        let profile = Profile::default_profile();
        let config = write_bundle(&BundleSpec {
            dir: dir.path(),
            files: &files(),
            interpreter: &python(),
            userns: None,
            host_kernel: false,
            cgroups_path: "/ember/t/sb",
            profile: &profile,
            limits: Limits::default(),
            host_code: Some((&code, &tmp)),
            build: None,
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
