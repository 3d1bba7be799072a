//! A private containerd for tests (its own config, root, state dir and
//! socket; never the machine's), and a small OCI image built here from the
//! host's static busybox, with no registry.

use serde_json::json;
use sha2::{Digest, Sha256};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The host tools a containerd test needs, with their Debian packages.
pub const TOOLS: &[(&str, &str)] = &[
    ("/usr/bin/containerd", "containerd"),
    ("/usr/bin/ctr", "containerd"),
    ("/usr/bin/containerd-shim-runc-v2", "containerd"),
    ("/bin/busybox", "busybox-static"),
];

/// The image every test imports.
pub const IMAGE: &str = "docker.io/library/ember-test:1";

pub struct Containerd {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    child: Option<Child>,
    /// `/run/containerd` existed before (a system containerd's): leave it.
    run_dir_existed: bool,
    /// Held for the instance's life (see [`one_at_a_time`]).
    _serial: std::sync::MutexGuard<'static, ()>,
}

/// Private containerd and dockerd instances still share the shims' fixed
/// socket directory (`/run/containerd/s`), which each removes when it goes:
/// tests in one binary take turns.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where containerd's shims put their sockets whatever the config says.
const SHIM_RUN_DIR: &str = "/run/containerd";

impl Containerd {
    pub fn start() -> Containerd {
        Containerd::start_with_env(&[])
    }

    /// Start with extra environment, which containerd passes to its shims
    /// and they to the runtime binary (`EMBER_AGENT`, `EMBER_SOCKET`).
    pub fn start_with_env(env: &[(&str, &Path)]) -> Containerd {
        let env: Vec<(OsString, OsString)> = env
            .iter()
            .map(|(k, v)| (OsString::from(k), v.as_os_str().to_owned()))
            .collect();
        Containerd::launch(&Launch {
            env: &env,
            ..Launch::default()
        })
    }

    /// Start one as `how` says: its temp dir, config (root, state, sockets
    /// and `opt` in the temp dir, with `how.plugins` appended) and
    /// environment.
    pub fn launch(how: &Launch) -> Containerd {
        let serial = one_at_a_time();
        let dir = tempfile::Builder::new()
            .prefix(how.prefix)
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        let socket = d.join("containerd.sock");
        let plugins = (how.plugins)(d);
        let disabled = if how.cri {
            ""
        } else {
            "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"
        };
        let config = format!(
            "version = 2\nroot = {:?}\nstate = {:?}\n{disabled}\
             [grpc]\n  address = {:?}\n[ttrpc]\n  address = {:?}\n[debug]\n  address = {:?}\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = {:?}\n{plugins}",
            d.join("root"),
            d.join("state"),
            socket,
            d.join("containerd.sock.ttrpc"),
            d.join("debug.sock"),
            d.join("opt"),
        );
        std::fs::write(d.join("config.toml"), config).expect("containerd config");
        let run_dir_existed = Path::new(SHIM_RUN_DIR).exists();
        let log = std::fs::File::create(d.join("containerd.log")).expect("log");
        let child = Command::new("/usr/bin/containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .envs(how.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let mut c = Containerd {
            dir,
            socket,
            child: Some(child),
            run_dir_existed,
            _serial: serial,
        };
        let t = Instant::now();
        while !c.ctr(&["version"]).status.success() {
            if let Some(status) = c.child.as_mut().and_then(|ch| ch.try_wait().ok().flatten()) {
                panic!("containerd exited with {status}; log:\n{}", c.log());
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "containerd did not come up; log:\n{}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Run `ctr` against this containerd, in namespace `ember-it`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_in("ember-it", args)
    }

    /// Run `ctr` against this containerd, in namespace `namespace`
    /// (`k8s.io` is the CRI plugin's).
    pub fn ctr_in(&self, namespace: &str, args: &[&str]) -> Output {
        Command::new("/usr/bin/ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", namespace])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }

    /// Build the test image and import it.
    pub fn import_test_image(&self) {
        self.import_image("ember-it", IMAGE, &["/bin/sh"]);
    }

    /// Build the busybox image `name` whose command is `cmd` and import
    /// it into `namespace`.
    pub fn import_image(&self, namespace: &str, name: &str, cmd: &[&str]) {
        self.import_image_with(namespace, name, cmd, &[]);
    }

    /// [`import_image`](Self::import_image) with `extras` in the image.
    pub fn import_image_with(
        &self,
        namespace: &str,
        name: &str,
        cmd: &[&str],
        extras: &[ImageEntry],
    ) {
        let tar = self
            .dir
            .path()
            .join(format!("image-{}.tar", sha256(name.as_bytes())));
        build_image_with_extras(&tar, name, cmd, extras);
        let out = self.ctr_in(
            namespace,
            &["images", "import", tar.to_str().expect("utf-8 path")],
        );
        assert!(
            out.status.success(),
            "ctr images import {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_file(tar);
    }

    /// The runtime's `--root` for this test's containers (`ctr run
    /// --runc-root`), inside the temp dir.
    pub fn runtime_root(&self) -> PathBuf {
        self.dir.path().join("runc")
    }

    /// `ctr run` flags that keep the runtime's state and the IO FIFOs in
    /// the temp dir, with `runtime` as the runc v2 shim's runtime binary.
    pub fn run_flags(&self, runtime: &str) -> Vec<String> {
        vec![
            "--runc-binary".into(),
            runtime.into(),
            "--runc-root".into(),
            self.runtime_root().to_string_lossy().into_owned(),
            "--fifo-dir".into(),
            self.dir.path().join("fifo").to_string_lossy().into_owned(),
        ]
    }
}

impl Containerd {
    /// Kill what a failed test left (tasks, containers, in every
    /// namespace), stop the daemon, and remove its mounts and the shims'
    /// directories. Once; the drop does it if the owner did not.
    pub fn shutdown(&mut self) {
        if self.child.is_none() {
            return;
        }
        let namespaces = self.ctr(&["namespaces", "list", "--quiet"]);
        for ns in String::from_utf8_lossy(&namespaces.stdout).lines() {
            let tasks = self.ctr_in(ns, &["tasks", "list", "--quiet"]);
            for id in String::from_utf8_lossy(&tasks.stdout).lines() {
                let _ = self.ctr_in(ns, &["tasks", "kill", "--signal", "SIGKILL", id]);
                std::thread::sleep(Duration::from_millis(200));
                let _ = self.ctr_in(ns, &["tasks", "delete", "--force", id]);
            }
            let containers = self.ctr_in(ns, &["containers", "list", "--quiet"]);
            for id in String::from_utf8_lossy(&containers.stdout).lines() {
                let _ = self.ctr_in(ns, &["containers", "delete", id]);
            }
        }
        stop(&mut self.child, Duration::from_secs(10));
        // Snapshot and task mounts under the temp dir.
        crate::unmount_under(self.dir.path());
        // The shim's socket dir is fixed; remove what this test created
        // there (only empty directories, never a system containerd's).
        if !self.run_dir_existed {
            remove_empty_dirs(SHIM_RUN_DIR, SHIM_RUN_SUBDIRS);
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The CRI plugin's name in containerd's config.
pub const CRI_PLUGIN: &str = "io.containerd.grpc.v1.cri";

/// How [`Containerd::launch`] starts one.
pub struct Launch<'a> {
    /// The temp dir's name prefix.
    pub prefix: &'a str,
    /// Whether the CRI plugin runs (off unless a test is about CRI).
    pub cri: bool,
    /// Config tables to append, given the temp dir.
    pub plugins: &'a dyn Fn(&Path) -> String,
    /// Extra environment for containerd (and so its shims).
    pub env: &'a [(OsString, OsString)],
}

impl Default for Launch<'_> {
    fn default() -> Self {
        Launch {
            prefix: "ember-it-ctrd-",
            cri: false,
            plugins: &|_| String::new(),
            env: &[],
        }
    }
}

/// SIGTERM a daemon, wait up to `grace`, then SIGKILL it.
fn stop(child: &mut Option<Child>, grace: Duration) {
    if let Some(mut c) = child.take() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let t = Instant::now();
        while c.try_wait().ok().flatten().is_none() && t.elapsed() < grace {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Subdirectories the shims create in [`SHIM_RUN_DIR`].
const SHIM_RUN_SUBDIRS: &[&str] = &["s", "fifo", "runc"];

/// Remove `base`'s `subdirs` and then `base`, each only if empty.
fn remove_empty_dirs(base: &str, subdirs: &[&str]) {
    for d in subdirs.iter().chain(&[""]) {
        let _ = std::fs::remove_dir(Path::new(base).join(d));
    }
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// An OCI image archive (also readable by `docker load`: it carries a
/// `manifest.json` too) with one layer: busybox and its shell.
pub fn build_image(out: &Path, name: &str) {
    build_image_with_cmd(out, name, &["/bin/sh"])
}

/// [`build_image`] with `cmd` as the image's command.
pub fn build_image_with_cmd(out: &Path, name: &str, cmd: &[&str]) {
    build_image_with_extras(out, name, cmd, &[])
}

/// An entry of an image beyond busybox: a directory (`None`) or a
/// symlink to the target given.
pub type ImageEntry<'a> = (&'a str, Option<&'a str>);

/// [`build_image_with_cmd`] with `extras` in the image too (an image with
/// its own `/lib64`, say).
pub fn build_image_with_extras(out: &Path, name: &str, cmd: &[&str], extras: &[ImageEntry]) {
    let mut layer = tar::Builder::new(Vec::new());
    let mut dir = |path: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(0);
        layer
            .append_data(&mut h, path, std::io::empty())
            .expect("dir entry");
    };
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        dir(d);
    }
    let busybox = std::fs::read("/bin/busybox").expect("/bin/busybox (busybox-static)");
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(busybox.len() as u64);
    h.set_mtime(0);
    layer
        .append_data(&mut h, "bin/busybox", busybox.as_slice())
        .expect("busybox entry");
    for applet in [
        "sh", "echo", "cat", "sleep", "grep", "true", "unshare", "id", "nc",
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_mtime(0);
        layer
            .append_link(&mut h, format!("bin/{applet}"), "busybox")
            .expect("applet link");
    }
    for (path, link) in extras {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mtime(0);
        match link {
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                layer.append_data(&mut h, path, std::io::empty())
            }
            Some(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                layer.append_link(&mut h, path, target)
            }
        }
        .expect("extra entry");
    }
    let layer = layer.into_inner().expect("layer tar");
    let layer_digest = sha256(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Cmd": cmd, "Env": ["PATH=/bin"] },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{layer_digest}")] },
    }))
    .expect("config");
    let config_digest = sha256(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_digest}"),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer_digest}"),
            "size": layer.len(),
        }],
    }))
    .expect("manifest");
    let manifest_digest = sha256(&manifest);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "annotations": { "io.containerd.image.name": name, "org.opencontainers.image.ref.name": "1" },
        }],
    }))
    .expect("index");
    let docker_manifest = serde_json::to_vec(&json!([{
        "Config": format!("blobs/sha256/{config_digest}"),
        "RepoTags": [name.trim_start_matches("docker.io/library/")],
        "Layers": [format!("blobs/sha256/{layer_digest}")],
    }]))
    .expect("docker manifest");
    let mut archive = tar::Builder::new(std::fs::File::create(out).expect("image file"));
    let mut file = |path: String, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        archive
            .append_data(&mut h, path, data)
            .expect("image entry");
    };
    file("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#);
    file("index.json".into(), &index);
    file("manifest.json".into(), &docker_manifest);
    file(format!("blobs/sha256/{layer_digest}"), &layer);
    file(format!("blobs/sha256/{config_digest}"), &config);
    file(format!("blobs/sha256/{manifest_digest}"), &manifest);
    archive.finish().expect("image archive");
}

/// A private dockerd (its own data root, exec root, socket and managed
/// containerd; no bridge, no iptables), configured with `daemon.json`.
pub struct Dockerd {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    child: Option<Child>,
    run_dir_existed: bool,
    /// `/run/docker` existed before (a system dockerd's): leave it.
    docker_dir_existed: bool,
    _serial: std::sync::MutexGuard<'static, ()>,
}

/// dockerd's plugin discovery directory, fixed whatever the flags say.
const DOCKER_RUN_DIR: &str = "/run/docker";

/// The host tools a Docker test needs, with their Debian packages.
pub const DOCKER_TOOLS: &[(&str, &str)] = &[
    ("/usr/sbin/dockerd", "docker.io"),
    ("/usr/bin/docker", "docker.io"),
    ("/bin/busybox", "busybox-static"),
];

impl Dockerd {
    pub fn start(daemon_json: &serde_json::Value) -> Dockerd {
        let serial = one_at_a_time();
        let dir = tempfile::Builder::new()
            .prefix("ember-it-dockerd-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        let socket = d.join("docker.sock");
        std::fs::write(d.join("daemon.json"), daemon_json.to_string()).expect("daemon.json");
        let run_dir_existed = Path::new(SHIM_RUN_DIR).exists();
        let docker_dir_existed = Path::new(DOCKER_RUN_DIR).exists();
        let log = std::fs::File::create(d.join("dockerd.log")).expect("log");
        let child = Command::new("/usr/sbin/dockerd")
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .args([
                "--iptables=false",
                "--ip-masq=false",
                "--bridge=none",
                "--storage-driver=vfs",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let mut dk = Dockerd {
            dir,
            socket,
            child: Some(child),
            run_dir_existed,
            docker_dir_existed,
            _serial: serial,
        };
        let t = Instant::now();
        while !dk.docker(&["info"]).status.success() {
            if let Some(status) = dk
                .child
                .as_mut()
                .and_then(|ch| ch.try_wait().ok().flatten())
            {
                panic!("dockerd exited with {status}; log:\n{}", dk.log());
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "dockerd did not come up; log:\n{}",
                dk.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        dk
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("/usr/bin/docker")
            .arg("--host")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    /// Build the test image and `docker load` it.
    pub fn load_test_image(&self) {
        let tar = self.dir.path().join("image.tar");
        build_image(&tar, IMAGE);
        let out = self.docker(&["load", "--input", tar.to_str().expect("utf-8 path")]);
        assert!(
            out.status.success(),
            "docker load: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "--all", "--quiet"]);
        for id in String::from_utf8_lossy(&ids.stdout).lines() {
            let _ = self.docker(&["rm", "--force", id]);
        }
        stop(&mut self.child, Duration::from_secs(20));
        crate::unmount_under(self.dir.path());
        if !self.run_dir_existed {
            remove_empty_dirs(SHIM_RUN_DIR, SHIM_RUN_SUBDIRS);
        }
        if !self.docker_dir_existed {
            remove_empty_dirs(DOCKER_RUN_DIR, &["plugins"]);
        }
    }
}
