//! Idle sandboxes killed from outside (issue 18): a frozen sandbox whose
//! agent, zygote, function zygote or Node runner died is never handed to
//! an invocation. emberd finds it dead before use (pidfds, no runtime
//! call), destroys it, counts it in `ember_sandboxes_found_dead_total`
//! and runs the invocation in another sandbox: the caller sees a 200.

use ember_integration::{backend, prerequisites_met, tool_present, Daemon};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const ECHO: &str = "def handler(event, context):\n    return {'event': event}\n";

/// The idle sandboxes of `runtime`, as `/v1/sandboxes` lists them.
fn idle_sandboxes(d: &Daemon, runtime: &str) -> Vec<Value> {
    d.get("/v1/sandboxes").json()["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "idle" && s["runtime"] == runtime)
        .cloned()
        .collect()
}

/// Whether sandbox `id` of daemon `tag` is frozen (cgroup v1 or v2).
fn frozen(tag: &str, id: &str) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mounts.lines().any(|line| {
        let f: Vec<&str> = line.split(' ').collect();
        let dir = Path::new(f[4]).join("ember").join(tag).join(id);
        let v1 = std::fs::read_to_string(dir.join("freezer.state")).unwrap_or_default();
        let v2 = std::fs::read_to_string(dir.join("cgroup.freeze")).unwrap_or_default();
        v1.trim() == "FROZEN" || v2.trim() == "1"
    })
}

/// Wait until an idle sandbox of `runtime` (bound to `bound`, if given)
/// is frozen; its status.
fn frozen_idle(d: &Daemon, runtime: &str, bound: Option<&str>) -> Value {
    let tag = d.tag();
    let t = Instant::now();
    loop {
        let found = idle_sandboxes(d, runtime).into_iter().find(|s| {
            let id = s["id"].as_str().unwrap();
            let serves = match bound {
                Some(f) => s["bound_to"] == f,
                None => true,
            };
            serves && frozen(&tag, id)
        });
        if let Some(sb) = found {
            return sb;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no frozen idle {runtime} sandbox: {}",
            d.get("/v1/sandboxes").json()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A process's parent pid.
fn ppid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The sandbox's processes whose parent is `parent`.
fn children(tag: &str, sandbox: &str, parent: u32) -> Vec<u32> {
    ember_integration::sandbox_host_pids(tag, sandbox)
        .into_iter()
        .filter(|&p| ppid(p) == Some(parent))
        .collect()
}

fn kill(pids: &[u32]) {
    assert!(!pids.is_empty(), "nothing to kill");
    for &pid in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// `ember_sandboxes_found_dead_total` of `runtime` on the test backend.
fn found_dead(d: &Daemon, runtime: &str) -> u64 {
    let text = String::from_utf8_lossy(&d.get("/metrics").body).to_string();
    let series = format!(
        "ember_sandboxes_found_dead_total{{runtime=\"{runtime}\",backend=\"{}\"}} ",
        backend()
    );
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// Invoke `name` and expect a 200 from a sandbox other than `dead`.
fn invoke_elsewhere(d: &Daemon, name: &str, dead: &str) -> Value {
    let a = d.invoke(name, r#"{"n": 1}"#);
    assert_eq!(
        a.status,
        200,
        "{}; log:\n{}",
        String::from_utf8_lossy(&a.body),
        d.log()
    );
    let v = a.json();
    assert_ne!(v["sandbox"], dead, "the dead sandbox served: {v}");
    v
}

#[test]
fn a_frozen_sandbox_whose_agent_was_killed_is_replaced_transparently() {
    if !prerequisites_met("a_frozen_sandbox_whose_agent_was_killed_is_replaced_transparently") {
        return;
    }
    let mut d = Daemon::start(&[
        "--pool-size",
        "1",
        "--max-sandboxes",
        "3",
        "--no-function-zygotes",
    ]);
    let tag = d.tag();
    d.deploy_files("echo", &[("main.py", ECHO)], 5000);
    d.wait_pool_idle(1);
    let sb = frozen_idle(&d, "python3", None);
    let id = sb["id"].as_str().unwrap().to_string();
    // The agent is the container's init (runsc: the sandbox process).
    kill(&[sb["pid"].as_u64().unwrap() as u32]);
    let v = invoke_elsewhere(&d, "echo", &id);
    assert_eq!(v["result"], json!({"event": {"n": 1}}));
    assert_eq!(found_dead(&d, "python3"), 1);
    assert!(d.log().contains("sandbox found dead"), "{}", d.log());
    // It is gone from the pool, which refills.
    d.wait_pool_idle(1);
    assert!(!d.sandbox_ids().contains(&id));
    d.stop_and_check(&tag);
}

#[test]
fn a_sandbox_whose_zygote_was_killed_is_replaced_transparently() {
    if !prerequisites_met("a_sandbox_whose_zygote_was_killed_is_replaced_transparently") {
        return;
    }
    if backend() == "runsc" {
        eprintln!("skipping: gVisor's zygote is no host process");
        return;
    }
    // Room to bind (a pool binds only while it could make another).
    let mut d = Daemon::start(&["--pool-size", "1", "--max-sandboxes", "8"]);
    let tag = d.tag();
    d.deploy_files("echo", &[("main.py", ECHO)], 5000);
    d.wait_pool_idle(1);

    // The generic zygote of a fresh sandbox: the agent's child.
    let sb = frozen_idle(&d, "python3", None);
    let id = sb["id"].as_str().unwrap().to_string();
    let agent = sb["pid"].as_u64().unwrap() as u32;
    kill(&children(&tag, &id, agent));
    let v = invoke_elsewhere(&d, "echo", &id);
    assert_eq!(found_dead(&d, "python3"), 1);

    // The function zygote of a bound sandbox (fork mode, bound after the
    // first invocation): first, a warm invocation finds it alive.
    let bound_id = v["sandbox"].as_str().unwrap().to_string();
    let sb = frozen_idle(&d, "python3", Some("echo"));
    assert_eq!(sb["id"], bound_id.as_str());
    let warm = d.invoke("echo", "{}").json();
    assert_eq!(warm["start"], "warm", "{warm}");
    assert_eq!(found_dead(&d, "python3"), 1, "a live sandbox found dead");
    let sb = frozen_idle(&d, "python3", Some("echo"));
    let agent = sb["pid"].as_u64().unwrap() as u32;
    let generic: Vec<u32> = children(&tag, &bound_id, agent);
    assert_eq!(generic.len(), 1, "one generic zygote: {generic:?}");
    // The function zygote (and any spare of the generic one).
    kill(&children(&tag, &bound_id, generic[0]));
    invoke_elsewhere(&d, "echo", &bound_id);
    assert_eq!(found_dead(&d, "python3"), 2);
    assert!(d.log().contains("its function zygote"), "{}", d.log());
    d.stop_and_check(&tag);
}

#[test]
fn a_node_sandbox_whose_runner_was_killed_is_replaced_transparently() {
    let test = "a_node_sandbox_whose_runner_was_killed_is_replaced_transparently";
    if !prerequisites_met(test) || !tool_present(test, "/usr/bin/node", "nodejs") {
        return;
    }
    if backend() == "runsc" {
        eprintln!("skipping: gVisor's runner is no host process");
        return;
    }
    let mut d = Daemon::start(&[
        "--runtimes",
        "python3,node",
        "--pool-size",
        "1",
        "--max-sandboxes",
        "3",
    ]);
    let tag = d.tag();
    d.wait_runtime_idle("node", 1);
    d.deploy_files_with(
        "js",
        &[(
            "index.js",
            "exports.handler = async (event) => ({ event });\n",
        )],
        json!({ "runtime": "node", "timeout_ms": 2000 }),
    );
    // A generic sandbox's runner, before any function is bound.
    let sb = frozen_idle(&d, "node", None);
    let id = sb["id"].as_str().unwrap().to_string();
    kill(&children(&tag, &id, sb["pid"].as_u64().unwrap() as u32));
    let v = invoke_elsewhere(&d, "js", &id);
    assert_eq!(v["result"], json!({"event": {"n": 1}}));
    assert_eq!(found_dead(&d, "node"), 1);

    // The runner of the sandbox bound to the function.
    let bound_id = v["sandbox"].as_str().unwrap().to_string();
    let sb = frozen_idle(&d, "node", Some("js"));
    assert_eq!(sb["id"], bound_id.as_str());
    kill(&children(
        &tag,
        &bound_id,
        sb["pid"].as_u64().unwrap() as u32,
    ));
    invoke_elsewhere(&d, "js", &bound_id);
    assert_eq!(found_dead(&d, "node"), 2);
    // Nothing else was found dead: a live sandbox never is.
    assert_eq!(found_dead(&d, "python3"), 0);
    d.stop_and_check(&tag);
}

#[test]
fn a_python_sandbox_whose_specialized_runner_was_killed_is_replaced_transparently() {
    let test = "a_python_sandbox_whose_specialized_runner_was_killed_is_replaced_transparently";
    if !prerequisites_met(test) {
        return;
    }
    if backend() == "runsc" {
        eprintln!("skipping: gVisor's runner is no host process");
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "1", "--max-sandboxes", "8"]);
    let tag = d.tag();
    d.deploy_files_with(
        "spec",
        &[("main.py", ECHO)],
        json!({ "mode": "specialized", "timeout_ms": 5000 }),
    );
    d.wait_pool_idle(1);
    let first = d.invoke("spec", "{}").json();
    assert_eq!(first["mode"], "specialized", "{first}");
    let bound_id = first["sandbox"].as_str().unwrap().to_string();
    let sb = frozen_idle(&d, "python3", Some("spec"));
    assert_eq!(sb["id"], bound_id.as_str());
    // The runner is the generic zygote's child (as is its next spare).
    let agent = sb["pid"].as_u64().unwrap() as u32;
    let zygote = children(&tag, &bound_id, agent);
    assert_eq!(zygote.len(), 1, "one zygote: {zygote:?}");
    kill(&children(&tag, &bound_id, zygote[0]));
    invoke_elsewhere(&d, "spec", &bound_id);
    assert_eq!(found_dead(&d, "python3"), 1);
    assert!(d.log().contains("its runner"), "{}", d.log());
    d.stop_and_check(&tag);
}
