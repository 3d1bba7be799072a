//! The dashboard (`emberd --http`): the HTTP API's token and loopback
//! rules, and the page itself in real headless Chromium: what it shows,
//! and its invoke button going through the API. The screenshot is left in
//! `target/test-artifacts/dashboard.png`.

use ember_integration::browser::{artifact_dir, Chromium, CHROMIUM};
use ember_integration::{free_port, http_tcp, prerequisites_met, tool_present, Daemon};
use serde_json::{json, Value};
use std::time::Duration;

const ECHO: &str =
    "def handler(event, context):\n    print('got', event)\n    return {'echo': event}\n";
const BOOM: &str =
    "def handler(event, context):\n    raise ValueError('no ' + str(event.get('what')))\n";

fn token(d: &Daemon) -> String {
    std::fs::read_to_string(d.state.join("dashboard-token"))
        .expect("dashboard-token in the state dir")
        .trim()
        .to_string()
}

#[test]
fn the_http_api_needs_the_token_and_matches_the_socket() {
    if !prerequisites_met("the_http_api_needs_the_token_and_matches_the_socket") {
        return;
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let mut d = Daemon::start(&["--pool-size", "1", "--http", &addr]);
    let tag = d.tag();
    d.deploy_files("echo", &[("main.py", ECHO)], 5000);
    let t = token(&d);
    let bearer = format!("Bearer {t}");
    // The log says where the page is and where its token is kept, never
    // the token (logs are read by more people than root).
    let log = d.log();
    assert!(log.contains(&format!("http://{addr}/")), "{log}");
    assert!(log.contains("dashboard-token"), "{log}");
    assert!(!log.contains(&t), "the token is in emberd's log");

    // No token, a wrong one, another scheme: 401 with the reason.
    for h in [
        vec![],
        vec![("Authorization", "Bearer 0000")],
        vec![("Authorization", t.as_str())],
    ] {
        let a = http_tcp(&addr, "GET", "/v1/functions", &h, b"").unwrap();
        assert_eq!(a.status, 401, "{h:?}");
        assert_eq!(a.error_code(), "unauthorized");
        assert!(a.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("dashboard-token"));
    }
    let a = http_tcp(&addr, "POST", "/v1/functions/echo/invoke", &[], b"{}").unwrap();
    assert_eq!(a.status, 401, "invoking needs the token too");

    // With it: the very answers of the socket.
    let auth = [("Authorization", bearer.as_str())];
    let over_http = http_tcp(&addr, "GET", "/v1/functions", &auth, b"").unwrap();
    assert_eq!(over_http.status, 200);
    assert_eq!(over_http.json(), d.get("/v1/functions").json());
    let inv = http_tcp(
        &addr,
        "POST",
        "/v1/functions/echo/invoke",
        &[auth[0], ("Content-Type", "application/json")],
        br#"{"over":"tcp"}"#,
    )
    .unwrap();
    assert_eq!(inv.status, 200, "{}", String::from_utf8_lossy(&inv.body));
    assert_eq!(inv.json()["result"], json!({"echo": {"over": "tcp"}}));
    // Records are written in the background: give the writer a moment.
    let waited = std::time::Instant::now();
    let mut logs = d.get("/v1/invocations?function=echo").json();
    while logs["invocations"][0]["id"] != inv.json()["id"] && waited.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        logs = d.get("/v1/invocations?function=echo").json();
    }
    assert_eq!(logs["invocations"][0]["id"], inv.json()["id"]);
    // Errors keep the API's shape.
    let missing = http_tcp(&addr, "POST", "/v1/functions/nope/invoke", &auth, b"{}").unwrap();
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error_code(), "function_not_found");

    // The page is public and locked down: its own script only, no frames.
    let page = http_tcp(&addr, "GET", "/", &[], b"").unwrap();
    assert_eq!(page.status, 200);
    let head = page.head.to_ascii_lowercase();
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(head.contains("content-security-policy: default-src 'none'; script-src 'self'"));
    assert!(head.contains("x-frame-options: deny"));
    let page = String::from_utf8(page.body).unwrap();
    assert!(page.contains("/dashboard.js"));
    let js = http_tcp(&addr, "GET", "/dashboard.js", &[], b"").unwrap();
    assert_eq!(js.status, 200);
    assert!(String::from_utf8_lossy(&js.body).contains("/v1/invocations"));

    // A new start has a new token; the old one is refused.
    d.stop();
    d.spawn();
    let t2 = token(&d);
    assert_ne!(t, t2);
    let a = http_tcp(&addr, "GET", "/v1/functions", &auth, b"").unwrap();
    assert_eq!(a.status, 401);
    d.stop_and_check(&tag);
}

#[test]
fn emberd_refuses_a_dashboard_on_a_non_loopback_address() {
    // Refused before anything is created: needs no root and no runtime.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(ember_integration::bin("emberd"))
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--http", "0.0.0.0:8080"])
        .output()
        .expect("run emberd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("0.0.0.0:8080") && err.contains("not a loopback address"),
        "{err}"
    );
    assert!(!dir.path().join("state").exists(), "nothing created");
}

/// Text of a table's body cells, row by row.
const TABLE_ROWS: &str = "(sel) => [...document.querySelectorAll(sel + ' tbody tr')]\
     .map(tr => [...tr.children].map(td => td.textContent))";

fn rows(c: &mut Chromium, table: &str) -> Vec<Vec<String>> {
    let v = c
        .eval(&format!("({TABLE_ROWS})('{table}')"))
        .expect("table rows");
    serde_json::from_value(v).expect("rows of strings")
}

/// Fill the invoke form (a JSON string literal is a JS one) and press the
/// button; then wait for the result box to show `expect`, and return it.
fn invoke_from_page(c: &mut Chromium, function: &str, event: &str, expect: &str) -> String {
    let lit = |s: &str| serde_json::to_string(s).unwrap();
    c.eval(&format!(
        "document.querySelector('#invoke-function').value = {};\
         document.querySelector('#invoke-event').value = {};\
         document.querySelector('#invoke-button').click(); true",
        lit(function),
        lit(event)
    ))
    .unwrap();
    let shown = c.wait_for(
        expect,
        &format!(
            "(t => t.includes({}) && t)(document.querySelector('#invoke-result').textContent)",
            lit(expect)
        ),
        Duration::from_secs(30),
    );
    shown.as_str().unwrap().to_string()
}

#[test]
fn the_dashboard_shows_the_daemon_and_invokes_in_headless_chromium() {
    let name = "the_dashboard_shows_the_daemon_and_invokes_in_headless_chromium";
    if !prerequisites_met(name) || !tool_present(name, CHROMIUM, "chromium") {
        return;
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let mut d = Daemon::start(&["--pool-size", "1", "--http", &addr]);
    let tag = d.tag();
    d.deploy_files("echo", &[("main.py", ECHO)], 5000);
    d.deploy_files("boom", &[("main.py", BOOM)], 5000);
    for i in 0..5 {
        assert_eq!(d.invoke("echo", &format!(r#"{{"i":{i}}}"#)).status, 200);
    }
    assert_eq!(d.invoke("boom", "{}").status, 502);

    let mut c = Chromium::launch(1400, 1200).expect("headless chromium");
    c.navigate(&format!("http://{addr}/#token={}", token(&d)))
        .unwrap();
    c.wait_for(
        "the daemon's status",
        "document.querySelector('#status').textContent === 'ok'",
        Duration::from_secs(30),
    );
    // The token left the address bar (and history) once read.
    assert_eq!(c.eval("location.hash").unwrap(), json!(""));

    let functions = rows(&mut c, "#functions");
    let names: Vec<&str> = functions.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(names, ["boom", "echo"], "{functions:?}");
    assert_eq!(functions[1][1], "python3");
    assert_eq!(functions[1][2], "fork");

    let pools = rows(&mut c, "#pools");
    let want = d.pool();
    let max = want["max"].as_u64().unwrap().to_string();
    assert!(
        pools
            .iter()
            .any(|r| r[0] == "python3" && r[1] == want["backend"].as_str().unwrap() && r[7] == max),
        "{pools:?} vs {want}"
    );

    // Percentiles per function, from the records.
    let pct = rows(&mut c, "#percentiles");
    let echo = pct.iter().find(|r| r[0] == "echo").expect("echo row");
    assert_eq!(echo[1], "5", "{pct:?}");
    assert_eq!(echo[2], "0");
    assert!(
        echo[3].ends_with(" ms") || echo[3].ends_with(" s"),
        "{echo:?}"
    );
    let boom = pct.iter().find(|r| r[0] == "boom").expect("boom row");
    assert_eq!((boom[1].as_str(), boom[2].as_str()), ("1", "1"));
    assert!(pct.iter().any(|r| r[0] == "all" && r[1] == "6"));
    // A point per invocation on the chart, and the p50 line.
    assert_eq!(
        c.eval("document.querySelectorAll('#chart circle.point').length")
            .unwrap(),
        json!(6)
    );
    assert_eq!(
        c.eval("document.querySelectorAll('#chart line.p50').length")
            .unwrap(),
        json!(1)
    );
    let recent = rows(&mut c, "#invocations");
    assert_eq!(recent.len(), 6);
    assert_eq!(
        (recent[0][1].as_str(), recent[0][3].as_str()),
        ("boom", "handler_error")
    );

    // The invoke button goes through the API.
    let shown = invoke_from_page(
        &mut c,
        "echo",
        r#"{"from": "chromium"}"#,
        r#""from": "chromium""#,
    );
    assert!(shown.contains("echo: ok"), "{shown}");
    assert!(
        shown.contains("got {'from': 'chromium'}"),
        "stdout shown: {shown}"
    );
    let records = d.get("/v1/invocations?function=echo").json();
    let last: &Value = records["invocations"].as_array().unwrap().last().unwrap();
    assert_eq!(records["invocations"].as_array().unwrap().len(), 6);
    assert!(last["stdout"].as_str().unwrap().contains("chromium"));
    c.wait_for(
        "the new invocation in the table",
        "document.querySelectorAll('#invocations tbody tr').length === 7",
        Duration::from_secs(10),
    );

    // An event that is not JSON is refused by the page, never sent.
    invoke_from_page(&mut c, "echo", "{oops", "not valid JSON");
    let n = d.get("/v1/invocations?function=echo").json()["invocations"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(n, 6, "a malformed event never reached emberd");

    // A failing handler: its error code and traceback.
    let shown = invoke_from_page(&mut c, "boom", r#"{"what": "luck"}"#, "handler_error");
    assert!(shown.contains("ValueError: no luck"), "{shown}");
    assert!(shown.contains("/fn/main.py"), "traceback shown: {shown}");

    let shot = artifact_dir().join("dashboard.png");
    let png = c.screenshot(&shot).expect("screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert!(png.len() > 20_000, "a real page, not a blank one");
    eprintln!("dashboard screenshot: {}", shot.display());
    drop(c);
    d.stop_and_check(&tag);
}

/// Keeps a count in a module global: state a session keeps between calls.
const COUNTER: &str =
    "n = 0\ndef handler(event, context):\n    global n\n    n += 1\n    return {'n': n}\n";

#[test]
fn the_dashboard_lists_open_sessions_and_closes_one_in_headless_chromium() {
    let name = "the_dashboard_lists_open_sessions_and_closes_one_in_headless_chromium";
    if !prerequisites_met(name) || !tool_present(name, CHROMIUM, "chromium") {
        return;
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let mut d = Daemon::start(&["--pool-size", "2", "--http", &addr]);
    let tag = d.tag();
    d.deploy_files("counter", &[("main.py", COUNTER)], 5000);
    let open = d.request(
        "POST",
        "/v1/functions/counter/sessions",
        "application/json",
        b"",
    );
    assert_eq!(open.status, 201, "{}", String::from_utf8_lossy(&open.body));
    let id = open.json()["id"].as_str().unwrap().to_string();
    for want in 1..=2 {
        let a = d.request(
            "POST",
            &format!("/v1/sessions/{id}/invoke"),
            "application/json",
            b"{}",
        );
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        assert_eq!(a.json()["result"], json!({ "n": want }));
    }

    let mut c = Chromium::launch(1400, 1400).expect("headless chromium");
    c.navigate(&format!("http://{addr}/#token={}", token(&d)))
        .unwrap();
    c.wait_for(
        "the open session",
        "document.querySelectorAll('#sessions tbody button.close-session').length === 1",
        Duration::from_secs(30),
    );
    let open_rows = rows(&mut c, "#sessions");
    assert_eq!(open_rows.len(), 1, "{open_rows:?}");
    let row = &open_rows[0];
    assert!(id.starts_with(row[0].trim_end_matches('…')), "{row:?}");
    assert_eq!(
        (row[1].as_str(), row[2].as_str(), row[3].as_str()),
        ("counter", "open", "2")
    );
    assert!(row[5].ends_with(" MiB"), "memory shown: {row:?}");
    assert!(row[6].starts_with("in "), "expiry shown: {row:?}");
    assert_eq!(
        c.eval("document.querySelector('#sessions tbody button.close-session').dataset.session")
            .unwrap(),
        json!(id)
    );

    // Close goes through the API: the session ends, its sandbox with it.
    c.eval("document.querySelector('#sessions tbody button.close-session').click(); true")
        .unwrap();
    c.wait_for(
        "the closed session among the ended ones",
        "[...document.querySelectorAll('#sessions-ended tbody tr')]\
         .some(tr => tr.children[5] && tr.children[5].textContent === 'closed')",
        Duration::from_secs(30),
    );
    let s = d.get(&format!("/v1/sessions/{id}")).json();
    assert_eq!(s["open"], json!(false), "{s}");
    assert_eq!(s["end_reason"], json!("closed"), "{s}");
    assert_eq!(rows(&mut c, "#sessions")[0][0], "no open sessions");
    let ended = rows(&mut c, "#sessions-ended");
    assert_eq!(
        (ended[0][1].as_str(), ended[0][2].as_str()),
        ("counter", "2"),
        "{ended:?}"
    );
    drop(c);
    d.stop_and_check(&tag);
}
