//! Test harness for ember's end-to-end tests: starts a private `emberd`
//! (own socket, state dir and therefore own container/cgroup names) on real
//! runc, talks to it over its Unix socket, and checks that nothing is left
//! behind. Owns no product code.
//!
//! These tests need root, runc, python3 and a built agent. Without them a
//! test prints what is missing and returns, unless `EMBER_REQUIRE_INTEGRATION=1`
//! (set by `scripts/test` and CI), where a missing prerequisite fails it.

use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod browser;
pub mod containerd;
pub mod cri;
pub mod kube;
pub mod table;

/// Directory holding the workspace's built binaries (target/debug).
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("EMBER_BIN_DIR") {
        return PathBuf::from(d);
    }
    // target/debug/deps/<test-binary> -> target/debug
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_path_buf()
}

/// A command's output as text (lossy: tests print what they got).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

pub fn agent_path() -> PathBuf {
    if let Ok(a) = std::env::var("EMBER_AGENT") {
        return PathBuf::from(a);
    }
    bin_dir().join("../x86_64-unknown-linux-gnu/release-agent/ember-agent")
}

fn which(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The backend the end-to-end tests run against: `EMBER_TEST_BACKEND`
/// (runc, crun, runsc), runc by default. `scripts/test` runs the suite
/// once per backend.
pub fn backend() -> String {
    std::env::var("EMBER_TEST_BACKEND").unwrap_or_else(|_| "runc".to_string())
}

/// What is missing to run end-to-end tests here, if anything.
pub fn missing_prerequisites() -> Vec<String> {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root (sandboxes need namespaces, cgroups and mounts)".to_string());
    }
    let backend = backend();
    // libcontainer is a library inside emberd, not a binary.
    if backend != "libcontainer" && !which(&backend) {
        missing.push(format!("{backend} (apt-get install {backend})"));
    }
    if !Path::new("/usr/bin/python3").exists() {
        missing.push("/usr/bin/python3 (apt-get install python3)".to_string());
    }
    for b in ["emberd", "ember"] {
        if !bin(b).is_file() {
            missing.push(format!(
                "{} (cargo build --workspace --bins)",
                bin(b).display()
            ));
        }
    }
    missing.extend(missing_agent());
    missing
}

/// The static agent, if it is not built.
fn missing_agent() -> Option<String> {
    (!agent_path().is_file()).then(|| format!("{} (scripts/build-agent)", agent_path().display()))
}

/// For tests that need the static agent (`scripts/build-agent`) besides
/// what they check otherwise: true if it is built; otherwise says so and
/// returns false, or panics when integration tests are required.
pub fn agent_built(test: &str) -> bool {
    report_missing(test, missing_agent().into_iter().collect())
}

/// Wait until `done` holds (up to 10 s); panics with `what`.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < Duration::from_secs(10), "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True if the test may run; otherwise explains and returns false (or
/// panics when integration tests are required).
pub fn prerequisites_met(test: &str) -> bool {
    report_missing(test, missing_prerequisites())
}

/// For tests that drive an OCI runtime directly, without emberd or its
/// agent: root, host `tools` (path, Debian package) and the workspace's
/// `bins`. True if all are there; otherwise explains and returns false,
/// or panics when integration tests are required.
pub fn direct_runtime_ready(test: &str, tools: &[(&str, &str)], bins: &[&str]) -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root (containers need namespaces, cgroups and mounts)".to_string());
    }
    for (path, package) in tools {
        if !Path::new(path).exists() {
            missing.push(format!("{path} (apt-get install {package})"));
        }
    }
    for b in bins {
        if !bin(b).is_file() {
            missing.push(format!(
                "{} (cargo build --workspace --bins)",
                bin(b).display()
            ));
        }
    }
    report_missing(test, missing)
}

/// True if nothing is missing; otherwise says what, and skips the test
/// (false) or fails it when integration tests are required.
fn report_missing(test: &str, missing: Vec<String>) -> bool {
    if missing.is_empty() {
        return true;
    }
    let msg = format!("{test}: needs {}", missing.join(", "));
    if std::env::var("EMBER_REQUIRE_INTEGRATION").as_deref() == Ok("1") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED {msg}");
    false
}

/// For tests that also need a host tool (`path`, from Debian package
/// `package`): true if it is there; otherwise explains and returns false,
/// or panics when integration tests are required.
pub fn tool_present(test: &str, path: &str, package: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    let msg = format!("{test}: needs {path} (apt-get install {package})");
    if std::env::var("EMBER_REQUIRE_INTEGRATION").as_deref() == Ok("1") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED {msg}");
    false
}

/// For tests that install a `requirements.txt`: true if /usr/bin/python3
/// has pip; otherwise explains and returns false, or panics when
/// integration tests are required.
pub fn have_pip(test: &str) -> bool {
    let pip = Command::new("/usr/bin/python3")
        .args(["-m", "pip", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !pip {
        assert!(
            std::env::var_os("EMBER_REQUIRE_INTEGRATION").is_none(),
            "{test}: needs pip for /usr/bin/python3 (apt-get install python3-pip)"
        );
        eprintln!("SKIPPED {test}: needs python3-pip");
    }
    pip
}

/// A pure-Python wheel `NAME-1.0-py3-none-any.whl` in `dir` whose module
/// `NAME` holds `module`, made with the standard library's zipfile: no
/// network, no build tools (for `emberd --wheels-dir`).
pub fn write_wheel(dir: &Path, name: &str, module: &str) {
    let script = r#"
import sys, zipfile
d, name, text = sys.argv[1], sys.argv[2], sys.argv[3]
dist = name + "-1.0.dist-info"
files = {
    name + ".py": text,
    dist + "/METADATA": "Metadata-Version: 2.1\nName: %s\nVersion: 1.0\n" % name,
    dist + "/WHEEL": "Wheel-Version: 1.0\nGenerator: ember-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
files[dist + "/RECORD"] = "".join("%s,,\n" % f for f in list(files) + [dist + "/RECORD"])
with zipfile.ZipFile("%s/%s-1.0-py3-none-any.whl" % (d, name), "w") as z:
    for f, t in files.items():
        z.writestr(f, t)
"#;
    let st = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(dir)
        .arg(name)
        .arg(module)
        .status()
        .expect("python3");
    assert!(st.success());
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Status line and headers.
    pub head: String,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

/// Minimal blocking HTTP/1.1 over a Unix socket (one request per
/// connection), enough for tests.
pub fn http(
    socket: &Path,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<Answer> {
    let s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: ember\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    exchange(s, &head, body)
}

/// The same over TCP (emberd --http), with extra request headers.
pub fn http_tcp(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Answer> {
    let s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    exchange(s, &head, body)
}

fn exchange(mut s: impl Read + Write, head: &str, body: &[u8]) -> std::io::Result<Answer> {
    s.write_all(head.as_bytes())?;
    // The server may answer (413) and close before reading a large body.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    if let Err(e) = s.read_to_end(&mut raw) {
        if raw.is_empty() {
            return Err(e);
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok(Answer { status, head, body })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}

/// A private emberd for one test. Stopped (and its leftovers removed) on
/// drop, even when the test fails.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub state: PathBuf,
    pub args: Vec<String>,
    child: Option<Child>,
    /// The tag of a daemon this test crashed, whose sandboxes stay until
    /// a restart recovers them (or the drop sweeps them).
    crashed: Option<String>,
}

impl Daemon {
    pub fn start(extra: &[&str]) -> Daemon {
        let mut d = Daemon::prepare(extra);
        d.spawn();
        d
    }

    /// A daemon's directories, not started yet: for a test that prepares
    /// its state dir first (mounts a small filesystem there, say), then
    /// calls [`Daemon::spawn`].
    pub fn prepare(extra: &[&str]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("ember-it-")
            .tempdir()
            .expect("temp dir");
        // Tests deploy code by path from under this directory, and a path
        // deploy copies only what any local user could read.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("temp dir mode");
        let socket = dir.path().join("ember.sock");
        let state = dir.path().join("state");
        Daemon {
            socket,
            state,
            args: extra.iter().map(|s| s.to_string()).collect(),
            dir,
            child: None,
            crashed: None,
        }
    }

    /// Start (again) on the same state dir and socket.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("emberd.log"))
            .expect("log file");
        let child = Command::new(bin("emberd"))
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--agent")
            .arg(agent_path())
            .args(
                (!self.args.iter().any(|a| a == "--backend"))
                    .then(|| ["--backend".to_string(), backend()])
                    .into_iter()
                    .flatten(),
            )
            // Python pools only, unless the test asks for others: fewer
            // sandboxes to make on a small machine.
            .args(
                (!self.args.iter().any(|a| a == "--runtimes"))
                    .then(|| ["--runtimes".to_string(), "python3".to_string()])
                    .into_iter()
                    .flatten(),
            )
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start emberd");
        self.child = Some(child);
        let t = Instant::now();
        while self.try_get("/v1/health").map(|a| a.status) != Some(200) {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("emberd exited with {status}; log:\n{}", self.log());
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "emberd did not come up; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Recovered by this start (or swept by the drop from here on).
        self.crashed = None;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("emberd.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The tag emberd derives from its state dir (names its containers
    /// `ember-<tag>-...` and cgroups `/ember/<tag>`).
    pub fn tag(&self) -> String {
        self.get("/v1/health").json()["instance"]
            .as_str()
            .expect("instance tag")
            .to_string()
    }

    fn try_get(&self, path: &str) -> Option<Answer> {
        http(&self.socket, "GET", path, "application/json", b"").ok()
    }

    pub fn get(&self, path: &str) -> Answer {
        http(&self.socket, "GET", path, "application/json", b"")
            .unwrap_or_else(|e| panic!("GET {path}: {e}; log:\n{}", self.log()))
    }

    /// The value of the `/metrics` line starting with `prefix` (a metric
    /// name with its labels).
    pub fn metric(&self, prefix: &str) -> Option<u64> {
        text(&self.get("/metrics").body)
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    pub fn request(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> Answer {
        http(&self.socket, method, path, content_type, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}; log:\n{}", self.log()))
    }

    /// Deploy a function from a host directory (JSON form of the API).
    pub fn deploy_dir(&self, name: &str, dir: &Path, timeout_ms: u64) -> Answer {
        let body = serde_json::json!({ "code": { "path": dir }, "timeout_ms": timeout_ms });
        self.request(
            "PUT",
            &format!("/v1/functions/{name}"),
            "application/json",
            body.to_string().as_bytes(),
        )
    }

    /// Deploy a function given as (file name, content) pairs.
    pub fn deploy_files(&self, name: &str, files: &[(&str, &str)], timeout_ms: u64) -> Answer {
        self.deploy_files_with(name, files, serde_json::json!({ "timeout_ms": timeout_ms }))
    }

    /// `PUT /v1/functions/{name}` with a JSON deploy body of `settings`
    /// and the code at `dir`; the answer, whatever it is.
    pub fn put_function(&self, name: &str, settings: &Value, dir: &Path) -> Answer {
        let mut body = settings.clone();
        body["code"] = serde_json::json!({ "path": dir });
        self.request(
            "PUT",
            &format!("/v1/functions/{name}"),
            "application/json",
            body.to_string().as_bytes(),
        )
    }

    /// Deploy with any settings of the JSON deploy body (profile, limits).
    pub fn deploy_files_with(&self, name: &str, files: &[(&str, &str)], settings: Value) -> Answer {
        let dir = self.dir.path().join(format!("src-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("function dir");
        for (f, content) in files {
            let p = dir.join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, content).expect("write function file");
        }
        let mut body = settings;
        body["code"] = serde_json::json!({ "path": dir });
        let a = self.request(
            "PUT",
            &format!("/v1/functions/{name}"),
            "application/json",
            body.to_string().as_bytes(),
        );
        assert!(
            a.status == 200 || a.status == 201,
            "deploy {name}: {} {}",
            a.status,
            String::from_utf8_lossy(&a.body)
        );
        a
    }

    pub fn invoke(&self, name: &str, event: &str) -> Answer {
        self.request(
            "POST",
            &format!("/v1/functions/{name}/invoke"),
            "application/json",
            event.as_bytes(),
        )
    }

    /// Invoke on another thread (for invocations that run while the test
    /// does something else); the answer, or the connection's error.
    pub fn invoke_in_background(
        &self,
        name: &str,
        event: &str,
    ) -> std::thread::JoinHandle<std::io::Result<Answer>> {
        self.post_in_background(&format!("/v1/functions/{name}/invoke"), event)
    }

    /// POST JSON `body` to `path` on another thread; the answer, or the
    /// connection's error.
    pub fn post_in_background(
        &self,
        path: &str,
        body: &str,
    ) -> std::thread::JoinHandle<std::io::Result<Answer>> {
        let (socket, path, body) = (self.socket.clone(), path.to_string(), body.to_string());
        std::thread::spawn(move || {
            http(&socket, "POST", &path, "application/json", body.as_bytes())
        })
    }

    /// The python3 pool (of the first backend).
    pub fn pool(&self) -> Value {
        self.runtime_pool("python3")
    }

    /// The pool of `runtime` (of the first backend).
    pub fn runtime_pool(&self, runtime: &str) -> Value {
        self.get("/v1/pools").json()["pools"]
            .as_array()
            .and_then(|pools| pools.iter().find(|p| p["runtime"] == runtime).cloned())
            .unwrap_or_else(|| {
                panic!(
                    "no {runtime} pool; log:
{}",
                    self.log()
                )
            })
    }

    /// The ids of the sandboxes emberd lists (idle and busy).
    pub fn sandbox_ids(&self) -> Vec<String> {
        self.get("/v1/sandboxes").json()["sandboxes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Wait until a sandbox runs an invocation of `function`; its id.
    pub fn wait_busy(&self, function: &str) -> String {
        let t = Instant::now();
        loop {
            let v = self.get("/v1/sandboxes").json();
            if let Some(sb) = v["sandboxes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["state"] == "busy" && s["function"] == function)
            {
                return sb["id"].as_str().unwrap().to_string();
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{function} never became busy: {v}"
            );
            // Short: crash tests act as soon as it is busy.
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Wait until the pool has at least `n` idle sandboxes and nothing
    /// busy or being created.
    pub fn wait_pool_idle(&self, n: u64) {
        self.wait_runtime_idle("python3", n)
    }

    /// [`Daemon::wait_pool_idle`] for the pool of `runtime`.
    pub fn wait_runtime_idle(&self, runtime: &str, n: u64) {
        let t = Instant::now();
        loop {
            let p = self.runtime_pool(runtime);
            if p["idle"].as_u64().unwrap_or(0) >= n && p["busy"] == 0 && p["creating"] == 0 {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "pool never settled at {n} idle: {p}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Run the `ember` CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin("ember"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run ember")
    }

    /// SIGKILL the daemon (a crash), leaving its sandboxes behind.
    pub fn crash(&mut self) {
        self.crashed = self
            .try_get("/v1/health")
            .and_then(|a| a.json()["instance"].as_str().map(String::from));
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Send SIGTERM (drain and stop) without waiting.
    pub fn sigterm(&self) {
        if let Some(c) = &self.child {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        self.sigterm();
        if let Some(mut c) = self.child.take() {
            let t = Instant::now();
            loop {
                if let Ok(Some(status)) = c.try_wait() {
                    assert!(
                        status.success(),
                        "emberd exited with {status}; log:\n{}",
                        self.log()
                    );
                    return;
                }
                if t.elapsed() > Duration::from_secs(60) {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!(
                        "emberd did not stop within 60 s of SIGTERM; log:\n{}",
                        self.log()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Stop cleanly and assert nothing of this daemon is left: containers,
    /// cgroups, mounts.
    pub fn stop_and_check(&mut self, tag: &str) {
        self.stop();
        let state = self.state.clone();
        if let Err(e) = std::panic::catch_unwind(|| assert_no_leftovers(tag, &state)) {
            eprintln!("emberd log:\n{}", self.log());
            std::panic::resume_unwind(e);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A test that failed between a crash and the restart.
        if self.child.is_none() {
            if let Some(tag) = self.crashed.take() {
                for id in runc_ids(&format!("ember-{tag}-")) {
                    force_remove(&id);
                }
            }
        }
        if self.child.is_some() {
            let tag = self
                .try_get("/v1/health")
                .and_then(|a| a.json()["instance"].as_str().map(String::from));
            if std::thread::panicking() {
                eprintln!("emberd log:\n{}", self.log());
            }
            // Ask nicely; a stuck daemon is killed and its containers swept.
            if let Some(mut c) = self.child.take() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(c.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
                let t = Instant::now();
                while c.try_wait().ok().flatten().is_none() && t.elapsed() < Duration::from_secs(30)
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
            if let Some(tag) = tag {
                for id in runc_ids(&format!("ember-{tag}-")) {
                    force_remove(&id);
                }
            }
        }
        // Host mounts left under this test's dir would outlive the temp
        // dir: a killed daemon's (a runsc sandbox's /tmp), or the test's
        // own (a small filesystem for the state dir).
        unmount_under(self.dir.path());
    }
}

/// Detach every host mount under `root`, innermost first (what a killed
/// daemon, or a test's containerd, left in a test's temp dir).
pub fn unmount_under(root: &Path) {
    for p in mounts_under(root).iter().rev() {
        let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Host mount points under `root`, in mount order.
pub fn mounts_under(root: &Path) -> Vec<String> {
    let root = root.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&root))
        .map(String::from)
        .collect()
}

/// The daemon tag in a container id or id prefix `ember-<tag>-...`.
fn tag_of(id: &str) -> Option<&str> {
    id.strip_prefix("ember-")?.split('-').next()
}

/// The test backend's state roots a daemon of `tag` may have used: its
/// own under its run directory, and the runtime's default.
fn roots(tag: Option<&str>) -> Vec<Option<PathBuf>> {
    let mut roots = vec![None];
    if let Some(t) = tag {
        roots.insert(0, Some(Path::new("/run/ember").join(t).join(backend())));
    }
    roots
}

/// Ids of the test backend's containers starting with `prefix`
/// (`ember-<tag>-...`), in the daemon's own root and the default one.
pub fn runc_ids(prefix: &str) -> Vec<String> {
    let mut text = String::new();
    for root in roots(tag_of(prefix)) {
        if backend() == "libcontainer" {
            // libcontainer keeps one state directory per container.
            let dir = root.unwrap_or_else(|| PathBuf::from(LIBCONTAINER_ROOT));
            if let Ok(d) = std::fs::read_dir(dir) {
                for e in d.flatten() {
                    text.push_str(&(e.file_name().to_string_lossy().into_owned() + "\n"));
                }
            }
        } else {
            let mut cmd = Command::new(backend());
            if let Some(r) = &root {
                if !r.exists() {
                    continue;
                }
                cmd.arg("--root").arg(r);
            }
            let out = cmd
                .args(["list", "--quiet"])
                .output()
                .expect("runtime list");
            text.push_str(&String::from_utf8_lossy(&out.stdout));
        }
    }
    let mut ids: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(String::from)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// A Python handler that sleeps `event['s']` seconds and returns it.
pub const SLEEPER: &str =
    "import time\ndef handler(e, c):\n    time.sleep(e['s'])\n    return e['s']\n";

/// Where libcontainer keeps state outside a daemon's run directory.
pub const LIBCONTAINER_ROOT: &str = "/run/ember/libcontainer";

/// Remove a container the daemon left (after a failed test), whatever
/// the backend.
fn force_remove(id: &str) {
    for root in roots(tag_of(id)) {
        if backend() == "libcontainer" {
            let dir = root
                .unwrap_or_else(|| PathBuf::from(LIBCONTAINER_ROOT))
                .join(id);
            let state = std::fs::read_to_string(dir.join("state.json")).unwrap_or_default();
            if let Some(pid) = serde_json::from_str::<Value>(&state)
                .ok()
                .and_then(|v| v["pid"].as_i64())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = std::fs::remove_dir_all(dir);
        } else {
            let mut cmd = Command::new(backend());
            if let Some(r) = &root {
                cmd.arg("--root").arg(r);
            }
            let _ = cmd.args(["delete", "--force", id]).status();
        }
    }
}

/// cgroup directories named `/ember/<tag>` in any hierarchy.
pub fn cgroup_leftovers(tag: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        if matches!(f.get(sep + 1), Some(&"cgroup") | Some(&"cgroup2")) {
            let p = Path::new(f[4]).join("ember").join(tag);
            if p.exists() {
                found.push(p);
            }
        }
    }
    found
}

pub fn assert_no_leftovers(tag: &str, state: &Path) {
    let ids = runc_ids(&format!("ember-{tag}-"));
    assert!(ids.is_empty(), "containers left behind: {ids:?}");
    let cg = cgroup_leftovers(tag);
    assert!(cg.is_empty(), "cgroups left behind: {cg:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let state = state.to_string_lossy();
    let run = format!("/run/ember/{tag}");
    let leaked: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(state.as_ref()) || l.contains(&run))
        // A test's own filesystem on the state dir is the test's to remove.
        .filter(|l| l.split(' ').nth(4) != Some(state.as_ref()))
        .collect();
    assert!(leaked.is_empty(), "mounts left behind: {leaked:?}");
    assert!(
        !Path::new(&run).exists(),
        "the run directory {run} was left behind"
    );
}

/// Host pids of the processes in sandbox `sandbox` of the daemon `tag`
/// (its cgroup's `cgroup.procs`, in whichever hierarchy has it).
pub fn sandbox_host_pids(tag: &str, sandbox: &str) -> Vec<u32> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        if !matches!(f.get(sep + 1), Some(&"cgroup") | Some(&"cgroup2")) {
            continue;
        }
        let procs = Path::new(f[4])
            .join("ember")
            .join(tag)
            .join(sandbox)
            .join("cgroup.procs");
        if let Ok(text) = std::fs::read_to_string(procs) {
            let pids: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
            if !pids.is_empty() {
                return pids;
            }
        }
    }
    Vec::new()
}

/// The host uid a process runs as.
pub fn host_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// A loopback TCP port free right now (for `emberd --http`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
