//! `ember-runtime` driven directly, as containerd's runc v2 shim drives it,
//! with runc as its delegate and a private `--root`: a profile never lets
//! through what the bundle's own seccomp filter refuses, a process exec'd
//! into a strict container gets no more than the profile allows whatever
//! its process file asks, and a bundle without its own mount namespace is
//! refused with ember's reason, leaving nothing behind.

use ember_integration::{bin, direct_runtime_ready, text, unmount_under};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const TOOLS: &[(&str, &str)] = &[
    ("/usr/sbin/runc", "runc"),
    ("/bin/busybox", "busybox-static"),
];

/// CAP_KILL, CAP_SETGID, CAP_SETUID: all ember's profiles allow.
const PROFILE_CAPS: u64 = 0xe0;

/// containerd's default capabilities, which it puts in an exec's process
/// file (`kubectl exec`, `ctr tasks exec`).
const CONTAINERD_CAPS: &[&str] = &[
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

fn ready(test: &str) -> bool {
    direct_runtime_ready(test, TOOLS, &["ember-runtime"])
}

/// A private runc root and bundles in a temp dir; every container made
/// under it is force-deleted when this goes, whatever the test did.
struct Runtime {
    dir: tempfile::TempDir,
}

impl Runtime {
    fn new() -> Runtime {
        let dir = tempfile::Builder::new()
            .prefix("ember-it-rp-")
            .tempdir()
            .expect("temp dir");
        Runtime { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("runc")
    }

    /// A container id no other test or run uses.
    fn id(&self, name: &str) -> String {
        format!("ember-rp-{}-{name}", std::process::id())
    }

    /// `ember-runtime --root <root> args...`, delegating to runc.
    fn ember(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("ember-runtime"));
        cmd.env("EMBER_RUNTIME_DELEGATE", "runc")
            .env("EMBER_RUNTIME_DELEGATE_ARGS", "")
            .arg("--root")
            .arg(self.root())
            .args(args);
        cmd
    }

    fn runc(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("runc");
        cmd.arg("--root").arg(self.root()).args(args);
        cmd
    }

    fn ids(&self) -> Vec<String> {
        let out = self.runc(&["list", "--quiet"]).output().expect("runc list");
        text(&out.stdout).lines().map(str::to_string).collect()
    }

    /// A bundle as `runc spec` makes it (busybox root, read-only, a tmpfs
    /// on /tmp), running `args`, then changed by `edit`.
    fn bundle(&self, name: &str, args: &[&str], edit: impl FnOnce(&mut Value)) -> PathBuf {
        let b = self.dir.path().join(name);
        make_rootfs(&b.join("rootfs"));
        let out = Command::new("runc")
            .args(["spec", "--bundle"])
            .arg(&b)
            .output()
            .expect("runc spec");
        assert!(out.status.success(), "runc spec: {}", text(&out.stderr));
        let mut config: Value =
            serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(args);
        config["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
        edit(&mut config);
        std::fs::write(b.join("config.json"), config.to_string()).unwrap();
        b
    }

    /// `ember-runtime run` in the foreground: the container's output.
    fn run(&self, bundle: &Path, id: &str) -> Output {
        self.ember(&["run", "--bundle", bundle.to_str().unwrap(), id])
            .stdin(Stdio::null())
            .output()
            .expect("ember-runtime run")
    }

    /// Create and start a container in the background (its stdio is not
    /// ours, or reading our output would wait for it).
    fn start(&self, bundle: &Path, id: &str) {
        for args in [
            vec!["create", "--bundle", bundle.to_str().unwrap(), id],
            vec!["start", id],
        ] {
            let log = self.dir.path().join(format!("{id}.log"));
            let status = self
                .ember(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .status()
                .expect("ember-runtime");
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(status.success(), "ember-runtime {args:?}: {log}");
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        for id in self.ids() {
            let _ = self.runc(&["delete", "--force", &id]).status();
        }
        unmount_under(self.dir.path());
    }
}

/// A root filesystem of the host's static busybox and the applets used.
fn make_rootfs(root: &Path) {
    for d in ["bin", "proc", "dev", "sys", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in ["sh", "mkdir", "grep", "sleep", "cat"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
}

/// A `/proc/self/status` field (`"CapEff"`), as text.
fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

fn caps(status: &str, name: &str) -> u64 {
    u64::from_str_radix(field(status, name), 16).unwrap()
}

const MKDIR: &str = "mkdir /tmp/x && echo MADE || echo REFUSED";

#[test]
fn a_bundles_seccomp_denial_stands_under_a_profile() {
    if !ready("a_bundles_seccomp_denial_stands_under_a_profile") {
        return;
    }
    let rt = Runtime::new();
    let annotate = |c: &mut Value| c["annotations"] = json!({"dev.ember.profile": "default"});
    // Control: the profile alone allows mkdir in /tmp.
    let plain = rt.bundle("plain", &["/bin/sh", "-c", MKDIR], annotate);
    let out = rt.run(&plain, &rt.id("plain"));
    assert_eq!(text(&out.stdout).trim(), "MADE", "{}", text(&out.stderr));
    let denying = rt.bundle("denying", &["/bin/sh", "-c", MKDIR], |c| {
        annotate(c);
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        });
    });
    let out = rt.run(&denying, &rt.id("denying"));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "REFUSED", "{stderr}");
    assert!(stderr.contains("Operation not permitted"), "{stderr}");
}

#[test]
fn an_exec_into_a_strict_container_gets_only_the_profiles_capabilities() {
    if !ready("an_exec_into_a_strict_container_gets_only_the_profiles_capabilities") {
        return;
    }
    let rt = Runtime::new();
    let id = rt.id("strict");
    let bundle = rt.bundle("strict", &["/bin/sleep", "60"], |c| {
        c["annotations"] = json!({"dev.ember.profile": "strict"});
    });
    rt.start(&bundle, &id);
    let all = json!(CONTAINERD_CAPS);
    let process = rt.dir.path().join("process.json");
    let status_of_exec = json!({
        "terminal": false, "user": {"uid": 0, "gid": 0}, "cwd": "/",
        "args": ["/bin/cat", "/proc/self/status"], "env": ["PATH=/bin"],
        "noNewPrivileges": false,
        "capabilities": {"bounding": all, "effective": all, "permitted": all,
                         "inheritable": all, "ambient": all},
    });
    std::fs::write(&process, status_of_exec.to_string()).unwrap();
    let process = process.to_str().unwrap();

    // What the process file asks for, straight through runc.
    let out = rt
        .runc(&["exec", "--process", process, &id])
        .output()
        .unwrap();
    let plain = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_ne!(caps(&plain, "CapEff") & !PROFILE_CAPS, 0, "{plain}");

    // Through ember-runtime: the profile's, no new privileges.
    let out = rt
        .ember(&["exec", "--process", process, &id])
        .output()
        .unwrap();
    let status = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(field(&status, "NoNewPrivs"), "1", "{status}");
    assert_eq!(field(&status, "Seccomp"), "2", "{status}");
    for set in ["CapEff", "CapBnd", "CapPrm"] {
        assert_eq!(caps(&status, set) & !PROFILE_CAPS, 0, "{set}: {status}");
    }
    for set in ["CapInh", "CapAmb"] {
        assert_eq!(caps(&status, set), 0, "{set}: {status}");
    }
    let copies: Vec<_> = std::fs::read_dir(rt.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".ember-process-")
        })
        .collect();
    assert!(copies.is_empty(), "restricted copies left: {copies:?}");

    // Without a process file: an extra --cap is dropped.
    let out = rt
        .ember(&[
            "exec",
            "--cap",
            "CAP_SYS_ADMIN",
            &id,
            "cat",
            "/proc/self/status",
        ])
        .output()
        .unwrap();
    let status = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(field(&status, "NoNewPrivs"), "1", "{status}");
    assert_eq!(caps(&status, "CapBnd") & !PROFILE_CAPS, 0, "{status}");
}

#[test]
fn a_bundle_without_its_own_mount_namespace_is_refused() {
    if !ready("a_bundle_without_its_own_mount_namespace_is_refused") {
        return;
    }
    let rt = Runtime::new();
    let bundle = rt.bundle("hostmnt", &["/bin/sh", "-c", "true"], |c| {
        c["annotations"] = json!({"dev.ember.profile": "strict"});
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "mount");
    });
    let before = std::fs::read(bundle.join("config.json")).unwrap();
    let out = rt.run(&bundle, &rt.id("hostmnt"));
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "ember profile \"strict\" needs the container to have its own mount namespace \
             (linux.namespaces has no \"mount\")"
        ),
        "{stderr}"
    );
    assert_eq!(rt.ids(), Vec::<String>::new(), "no container left");
    assert_eq!(std::fs::read(bundle.join("config.json")).unwrap(), before);
}

#[test]
fn checkpoint_reaches_the_delegate_as_runcs_own() {
    if !ready("checkpoint_reaches_the_delegate_as_runcs_own") {
        return;
    }
    let rt = Runtime::new();
    // youki's command-line library spells it `checkpointt` and lacks some
    // of runc's flags: ember-runtime hands it to runc unparsed.
    let ours = rt.ember(&["checkpoint", "--help"]).output().unwrap();
    let runcs = rt.runc(&["checkpoint", "--help"]).output().unwrap();
    assert!(ours.status.success(), "{}", text(&ours.stderr));
    assert_eq!(text(&ours.stdout), text(&runcs.stdout));
    assert!(text(&ours.stdout).contains("checkpoint a running container"));

    // A checkpoint of a running container reaches runc, which needs CRIU:
    // without it, runc's own error about CRIU.
    let id = rt.id("ckpt");
    let bundle = rt.bundle("ckpt", &["/bin/sleep", "60"], |c| {
        c["annotations"] = json!({"dev.ember.profile": "default"});
    });
    rt.start(&bundle, &id);
    let images = rt.dir.path().join("images");
    let args = [
        "checkpoint",
        "--image-path",
        images.to_str().unwrap(),
        "--leave-running",
        "--file-locks",
        &id,
    ];
    let ours = rt.ember(&args).output().unwrap();
    let criu = std::path::Path::new("/usr/sbin/criu").exists();
    let stderr = text(&ours.stderr);
    if criu {
        assert!(ours.status.success(), "{stderr}");
    } else {
        let runcs = rt.runc(&args).output().unwrap();
        assert!(!ours.status.success(), "{stderr}");
        assert_eq!(ours.status.code(), runcs.status.code());
        assert!(stderr.to_lowercase().contains("criu"), "{stderr}");
        assert!(!stderr.contains("ember-runtime"), "{stderr}");
    }
    let state = rt.runc(&["state", &id]).output().unwrap();
    assert!(
        text(&state.stdout).contains("\"running\""),
        "{}",
        text(&state.stdout)
    );
}
