//! `ember-runtime` under a real containerd (Debian's, private instance):
//! the runc v2 shim runs it as its runtime binary (`ctr run
//! --runc-binary`), with an image built here and imported, no registry.

use ember_integration::containerd::{Containerd, IMAGE, TOOLS};
use ember_integration::{agent_path, bin, prerequisites_met, tool_present, Daemon};
use serde_json::json;
use std::time::{Duration, Instant};

fn ready(test: &str) -> bool {
    prerequisites_met(test)
        && TOOLS
            .iter()
            .all(|(path, package)| tool_present(test, path, package))
        && tool_present(
            test,
            bin("ember-runtime").to_str().unwrap(),
            "ember (cargo build --workspace --bins)",
        )
}

/// CAP_KILL, CAP_SETGID, CAP_SETUID: what ember's profiles allow.
const STRICT_CAPS: &str = "00000000000000e0";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The `/proc/self/status` fields that show a profile was applied:
/// seccomp mode and effective capabilities.
fn status_fields(out: &str) -> (String, String) {
    let field = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .map(|l| l[name.len()..].trim().to_string())
            .unwrap_or_default()
    };
    (field("Seccomp:"), field("CapEff:"))
}

#[test]
fn containerd_runs_containers_through_ember_runtime() {
    if !ready("containerd_runs_containers_through_ember_runtime") {
        return;
    }
    let ctrd = Containerd::start();
    ctrd.import_test_image();
    let runtime = bin("ember-runtime");
    let flags = ctrd.run_flags(runtime.to_str().unwrap());
    let run = |extra: &[&str]| {
        let mut args: Vec<&str> = vec!["run"];
        args.extend(flags.iter().map(String::as_str));
        args.extend_from_slice(extra);
        ctrd.ctr(&args)
    };

    // Output and exit code come back through the shim.
    let out = run(&[
        "--rm",
        IMAGE,
        "plain",
        "/bin/sh",
        "-c",
        "echo hello from ember-runtime; cat /proc/self/status; exit 3",
    ]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("hello from ember-runtime"),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    // No annotation: the bundle's own settings, unchanged (ctr adds no
    // seccomp filter, and containerd's default capabilities).
    let (seccomp, caps) = status_fields(&stdout);
    assert_eq!(seccomp, "0", "{stdout}");
    assert_ne!(caps, STRICT_CAPS, "{stdout}");

    // With the annotation, ember's strict profile: a seccomp filter,
    // capabilities cut to the profile's, no new privileges, and what the
    // filter forbids fails.
    let out = run(&[
        "--rm",
        "--annotation",
        "dev.ember.profile=strict",
        IMAGE,
        "strict",
        "/bin/sh",
        "-c",
        "cat /proc/self/status; unshare -U true && echo UNSHARED || echo unshare-refused",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let (seccomp, caps) = status_fields(&stdout);
    assert_eq!(
        (seccomp.as_str(), caps.as_str()),
        ("2", STRICT_CAPS),
        "{stdout}"
    );
    assert!(stdout.contains("NoNewPrivs:\t1"), "{stdout}");
    assert!(stdout.contains("unshare-refused"), "{stdout}");

    // An unknown profile fails the create with the reason, and leaves
    // nothing running.
    let out = run(&[
        "--rm",
        "--annotation",
        "dev.ember.profile=lax",
        IMAGE,
        "bad-profile",
        "/bin/true",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("dev.ember.profile") && err.contains("lax"),
        "{err}"
    );
    let _ = ctrd.ctr(&["containers", "delete", "bad-profile"]);

    // A long-running strict task: pause, resume, exec, kill, delete.
    let out = run(&[
        "-d",
        "--annotation",
        "dev.ember.profile=strict",
        IMAGE,
        "sleeper",
        "/bin/sh",
        "-c",
        "sleep 1000",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = |c: &Containerd| {
        let out = c.ctr(&["tasks", "list"]);
        text(&out.stdout)
            .lines()
            .find(|l| l.starts_with("sleeper"))
            .map(|l| l.split_whitespace().last().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert_eq!(status(&ctrd), "RUNNING");
    assert!(ctrd.ctr(&["tasks", "pause", "sleeper"]).status.success());
    assert_eq!(status(&ctrd), "PAUSED");
    assert!(ctrd.ctr(&["tasks", "resume", "sleeper"]).status.success());
    assert_eq!(status(&ctrd), "RUNNING");
    // exec goes through the runtime's `exec`: containerd's process file
    // asks for its default capabilities (as for kubectl exec); the
    // process gets the profile's, and no new privileges.
    let out = ctrd.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "e1",
        "sleeper",
        "/bin/sh",
        "-c",
        "cat /proc/self/status; echo exec-ok; exit 4",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(stdout.contains("exec-ok"));
    assert_eq!(
        status_fields(&stdout),
        ("2".into(), STRICT_CAPS.into()),
        "{stdout}"
    );
    assert!(stdout.contains("NoNewPrivs:\t1"), "{stdout}");
    // ps goes through the runtime's `ps --format json`.
    let ps = ctrd.ctr(&["tasks", "ps", "sleeper"]);
    assert!(ps.status.success(), "{}", text(&ps.stderr));
    assert!(
        text(&ps.stdout).lines().count() >= 2,
        "{}",
        text(&ps.stdout)
    );
    assert!(ctrd
        .ctr(&["tasks", "kill", "--signal", "SIGKILL", "sleeper"])
        .status
        .success());
    let t = Instant::now();
    while status(&ctrd) != "STOPPED" {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "task did not stop: {}",
            status(&ctrd)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ctrd.ctr(&["tasks", "delete", "sleeper"]).status.success());
    assert!(ctrd
        .ctr(&["containers", "delete", "sleeper"])
        .status
        .success());

    // Nothing left in the runtime's state or in containerd.
    let left = std::process::Command::new("runc")
        .arg("--root")
        .arg(ctrd.runtime_root())
        .args(["list", "--quiet"])
        .output()
        .unwrap();
    assert_eq!(text(&left.stdout).trim(), "", "runtime state left");
    assert_eq!(
        text(&ctrd.ctr(&["tasks", "list", "--quiet"]).stdout).trim(),
        ""
    );
    assert_eq!(
        text(&ctrd.ctr(&["containers", "list", "--quiet"]).stdout).trim(),
        ""
    );
}

#[test]
fn a_container_started_by_containerd_becomes_an_emberd_sandbox() {
    if !ready("a_container_started_by_containerd_becomes_an_emberd_sandbox") {
        return;
    }
    // emberd with no sandboxes of its own: invocations can only run in
    // the one containerd starts.
    let mut d = Daemon::start(&["--pool-size", "0", "--pool-headroom", "0"]);
    let tag = d.tag();
    let agent = std::fs::canonicalize(agent_path()).expect("ember-agent (scripts/build-agent)");
    let ctrd = Containerd::start_with_env(&[
        ("EMBER_AGENT", agent.as_path()),
        ("EMBER_SOCKET", d.socket.as_path()),
    ]);
    ctrd.import_test_image();
    let runtime = bin("ember-runtime");
    let mut args: Vec<String> = vec!["run".into(), "-d".into()];
    args.extend(ctrd.run_flags(runtime.to_str().unwrap()));
    args.extend(["--annotation", "dev.ember.sandbox=python3", IMAGE, "ext1"].map(String::from));
    let out = ctrd.ctr(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        out.status.success(),
        "{}\nemberd log:\n{}",
        text(&out.stderr),
        d.log()
    );

    // `ember-runtime start` registered it: it is an idle pool sandbox.
    let listed = |d: &Daemon| {
        d.get("/v1/sandboxes").json()["sandboxes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == "ext1")
            .cloned()
    };
    let sb = listed(&d).unwrap_or_else(|| panic!("not adopted; log:\n{}", d.log()));
    assert_eq!(sb["state"], "idle", "{sb}");
    assert_eq!(sb["backend"], "external");
    assert_eq!(d.pool()["adopted_total"], 1);

    // Invocations through emberd run in it, code swapped in and out.
    d.deploy_files(
        "where",
        &[("main.py", "import os\ndef handler(e, c):\n    return {'fn': sorted(os.listdir('/fn')), 'n': e['n']}\n")],
        5000,
    );
    for n in 0..3 {
        let v = d.invoke("where", &format!(r#"{{"n": {n}}}"#)).json();
        assert_eq!(v["sandbox"], "ext1", "{v}");
        assert_eq!(v["start"], "hot", "{v}");
        assert_eq!(
            v["result"],
            json!({ "fn": ["__pycache__", "main.py"], "n": n }),
            "{v}"
        );
    }

    // containerd ends it: emberd drops it from the pool.
    let out = ctrd.ctr(&["tasks", "kill", "--signal", "SIGKILL", "ext1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = Instant::now();
    while listed(&d).is_some() {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "still pooled; log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    while !ctrd.ctr(&["tasks", "delete", "ext1"]).status.success() {
        assert!(t.elapsed() < Duration::from_secs(10), "task would not go");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ctrd.ctr(&["containers", "delete", "ext1"]).status.success());
    d.stop_and_check(&tag);
}

#[test]
fn ember_runtime_can_delegate_to_runsc() {
    let test = "ember_runtime_can_delegate_to_runsc";
    if !ready(test) || !tool_present(test, "/usr/bin/runsc", "runsc") {
        return;
    }
    // The shim hands its environment to the runtime binary.
    let ctrd = Containerd::start_with_env(&[(
        "EMBER_RUNTIME_DELEGATE",
        std::path::Path::new("/usr/bin/runsc"),
    )]);
    ctrd.import_test_image();
    let runtime = bin("ember-runtime");
    let mut args: Vec<String> = vec!["run".into(), "--rm".into()];
    args.extend(ctrd.run_flags(runtime.to_str().unwrap()));
    args.extend(
        [
            "--annotation",
            "dev.ember.profile=default",
            IMAGE,
            "gvisor",
            "/bin/sh",
            "-c",
            "cat /proc/version; exit 7",
        ]
        .map(String::from),
    );
    let out = ctrd.ctr(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{stdout}\n{}\n{}",
        text(&out.stderr),
        ctrd.log()
    );
    // gVisor's Sentry answers for the kernel: not the host's.
    let host = std::fs::read_to_string("/proc/version").unwrap();
    assert!(!stdout.is_empty() && stdout != host, "{stdout}");
}
