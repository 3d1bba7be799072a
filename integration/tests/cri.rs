//! ember under Kubernetes' Container Runtime Interface: a private
//! containerd 1.6 (Debian's) with its CRI plugin on, driven by a CRI v1
//! client making the kubelet's calls (`ember_integration::cri`).
//!
//! * `cri_runc_*`: the runc v2 shim with `ember-runtime` as its runtime
//!   binary (handler `ember`), next to plain runc (handler `runc`);
//! * `cri_shim_runc_*`, `cri_shim_gvisor_*`: ember's own shim,
//!   `containerd-shim-ember-v1` (handlers `ember-shim`, over runc, and
//!   `ember-gvisor`, over runsc). Run one family with
//!   `cargo test -p ember-integration --test cri cri_shim_`;
//! * `cri_emberd_*`: emberd itself, from its image, as its DaemonSet's pod
//!   (plain runc).

use ember_integration::containerd;
use ember_integration::cri::{self, status_field, Cri, EMBER, EMBER_GVISOR, EMBER_SHIM, RUNC};
use ember_integration::{direct_runtime_ready, http, kube, text};
use std::io::Read;
use std::time::Duration;

/// CAP_KILL, CAP_SETGID, CAP_SETUID: what ember's profiles allow.
const STRICT_CAPS: &str = "00000000000000e0";

/// Root, containerd, the CNI plugins, and `bins` of the workspace
/// (`ember-runtime` always), plus `tools`; else the test is skipped (or
/// fails under `EMBER_REQUIRE_INTEGRATION=1`).
fn ready(test: &str, bins: &[&str], tools: &[(&str, &str)]) -> bool {
    let all: Vec<(&str, &str)> = containerd::TOOLS
        .iter()
        .chain(cri::TOOLS)
        .chain(tools)
        .copied()
        .collect();
    let bins: Vec<&str> = ["ember-runtime"].iter().chain(bins).copied().collect();
    direct_runtime_ready(test, &all, &bins)
}

/// A private CRI node for `test`, if it [`ready`]: else `None`, the test
/// skipped (or failed when integration tests are required).
fn node(test: &str, bins: &[&str], tools: &[(&str, &str)]) -> Option<Cri> {
    ready(test, bins, tools).then(Cri::start)
}

/// What ember's shim needs besides.
const SHIM: &[&str] = &["containerd-shim-ember-v1"];
const RUNSC: &[(&str, &str)] = &[("/usr/bin/runsc", "runsc")];

/// ExecSync `cmd` in `container`: its stdout, after checking it exited 0.
fn exec_ok(c: &Cri, container: &str, cmd: &[&str]) -> String {
    let r = c.exec_sync(container, cmd);
    assert_eq!(
        r.exit_code,
        0,
        "{cmd:?}: stdout {} stderr {}",
        text(&r.stdout),
        text(&r.stderr)
    );
    text(&r.stdout)
}

/// Seccomp, NoNewPrivs and CapEff of a `/proc/<pid>/status` text.
fn confinement(status: &str) -> (String, String, String) {
    (
        status_field(status, "Seccomp"),
        status_field(status, "NoNewPrivs"),
        status_field(status, "CapEff"),
    )
}

fn strict() -> (String, String, String) {
    ("2".into(), "1".into(), STRICT_CAPS.into())
}

/// A pod with `dev.ember.profile=strict` through `handler`: its app
/// container (busybox `sleep`), its pause container, and a process
/// ExecSync starts in the app, are all under the strict profile: a
/// seccomp filter, no new privileges, only the profile's capabilities.
fn strict_pod_is_confined(c: &Cri, handler: &str) {
    let pod_config = c.pod_config("strict", &[("dev.ember.profile", "strict")]);
    let pod = c.run_pod(&pod_config, handler);
    let app = c.run_container(
        &pod,
        &c.container_config("app", &["/bin/sleep", "1000"], &[]),
        &pod_config,
    );
    let status = exec_ok(c, &app, &["/bin/cat", "/proc/1/status"]);
    assert!(status.contains("Name:\tsleep"), "{status}");
    assert_eq!(confinement(&status), strict(), "app: {status}");

    // The pause container: CRI does not tell its pid; containerd does.
    let pid = c
        .task_pid(&pod)
        .unwrap_or_else(|| panic!("no task for sandbox {pod}"));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("pause status");
    assert_eq!(confinement(&status), strict(), "pause: {status}");

    // A process exec'd into the app (kubectl exec): containerd asks for
    // its default capabilities; it gets the profile's.
    let status = exec_ok(c, &app, &["/bin/cat", "/proc/self/status"]);
    assert_eq!(confinement(&status), strict(), "exec: {status}");
    // ExecSync's exit code and output come back.
    let r = c.exec_sync(&app, &["/bin/sh", "-c", "echo exec-out; exit 4"]);
    assert_eq!((r.exit_code, text(&r.stdout)), (4, "exec-out\n".into()));
    // What the filter forbids fails.
    let out = exec_ok(
        c,
        &app,
        &[
            "/bin/sh",
            "-c",
            "unshare -U true && echo UNSHARED || echo unshare-refused",
        ],
    );
    assert_eq!(out.trim(), "unshare-refused");

    // The runtime's state is where the teardown check will look.
    let listed = c.runtime_listed();
    for id in [&pod, &app] {
        assert!(
            listed.iter().any(|l| l.starts_with(id.as_str())),
            "{id} not in {listed:?}"
        );
    }

    c.delete_pod(&pod);
    c.assert_clean();
}

/// An unknown profile fails RunPodSandbox with a message naming it, and
/// leaves no pod behind.
fn unknown_profile_fails(c: &Cri, handler: &str) {
    let pod_config = c.pod_config("nope", &[("dev.ember.profile", "nope")]);
    let err = c
        .try_run_pod(&pod_config, handler)
        .expect_err("a pod with profile \"nope\" ran");
    let msg = err.message();
    assert!(
        msg.contains("nope") && msg.contains("profile"),
        "{handler}: {msg}"
    );
    c.assert_clean();
}

/// A container that echoes a line and exits 3 through `handler` (in a
/// pod with `annotations`): ContainerStatus has exit code 3, and its log
/// file the line in the CRI log format (`<RFC 3339 time> stdout F
/// <line>`).
fn log_and_exit_code(c: &Cri, handler: &str, annotations: &[(&str, &str)]) {
    let pod_config = c.pod_config("logs", annotations);
    let pod = c.run_pod(&pod_config, handler);
    let config = c.container_config(
        "echo",
        &[
            "/bin/sh",
            "-c",
            "echo hello from cri; echo to stderr >&2; exit 3",
        ],
        &[],
    );
    let id = c.run_container(&pod, &config, &pod_config);
    let status = c.wait_exited(&id, Duration::from_secs(30));
    assert_eq!(status.exit_code, 3, "{status:?}");
    assert_eq!(status.reason, "Error", "{status:?}");
    let path = c.log_path(&pod_config, &config);
    assert_eq!(status.log_path, path.to_string_lossy(), "{status:?}");
    let log = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{handler}: log {}: {e}", path.display()));
    let line = |stream: &str, msg: &str| {
        log.lines().any(|l| {
            let mut f = l.splitn(4, ' ');
            let (time, s, tag, rest) = (f.next(), f.next(), f.next(), f.next());
            time.is_some_and(|t| t.len() > 20 && t.contains('T'))
                && s == Some(stream)
                && tag == Some("F")
                && rest == Some(msg)
        })
    };
    assert!(line("stdout", "hello from cri"), "{handler}: {log}");
    assert!(line("stderr", "to stderr"), "{handler}: {log}");
    c.delete_pod(&pod);
    c.assert_clean();
}

#[test]
fn cri_runc_strict_profile_confines_pod_app_and_exec() {
    let Some(c) = node(
        "cri_runc_strict_profile_confines_pod_app_and_exec",
        &[],
        &[],
    ) else {
        return;
    };
    let v = c.version();
    assert_eq!(
        (v.runtime_name.as_str(), v.runtime_api_version.as_str()),
        ("containerd", "v1"),
        "{v:?}"
    );
    strict_pod_is_confined(&c, EMBER);
}

#[test]
fn cri_runc_pod_without_profile_is_untouched() {
    let Some(c) = node("cri_runc_pod_without_profile_is_untouched", &[], &[]) else {
        return;
    };
    // The same pod through plain runc and through ember-runtime: the
    // same confinement, containerd's own (no seccomp filter: the kubelet
    // asks for none; new privileges allowed; CRI's default capabilities).
    let mut seen = Vec::new();
    for handler in [RUNC, EMBER] {
        let pod_config = c.pod_config(&format!("plain-{handler}"), &[]);
        let pod = c.run_pod(&pod_config, handler);
        // A server on the pod's network, for the host to reach.
        let app = c.run_container(
            &pod,
            &c.container_config(
                "app",
                &[
                    "/bin/sh",
                    "-c",
                    "while :; do echo pong | nc -l -p 7000; done",
                ],
                &[],
            ),
            &pod_config,
        );
        let status = exec_ok(&c, &app, &["/bin/cat", "/proc/1/status"]);
        let conf = confinement(&status);
        assert_eq!((conf.0.as_str(), conf.1.as_str()), ("0", "0"), "{status}");
        assert_ne!(conf.2, STRICT_CAPS, "{status}");
        let exec = exec_ok(&c, &app, &["/bin/cat", "/proc/self/status"]);
        assert_eq!(confinement(&exec).1, "0", "{exec}");
        seen.push(conf);

        // CNI: an address in the test's private range, loopback up.
        let ip = c.pod_status(&pod).network.map(|n| n.ip).unwrap_or_default();
        let subnet = c.subnet();
        assert!(
            ip.starts_with(subnet.trim_end_matches("0/24")),
            "{handler}: pod ip {ip:?} not in {subnet}"
        );
        let lo = exec_ok(&c, &app, &["/bin/cat", "/sys/class/net/lo/flags"]);
        assert_eq!(lo.trim(), "0x9", "lo is not up");
        // The host (and only the host) reaches it.
        c.host_on_bridge();
        let mut answer = String::new();
        let addr: std::net::SocketAddr = format!("{ip}:7000").parse().unwrap();
        let mut tries = 0;
        loop {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Ok(mut s) => {
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let _ = s.read_to_string(&mut answer);
                    break;
                }
                Err(e) => {
                    tries += 1;
                    assert!(tries < 50, "{handler}: connect {addr}: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        assert_eq!(answer, "pong\n", "{handler}");
        c.delete_pod(&pod);
    }
    assert_eq!(seen[0], seen[1], "ember changed an unannotated pod");
    c.assert_clean();
}

#[test]
fn cri_runc_unknown_profile_fails_the_pod() {
    let Some(c) = node("cri_runc_unknown_profile_fails_the_pod", &[], &[]) else {
        return;
    };
    unknown_profile_fails(&c, EMBER);
}

#[test]
fn cri_runc_container_log_and_exit_code() {
    let Some(c) = node("cri_runc_container_log_and_exit_code", &[], &[]) else {
        return;
    };
    log_and_exit_code(&c, RUNC, &[]);
    log_and_exit_code(&c, EMBER, &[("dev.ember.profile", "strict")]);
}

#[test]
fn cri_shim_runc_strict_profile_confines_pod_app_and_exec() {
    let Some(c) = node(
        "cri_shim_runc_strict_profile_confines_pod_app_and_exec",
        SHIM,
        &[],
    ) else {
        return;
    };
    strict_pod_is_confined(&c, EMBER_SHIM);
    unknown_profile_fails(&c, EMBER_SHIM);
}

#[test]
fn cri_shim_runc_container_log_and_exit_code() {
    let Some(c) = node("cri_shim_runc_container_log_and_exit_code", SHIM, &[]) else {
        return;
    };
    log_and_exit_code(&c, EMBER_SHIM, &[]);
    log_and_exit_code(&c, EMBER_SHIM, &[("dev.ember.profile", "strict")]);
}

#[test]
fn cri_shim_gvisor_pod_runs_in_gvisor() {
    let Some(c) = node("cri_shim_gvisor_pod_runs_in_gvisor", SHIM, RUNSC) else {
        return;
    };
    let pod_config = c.pod_config("gvisor", &[]);
    let pod = c.run_pod(&pod_config, EMBER_GVISOR);
    // A long-running app next to the pause container, in the same
    // gVisor sandbox.
    let app = c.run_container(
        &pod,
        &c.container_config("app", &["/bin/sleep", "1000"], &[]),
        &pod_config,
    );
    // gVisor's Sentry answers for the kernel, not the host's.
    let version = exec_ok(&c, &app, &["/bin/cat", "/proc/version"]);
    let host = std::fs::read_to_string("/proc/version").unwrap();
    let release = host
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string();
    assert!(
        !version.trim().is_empty() && version != host && !version.contains(&release),
        "{version}"
    );
    let r = c.exec_sync(&app, &["/bin/sh", "-c", "echo exec-out; exit 4"]);
    assert_eq!((r.exit_code, text(&r.stdout)), (4, "exec-out\n".into()));
    // A second app that prints and exits: output and exit code.
    let config = c.container_config(
        "echo",
        &["/bin/sh", "-c", "echo hello from gvisor; exit 3"],
        &[],
    );
    let id = c.run_container(&pod, &config, &pod_config);
    let status = c.wait_exited(&id, Duration::from_secs(30));
    assert_eq!(status.exit_code, 3, "{status:?}");
    let log = std::fs::read_to_string(c.log_path(&pod_config, &config)).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.ends_with(" stdout F hello from gvisor")),
        "{log}"
    );
    let listed = c.runtime_listed();
    assert!(
        listed.iter().any(|l| l.starts_with(app.as_str())),
        "{app} not in {listed:?}"
    );
    c.delete_pod(&pod);
    c.assert_clean();
}

/// A Python function that lists its `/fn`.
const WHERE_PY: &str = "import os\ndef handler(e, c):\n    return sorted(os.listdir('/fn'))\n";

/// The sandboxes an emberd lists, by id.
fn emberd_lists(d: &ember_integration::Daemon, id: &str) -> bool {
    d.get("/v1/sandboxes").json()["sandboxes"]
        .as_array()
        .is_some_and(|all| all.iter().any(|s| s["id"] == id))
}

fn wait_until(what: &str, d: &ember_integration::Daemon, mut f: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "timed out: {what}\nemberd log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A warm pool under the kubelet: a pod annotated `dev.ember.sandbox`
/// through ember's shim, with CRI's real 64-hex ids. Its app container
/// becomes a sandbox of an emberd that serves only adopted ones; its pause
/// container is left alone; invocations run in it; a probe (ExecSync)
/// reaches it although it idles frozen; StopContainer's SIGTERM ends it
/// at once; and nothing is left.
#[test]
fn cri_shim_runc_warm_pool_adopts_the_pods_app_container() {
    let test = "cri_shim_runc_warm_pool_adopts_the_pods_app_container";
    if !ready(test, SHIM, &[]) {
        return;
    }
    let mut d = ember_integration::Daemon::start(&["--adopted-only"]);
    let tag = d.tag();
    let a = d.deploy_files("where", &[("main.py", WHERE_PY)], 5000);
    assert_eq!(a.status, 201, "{}", a.json());
    let agent = std::fs::canonicalize(ember_integration::agent_path()).expect("ember-agent");
    let c = Cri::start_with_env(&[
        ("EMBER_AGENT", agent.as_path()),
        ("EMBER_SOCKET", d.socket.as_path()),
    ]);
    let pod_config = c.pod_config("pool", &[("dev.ember.sandbox", "python3")]);
    let pod = c.run_pod(&pod_config, EMBER_SHIM);
    assert_eq!(pod.len(), 64, "{pod}");
    let app = c.run_container(
        &pod,
        &c.container_config("warm", &["/bin/sleep", "1000"], &[]),
        &pod_config,
    );
    wait_until("the app container adopted", &d, || emberd_lists(&d, &app));
    assert!(!emberd_lists(&d, &pod), "the pause container was adopted");

    for _ in 0..2 {
        let v = d.invoke("where", "{}").json();
        assert_eq!(
            (v["sandbox"].as_str(), v["outcome"].as_str()),
            (Some(app.as_str()), Some("ok")),
            "{v}"
        );
    }
    // Idle, the sandbox is frozen; a probe thaws it through emberd.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        exec_ok(&c, &app, &["/bin/echo", "probe-ok"]).trim(),
        "probe-ok"
    );
    let v = d.invoke("where", "{}").json();
    assert_eq!(v["outcome"], "ok", "{v}");

    // The kubelet's stop: SIGTERM reaches the agent (PID 1) at once.
    let t = std::time::Instant::now();
    c.stop_container(&app, 30);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    wait_until("the app container dropped", &d, || !emberd_lists(&d, &app));
    c.remove_container(&app);
    c.delete_pod(&pod);
    c.assert_clean();
    drop(c);
    d.stop_and_check(&tag);
}

/// emberd's sandboxes are runc containers under the node's pid 1: a pod
/// killed before emberd drained (a failed test) leaves them running. On
/// drop: each left in a runc root under the test's run directory (where
/// emberd keeps them, `<run>/<tag>/runc`) is removed with its emberd's
/// cgroups (`ember/<tag>`), and any mount under the test's directory
/// detached.
struct Sweep {
    dir: std::path::PathBuf,
    run: std::path::PathBuf,
}

impl Sweep {
    /// emberd's runc roots under the run directory.
    fn roots(&self) -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&self.run)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("runc"))
            .filter(|r| r.is_dir())
            .collect()
    }
}

impl Drop for Sweep {
    fn drop(&mut self) {
        for root in self.roots() {
            for id in runc_list(&root) {
                let _ = std::process::Command::new("runc")
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "--force", &id])
                    .status();
            }
            let tag = root.parent().and_then(|t| t.file_name());
            for d in ember_integration::cgroup_leftovers(&tag.unwrap_or_default().to_string_lossy())
            {
                cri::remove_cgroup(&d);
            }
        }
        ember_integration::unmount_under(&self.dir);
    }
}

/// The containers `runc --root ROOT list` shows (none if ROOT does not
/// exist: runc would make it).
fn runc_list(root: &std::path::Path) -> Vec<String> {
    if !root.is_dir() {
        return Vec::new();
    }
    let Ok(out) = std::process::Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(["list", "--quiet"])
        .output()
    else {
        return Vec::new();
    };
    text(&out.stdout).lines().map(String::from).collect()
}

/// A gzip'd tar of one `main.py`, the body of a deploy by upload: emberd
/// in its pod does not see the test's directories.
fn code_upload(main_py: &str) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(main_py.len() as u64);
    header.set_mode(0o644);
    tar.append_data(&mut header, "main.py", main_py.as_bytes())
        .expect("tar entry");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar.into_inner().expect("tar")).expect("gzip");
    gz.finish().expect("gzip")
}

/// emberd as a Kubernetes node runs it, short of a kubelet: the image
/// `scripts/build-image` makes (from the debug builds), imported into
/// CRI's `k8s.io` namespace, run as a CRI pod (plain runc) with the
/// DaemonSet's settings read from `deploy/kubernetes/daemonset.yaml`:
/// privileged pod and container, the node's PID namespace, its command
/// and arguments, its host mounts (the node's `/usr`, `/etc`,
/// `/sys/fs/cgroup`; the run and state directories in a temp dir, never
/// the node's). From the host, through the socket in that run directory:
/// it answers, its readiness probe (run as the kubelet runs it, ExecSync)
/// passes, a Python function deploys and answers twice from a runc
/// sandbox of emberd's (runc and python3 are the node's, through `/usr`).
/// StopContainer's SIGTERM drains it: it exits 0 well within the grace
/// period, and neither the pod, nor emberd's sandboxes, cgroups or mounts
/// are left.
#[test]
fn cri_emberd_runs_from_its_image_as_a_privileged_pod() {
    let test = "cri_emberd_runs_from_its_image_as_a_privileged_pod";
    if !ready(
        test,
        &["emberd", "ember"],
        &[("/usr/bin/python3", "python3")],
    ) || !ember_integration::agent_built(test)
    {
        return;
    }
    let (ds, pod_spec) = kube::daemonset();
    let image = ds["image"].as_str().expect("image").to_string();
    let dir = tempfile::Builder::new()
        .prefix("ember-it-cri-ds-")
        .tempdir()
        .unwrap();
    let (run, state) = (dir.path().join("run"), dir.path().join("state"));
    // Dropped after the node (which kills a pod still running).
    let sweep = Sweep {
        dir: dir.path().to_path_buf(),
        run: run.clone(),
    };
    let archive = dir.path().join("emberd.tar");
    let built = kube::build_image(&archive);
    assert_eq!(built.printed, [archive.to_str().unwrap(), image.as_str()]);

    let c = Cri::start();
    let out = c.containerd().ctr_in(
        cri::NAMESPACE,
        &["images", "import", archive.to_str().unwrap()],
    );
    assert!(out.status.success(), "import: {}", text(&out.stderr));

    let p = cri::Privileges {
        privileged: ds["securityContext"]["privileged"] == true,
        host_pid: pod_spec["hostPID"] == true,
    };
    assert!(p.privileged && p.host_pid, "the DaemonSet says so: {p:?}");
    let mounts: Vec<cri::Mount> = kube::test_host_mounts(&ds, &pod_spec, &run, &state)
        .iter()
        .map(|(at, host, ro)| cri::host_path(at, host, *ro))
        .collect();
    for at in [
        "/usr",
        "/etc",
        "/sys/fs/cgroup",
        "/run/ember",
        "/var/lib/ember",
    ] {
        assert!(mounts.iter().any(|m| m.container_path == at), "{at}");
    }
    let (command, args) = (kube::strings(&ds["command"]), kube::strings(&ds["args"]));
    let pod_config = c.pod_config_with("emberd", &[], p);
    let pod = c.run_pod(&pod_config, RUNC);
    let config = c.image_container_config("emberd", &image, &command, &args, &mounts, p);
    let id = c.run_container(&pod, &config, &pod_config);
    let log = || std::fs::read_to_string(c.log_path(&pod_config, &config)).unwrap_or_default();

    // emberd answers on the socket in the run directory.
    let socket = run.join("ember.sock");
    let t = std::time::Instant::now();
    let health = loop {
        match http(&socket, "GET", "/v1/health", "application/json", b"") {
            Ok(a) if a.status == 200 => break a.json(),
            _ => {}
        }
        let s = c.container_status(&id);
        assert!(
            s.state != cri::ContainerState::ContainerExited as i32
                && t.elapsed() < Duration::from_secs(60),
            "emberd did not answer ({s:?}); its log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let tag = health["instance"].as_str().expect("instance").to_string();
    // In the node's pid namespace, with the node's capabilities, running
    // the DaemonSet's command line.
    let pid = c.task_pid(&id).expect("emberd's pid");
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/pid")).unwrap();
    assert_eq!(ns(&pid.to_string()), ns("self"), "hostPID");
    let caps = |p: &str| {
        let s = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap();
        status_field(&s, "CapEff")
    };
    assert_eq!(caps(&pid.to_string()), caps("self"), "privileged");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let argv: Vec<String> = text(&cmdline)
        .split_terminator('\0')
        .map(String::from)
        .collect();
    assert_eq!(argv, [command.clone(), args.clone()].concat());

    // The readiness probe, as the kubelet runs it.
    let probe = kube::strings(&ds["readinessProbe"]["exec"]["command"]);
    let probe: Vec<&str> = probe.iter().map(String::as_str).collect();
    let r = c.exec_sync(&id, &probe);
    assert_eq!(
        r.exit_code,
        0,
        "probe: {}{}",
        text(&r.stdout),
        text(&r.stderr)
    );

    let body = code_upload("def handler(event, context):\n    return 'ok'\n");
    let a = http(
        &socket,
        "PUT",
        "/v1/functions/ok?timeout_ms=10000",
        "application/gzip",
        &body,
    )
    .unwrap();
    assert_eq!(a.status, 201, "deploy: {}\n{}", text(&a.body), log());
    let root = run.join(&tag).join("runc");
    for _ in 0..2 {
        let a = http(
            &socket,
            "POST",
            "/v1/functions/ok/invoke",
            "application/json",
            b"{}",
        )
        .unwrap();
        let v = a.json();
        assert_eq!(
            (a.status, v["outcome"].as_str(), v["result"].as_str()),
            (200, Some("ok"), Some("ok")),
            "{v}\n{}",
            log()
        );
        // A sandbox of emberd's, in the root the checks below look in.
        let sandbox = v["sandbox"].as_str().expect("sandbox").to_string();
        assert!(runc_list(&root).contains(&sandbox), "{sandbox} in {root:?}");
    }

    // The kubelet's stop with the DaemonSet's grace period: SIGTERM, and
    // emberd drains and exits by itself.
    let grace = pod_spec["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("grace period");
    let t = std::time::Instant::now();
    c.stop_container(&id, grace);
    let took = t.elapsed();
    let s = c.container_status(&id);
    assert_eq!(s.exit_code, 0, "{s:?}; log:\n{}", log());
    assert!(took < Duration::from_secs(20), "stopped in {took:?}");
    kube::assert_run_dir_left_empty(&run);
    c.remove_container(&id);
    c.delete_pod(&pod);
    c.assert_clean();
    let prefix = format!("ember-{tag}-");
    let sandboxes: Vec<String> = [root, "/run/runc".into()]
        .iter()
        .flat_map(|r| runc_list(r))
        .filter(|id| id.starts_with(&prefix))
        .collect();
    assert!(sandboxes.is_empty(), "sandboxes left: {sandboxes:?}");
    assert!(
        sweep.roots().is_empty(),
        "runc roots left: {:?}",
        sweep.roots()
    );
    let cgroups = ember_integration::cgroup_leftovers(&tag);
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    let mounts = ember_integration::mounts_under(dir.path());
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
}
