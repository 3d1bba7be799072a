//! Specialized mode: a sandbox bound to one function keeps it loaded, and
//! is recycled after N invocations, after idling, when the function is
//! redeployed, or when another function needs room in a full pool.

use ember_integration::{prerequisites_met, Daemon};
use serde_json::json;

const COUNTER: &str = "import os\ncalls = 0\ndef handler(e, c):\n    global calls\n    calls += 1\n    return {'calls': calls, 'pid': os.getpid(), 'v': open('/fn/version.txt').read()}\n";

fn sandbox(v: &serde_json::Value) -> String {
    v["sandbox"].as_str().unwrap_or_default().to_string()
}

#[test]
fn specialized_sandboxes_are_recycled_after_n_invocations() {
    if !prerequisites_met("specialized_sandboxes_are_recycled_after_n_invocations") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "1", "--specialized-max-invocations", "3"]);
    let tag = d.tag();
    d.wait_pool_idle(1);
    d.deploy_files_with(
        "counter",
        &[("main.py", COUNTER), ("version.txt", "one")],
        json!({ "mode": "specialized" }),
    );
    let runs: Vec<serde_json::Value> = (0..7).map(|_| d.invoke("counter", "{}").json()).collect();
    for r in &runs {
        assert_eq!(r["outcome"], "ok", "{r}");
    }
    let calls: Vec<u64> = runs
        .iter()
        .map(|r| r["result"]["calls"].as_u64().unwrap())
        .collect();
    // Three invocations per sandbox, then a fresh one loads the function
    // again: its module state starts over.
    assert_eq!(calls, vec![1, 2, 3, 1, 2, 3, 1], "{runs:?}");
    assert_eq!(sandbox(&runs[0]), sandbox(&runs[2]));
    assert_ne!(sandbox(&runs[2]), sandbox(&runs[3]));
    assert_eq!(runs[1]["start"], "warm");
    assert_eq!(
        runs[1]["result"]["pid"], runs[0]["result"]["pid"],
        "same process serves"
    );
    let p = d.pool();
    assert!(p["recycled_total"].as_u64().unwrap() >= 2, "{p}");
    d.stop_and_check(&tag);
}

#[test]
fn redeploys_never_run_in_a_sandbox_bound_to_the_old_code() {
    if !prerequisites_met("redeploys_never_run_in_a_sandbox_bound_to_the_old_code") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "1"]);
    let tag = d.tag();
    d.wait_pool_idle(1);
    let spec = json!({ "mode": "specialized" });
    d.deploy_files_with(
        "f",
        &[("main.py", COUNTER), ("version.txt", "one")],
        spec.clone(),
    );
    assert_eq!(d.invoke("f", "{}").json()["result"]["v"], "one");
    assert_eq!(d.invoke("f", "{}").json()["result"]["calls"], 2);
    d.deploy_files_with(
        "f",
        &[("main.py", COUNTER), ("version.txt", "two")],
        spec.clone(),
    );
    let v = d.invoke("f", "{}").json();
    assert_eq!(v["result"]["v"], "two", "{v}");
    assert_eq!(
        v["result"]["calls"], 1,
        "a fresh runner loaded the new code: {v}"
    );
    // Deleting the function recycles its bound sandbox.
    assert_eq!(d.request("DELETE", "/v1/functions/f", "", b"").status, 200);
    let t = std::time::Instant::now();
    while d.pool()["bound"] != 0 {
        assert!(
            t.elapsed().as_secs() < 10,
            "bound sandbox kept after delete: {}",
            d.pool()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    d.stop_and_check(&tag);
}

#[test]
fn deleting_a_function_mid_invocation_recycles_its_sandbox_on_return() {
    if !prerequisites_met("deleting_a_function_mid_invocation_recycles_its_sandbox_on_return") {
        return;
    }
    // The sandbox is busy when the function goes: it is not idle for the
    // delete to recycle, and no later invocation of the function will miss
    // its key. Only its release can notice (the idle timeout is 5 min).
    let mut d = Daemon::start(&["--pool-size", "1"]);
    let tag = d.tag();
    d.wait_pool_idle(1);
    d.deploy_files_with(
        "slow",
        &[("main.py", ember_integration::SLEEPER)],
        json!({ "mode": "specialized" }),
    );
    let call = d.invoke_in_background("slow", r#"{"s": 1}"#);
    let id = d.wait_busy("slow");
    assert_eq!(
        d.request("DELETE", "/v1/functions/slow", "", b"").status,
        200
    );
    let v = call.join().unwrap().expect("invocation answered").json();
    assert_eq!(v["outcome"], "ok", "a running invocation finishes: {v}");
    assert_eq!(sandbox(&v), id);
    let t = std::time::Instant::now();
    loop {
        // Two reads, not one snapshot: each condition is waited for, so
        // the sandbox leaving the list between them cannot fail the test.
        let listed = d.sandbox_ids().contains(&id);
        let p = d.pool();
        if p["bound"] == 0 && !listed && p["recycled_total"].as_u64().unwrap() >= 1 {
            break;
        }
        assert!(
            t.elapsed().as_secs() < 10,
            "sandbox {id} stayed bound to the deleted function (listed: {listed}): {p}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    d.stop_and_check(&tag);
}

#[test]
fn a_full_pool_recycles_another_functions_bound_sandbox() {
    if !prerequisites_met("a_full_pool_recycles_another_functions_bound_sandbox") {
        return;
    }
    // Room for two sandboxes: both get bound, then a third function needs
    // one.
    let mut d = Daemon::start(&[
        "--pool-size",
        "1",
        "--pool-max-warm",
        "1",
        "--max-sandboxes",
        "2",
        "--specialized-idle-ms",
        "600000",
    ]);
    let tag = d.tag();
    d.wait_pool_idle(1);
    let spec = json!({ "mode": "specialized" });
    for f in ["a", "b", "c"] {
        d.deploy_files_with(f, &[("main.py", COUNTER), ("version.txt", f)], spec.clone());
    }
    let a = d.invoke("a", "{}").json();
    // a's sandbox comes back bound; the pool makes a generic one for b.
    d.wait_pool_idle(2);
    let b = d.invoke("b", "{}").json();
    assert_eq!(
        (a["outcome"].as_str(), b["outcome"].as_str()),
        (Some("ok"), Some("ok"))
    );
    let t = std::time::Instant::now();
    while d.pool()["bound"] != 2 {
        assert!(t.elapsed().as_secs() < 10, "{}", d.pool());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let c = d.invoke("c", "{}").json();
    assert_eq!(c["outcome"], "ok", "{c}");
    assert_eq!(c["result"]["v"], "c");
    assert_eq!(c["start"], "cold", "{c}");
    let p = d.pool();
    assert!(p["recycled_total"].as_u64().unwrap() >= 1, "{p}");
    assert!(
        p["max"].as_u64().unwrap() >= p["idle"].as_u64().unwrap() + p["busy"].as_u64().unwrap()
    );
    d.stop_and_check(&tag);
}

#[test]
fn idle_specialized_sandboxes_are_recycled() {
    if !prerequisites_met("idle_specialized_sandboxes_are_recycled") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "1", "--specialized-idle-ms", "500"]);
    let tag = d.tag();
    d.wait_pool_idle(1);
    d.deploy_files_with(
        "f",
        &[("main.py", COUNTER), ("version.txt", "x")],
        json!({ "mode": "specialized" }),
    );
    assert_eq!(d.invoke("f", "{}").json()["outcome"], "ok");
    let t = std::time::Instant::now();
    loop {
        let p = d.pool();
        if p["bound"] == 0 && p["recycled_total"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(
            t.elapsed().as_secs() < 15,
            "idle bound sandbox never recycled: {p}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The pool is back to a generic sandbox that serves anyone.
    d.wait_pool_idle(1);
    assert_eq!(d.invoke("f", "{}").json()["result"]["calls"], 1);
    d.stop_and_check(&tag);
}
