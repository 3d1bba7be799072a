//! `containerd-shim-ember-v1` under a real containerd 1.6 (Debian's,
//! private instance), driven with `ctr`: the task API v2 end to end (create,
//! start, output, exit code, exec, pause, kill, delete), on runc and on
//! gVisor's runsc, with the shim's config named by `--runtime-config-path`
//! as CRI's `ConfigPath` names it. Kubernetes pods through CRI are in
//! `cri.rs`.

use ember_integration::containerd::{Containerd, Launch, IMAGE, TOOLS};
use ember_integration::{bin, prerequisites_met, text, tool_present};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

const SHIM: &str = "io.containerd.ember.v1";

fn ready(test: &str, runtime: &str) -> bool {
    prerequisites_met(test)
        && TOOLS
            .iter()
            .all(|(path, package)| tool_present(test, path, package))
        && tool_present(test, runtime, runtime.rsplit('/').next().unwrap_or(runtime))
        && ["containerd-shim-ember-v1", "ember-runtime"]
            .iter()
            .all(|b| {
                tool_present(
                    test,
                    bin(b).to_str().unwrap(),
                    "ember (cargo build --workspace --bins)",
                )
            })
}

/// A private containerd that finds the shim on its PATH.
fn containerd() -> Containerd {
    let path = format!(
        "{}:{}",
        bin("containerd-shim-ember-v1").parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = vec![(OsString::from("PATH"), OsString::from(path))];
    Containerd::launch(&Launch {
        prefix: "ember-it-shim-",
        env: &env,
        ..Launch::default()
    })
}

/// The shim's config for `runtime`, in the test's temp dir.
fn shim_config(ctrd: &Containerd, runtime: &str) -> PathBuf {
    let path = ctrd.dir.path().join(format!("shim-{runtime}.toml"));
    let config = format!(
        "runtime = {runtime:?}\nember_runtime = {:?}\nroot = {:?}\n",
        bin("ember-runtime"),
        ctrd.dir.path().join("shim-root"),
    );
    std::fs::write(&path, config).unwrap();
    path
}

/// Where `ctr` keeps the tasks' FIFOs: in the test's temp dir.
fn fifo_dir(ctrd: &Containerd) -> String {
    ctrd.dir.path().join("fifo").to_string_lossy().into_owned()
}

/// `ctr run` through the shim with `config` (named as CRI's
/// `ConfigPath` names it), then `extra`.
fn run_via_shim(ctrd: &Containerd, config: &Path, extra: &[&str]) -> Output {
    let (config, fifo) = (config.to_string_lossy(), fifo_dir(ctrd));
    let mut args = vec!["run", "--runtime", SHIM, "--runtime-config-path", &config];
    args.extend(["--fifo-dir", &fifo]);
    args.extend_from_slice(extra);
    ctrd.ctr(&args)
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(30), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The same checks on one runtime: output and exit code of a run, and a
/// detached task's exec, pause, kill and delete.
fn shim_runs_tasks(test: &str, runtime: &str, runtime_path: &str) {
    if !ready(test, runtime_path) {
        return;
    }
    let ctrd = containerd();
    ctrd.import_test_image();
    let config = shim_config(&ctrd, runtime);
    let fifo = fifo_dir(&ctrd);
    let run = |extra: &[&str]| run_via_shim(&ctrd, &config, extra);

    let out = run(&[
        "--rm",
        IMAGE,
        "once",
        "/bin/sh",
        "-c",
        "echo hello from the ember shim; echo to-stderr >&2; cat /proc/version; exit 3",
    ]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("hello from the ember shim"),
        "stdout: {stdout}\nstderr: {}\n{}",
        text(&out.stderr),
        ctrd.log()
    );
    assert!(
        text(&out.stderr).contains("to-stderr"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let host_version = std::fs::read_to_string("/proc/version").unwrap();
    if runtime == "runsc" {
        assert!(
            !stdout.contains(host_version.trim()),
            "not in gVisor: {stdout}"
        );
    } else {
        assert!(stdout.contains(host_version.trim()), "{stdout}");
    }

    // A strict profile reaches the container through ember-runtime.
    let out = run(&[
        "--rm",
        "--annotation",
        "dev.ember.profile=strict",
        IMAGE,
        "strict",
        "/bin/sh",
        "-c",
        "grep -E '^(NoNewPrivs|CapEff)' /proc/self/status",
    ]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("CapEff:\t00000000000000e0"),
        "{stdout}{}",
        text(&out.stderr)
    );
    // gVisor's /proc has no NoNewPrivs line.
    if runtime != "runsc" {
        assert!(stdout.contains("NoNewPrivs:\t1"), "{stdout}");
    }

    // An unknown profile fails with the reason.
    let out = run(&[
        "--rm",
        "--annotation",
        "dev.ember.profile=nope",
        IMAGE,
        "nope",
        "/bin/true",
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));
    let _ = ctrd.ctr(&["containers", "delete", "nope"]);

    // A detached task: exec, pause/resume, kill, delete.
    let out = run(&[
        "-d",
        IMAGE,
        "long",
        "/bin/sh",
        "-c",
        "trap 'exit 7' TERM; while :; do sleep 0.1; done",
    ]);
    assert!(out.status.success(), "{}{}", text(&out.stderr), ctrd.log());
    let out = ctrd.ctr(&[
        "tasks",
        "exec",
        "--fifo-dir",
        &fifo,
        "--exec-id",
        "e1",
        "long",
        "/bin/sh",
        "-c",
        "echo in-exec; exit 5",
    ]);
    assert!(
        text(&out.stdout).contains("in-exec"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    // A signal for a detached exec reaches the exec'd process (under
    // runc; `runsc exec` forwards no signal: docs/containerd.md).
    if runtime == "runc" {
        exec_gets_signals(&ctrd, &fifo);
    }
    let status = |ctrd: &Containerd| text(&ctrd.ctr(&["tasks", "list"]).stdout);
    assert!(ctrd.ctr(&["tasks", "pause", "long"]).status.success());
    assert!(status(&ctrd).contains("PAUSED"), "{}", status(&ctrd));
    assert!(ctrd.ctr(&["tasks", "resume", "long"]).status.success());
    assert!(status(&ctrd).contains("RUNNING"), "{}", status(&ctrd));
    let out = ctrd.ctr(&["tasks", "kill", "--signal", "SIGTERM", "long"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for("the task to stop", || status(&ctrd).contains("STOPPED"));
    let out = ctrd.ctr(&["tasks", "delete", "long"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains('7') || out.status.success());
    assert!(ctrd.ctr(&["containers", "delete", "long"]).status.success());

    // Nothing left: no task, no container in the runtime's root, no shim.
    assert_eq!(status(&ctrd).lines().count(), 1, "{}", status(&ctrd));
    let root = ctrd.dir.path().join("shim-root").join("ember-it");
    let left = std::process::Command::new(runtime_path)
        .arg("--root")
        .arg(&root)
        .args(["list", "--quiet"])
        .output()
        .unwrap();
    assert_eq!(text(&left.stdout).trim(), "", "left in {}", root.display());
    wait_for("the shims to exit", || shims(ctrd.dir.path()) == 0);
}

#[test]
fn the_shim_runs_tasks_on_runc() {
    shim_runs_tasks("the_shim_runs_tasks_on_runc", "runc", "/usr/sbin/runc");
}

#[test]
fn the_shim_runs_tasks_on_runsc() {
    shim_runs_tasks("the_shim_runs_tasks_on_runsc", "runsc", "/usr/bin/runsc");
}

/// A signal for a detached exec of task `long` reaches the exec'd process.
fn exec_gets_signals(ctrd: &Containerd, fifo: &str) {
    let out = ctrd.ctr(&[
        "tasks",
        "exec",
        "--detach",
        "--fifo-dir",
        fifo,
        "--exec-id",
        "e2",
        "long",
        "/bin/sh",
        "-c",
        "trap 'echo termed > /tmp/e2; exit 9' TERM; while :; do sleep 0.1; done",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::thread::sleep(Duration::from_millis(500));
    let out = ctrd.ctr(&[
        "tasks",
        "kill",
        "--exec-id",
        "e2",
        "--signal",
        "SIGTERM",
        "long",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for("the exec to handle SIGTERM", || {
        let out = ctrd.ctr(&[
            "tasks",
            "exec",
            "--fifo-dir",
            fifo,
            "--exec-id",
            "e3",
            "long",
            "/bin/cat",
            "/tmp/e2",
        ]);
        text(&out.stdout).contains("termed")
    });
}

/// How many shims serve this containerd.
fn shims(dir: &Path) -> usize {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|p| {
            let cmd = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            cmd.contains("containerd-shim-ember-v1") && cmd.contains(&needle)
        })
        .count()
}

/// A pod as CRI makes one (a sandbox container, then containers naming it
/// by annotation): one shim serves it, and under gVisor the app container
/// joins the sandbox's kernel, reports the sandbox's pid, and still has its
/// own exit status (`runsc wait`), without ending the pod.
#[test]
fn a_gvisor_pod_shares_one_shim_and_one_sandbox() {
    let test = "a_gvisor_pod_shares_one_shim_and_one_sandbox";
    if !ready(test, "/usr/bin/runsc") {
        return;
    }
    let ctrd = containerd();
    ctrd.import_test_image();
    let config = shim_config(&ctrd, "runsc");
    let run = |extra: &[&str]| run_via_shim(&ctrd, &config, extra);
    let pod = "pod0123456789abcdef";
    let sandbox_id = format!("io.kubernetes.cri.sandbox-id={pod}");
    let out = run(&[
        "-d",
        "--annotation",
        "io.kubernetes.cri.container-type=sandbox",
        "--annotation",
        &sandbox_id,
        IMAGE,
        pod,
        "/bin/sh",
        "-c",
        "trap 'exit 0' TERM; while :; do sleep 0.1; done",
    ]);
    assert!(out.status.success(), "{}{}", text(&out.stderr), ctrd.log());
    let out = run(&[
        "--rm",
        "--annotation",
        "io.kubernetes.cri.container-type=container",
        "--annotation",
        &sandbox_id,
        IMAGE,
        "app",
        "/bin/sh",
        "-c",
        "echo app-in-pod; exit 4",
    ]);
    let errors = |log: String| {
        log.lines()
            .filter(|l| !l.contains("level=info") && !l.contains("devmapper"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        text(&out.stdout).contains("app-in-pod"),
        "stdout {:?} stderr {:?}\ntasks {}\n{}",
        text(&out.stdout),
        text(&out.stderr),
        text(&ctrd.ctr(&["tasks", "list"]).stdout),
        errors(ctrd.log())
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert_eq!(shims(ctrd.dir.path()), 1, "one shim per pod");
    // The pod lives on after its app container.
    let tasks = text(&ctrd.ctr(&["tasks", "list"]).stdout);
    assert!(
        tasks
            .lines()
            .any(|l| l.starts_with(pod) && l.contains("RUNNING")),
        "{tasks}"
    );
    let out = ctrd.ctr(&["tasks", "kill", "--signal", "SIGKILL", pod]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for("the pod to stop", || {
        text(&ctrd.ctr(&["tasks", "list"]).stdout).contains("STOPPED")
    });
    assert!(ctrd.ctr(&["tasks", "delete", pod]).status.success());
    assert!(ctrd.ctr(&["containers", "delete", pod]).status.success());
    wait_for("the shim to exit", || shims(ctrd.dir.path()) == 0);
}

/// The shim refuses to drive an `ember-runtime` of another build, and
/// says which.
#[test]
fn an_ember_runtime_of_another_version_is_refused() {
    let test = "an_ember_runtime_of_another_version_is_refused";
    if !ready(test, "/usr/sbin/runc") {
        return;
    }
    let ctrd = containerd();
    ctrd.import_test_image();
    let fake = ctrd.dir.path().join("ember-runtime");
    std::fs::write(&fake, "#!/bin/sh\necho ember-runtime 9.9.9\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = ctrd.dir.path().join("shim-old.toml");
    std::fs::write(&config, format!("ember_runtime = {fake:?}\n")).unwrap();
    let out = run_via_shim(&ctrd, &config, &["--rm", IMAGE, "old", "/bin/true"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("9.9.9") && stderr.contains(env!("CARGO_PKG_VERSION")),
        "{stderr}"
    );
    let _ = ctrd.ctr(&["containers", "delete", "old"]);
    wait_for("the shim to exit", || shims(ctrd.dir.path()) == 0);
}
