//! Function zygotes: after a fork-mode function's first invocation (hot
//! swap), its sandbox is bound and a zygote that imported the handler once
//! forks every later worker. Each invocation must still start from the
//! post-init state (globals, /tmp, environment), a bound sandbox serves
//! its function only, and an init that cannot make a safe zygote (threads,
//! open files, an exception, a timeout, an OOM) makes the function fall
//! back to fresh imports, with the reason in its status and its logs.

use ember_integration::{prerequisites_met, Daemon};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Records its init, then reports what an invocation finds.
const PROBE: &str = r#"import ctypes, os, subprocess
INIT_PID = os.getpid()
print("init ran in", INIT_PID)
counter = 0
libc = ctypes.CDLL(None)
def others():
    me = os.getpid()
    return sorted(open("/proc/%s/comm" % p).read().strip()
                  for p in os.listdir("/proc") if p.isdigit() and int(p) != me)
def handler(event, context):
    global counter
    counter += 1
    seen = sorted(os.listdir("/tmp"))
    procs = others()
    # The segment the last invocation left under this key (any kernel,
    # gVisor included: no /proc/sysvipc there).
    shm = 1 if libc.shmget(0x454D4252, 0, 0) >= 0 else 0
    with open("/tmp/mark-%d" % os.getpid(), "w") as f:
        f.write("x")
    env = os.environ.get("EMBER_LEAK")
    os.environ["EMBER_LEAK"] = "set"
    # Left behind on purpose: a process, a shared memory segment.
    subprocess.Popen(["sleep", "600"], start_new_session=True)
    if os.path.exists("/proc/sysvipc"):
        # (gVisor has no /proc/sysvipc to clean by: a sandbox left with a
        # segment is replaced there, which the isolation suite covers.)
        libc.shmget(0x454D4252, 4096, 0o1666)
    return {"counter": counter, "tmp": seen, "env": env, "init_pid": INIT_PID,
            "parent": os.getppid(), "v": open("/fn/version.txt").read(),
            "procs": procs, "shm": shm}
"#;

/// The function's zygote state, once it is no longer `pending`.
fn settled_zygote(d: &Daemon, name: &str) -> Value {
    let t = Instant::now();
    loop {
        let f = d.get(&format!("/v1/functions/{name}")).json();
        let z = f["zygote_state"].clone();
        if z["state"] != "pending" {
            return z;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "zygote of {name} still pending: {f}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_bound_idle(d: &Daemon) {
    let t = Instant::now();
    loop {
        let p = d.pool();
        if p["bound"].as_u64() >= Some(1) && p["busy"] == 0 {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no bound sandbox came back: {p}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn init_records(d: &Daemon, name: &str) -> Vec<Value> {
    let logs = d.get(&format!("/v1/functions/{name}/logs")).json();
    logs["invocations"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r["start"] == "zygote_init")
        .collect()
}

#[test]
fn invocations_fork_from_the_function_zygote_and_start_fresh() {
    if !prerequisites_met("invocations_fork_from_the_function_zygote_and_start_fresh") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "2"]);
    let tag = d.tag();
    d.wait_pool_idle(2);
    d.deploy_files(
        "other",
        &[("main.py", PROBE), ("version.txt", "other")],
        5000,
    );
    d.deploy_files("fz", &[("main.py", PROBE), ("version.txt", "one")], 5000);

    let first = d.invoke("fz", "{}").json();
    assert_eq!(first["outcome"], "ok", "{first}");
    assert_eq!(
        first["start"], "hot",
        "the first touch is a hot swap: {first}"
    );
    let z = settled_zygote(&d, "fz");
    assert_eq!(z["state"], "ready", "{z}");

    // Each waits for the bound sandbox to be back (on a slow backend the
    // sweep after an invocation may outlast the short wait for it, and the
    // invocation would go to a generic sandbox instead).
    let runs: Vec<Value> = (0..4)
        .map(|_| {
            wait_bound_idle(&d);
            d.invoke("fz", "{}").json()
        })
        .collect();
    let init_pid = runs[0]["result"]["init_pid"].clone();
    for r in &runs {
        assert_eq!(r["outcome"], "ok", "{r}");
        assert_eq!(r["start"], "warm", "forked from the function zygote: {r}");
        assert_eq!(r["sandbox"], first["sandbox"], "{r}");
        let res = &r["result"];
        // Forked from the process that ran the init, which ran once.
        assert_eq!(res["init_pid"], init_pid, "{r}");
        assert_eq!(res["parent"], init_pid, "{r}");
        // Nothing the previous invocation changed is seen.
        assert_eq!(res["counter"], 1, "module globals start over: {r}");
        assert_eq!(res["tmp"], json!([]), "/tmp starts empty: {r}");
        assert_eq!(res["env"], Value::Null, "environment starts over: {r}");
        assert_eq!(res["shm"], 0, "no IPC object from before: {r}");
        // The agent, the generic zygote, the function zygote, its spare:
        // nothing the last invocation started.
        assert!(
            !res["procs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == "sleep"),
            "processes from before: {r}"
        );
    }

    // The init ran once, its output is in the function's logs.
    let inits = init_records(&d, "fz");
    assert_eq!(inits.len(), 1, "{inits:?}");
    assert_eq!(inits[0]["outcome"], "zygote_ready", "{inits:?}");
    assert!(
        inits[0]["stdout"]
            .as_str()
            .unwrap_or("")
            .contains("init ran"),
        "{inits:?}"
    );

    // A bound sandbox serves its function only.
    let other = d.invoke("other", "{}").json();
    assert_eq!(other["outcome"], "ok", "{other}");
    assert_ne!(other["sandbox"], first["sandbox"], "{other}");
    assert_eq!(other["result"]["v"], "other", "{other}");

    // A redeploy never runs in a sandbox that imported the old code.
    d.deploy_files("fz", &[("main.py", PROBE), ("version.txt", "two")], 5000);
    let v2 = d.invoke("fz", "{}").json();
    assert_eq!(v2["result"]["v"], "two", "{v2}");
    assert_ne!(v2["start"], "warm", "{v2}");
    d.stop_and_check(&tag);
}

/// A module that works when its worker has a writable /tmp (every
/// invocation does) but not in a function zygote's init (which has none):
/// `body` runs there.
fn init_only(body: &str) -> String {
    format!(
        "import os, time\ntry:\n    open('/tmp/probe', 'w').close()\nexcept OSError:\n{}\ndef handler(event, context):\n    return {{'ok': True}}\n",
        body.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    )
}

#[test]
fn inits_unsafe_to_fork_fall_back_to_fresh_imports() {
    if !prerequisites_met("inits_unsafe_to_fork_fall_back_to_fresh_imports") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "2"]);
    let tag = d.tag();
    d.wait_pool_idle(2);
    let threads = "import threading, time\nthreading.Thread(target=time.sleep, args=(600,), daemon=True).start()\ndef handler(event, context):\n    return {'ok': True}\n";
    let cases: Vec<(&str, String, Value, &str, &str)> = vec![
        (
            "threads",
            threads.to_string(),
            json!({}),
            "init_unsafe",
            "thread",
        ),
        (
            "openfile",
            "F = open('/fn/main.py')\ndef handler(event, context):\n    return {'ok': True}\n"
                .to_string(),
            json!({}),
            "init_unsafe",
            "file descriptors",
        ),
        (
            // One anonymous shared mapping: every worker would write the
            // same pages.
            "shared",
            "import mmap\nM = mmap.mmap(-1, 4096)\ndef handler(event, context):\n    return {'ok': True}\n"
                .to_string(),
            json!({}),
            "init_unsafe",
            "shared writable memory",
        ),
        (
            "raises",
            init_only("raise RuntimeError('no cache dir')"),
            json!({}),
            "init_error",
            "no cache dir",
        ),
        (
            "slow",
            init_only("time.sleep(60)"),
            json!({ "timeout_ms": 1000 }),
            "init_timeout",
            "timeout",
        ),
        (
            "hungry",
            init_only("x = bytearray(512 * 1024 * 1024)"),
            json!({ "memory_mb": 64 }),
            "init_oom",
            "memory",
        ),
    ];
    for (name, code, settings, outcome, reason) in &cases {
        d.deploy_files_with(name, &[("main.py", code)], settings.clone());
        let first = d.invoke(name, "{}").json();
        assert_eq!(first["outcome"], "ok", "{name}: {first}");
        let z = settled_zygote(&d, name);
        assert_eq!(z["state"], "fallback", "{name}: {z}");
        assert_eq!(z["outcome"], *outcome, "{name}: {z}");
        assert!(
            z["reason"].as_str().unwrap_or("").contains(reason),
            "{name}: reason should mention {reason:?}: {z}"
        );
        // Invocations go on, each importing afresh.
        for _ in 0..2 {
            let r = d.invoke(name, "{}").json();
            assert_eq!(r["outcome"], "ok", "{name}: {r}");
            assert_ne!(r["start"], "warm", "{name}: {r}");
        }
        let inits = init_records(&d, name);
        assert_eq!(inits.len(), 1, "{name}: tried once per deploy: {inits:?}");
        assert_eq!(inits[0]["outcome"], *outcome, "{name}: {inits:?}");
    }
    // The daemon counts them.
    let metrics = String::from_utf8_lossy(&d.get("/metrics").body).to_string();
    assert!(
        metrics.contains("ember_zygote_inits_total{outcome=\"init_unsafe\"} 3"),
        "{metrics}"
    );
    d.stop_and_check(&tag);
}

#[test]
fn zygotes_can_be_turned_off_per_function() {
    if !prerequisites_met("zygotes_can_be_turned_off_per_function") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "1"]);
    let tag = d.tag();
    d.wait_pool_idle(1);
    d.deploy_files_with(
        "plain",
        &[("main.py", PROBE), ("version.txt", "p")],
        json!({ "zygote": false }),
    );
    for _ in 0..3 {
        let r = d.invoke("plain", "{}").json();
        assert_eq!(r["outcome"], "ok", "{r}");
        assert_eq!(r["start"], "hot", "{r}");
    }
    let f = d.get("/v1/functions/plain").json();
    assert_eq!(f["zygote"], false, "{f}");
    assert_eq!(f["zygote_state"]["state"], "off", "{f}");
    assert!(init_records(&d, "plain").is_empty());
    d.stop_and_check(&tag);
}

/// What the module sees while it is imported in the function zygote: its
/// globals are every warm invocation's starting state, so a handler can
/// report them.
const INIT_VIEW: &str = r#"import ctypes, os
def _status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return line.split()[1]
AT_IMPORT = {
    "pid": os.getpid(),
    "dumpable": ctypes.CDLL(None).prctl(3, 0, 0, 0, 0),
    "seccomp": _status("Seccomp"),
    "no_new_privs": ctypes.CDLL(None).prctl(39, 0, 0, 0, 0),
    "fds": sorted(int(f) for f in os.listdir("/proc/self/fd")),
    "uid": os.getuid(),
}
def handler(event, context):
    return dict(AT_IMPORT, now=os.getpid())
"#;

#[test]
fn the_zygote_is_confined_before_the_function_is_imported() {
    if !prerequisites_met("the_zygote_is_confined_before_the_function_is_imported") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "1"]);
    let tag = d.tag();
    d.wait_pool_idle(1);
    d.deploy_files_with(
        "view",
        &[("main.py", INIT_VIEW)],
        json!({ "profile": "strict" }),
    );
    assert_eq!(d.invoke("view", "{}").json()["outcome"], "ok");
    assert_eq!(settled_zygote(&d, "view")["state"], "ready");
    wait_bound_idle(&d);
    let v = d.invoke("view", "{}").json();
    assert_eq!(v["start"], "warm", "{v}");
    let at = &v["result"];
    assert_ne!(
        at["pid"], at["now"],
        "imported in the zygote, not the worker: {v}"
    );
    // Already under the profile's filter, no new privileges, not dumpable,
    // the sandbox user, when the function's first line ran.
    assert_eq!(at["seccomp"], "2", "{v}");
    assert_eq!(at["no_new_privs"], 1, "{v}");
    assert_eq!(at["dumpable"], 0, "{v}");
    assert_ne!(at["uid"], 0, "{v}");
    // stdin, the init's stdout and stderr, its own control socket and the
    // directory listing's descriptor: nothing of the agent's.
    let fds: Vec<u64> = at["fds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_u64().unwrap())
        .collect();
    assert!(fds.iter().all(|&f| f <= 4), "descriptors at import: {v}");
    d.stop_and_check(&tag);
}

#[test]
fn a_worker_that_kills_its_zygote_gets_its_result_and_costs_only_that_sandbox() {
    if !prerequisites_met(
        "a_worker_that_kills_its_zygote_gets_its_result_and_costs_only_that_sandbox",
    ) {
        return;
    }
    let killer = "import os, signal\ndef handler(event, context):\n    if event.get('kill'):\n        os.kill(os.getppid(), signal.SIGKILL)\n    return {'parent': os.getppid()}\n";
    let mut d = Daemon::start(&["--pool-size", "1"]);
    let tag = d.tag();
    d.wait_pool_idle(1);
    d.deploy_files("killer", &[("main.py", killer)], 5000);
    assert_eq!(d.invoke("killer", "{}").json()["outcome"], "ok");
    assert_eq!(settled_zygote(&d, "killer")["state"], "ready");
    wait_bound_idle(&d);
    let k = d.invoke("killer", r#"{"kill": true}"#).json();
    assert_eq!(
        k["outcome"], "ok",
        "its own result, not a sandbox failure: {k}"
    );
    assert_eq!(k["start"], "warm", "{k}");
    // That sandbox is given up; the function goes on in another.
    let next = d.invoke("killer", "{}").json();
    assert_eq!(next["outcome"], "ok", "{next}");
    assert_ne!(next["sandbox"], k["sandbox"], "{next}");
    d.stop_and_check(&tag);
}
