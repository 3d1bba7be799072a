//! End-to-end tests of the hot-swap slice on real runc: deploy, invoke,
//! isolation between invocations, errors, timeouts, concurrency, restart.

use ember_integration::{
    assert_no_leftovers, cgroup_leftovers, prerequisites_met, runc_ids, Daemon,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ECHO: &str = "def handler(event, context):\n    return {'event': event, 'function': context.function_name}\n";

#[test]
fn deploy_and_invoke_passes_the_event_through_intact() {
    if !prerequisites_met("deploy_and_invoke_passes_the_event_through_intact") {
        return;
    }
    let mut d = Daemon::start(&[]);
    let tag = d.tag();
    d.deploy_files("echo", &[("main.py", ECHO)], 5000);
    let event = json!({
        "text": "héllo wörld ✓ 日本語 🚀",
        "nested": {"list": [1, 2.5, null, true, {"deep": ["x", {"y": "z"}]}], "empty": {}},
        "quote": "a \"quoted\" \\ backslash\nnewline",
        "big": 12345678901234_i64,
    });
    let a = d.invoke("echo", &event.to_string());
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let v = a.json();
    assert_eq!(v["result"]["event"], event);
    assert_eq!(v["result"]["function"], "echo");
    assert_eq!(v["outcome"], "ok");
    assert!(v["start"] == "hot" || v["start"] == "cold");
    for phase in ["queue", "thaw", "inject", "run", "cleanup", "total"] {
        assert!(
            v["timings_us"][phase].is_u64(),
            "missing timing {phase}: {v}"
        );
    }
    assert!(v["timings_us"]["run"].as_u64().unwrap() > 0);
    d.stop_and_check(&tag);
}

#[test]
fn functions_sharing_a_sandbox_see_only_their_own_files_and_state() {
    if !prerequisites_met("functions_sharing_a_sandbox_see_only_their_own_files_and_state") {
        return;
    }
    // One sandbox only: every invocation goes through the same one.
    let mut d = Daemon::start(&["--pool-size", "1", "--max-sandboxes", "1"]);
    let tag = d.tag();
    let first = r#"import os
SEEN = []
def handler(event, context):
    SEEN.append(1)
    os.environ['EMBER_LEAK'] = 'first'
    with open('/tmp/secret.txt', 'w') as f:
        f.write('first was here')
    return {'fn': sorted(n for n in os.listdir('/fn') if n != '__pycache__'),
            'tmp': sorted(os.listdir('/tmp')), 'seen': len(SEEN), 'env': os.environ.get('EMBER_LEAK'),
            'precompiled': __spec__.cached is not None and os.path.exists(__spec__.cached)}
"#;
    let second = r#"import os, sys
def handler(event, context):
    return {'fn': sorted(n for n in os.listdir('/fn') if n != '__pycache__'),
            'tmp': sorted(os.listdir('/tmp')), 'env': os.environ.get('EMBER_LEAK'),
            'first_loaded': any(getattr(m, 'SEEN', None) is not None for m in list(sys.modules.values()))}
"#;
    d.deploy_files(
        "first",
        &[("main.py", first), ("first_only.txt", "1")],
        5000,
    );
    d.deploy_files(
        "second",
        &[("main.py", second), ("second_only.txt", "2")],
        5000,
    );
    d.wait_pool_idle(1);

    let a = d.invoke("first", "{}").json();
    assert_eq!(
        a["result"]["fn"],
        json!(["first_only.txt", "main.py"]),
        "{a}"
    );
    assert_eq!(a["result"]["tmp"], json!(["secret.txt"]));
    assert_eq!(a["result"]["seen"], 1);
    assert_eq!(
        a["result"]["precompiled"], true,
        "code was not precompiled at deploy"
    );
    let b = d.invoke("second", "{}").json();
    assert_eq!(
        b["sandbox"], a["sandbox"],
        "both must run in the one sandbox"
    );
    assert_eq!(
        b["result"]["fn"],
        json!(["main.py", "second_only.txt"]),
        "{b}"
    );
    assert_eq!(
        b["result"]["tmp"],
        json!([]),
        "/tmp from the first function leaked"
    );
    assert_eq!(b["result"]["env"], Value::Null, "environment leaked");
    assert_eq!(
        b["result"]["first_loaded"], false,
        "first function's module leaked"
    );
    // Module globals do not survive into the next invocation of the same
    // function either.
    let c = d.invoke("first", "{}").json();
    assert_eq!(c["sandbox"], a["sandbox"]);
    assert_eq!(c["result"]["seen"], 1, "module global survived: {c}");
    assert_eq!(c["result"]["tmp"], json!(["secret.txt"]));

    // Between invocations the sandbox holds no code and no scratch mount,
    // and it is frozen.
    d.wait_pool_idle(1);
    let sb = &d.get("/v1/sandboxes").json()["sandboxes"][0];
    let pid = sb["pid"].as_u64().unwrap();
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    for line in mounts.lines() {
        let point = line.split(' ').nth(4).unwrap();
        assert!(
            !point.starts_with("/fn") && !point.starts_with("/tmp"),
            "left mounted: {line}"
        );
    }
    let id = sb["id"].as_str().unwrap();
    let state = std::path::Path::new("/sys/fs/cgroup/freezer/ember")
        .join(&tag)
        .join(id)
        .join("freezer.state");
    if state.exists() {
        let t = Instant::now();
        while std::fs::read_to_string(&state).unwrap().trim() != "FROZEN" {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "idle sandbox not frozen"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    d.stop_and_check(&tag);
}

#[test]
fn a_raising_handler_reports_type_message_and_traceback() {
    if !prerequisites_met("a_raising_handler_reports_type_message_and_traceback") {
        return;
    }
    let mut d = Daemon::start(&[]);
    let tag = d.tag();
    let code = "def helper(x):\n    raise ValueError('bad input: %s' % x)\n\ndef handler(event, context):\n    print('about to fail')\n    return helper(event.get('x'))\n";
    d.deploy_files("boom", &[("main.py", code)], 5000);
    d.deploy_files("echo", &[("main.py", ECHO)], 5000);
    let a = d.invoke("boom", r#"{"x": 42}"#);
    assert_eq!(a.status, 502);
    let v = a.json();
    assert_eq!(v["error"]["code"], "handler_error");
    assert_eq!(v["error"]["type"], "ValueError");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bad input: 42"),
        "{v}"
    );
    let tb = v["error"]["traceback"].as_str().unwrap();
    assert!(
        tb.contains("Traceback") && tb.contains("in helper") && tb.contains("/fn/main.py"),
        "{tb}"
    );
    assert!(
        !tb.contains("run_worker") && !tb.contains("importlib"),
        "ember's own frames leak into the traceback: {tb}"
    );
    assert_eq!(v["invocation"]["stdout"], "about to fail\n");
    // The sandbox and daemon carry on.
    let ok = d.invoke("boom", r#"{}"#);
    assert_eq!(ok.status, 502);
    let ok = d.invoke("echo", r#"{"after": "error"}"#);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["result"]["event"]["after"], "error");

    // A handler that cannot even be found is an error too, with a reason.
    d.deploy_files("nohandler", &[("main.py", "x = 1\n")], 5000);
    let v = d.invoke("nohandler", "{}").json();
    assert_eq!(v["error"]["code"], "handler_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("main.handler"),
        "{v}"
    );
    d.stop_and_check(&tag);
}

#[test]
fn a_handler_past_its_timeout_is_killed_and_the_pool_refilled() {
    if !prerequisites_met("a_handler_past_its_timeout_is_killed_and_the_pool_refilled") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "2"]);
    let tag = d.tag();
    d.deploy_files(
        "sleepy",
        &[(
            "main.py",
            "import time\ndef handler(e, c):\n    time.sleep(30)\n    return 1\n",
        )],
        500,
    );
    d.deploy_files("echo", &[("main.py", ECHO)], 5000);
    d.wait_pool_idle(2);
    let t = Instant::now();
    let a = d.invoke("sleepy", "{}");
    let took = t.elapsed();
    assert_eq!(a.status, 504, "{}", String::from_utf8_lossy(&a.body));
    let v = a.json();
    assert_eq!(v["error"]["code"], "timeout");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("timed out"));
    assert!(
        took < Duration::from_secs(20),
        "timeout not enforced: took {took:?}"
    );
    let victim = v["invocation"]["sandbox"].as_str().unwrap().to_string();
    // The sandbox that ran it is destroyed and replaced.
    d.wait_pool_idle(2);
    let ids = d.sandbox_ids();
    assert!(
        !ids.contains(&victim),
        "timed-out sandbox still pooled: {ids:?}"
    );
    // Destruction runs in the background; once counted, the container is gone.
    let t = Instant::now();
    while d.pool()["destroyed_total"].as_u64().unwrap() < 1 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "timed-out sandbox never destroyed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = runc_ids(&victim);
    assert!(
        !left.contains(&victim),
        "timed-out container {victim} still exists: {left:?}"
    );
    let ok = d.invoke("echo", r#"{"still": "serving"}"#);
    assert_eq!(ok.status, 200);
    d.stop_and_check(&tag);
}

#[test]
fn twenty_concurrent_invocations_of_two_functions_all_return_their_own_result() {
    if !prerequisites_met(
        "twenty_concurrent_invocations_of_two_functions_all_return_their_own_result",
    ) {
        return;
    }
    let d = Daemon::start(&[
        "--pool-size",
        "2",
        "--max-sandboxes",
        "6",
        "--idle-trim-ms",
        "300",
    ]);
    let tag = d.tag();
    d.deploy_files(
        "double",
        &[(
            "main.py",
            "def handler(e, c):\n    return {'fn': 'double', 'v': e['n'] * 2}\n",
        )],
        10000,
    );
    d.deploy_files(
        "square",
        &[(
            "main.py",
            "def handler(e, c):\n    return {'fn': 'square', 'v': e['n'] ** 2}\n",
        )],
        10000,
    );
    let d = std::sync::Arc::new(d);
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let d = d.clone();
            std::thread::spawn(move || {
                let (name, want) = if i % 2 == 0 {
                    ("double", i * 2)
                } else {
                    ("square", i * i)
                };
                let a = d.invoke(name, &json!({ "n": i }).to_string());
                assert_eq!(
                    a.status,
                    200,
                    "invocation {i}: {}",
                    String::from_utf8_lossy(&a.body)
                );
                let v = a.json();
                assert_eq!(
                    v["result"],
                    json!({ "fn": name, "v": want }),
                    "invocation {i}"
                );
                v["start"].as_str().unwrap().to_string()
            })
        })
        .collect();
    let starts: Vec<String> = handles
        .into_iter()
        .map(|h| h.join().expect("invocation thread"))
        .collect();
    assert_eq!(starts.len(), 20);
    let p = d.pool();
    assert!(
        p["hot_starts_total"].as_u64().unwrap()
            + p["cold_starts_total"].as_u64().unwrap()
            + p["warm_starts_total"].as_u64().unwrap()
            >= 20
    );
    // Generic sandboxes made for the burst are trimmed back to the target
    // (those bound to the functions' zygotes stay until they idle out).
    let generic_idle =
        |p: &Value| p["idle"].as_u64().unwrap_or(0) - p["bound"].as_u64().unwrap_or(0);
    let t = Instant::now();
    while generic_idle(&d.pool()) != 2 || d.pool()["busy"] != 0 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "pool never shrank back: {}",
            d.pool()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut d = std::sync::Arc::try_unwrap(d).ok().expect("threads joined");
    d.stop_and_check(&tag);
}

#[test]
fn bad_requests_get_clear_errors_and_the_daemon_keeps_serving() {
    if !prerequisites_met("bad_requests_get_clear_errors_and_the_daemon_keeps_serving") {
        return;
    }
    let mut d = Daemon::start(&["--max-event-bytes", "1024", "--pool-size", "1"]);
    let tag = d.tag();
    d.deploy_files("echo", &[("main.py", ECHO)], 5000);

    let a = d.invoke("echo", r#"{"unterminated": "#);
    assert_eq!(a.status, 400);
    assert_eq!(a.error_code(), "invalid_event");
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));

    let a = d.invoke("no-such-function", "{}");
    assert_eq!(a.status, 404);
    assert_eq!(a.error_code(), "function_not_found");
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no-such-function"));

    let big = format!(r#"{{"blob": "{}"}}"#, "x".repeat(4096));
    let a = d.invoke("echo", &big);
    assert_eq!(a.status, 413);
    assert_eq!(a.error_code(), "payload_too_large");

    let a = d.request("PUT", "/v1/functions/bad", "application/json", b"{not json");
    assert_eq!(a.status, 400);
    assert_eq!(a.error_code(), "invalid_json");
    let a = d.request(
        "PUT",
        "/v1/functions/bad",
        "application/json",
        br#"{"code": {"path": "/tmp"}, "handler": "no_dot"}"#,
    );
    assert_eq!(a.status, 400);
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no_dot"));
    let a = d.request(
        "PUT",
        "/v1/functions/bad",
        "application/json",
        br#"{"code": {"path": "/tmp"}, "runtime": "cobol"}"#,
    );
    assert_eq!(a.status, 400);
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("cobol"));
    let a = d.request("PUT", "/v1/functions/bad%2Fname", "application/gzip", b"");
    assert_eq!(a.status, 400);
    let a = d.request(
        "PUT",
        "/v1/functions/bad",
        "application/gzip",
        b"this is not gzip",
    );
    assert_eq!(a.status, 400);
    assert_eq!(a.error_code(), "invalid_code");
    let a = d.request("PUT", "/v1/functions/bad", "text/plain", b"x");
    assert_eq!(a.status, 415);
    let a = d.request("GET", "/v1/nothing-here", "application/json", b"");
    assert_eq!(a.status, 404);
    assert_eq!(a.error_code(), "not_found");
    let a = d.request("DELETE", "/v1/pools", "application/json", b"");
    assert_eq!(a.status, 405);

    // Still serving, and nothing was registered by the failed deploys.
    let a = d.invoke("echo", r#"{"ok": true}"#);
    assert_eq!(a.status, 200);
    let names: Vec<Value> = d.get("/v1/functions").json()["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("echo")]);
    d.stop_and_check(&tag);
}

#[test]
fn a_restarted_daemon_keeps_its_functions_and_leaves_nothing_behind() {
    if !prerequisites_met("a_restarted_daemon_keeps_its_functions_and_leaves_nothing_behind") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "2"]);
    let tag = d.tag();
    d.deploy_files("echo", &[("main.py", ECHO)], 5000);
    assert_eq!(d.invoke("echo", r#"{"run": 1}"#).status, 200);
    d.wait_pool_idle(2);
    // Two generic sandboxes, and the one bound to echo's zygote.
    let old = d.sandbox_ids();
    assert!(old.len() >= 2, "{old:?}");

    // A crash leaves frozen containers and their cgroups behind...
    d.crash();
    let left = runc_ids(&format!("ember-{tag}-"));
    assert_eq!(
        left.len(),
        old.len(),
        "expected the crashed daemon's sandboxes: {left:?}"
    );
    assert!(!cgroup_leftovers(&tag).is_empty());

    // ...which the next start removes, and the functions are still there.
    d.spawn();
    let a = d.invoke("echo", r#"{"run": 2}"#);
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.json()["result"]["event"]["run"], 2);
    let now = runc_ids(&format!("ember-{tag}-"));
    for id in &old {
        assert!(
            !now.contains(id),
            "old sandbox {id} survived the restart: {now:?}"
        );
    }
    for id in &old {
        for cg in cgroup_leftovers(&tag) {
            assert!(
                !cg.join(id).exists(),
                "old cgroup {} survived",
                cg.join(id).display()
            );
        }
    }

    // A clean stop and start keeps the functions too.
    d.stop();
    assert_no_leftovers(&tag, &d.state);
    d.spawn();
    let a = d.invoke("echo", r#"{"run": 3}"#);
    assert_eq!(a.status, 200);
    assert_eq!(d.get("/v1/functions/echo").json()["name"], "echo");
    d.stop_and_check(&tag);
}

#[test]
fn an_empty_pool_reports_a_cold_start_then_serves_hot() {
    if !prerequisites_met("an_empty_pool_reports_a_cold_start_then_serves_hot") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "0", "--idle-trim-ms", "60000"]);
    let tag = d.tag();
    // The generic path: no function zygote binds the cold sandbox.
    d.deploy_files_with("echo", &[("main.py", ECHO)], json!({ "zygote": false }));
    assert_eq!(d.pool()["idle"], 0);
    let v = d.invoke("echo", r#"{"n": 1}"#).json();
    assert_eq!(v["start"], "cold", "{v}");
    assert!(v["timings_us"]["create"].as_u64().unwrap() > 0);
    assert_eq!(v["result"]["event"]["n"], 1);
    d.wait_pool_idle(1);
    let v = d.invoke("echo", r#"{"n": 2}"#).json();
    assert_eq!(v["start"], "hot", "{v}");
    assert_eq!(v["timings_us"]["create"], 0);
    let p = d.pool();
    assert_eq!(
        (
            p["cold_starts_total"].as_u64(),
            p["hot_starts_total"].as_u64()
        ),
        (Some(1), Some(1))
    );
    d.stop_and_check(&tag);
}
