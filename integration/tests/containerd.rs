//! `ember-runtime` under a real containerd (Debian's, private instance):
//! the runc v2 shim runs it as its runtime binary (`ctr run
//! --runc-binary`), with an image built here and imported, no registry.

use ember_integration::containerd::{Containerd, IMAGE, TOOLS};
use ember_integration::{agent_path, bin, prerequisites_met, text, tool_present, Daemon};
use serde_json::{json, Value};
use std::process::Output;
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

/// A 64-hex container id, as CRI makes them (unique to this run).
fn cri_id(name: &str) -> String {
    use sha2::Digest;
    let seed = format!(
        "{}-{name}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    );
    hex::encode(sha2::Sha256::digest(seed))
}

/// The image of the CRI tests: busybox with directories of its own at
/// `/lib` and `/lib64` (as Debian or Alpine images have), which would hide
/// the host's loader and libraries from the host's interpreter.
const LIBS_IMAGE: &str = "docker.io/library/ember-test-libs:1";

/// A node as the CRI tests see it: an emberd and a containerd whose runc
/// shim runs `ember-runtime` (with the agent and emberd's socket in its
/// environment).
struct Node {
    ctrd: Containerd,
    d: Daemon,
    flags: Vec<String>,
}

impl Node {
    fn start(emberd_args: &[&str]) -> Node {
        let d = Daemon::start(emberd_args);
        let agent = std::fs::canonicalize(agent_path()).expect("ember-agent (scripts/build-agent)");
        let ctrd = Containerd::start_with_env(&[
            ("EMBER_AGENT", agent.as_path()),
            ("EMBER_SOCKET", d.socket.as_path()),
        ]);
        ctrd.import_test_image();
        let libs = [
            ("lib", None),
            ("lib64", None),
            ("lib/x86_64-linux-gnu", None),
        ];
        ctrd.import_image_with("ember-it", LIBS_IMAGE, &["/bin/sh"], &libs);
        let flags = ctrd.run_flags(bin("ember-runtime").to_str().unwrap());
        Node { ctrd, d, flags }
    }

    /// `ctr run -d` of `image` as container `id` with CRI's annotations
    /// for `kind` (`sandbox`: a pod's pause container; `container`: one of
    /// its others, in pod `pod`) and `dev.ember.sandbox=python3`, which
    /// the kubelet passes to every container of the pod, and `flags`;
    /// `cmd` instead of the image's command.
    fn run(
        &self,
        image: &str,
        id: &str,
        pod: (&str, &str),
        flags: &[&str],
        cmd: &[&str],
    ) -> Output {
        let (kind, pod) = pod;
        let mut args: Vec<String> = vec!["run".into(), "-d".into()];
        args.extend(self.flags.iter().cloned());
        for a in [
            "dev.ember.sandbox=python3".to_string(),
            format!("io.kubernetes.cri.container-type={kind}"),
            format!("io.kubernetes.cri.sandbox-id={pod}"),
        ] {
            args.extend(["--annotation".to_string(), a]);
        }
        args.extend(flags.iter().map(|s| s.to_string()));
        args.extend([image.to_string(), id.to_string()]);
        args.extend(cmd.iter().map(|s| s.to_string()));
        self.ctrd
            .ctr(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Run an app container of pod `pod` and expect it adopted.
    fn run_adopted(&self, id: &str, pod: &str) {
        let uri = format!("file://{}", self.log_path(id).display());
        let out = self.run(
            LIBS_IMAGE,
            id,
            ("container", pod),
            &["--log-uri", &uri],
            &[],
        );
        assert!(
            out.status.success(),
            "{}\nemberd log:\n{}",
            text(&out.stderr),
            self.d.log()
        );
        let sb = self
            .listed(id)
            .unwrap_or_else(|| panic!("{id} not adopted; log:\n{}", self.d.log()));
        assert_eq!(sb["backend"], "external", "{sb}");
    }

    fn listed(&self, id: &str) -> Option<Value> {
        self.d.get("/v1/sandboxes").json()["sandboxes"]
            .as_array()?
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
    }

    /// Where an adopted container's output (its agent's stderr) goes.
    fn log_path(&self, id: &str) -> std::path::PathBuf {
        self.ctrd.dir.path().join(format!("{id}.log"))
    }

    fn wait_listed(&self, id: &str, listed: bool) {
        let t = Instant::now();
        while self.listed(id).is_some() != listed {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "{id} listed: {}, wanted {listed}; its log:\n{}\nemberd log:\n{}",
                !listed,
                std::fs::read_to_string(self.log_path(id)).unwrap_or_default(),
                self.d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ctr tasks list`'s status and pid of task `id`.
    fn task(&self, id: &str) -> (String, u32) {
        let out = self.ctrd.ctr(&["tasks", "list"]);
        let line = text(&out.stdout)
            .lines()
            .find(|l| l.starts_with(id))
            .map(str::to_string)
            .unwrap_or_default();
        let f: Vec<&str> = line.split_whitespace().collect();
        let pid = f.get(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        (f.last().unwrap_or(&"").to_string(), pid)
    }

    /// The v1 freezer state of the container whose init is `pid`.
    fn freezer(&self, pid: u32) -> String {
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let path = cgroups
            .lines()
            .find_map(|l| l.split_once(":freezer:").map(|(_, p)| p.to_string()))
            .unwrap_or_default();
        std::fs::read_to_string(format!("/sys/fs/cgroup/freezer{path}/freezer.state"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    fn wait_freezer(&self, pid: u32, want: &str) {
        let t = Instant::now();
        while self.freezer(pid) != want {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "freezer of {pid}: {}, wanted {want}",
                self.freezer(pid)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `ctr tasks exec` of a shell line in container `id`.
    fn exec(&self, id: &str, exec_id: &str, line: &str) -> Output {
        self.ctrd.ctr(&[
            "tasks",
            "exec",
            "--exec-id",
            exec_id,
            id,
            "/bin/sh",
            "-c",
            line,
        ])
    }

    /// Invoke `function` and expect it served by sandbox `id`.
    fn invoke_in(&self, function: &str, id: &str) {
        let v = self.d.invoke(function, "{}").json();
        assert_eq!(v["sandbox"], id, "{v}\nlog:\n{}", self.d.log());
        assert_eq!(v["outcome"], "ok", "{v}");
    }

    /// Stop container `id` the kubelet's way (SIGTERM), expecting it to
    /// end within `within`, then remove it.
    fn stop_container(&self, id: &str, within: Duration) {
        let out = self.ctrd.ctr(&["tasks", "kill", "--signal", "SIGTERM", id]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let t = Instant::now();
        while self.task(id).0 != "STOPPED" {
            assert!(
                t.elapsed() < within,
                "{id} did not stop within {within:?} of SIGTERM: {:?}",
                self.task(id)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(self.ctrd.ctr(&["tasks", "delete", id]).status.success());
        assert!(self
            .ctrd
            .ctr(&["containers", "delete", id])
            .status
            .success());
    }
}

/// The sandbox directory `ember-runtime` keeps for container `id` (found
/// by the cgroup it records, which names the container).
fn sandbox_dir(id: &str) -> Option<std::path::PathBuf> {
    std::fs::read_dir("/run/ember/a")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            std::fs::read_to_string(p.join("cgroup")).is_ok_and(|c| c.ends_with(&format!("/{id}")))
        })
}

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0)
}

const WHERE_PY: &str = "import os\ndef handler(e, c):\n    return sorted(os.listdir('/fn'))\n";

#[test]
fn a_cri_pods_app_containers_are_adopted_and_its_pause_container_left_alone() {
    let test = "a_cri_pods_app_containers_are_adopted_and_its_pause_container_left_alone";
    if !ready(test) {
        return;
    }
    let node = Node::start(&["--adopted-only", "--queue-timeout-ms", "1500"]);
    let (d, tag) = (&node.d, node.d.tag());
    d.deploy_files("where", &[("main.py", WHERE_PY)], 5000);

    // --adopted-only: no sandbox of emberd's own, ever; an invocation
    // waits for an adopted one, then says why there is none.
    let a = d.invoke("where", "{}");
    assert_eq!((a.status, a.error_code()), (503, "pool_exhausted".into()));
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--adopted-only"));
    // Refused before it ran: no record, so the answer names none; it is
    // counted instead.
    assert!(
        a.json()["error"].get("invocation_id").is_none(),
        "{}",
        a.json()
    );
    let metrics = String::from_utf8_lossy(&d.get("/metrics").body).to_string();
    assert!(
        metrics.contains(
            "ember_invocations_refused_total{function=\"where\",code=\"pool_exhausted\"} 1"
        ),
        "{metrics}"
    );
    let all = d.get("/v1/invocations?function=where&output=false").json();
    assert_eq!(all["invocations"], json!([]), "{all}");
    // A request refused before it had a record has no id.
    let a = d.invoke("nope", "{}");
    assert_eq!(a.error_code(), "function_not_found");
    assert!(
        a.json()["error"].get("invocation_id").is_none(),
        "{}",
        a.json()
    );
    let dir = d.dir.path().join("t");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("main.py"), WHERE_PY).unwrap();
    let body = json!({"code": {"path": dir}, "event": {}}).to_string();
    let a = d.request("POST", "/v1/test", "application/json", body.as_bytes());
    assert_eq!(
        (a.status, a.error_code()),
        (503, "backend_unavailable".into())
    );
    assert!(ember_integration::runc_ids(&format!("ember-{tag}-")).is_empty());
    assert_eq!(d.pool()["target"], 0);

    // A registration from an ember-runtime of another version is refused
    // naming both.
    let other = json!({"id": "x", "runtime": "python3", "pid": 1, "socket": "/x",
        "cgroups_path": "/x", "version": "0.0.0"});
    let a = d.request(
        "POST",
        "/v1/sandboxes",
        "application/json",
        other.to_string().as_bytes(),
    );
    assert_eq!((a.status, a.error_code()), (409, "version_mismatch".into()));
    let m = a.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        m.contains("0.0.0") && m.contains(env!("CARGO_PKG_VERSION")),
        "{m}"
    );

    // The pause container carries the pod's annotations too: it runs its
    // own command, untouched, and is not adopted.
    let pod = cri_id("pod");
    let out = node.run(IMAGE, &pod, ("sandbox", &pod), &[], &["/bin/sleep", "1000"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (status, pid) = node.task(&pod);
    assert_eq!(status, "RUNNING");
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .trim(),
        "sleep"
    );
    assert!(node.listed(&pod).is_none() && sandbox_dir(&pod).is_none());

    // An app container with a 64-hex id (its bundle path is too long for
    // a socket under it) and an image with its own /lib and /lib64: adopted,
    // and invocations run in it.
    let app = cri_id("app");
    node.run_adopted(&app, &pod);
    let sd = sandbox_dir(&app).expect("sandbox directory");
    let socket = sd.join("run/agent.sock");
    assert!(socket.as_os_str().len() <= 107, "{socket:?}");
    assert_eq!(
        (mode(&sd), mode(&sd.join("run")), mode(&socket)),
        (0o700, 0o700, 0o600)
    );
    for _ in 0..2 {
        node.invoke_in("where", &app);
    }
    assert!(ember_integration::runc_ids(&format!("ember-{tag}-")).is_empty());

    // Removed by containerd: gone from the pool, its directory gone.
    node.stop_container(&app, Duration::from_secs(10));
    node.wait_listed(&app, false);
    assert!(!sd.exists(), "{sd:?} left");
    assert!(!node.d.state.join(format!("adopted/{app}.json")).exists());
    let out = node
        .ctrd
        .ctr(&["tasks", "kill", "--signal", "SIGKILL", &pod]);
    assert!(out.status.success());
    let mut node = node;
    node.d.stop_and_check(&tag);
}

#[test]
fn exec_and_sigterm_reach_frozen_adopted_containers_which_outlive_emberd_restarts() {
    let test = "exec_and_sigterm_reach_frozen_adopted_containers_which_outlive_emberd_restarts";
    if !ready(test) {
        return;
    }
    let mut node = Node::start(&["--adopted-only"]);
    node.d.deploy_files("where", &[("main.py", WHERE_PY)], 5000);
    let pod = cri_id("pod");
    let (a, b) = (cri_id("a"), cri_id("b"));
    node.run_adopted(&a, &pod);
    node.run_adopted(&b, &pod);
    let (_, pid_a) = node.task(&a);
    let (_, pid_b) = node.task(&b);

    // Idle adopted sandboxes are frozen; an exec (a probe, kubectl exec)
    // thaws its container through emberd, which keeps it thawed.
    node.wait_freezer(pid_a, "FROZEN");
    let out = node.exec(&a, "e1", "echo exec-ok");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "exec-ok");
    assert_eq!(node.freezer(pid_a), "THAWED");
    invoke_ok(&node);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(node.freezer(pid_a), "THAWED", "frozen again after an exec");

    // emberd drains (SIGTERM): the containers keep running, and the next
    // emberd takes them back.
    node.d.stop();
    assert_eq!(node.task(&a).0, "RUNNING");
    node.d.spawn();
    node.wait_listed(&a, true);
    node.wait_listed(&b, true);
    invoke_ok(&node);

    // emberd is killed with its sandboxes idle and frozen (one busy or on
    // its way back would end with it): an exec still gets in
    // (ember-runtime thaws the cgroup itself), and the next emberd takes
    // them back.
    node.wait_freezer(pid_a, "FROZEN");
    node.wait_freezer(pid_b, "FROZEN");
    node.d.crash();
    let out = node.exec(&b, "e2", "echo still-here");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "still-here");
    node.d.spawn();
    node.wait_listed(&a, true);
    node.wait_listed(&b, true);
    for _ in 0..2 {
        invoke_ok(&node);
    }

    // SIGTERM stops a frozen adopted container at once (the kubelet's
    // StopContainer does not sit out its grace period).
    node.wait_freezer(pid_a, "FROZEN");
    node.stop_container(&a, Duration::from_secs(5));
    node.stop_container(&b, Duration::from_secs(5));
    node.wait_listed(&a, false);
    node.wait_listed(&b, false);
    assert!(sandbox_dir(&a).is_none() && sandbox_dir(&b).is_none());
    let tag = node.d.tag();
    node.d.stop_and_check(&tag);
}

/// Invoke `where` and expect it to succeed (in whichever adopted sandbox).
fn invoke_ok(node: &Node) {
    let v = node.d.invoke("where", "{}").json();
    assert_eq!(v["outcome"], "ok", "{v}\nlog:\n{}", node.d.log());
    assert_eq!(v["result"], json!(["__pycache__", "main.py"]), "{v}");
}

#[test]
fn an_adopted_container_that_cannot_start_fails_with_the_agents_reason() {
    let test = "an_adopted_container_that_cannot_start_fails_with_the_agents_reason";
    if !ready(test) {
        return;
    }
    let node = Node::start(&["--adopted-only"]);
    // An image whose /lib64 leads nowhere: the host's python3 finds no
    // loader in it.
    let broken = "docker.io/library/ember-test-broken:1";
    node.ctrd.import_image_with(
        "ember-it",
        broken,
        &["/bin/sh"],
        &[("lib64", Some("/nowhere"))],
    );
    let pod = cri_id("pod");
    let id = cri_id("broken");
    let log = node.ctrd.dir.path().join("broken.log");
    let uri = format!("file://{}", log.display());
    let out = node.run(broken, &id, ("container", &pod), &["--log-uri", &uri], &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    for want in [
        "its agent could not start",
        "starting zygote /usr/bin/python3",
        "No such file",
    ] {
        assert!(err.contains(want), "{want:?} not in ctr's error:\n{err}");
    }
    // The container's log has it too (the agent's stderr), once the shim
    // has copied it: slow on a loaded machine (a CI run saw it take over
    // 5 s), so only a hang guard here.
    let t = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("starting zygote")
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "container log: {:?}",
            std::fs::read_to_string(&log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(node.listed(&id).is_none());
    let _ = node.ctrd.ctr(&["tasks", "delete", "--force", &id]);
    let _ = node.ctrd.ctr(&["containers", "delete", &id]);
    assert!(
        sandbox_dir(&id).is_none(),
        "sandbox directory of a failed start left"
    );

    // A container joining another's pid namespace (a pod sharing its
    // processes) is refused at create, with the reason.
    let out = node.run(IMAGE, &pod, ("sandbox", &pod), &[], &["/bin/sleep", "1000"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (_, pause) = node.task(&pod);
    let ns = format!("pid:/proc/{pause}/ns/pid");
    let shared = cri_id("shared");
    let out = node.run(
        LIBS_IMAGE,
        &shared,
        ("container", &pod),
        &["--with-ns", &ns],
        &[],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("joins the pid namespace") && err.contains("PID 1"),
        "{err}"
    );
}
