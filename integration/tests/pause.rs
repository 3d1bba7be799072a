//! Pausing a function: its invocations are refused at once with `409
//! function_paused` (no record, no id, counted as a refusal), the one
//! running when the pause came finishes, the sandboxes bound to it are
//! released, and the pause survives a redeploy and an emberd restart
//! until it is resumed. Through the API, the CLI and the dashboard.

use ember_integration::browser::{Chromium, CHROMIUM};
use ember_integration::{
    free_port, http_tcp, prerequisites_met, text, tool_present, wait_until, Answer, Daemon, SLEEPER,
};
use serde_json::{json, Value};
use std::time::Duration;

const ECHO: &str = "def handler(event, context):\n    return {'echo': event}\n";

fn post(d: &Daemon, path: &str) -> Answer {
    d.request("POST", path, "application/json", b"")
}

fn pause(d: &Daemon, name: &str) -> Answer {
    post(d, &format!("/v1/functions/{name}/pause"))
}

fn resume(d: &Daemon, name: &str) -> Answer {
    post(d, &format!("/v1/functions/{name}/resume"))
}

/// `a` is the refusal of a paused function: 409, no invocation id.
fn assert_paused_refusal(a: &Answer, name: &str) {
    assert_eq!(a.status, 409, "{}", text(&a.body));
    assert_eq!(a.error_code(), "function_paused");
    let e = &a.json()["error"];
    assert!(e.get("invocation_id").is_none(), "a refusal has no id: {e}");
    assert!(a.json().get("invocation").is_none(), "nothing ran: {e}");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains(name) && msg.contains("resume"), "{msg}");
}

/// The sandboxes bound to `function`.
fn bound_to(d: &Daemon, function: &str) -> Vec<Value> {
    d.get("/v1/sandboxes").json()["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["bound_to"] == function)
        .cloned()
        .collect()
}

/// The invocation records of `function`.
fn records(d: &Daemon, function: &str) -> Vec<Value> {
    d.get(&format!("/v1/invocations?function={function}"))
        .json()["invocations"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn a_paused_function_refuses_lets_running_finish_releases_its_sandboxes_and_stays_paused() {
    if !prerequisites_met(
        "a_paused_function_refuses_lets_running_finish_releases_its_sandboxes_and_stays_paused",
    ) {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "2"]);
    let tag = d.tag();
    d.deploy_files("slow", &[("main.py", SLEEPER)], 10_000);
    d.deploy_files_with(
        "spec",
        &[("main.py", ECHO)],
        json!({ "mode": "specialized", "timeout_ms": 5000 }),
    );
    let fresh = d.get("/v1/functions/slow").json();
    assert_eq!(fresh["paused"], false, "{fresh}");
    assert!(fresh.get("paused_at").is_none(), "{fresh}");

    // A specialized runner bound to `spec`.
    assert_eq!(d.invoke("spec", "{}").status, 200);
    wait_until("spec's runner idle and bound", || {
        bound_to(&d, "spec").iter().any(|s| s["state"] == "idle")
    });

    // An invocation running when the pause comes finishes.
    let running = d.invoke_in_background("slow", r#"{"s": 1}"#);
    d.wait_busy("slow");
    let p = pause(&d, "slow");
    assert_eq!(p.status, 200, "{}", text(&p.body));
    let p = p.json();
    assert_eq!(
        (p["name"].as_str(), p["paused"].as_bool()),
        (Some("slow"), Some(true))
    );
    let since = p["paused_at"].as_i64().expect("paused_at");
    // Idempotent: pausing again keeps the first time.
    let again = pause(&d, "slow");
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["paused_at"].as_i64(), Some(since));

    let refused = d.invoke("slow", r#"{"s": 0}"#);
    assert_paused_refusal(&refused, "slow");
    let finished = running
        .join()
        .unwrap()
        .expect("the running invocation's answer");
    assert_eq!(finished.status, 200, "{}", text(&finished.body));
    assert_eq!(finished.json()["result"], json!(1));

    // Only the invocation that ran has a record; the refusal is counted.
    let ran = finished.json()["id"].as_str().unwrap().to_string();
    let recs = records(&d, "slow");
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["id"], ran.as_str());
    assert_eq!(recs[0]["outcome"], "ok");
    assert_eq!(
        d.metric("ember_invocations_refused_total{function=\"slow\",code=\"function_paused\"}"),
        Some(1)
    );
    assert_eq!(
        d.metric("ember_function_paused{function=\"slow\"}"),
        Some(1)
    );
    assert_eq!(
        d.metric("ember_function_paused{function=\"spec\"}"),
        Some(0)
    );

    // Pausing `spec` releases its runner.
    assert_eq!(bound_to(&d, "spec").len(), 1);
    assert_eq!(pause(&d, "spec").status, 200);
    wait_until("spec's runner released", || bound_to(&d, "spec").is_empty());
    assert_paused_refusal(&d.invoke("spec", "{}"), "spec");

    // A redeploy keeps the pause.
    let re = d.deploy_files("slow", &[("main.py", SLEEPER)], 5000);
    assert_eq!(re.json()["paused"], true, "{}", text(&re.body));
    assert_eq!(re.json()["timeout_ms"], 5000);

    // So does a restart.
    d.stop();
    d.spawn();
    let listed = d.get("/v1/functions").json();
    let paused: Vec<(&str, bool)> = listed["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap(), f["paused"].as_bool().unwrap()))
        .collect();
    assert_eq!(paused, [("slow", true), ("spec", true)]);
    assert_eq!(
        d.get("/v1/functions/slow").json()["paused_at"].as_i64(),
        Some(since)
    );
    assert_paused_refusal(&d.invoke("slow", r#"{"s": 0}"#), "slow");

    // Resume: it runs again; resuming twice is fine.
    let r = resume(&d, "slow");
    assert_eq!(r.status, 200, "{}", text(&r.body));
    assert_eq!(r.json()["paused"], false);
    assert!(r.json().get("paused_at").is_none());
    assert_eq!(resume(&d, "slow").status, 200);
    let ok = d.invoke("slow", r#"{"s": 0}"#);
    assert_eq!(ok.status, 200, "{}", text(&ok.body));
    assert_eq!(
        d.metric("ember_function_paused{function=\"slow\"}"),
        Some(0)
    );

    // Unknown functions: 404 both ways.
    for a in [pause(&d, "nope"), resume(&d, "nope")] {
        assert_eq!(a.status, 404);
        assert_eq!(a.error_code(), "function_not_found");
    }
    // A paused function is deleted like any other.
    let del = d.request("DELETE", "/v1/functions/spec", "application/json", b"");
    assert_eq!(del.status, 200, "{}", text(&del.body));
    assert_eq!(pause(&d, "spec").status, 404);
    d.stop_and_check(&tag);
}

#[test]
fn ember_pause_and_resume_from_the_cli() {
    if !prerequisites_met("ember_pause_and_resume_from_the_cli") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "1"]);
    let tag = d.tag();
    d.deploy_files("echo", &[("main.py", ECHO)], 5000);

    let out = d.cli(&["pause", "echo"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("echo is paused"),
        "{}",
        text(&out.stderr)
    );
    let out = d.cli(&["functions"]);
    let list = text(&out.stdout);
    let head = list.lines().next().unwrap();
    let row = list
        .lines()
        .find(|l| l.starts_with("echo "))
        .expect("echo row");
    assert!(head.ends_with("STATE") && row.ends_with("paused"), "{list}");

    let out = d.cli(&["invoke", "echo"]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(
        err.contains("paused") && err.contains("ember resume echo"),
        "{err}"
    );

    let out = d.cli(&["resume", "echo"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("echo is active"));
    let out = d.cli(&["functions"]);
    let list = text(&out.stdout);
    let row = list
        .lines()
        .find(|l| l.starts_with("echo "))
        .expect("echo row");
    assert!(row.ends_with("active"), "{list}");
    let out = d.cli(&["invoke", "echo", "--data", r#"{"a":1}"#]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = d.cli(&["pause", "nope"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not deployed"),
        "{}",
        text(&out.stderr)
    );
    d.stop_and_check(&tag);
}

#[test]
fn the_dashboards_pause_button_pauses_and_resumes() {
    let name = "the_dashboards_pause_button_pauses_and_resumes";
    if !prerequisites_met(name) {
        return;
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let mut d = Daemon::start(&["--pool-size", "1", "--http", &addr]);
    let tag = d.tag();
    d.deploy_files("echo", &[("main.py", ECHO)], 5000);
    let token = std::fs::read_to_string(d.state.join("dashboard-token"))
        .unwrap()
        .trim()
        .to_string();

    // Over HTTP, pausing needs the token like every other request.
    let a = http_tcp(&addr, "POST", "/v1/functions/echo/pause", &[], b"").unwrap();
    assert_eq!(a.status, 401);
    assert_eq!(d.get("/v1/functions/echo").json()["paused"], false);

    if tool_present(name, CHROMIUM, "chromium") {
        let mut c = Chromium::launch(1400, 900).expect("headless chromium");
        c.navigate(&format!("http://{addr}/#token={token}"))
            .unwrap();
        let state = "(() => { const r = [...document.querySelectorAll('#functions tbody tr')]\
                     .find(tr => tr.children[0].textContent === 'echo');\
                     return r && r.children[8].textContent + '/' + r.children[9].textContent; })()";
        let shown = |want: &str| format!("{state} === '{want}'");
        c.wait_for(
            "echo active",
            &shown("active/Pause"),
            Duration::from_secs(30),
        );
        let click =
            "document.querySelector('#functions button[data-function=\"echo\"]').click(); true";
        c.eval(click).unwrap();
        c.wait_for(
            "echo paused",
            &shown("paused/Resume"),
            Duration::from_secs(10),
        );
        assert_eq!(d.get("/v1/functions/echo").json()["paused"], true);
        assert_paused_refusal(&d.invoke("echo", "{}"), "echo");
        c.eval(click).unwrap();
        c.wait_for(
            "echo active again",
            &shown("active/Pause"),
            Duration::from_secs(10),
        );
        assert_eq!(d.get("/v1/functions/echo").json()["paused"], false);
    } else {
        // The page's requests, without a browser.
        let bearer = format!("Bearer {token}");
        let auth = [("Authorization", bearer.as_str())];
        let a = http_tcp(&addr, "POST", "/v1/functions/echo/pause", &auth, b"").unwrap();
        assert_eq!((a.status, a.json()["paused"].clone()), (200, json!(true)));
        let a = http_tcp(&addr, "POST", "/v1/functions/echo/resume", &auth, b"").unwrap();
        assert_eq!((a.status, a.json()["paused"].clone()), (200, json!(false)));
    }
    assert_eq!(d.invoke("echo", "{}").status, 200);
    d.stop_and_check(&tag);
}
