//! Sessions: a warm sandbox bound to one function and one session alone.
//! What a handler keeps (module globals, files under `/tmp`) survives
//! between the calls of one session and is never seen by another session
//! or by plain invocations; sessions end when closed, idle, old, failed,
//! or when emberd stops, and each end is recorded.

use ember_integration::{prerequisites_met, text, wait_until, Answer, Daemon};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Counts its calls in a global, appends to a file under /tmp, and can
/// crash or hang on request.
const STATEFUL: &str = r#"
import os, time
count = 0
def handler(event, context):
    global count
    count += 1
    if event.get("crash"):
        os._exit(3)
    if event.get("raise"):
        raise ValueError("asked to")
    if event.get("sleep"):
        time.sleep(event["sleep"])
    if "write" in event:
        with open("/tmp/notes", "a") as f:
            f.write(event["write"])
    notes = open("/tmp/notes").read() if os.path.exists("/tmp/notes") else ""
    return {"count": count, "notes": notes}
"#;

const NODE_STATEFUL: &str = r#"
const fs = require("fs");
let count = 0;
exports.handler = async (event) => {
  count += 1;
  if (event.write) fs.appendFileSync("/tmp/notes", event.write);
  const notes = fs.existsSync("/tmp/notes") ? fs.readFileSync("/tmp/notes", "utf8") : "";
  return { count, notes };
};
"#;

fn open(d: &Daemon, function: &str) -> Answer {
    d.request(
        "POST",
        &format!("/v1/functions/{function}/sessions"),
        "application/json",
        b"",
    )
}

/// Open a session of `function`; its id.
fn open_ok(d: &Daemon, function: &str) -> String {
    let a = open(d, function);
    assert_eq!(a.status, 201, "open {function}: {}", text(&a.body));
    let s = a.json();
    assert_eq!(s["function"], function);
    assert_eq!(s["open"], true);
    let id = s["id"].as_str().expect("session id").to_string();
    assert_eq!(id.len(), 32, "128 random bits in hex: {id}");
    id
}

fn call(d: &Daemon, session: &str, event: Value) -> Answer {
    d.request(
        "POST",
        &format!("/v1/sessions/{session}/invoke"),
        "application/json",
        event.to_string().as_bytes(),
    )
}

/// A call that must succeed; its result.
fn call_ok(d: &Daemon, session: &str, event: Value) -> Value {
    let a = call(d, session, event);
    assert_eq!(a.status, 200, "{}", text(&a.body));
    let r = a.json();
    assert_eq!(r["session"], session, "the report names its session");
    r["result"].clone()
}

fn session(d: &Daemon, id: &str) -> Value {
    let a = d.get(&format!("/v1/sessions/{id}"));
    assert_eq!(a.status, 200, "{}", text(&a.body));
    a.json()
}

/// Wait until session `id` has ended; its record.
fn wait_ended(d: &Daemon, id: &str, within: Duration) -> Value {
    let t = Instant::now();
    loop {
        let s = session(d, id);
        if s["open"] == false {
            return s;
        }
        assert!(t.elapsed() < within, "session still open: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait until session `id` is (or is no longer) running a call.
fn wait_busy(d: &Daemon, id: &str, busy: bool) {
    wait_until(&format!("session busy {busy}"), || {
        session(d, id)["busy"] == busy
    });
}

/// A call on another thread; the answer, or the connection's error.
fn call_in_background(
    d: &Daemon,
    session: &str,
    event: Value,
) -> std::thread::JoinHandle<std::io::Result<Answer>> {
    d.post_in_background(
        &format!("/v1/sessions/{session}/invoke"),
        &event.to_string(),
    )
}

/// Sandboxes held by sessions, as `/v1/sandboxes` shows them.
fn session_sandboxes(d: &Daemon) -> Vec<String> {
    d.get("/v1/sandboxes").json()["sandboxes"]
        .as_array()
        .expect("sandboxes")
        .iter()
        .filter(|s| s["state"] == "session")
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn state_is_kept_within_a_session_and_seen_by_no_other() {
    if !prerequisites_met("state_is_kept_within_a_session_and_seen_by_no_other") {
        return;
    }
    let mut d = Daemon::start(&["--runtimes", "python3,node", "--pool-size", "1"]);
    let tag = d.tag();
    d.deploy_files("state", &[("main.py", STATEFUL)], 5000);
    let a = open_ok(&d, "state");
    let b = open_ok(&d, "state");
    assert_ne!(a, b);

    // Within a session: the global and /tmp carry over.
    assert_eq!(
        call_ok(&d, &a, json!({"write": "x"})),
        json!({"count": 1, "notes": "x"})
    );
    assert_eq!(
        call_ok(&d, &a, json!({"write": "y"})),
        json!({"count": 2, "notes": "xy"})
    );
    // Another session of the same function starts from nothing...
    assert_eq!(call_ok(&d, &b, json!({})), json!({"count": 1, "notes": ""}));
    // ...and so does a plain invocation.
    let plain = d.invoke("state", "{}");
    assert_eq!(plain.status, 200, "{}", text(&plain.body));
    assert_eq!(plain.json()["result"], json!({"count": 1, "notes": ""}));
    assert!(plain.json().get("session").is_none());

    // Two calls at once: the second waits for the first, both served.
    let bg: Vec<_> = (0..2)
        .map(|_| call_in_background(&d, &a, json!({"sleep": 0.3})))
        .collect();
    let mut counts: Vec<u64> = bg
        .into_iter()
        .map(|h| {
            let r = h.join().unwrap().expect("answer");
            assert_eq!(r.status, 200, "{}", text(&r.body));
            r.json()["result"]["count"].as_u64().unwrap()
        })
        .collect();
    counts.sort();
    assert_eq!(counts, [3, 4]);

    // Listed, with use, memory and the sandbox each holds.
    let list = d.get("/v1/sessions?function=state").json();
    let sessions = list["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 2, "{list}");
    let sa = sessions.iter().find(|s| s["id"] == a.as_str()).unwrap();
    assert_eq!(sa["invocations"], 4, "{sa}");
    assert!(sa["memory_bytes"].as_u64().unwrap() > 0, "{sa}");
    assert!(sa["expires_at"].as_i64().unwrap() > sa["last_used_at"].as_i64().unwrap());
    let held = session_sandboxes(&d);
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(held.contains(&sa["sandbox"].as_str().unwrap().to_string()));
    assert_eq!(d.metric("ember_sessions_open{function=\"state\"}"), Some(2));

    // Every call is recorded with its session.
    let recs = d.get(&format!("/v1/invocations?session={a}")).json();
    let recs = recs["invocations"].as_array().unwrap();
    assert_eq!(recs.len(), 4, "{recs:?}");
    assert!(recs.iter().all(|r| r["session"] == a.as_str()));

    // Node keeps its module state the same way.
    d.deploy_files_with(
        "nstate",
        &[("index.js", NODE_STATEFUL)],
        json!({"runtime": "node", "timeout_ms": 5000}),
    );
    let n1 = open_ok(&d, "nstate");
    let n2 = open_ok(&d, "nstate");
    call_ok(&d, &n1, json!({"write": "a"}));
    assert_eq!(
        call_ok(&d, &n1, json!({"write": "b"})),
        json!({"count": 2, "notes": "ab"})
    );
    assert_eq!(
        call_ok(&d, &n2, json!({})),
        json!({"count": 1, "notes": ""})
    );

    // Closing ends it for good and destroys its sandbox.
    let closed = d.request("DELETE", &format!("/v1/sessions/{a}"), "", b"");
    assert_eq!(closed.status, 200, "{}", text(&closed.body));
    assert_eq!(closed.json()["end_reason"], "closed");
    assert_eq!(closed.json()["invocations"], 4);
    let after = call(&d, &a, json!({}));
    assert_eq!(after.status, 410, "{}", text(&after.body));
    assert_eq!(after.error_code(), "session_ended");
    assert!(!session_sandboxes(&d).contains(&sa["sandbox"].as_str().unwrap().to_string()));
    let again = d.request("DELETE", &format!("/v1/sessions/{a}"), "", b"");
    assert_eq!(again.status, 410);
    let unknown = call(&d, "0123456789abcdef0123456789abcdef", json!({}));
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.error_code(), "session_not_found");
    let ended = d.get("/v1/sessions?ended=true").json();
    assert!(ended["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["id"] == a.as_str() && s["open"] == false));

    // A clean stop ends the rest (recorded), leaving nothing behind.
    d.stop_and_check(&tag);
    d.spawn();
    assert_eq!(session(&d, &b)["end_reason"], "shutdown");
    assert_eq!(session(&d, &n1)["end_reason"], "shutdown");
    d.stop_and_check(&tag);
}

#[test]
fn idle_and_old_sessions_are_swept() {
    if !prerequisites_met("idle_and_old_sessions_are_swept") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "1"]);
    let tag = d.tag();
    d.deploy_files_with(
        "idle",
        &[("main.py", STATEFUL)],
        json!({"timeout_ms": 5000, "session_idle_s": 1}),
    );
    d.deploy_files_with(
        "old",
        &[("main.py", STATEFUL)],
        json!({"timeout_ms": 5000, "session_idle_s": 60, "session_lifetime_s": 2}),
    );
    let idle = open_ok(&d, "idle");
    assert_eq!(session(&d, &idle)["idle_timeout_s"], 1);
    call_ok(&d, &idle, json!({}));
    let old = open_ok(&d, "old");

    // Kept busy, the old one still ends at its lifetime.
    let t = Instant::now();
    let ended = loop {
        let a = call(&d, &old, json!({}));
        if a.status != 200 {
            break a;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "never ended");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(ended.status, 410, "{}", text(&ended.body));
    assert!(
        text(&ended.body).contains("lifetime"),
        "{}",
        text(&ended.body)
    );
    assert_eq!(session(&d, &old)["end_reason"], "lifetime");

    let s = wait_ended(&d, &idle, Duration::from_secs(10));
    assert_eq!(s["end_reason"], "idle", "{s}");
    assert_eq!(s["invocations"], 1, "{s}");
    assert!(s["end_message"].as_str().unwrap().contains("idle timeout"));
    assert_eq!(
        d.metric("ember_sessions_ended_total{function=\"idle\",reason=\"idle\"}"),
        Some(1)
    );
    assert!(session_sandboxes(&d).is_empty());
    d.stop_and_check(&tag);
}

#[test]
fn the_session_limits_refuse_with_429() {
    if !prerequisites_met("the_session_limits_refuse_with_429") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "1", "--max-sessions", "3"]);
    let tag = d.tag();
    d.deploy_files_with(
        "one",
        &[("main.py", STATEFUL)],
        json!({"timeout_ms": 5000, "max_sessions": 1}),
    );
    d.deploy_files("many", &[("main.py", STATEFUL)], 5000);
    let first = open_ok(&d, "one");
    let refused = open(&d, "one");
    assert_eq!(refused.status, 429, "{}", text(&refused.body));
    assert_eq!(refused.error_code(), "session_limit");
    assert!(text(&refused.body).contains("max_sessions"));
    open_ok(&d, "many");
    open_ok(&d, "many");
    let daemon_full = open(&d, "many");
    assert_eq!(daemon_full.status, 429);
    assert!(text(&daemon_full.body).contains("--max-sessions"));
    assert_eq!(
        d.metric("ember_invocations_refused_total{function=\"one\",code=\"session_limit\"}"),
        Some(1)
    );
    // Room again once one ends.
    let a = d.request("DELETE", &format!("/v1/sessions/{first}"), "", b"");
    assert_eq!(a.status, 200);
    open_ok(&d, "one");
    // Out-of-range settings are refused at deploy.
    let bad = d.request(
        "PUT",
        "/v1/functions/bad",
        "application/json",
        json!({"code": {"path": d.dir.path()}, "max_sessions": 0})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(bad.status, 400, "{}", text(&bad.body));
    assert!(text(&bad.body).contains("max_sessions"));
    d.stop_and_check(&tag);
}

#[test]
fn a_call_that_crashes_or_times_out_ends_its_session() {
    if !prerequisites_met("a_call_that_crashes_or_times_out_ends_its_session") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "1"]);
    let tag = d.tag();
    d.deploy_files("crashy", &[("main.py", STATEFUL)], 1000);
    let s = open_ok(&d, "crashy");
    call_ok(&d, &s, json!({}));
    // A handler that raises keeps its session and its state...
    let raised = call(&d, &s, json!({"raise": true}));
    assert_eq!(raised.status, 502, "{}", text(&raised.body));
    assert_eq!(raised.error_code(), "handler_error");
    assert_eq!(call_ok(&d, &s, json!({}))["count"], 3);
    // ...one whose worker dies ends it: its state is gone.
    let crashed = call(&d, &s, json!({"crash": true}));
    assert_eq!(crashed.status, 502, "{}", text(&crashed.body));
    assert_eq!(crashed.error_code(), "crashed");
    let ended = wait_ended(&d, &s, Duration::from_secs(10));
    assert_eq!(ended["end_reason"], "failed", "{ended}");
    let id = crashed.json()["error"]["invocation_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        ended["end_message"].as_str().unwrap().contains(&id),
        "{ended}"
    );
    let next = call(&d, &s, json!({}));
    assert_eq!(next.status, 410, "{}", text(&next.body));

    let t = open_ok(&d, "crashy");
    let timed_out = call(&d, &t, json!({"sleep": 5}));
    assert_eq!(timed_out.status, 504, "{}", text(&timed_out.body));
    assert_eq!(
        wait_ended(&d, &t, Duration::from_secs(10))["end_reason"],
        "failed"
    );
    assert!(session_sandboxes(&d).is_empty());
    d.stop_and_check(&tag);
}

#[test]
fn the_kill_switch_stops_a_sessions_call_and_never_its_next_one() {
    if !prerequisites_met("the_kill_switch_stops_a_sessions_call_and_never_its_next_one") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "1", "--drain-timeout-ms", "500"]);
    let tag = d.tag();
    d.deploy_files("held", &[("main.py", STATEFUL)], 60_000);
    let s = open_ok(&d, "held");
    call_ok(&d, &s, json!({}));
    let sb = session(&d, &s)["sandbox"].as_str().unwrap().to_string();
    let kill = |d: &Daemon| {
        d.request(
            "POST",
            &format!("/v1/sandboxes/{sb}/kill"),
            "application/json",
            b"",
        )
    };

    // Between calls there is nothing to kill, and the refused kill does
    // not wait for the next call.
    wait_busy(&d, &s, false);
    let idle = kill(&d);
    assert_eq!(
        (idle.status, idle.error_code().as_str()),
        (409, "not_running"),
        "{}",
        text(&idle.body)
    );
    assert!(
        idle.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("session"),
        "{}",
        text(&idle.body)
    );
    assert_eq!(call_ok(&d, &s, json!({}))["count"], 2);

    // During a call: that call is stopped, named, and the session ends.
    // (Busy at first is the answered call's sandbox still coming back.)
    wait_busy(&d, &s, false);
    let running = call_in_background(&d, &s, json!({"sleep": 60}));
    wait_busy(&d, &s, true);
    let k = kill(&d);
    assert_eq!(k.status, 200, "{}", text(&k.body));
    let killed = k.json()["killed"].clone();
    assert_eq!(killed["function"], "held");
    let a = running.join().unwrap().expect("the killed call's answer");
    assert_eq!(a.status, 409, "{}", text(&a.body));
    let v = a.json();
    assert_eq!(v["error"]["code"], "killed");
    assert_eq!(v["invocation"]["id"], killed["invocation"], "{v} {killed}");
    let ended = wait_ended(&d, &s, Duration::from_secs(10));
    assert_eq!(ended["end_reason"], "failed", "{ended}");
    assert!(session_sandboxes(&d).is_empty());

    // A call that outruns the shutdown's drain is stopped, and its session
    // is recorded as ended by that shutdown, not found open by the next
    // start as after a crash.
    let late = open_ok(&d, "held");
    let running = call_in_background(&d, &late, json!({"sleep": 60}));
    wait_busy(&d, &late, true);
    d.stop();
    // Answered or cut off, the caller is not left waiting out its sleep.
    let _ = running.join().unwrap();
    d.spawn();
    let after = session(&d, &late);
    assert_eq!(after["end_reason"], "shutdown", "{after}");
    assert!(
        after["end_message"].as_str().unwrap().contains("drain"),
        "{after}"
    );
    d.stop_and_check(&tag);
}

#[test]
fn sessions_open_when_emberd_died_are_reported_ended() {
    if !prerequisites_met("sessions_open_when_emberd_died_are_reported_ended") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "1"]);
    let tag = d.tag();
    d.deploy_files("state", &[("main.py", STATEFUL)], 5000);
    let s = open_ok(&d, "state");
    call_ok(&d, &s, json!({"write": "kept"}));
    d.crash();
    d.spawn();
    let after = session(&d, &s);
    assert_eq!(after["open"], false, "{after}");
    assert_eq!(after["end_reason"], "daemon_restart", "{after}");
    let a = call(&d, &s, json!({}));
    assert_eq!(a.status, 410, "{}", text(&a.body));
    assert!(text(&a.body).contains("daemon_restart"));
    // A new session of the function works, from nothing.
    let fresh = open_ok(&d, "state");
    assert_eq!(call_ok(&d, &fresh, json!({}))["notes"], "");
    // Pausing the function ends its sessions and opens none until resumed.
    let paused = open_ok(&d, "state");
    let p = d.request("POST", "/v1/functions/state/pause", "", b"");
    assert_eq!(p.status, 200, "{}", text(&p.body));
    assert_eq!(session(&d, &paused)["end_reason"], "function_paused");
    let refused = open(&d, "state");
    assert_eq!(refused.status, 409, "{}", text(&refused.body));
    assert_eq!(refused.error_code(), "function_paused");
    let r = d.request("POST", "/v1/functions/state/resume", "", b"");
    assert_eq!(r.status, 200, "{}", text(&r.body));
    let fresh = open_ok(&d, "state");
    // Deleting the function ends its sessions.
    let del = d.request("DELETE", "/v1/functions/state", "", b"");
    assert_eq!(del.status, 200);
    assert_eq!(session(&d, &fresh)["end_reason"], "function_deleted");
    d.stop_and_check(&tag);
}

/// Hunts for a secret anywhere it can look: /tmp, and every process's
/// root, environment and command line it can see; can leave a process
/// running past its call.
const HUNTER: &str = r#"
import os, glob, subprocess, time
secret = None
def handler(event, context):
    global secret
    if "hide" in event:
        secret = event["hide"]
        with open("/tmp/secret", "w") as f:
            f.write(secret)
    found = []
    want = event.get("hunt", "").encode()
    for pattern in ["/tmp/*", "/proc/*/root/tmp/*", "/proc/*/environ", "/proc/*/cmdline"]:
        for p in glob.glob(pattern):
            try:
                with open(p, "rb") as f:
                    if want and want in f.read():
                        found.append(p)
            except OSError:
                pass
    if event.get("linger"):
        child = subprocess.Popen(["sleep", "300"])
        for _ in range(200):
            if open(f"/proc/{child.pid}/cmdline", "rb").read().startswith(b"sleep"):
                break
            time.sleep(0.01)
    sleepers = [p for p in glob.glob("/proc/[0-9]*/cmdline")
                if open(p, "rb").read().startswith(b"sleep")]
    return {"found": found, "mine": secret, "sleepers": len(sleepers)}
"#;

#[test]
fn a_session_cannot_reach_another_sessions_state() {
    if !prerequisites_met("a_session_cannot_reach_another_sessions_state") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "2"]);
    let tag = d.tag();
    d.deploy_files("hunter", &[("main.py", HUNTER)], 5000);
    d.deploy_files("other", &[("main.py", HUNTER)], 5000);
    let secret = "s3cr3t-5e55i0n-a";
    let a = open_ok(&d, "hunter");
    let r = call_ok(&d, &a, json!({"hide": secret, "hunt": secret}));
    assert_eq!(r["mine"], secret);
    let found = r["found"].as_array().unwrap();
    assert!(found.contains(&json!("/tmp/secret")), "the hunt works: {r}");
    // Another session of the same function, one of another function and
    // a plain invocation all look and find nothing.
    let b = open_ok(&d, "hunter");
    let c = open_ok(&d, "other");
    for s in [&b, &c] {
        let r = call_ok(&d, s, json!({"hunt": secret}));
        assert_eq!(r["found"], json!([]), "{r}");
        assert_eq!(r["mine"], Value::Null, "{r}");
    }
    let plain = d.invoke("hunter", &json!({"hunt": secret}).to_string());
    assert_eq!(
        plain.json()["result"]["found"],
        json!([]),
        "{}",
        text(&plain.body)
    );
    // What a call leaves running does not outlive it; the session's own
    // state does.
    let r = call_ok(&d, &b, json!({"linger": true}));
    assert_eq!(r["sleepers"], 1, "{r}");
    let r = call_ok(&d, &b, json!({"hunt": secret}));
    assert_eq!(r["sleepers"], 0, "{r}");
    assert_eq!(call_ok(&d, &a, json!({}))["mine"], secret);
    d.stop_and_check(&tag);
}
