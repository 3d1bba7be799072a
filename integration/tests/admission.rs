//! Admission control: past a pool's or a function's queue bound an
//! invocation is refused at once with `429 overloaded` and a computed
//! `Retry-After`, takes no record and gets no id; the rest are served.
//! `ember invoke` waits and retries a 429.

use ember_integration::{prerequisites_met, text, Answer, Daemon};
use serde_json::json;

const SLOW: &str = "import time\ndef handler(e, c):\n    time.sleep(1)\n    return 1\n";

/// The `Retry-After` header of `a`, in seconds.
fn retry_after(a: &Answer) -> Option<u64> {
    a.head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("retry-after")
            .then(|| value.trim().parse().ok())?
    })
}

/// `a` is a refusal by admission control: 429, `overloaded`, a
/// Retry-After of at least 1 s, no invocation id.
fn assert_refused(a: &Answer) {
    assert_eq!(a.status, 429, "{}", text(&a.body));
    assert_eq!(a.error_code(), "overloaded");
    let after = retry_after(a).unwrap_or_else(|| panic!("no Retry-After: {}", a.head));
    assert!(after >= 1, "{}", a.head);
    assert!(
        a.json()["error"].get("invocation_id").is_none(),
        "a refusal is named by no id: {}",
        text(&a.body)
    );
}

#[test]
fn a_full_pool_queue_refuses_at_once_with_retry_after() {
    if !prerequisites_met("a_full_pool_queue_refuses_at_once_with_retry_after") {
        return;
    }
    let mut d = Daemon::start(&[
        "--max-sandboxes",
        "1",
        "--pool-size",
        "1",
        "--pool-max-warm",
        "1",
        "--max-queue",
        "2",
    ]);
    let tag = d.tag();
    d.wait_pool_idle(1);
    d.deploy_files("slow", &[("main.py", SLOW)], 5000);
    let p = d.pool();
    assert_eq!(
        (p["max"].clone(), p["max_queue"].clone()),
        (json!(1), json!(2)),
        "{p}"
    );

    // 1 runs, 2 wait, the other 5 are refused at once.
    let calls: Vec<_> = (0..8)
        .map(|_| d.invoke_in_background("slow", "{}"))
        .collect();
    let answers: Vec<Answer> = calls
        .into_iter()
        .map(|h| h.join().unwrap().expect("an answer"))
        .collect();
    let (ok, refused): (Vec<&Answer>, Vec<&Answer>) = answers.iter().partition(|a| a.status == 200);
    assert!(
        ok.len() >= 3,
        "1 running and 2 queued are served: {answers:?}"
    );
    assert!(!refused.is_empty(), "some are refused: {answers:?}");
    for a in &refused {
        assert_refused(a);
    }

    let n = refused.len() as u64;
    assert_eq!(
        d.metric("ember_invocations_refused_total{function=\"slow\",code=\"overloaded\"}"),
        Some(n)
    );
    assert_eq!(d.pool()["refused_total"], json!(n));
    assert!(d.metric("ember_pool_queued{runtime=\"python3\"").is_some());
    // The refused took no record: the function's logs hold the served only.
    let logs = d.get("/v1/functions/slow/logs?output=false").json();
    let outcomes: Vec<&str> = logs["invocations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["outcome"].as_str())
        .collect();
    assert!(
        outcomes.iter().all(|o| *o == "ok") && outcomes.len() == ok.len(),
        "{logs}"
    );
    d.stop_and_check(&tag);
}

#[test]
fn a_functions_own_concurrency_limit_refuses_and_ember_invoke_retries() {
    if !prerequisites_met("a_functions_own_concurrency_limit_refuses_and_ember_invoke_retries") {
        return;
    }
    let mut d = Daemon::start(&[]);
    let tag = d.tag();
    d.wait_pool_idle(1);
    let long = "import time\ndef handler(e, c):\n    time.sleep(2)\n    return 1\n";
    d.deploy_files_with(
        "one",
        &[("main.py", long)],
        json!({"timeout_ms": 10000, "max_concurrency": 1, "max_queue": 0}),
    );
    let info = d.get("/v1/functions/one").json();
    assert_eq!(
        (info["max_concurrency"].clone(), info["max_queue"].clone()),
        (json!(1), json!(0)),
        "{info}"
    );
    // max_queue without max_concurrency is refused, naming both.
    let bad = d.put_function(
        "two",
        &json!({"max_queue": 3}),
        &d.dir.path().join("src-one"),
    );
    assert_eq!(bad.status, 400, "{}", text(&bad.body));
    assert!(text(&bad.body).contains("max_concurrency"));

    let first = d.invoke_in_background("one", "{}");
    d.wait_busy("one");
    // The second concurrent call finds no slot and no queue.
    assert_refused(&d.invoke("one", "{}"));
    // `ember invoke --retries 0` fails with the refusal...
    let out = d.cli(&["invoke", "one", "--retries", "0"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("overloaded"),
        "{}",
        text(&out.stderr)
    );
    // ...by default it waits Retry-After and tries again, saying so.
    let out = d.cli(&["invoke", "one"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("retrying in"), "{stderr}");
    assert_eq!(text(&out.stdout).trim(), "1");
    assert_eq!(first.join().unwrap().expect("an answer").status, 200);
    assert!(
        d.metric("ember_invocations_refused_total{function=\"one\",code=\"overloaded\"}")
            .unwrap_or(0)
            >= 3
    );
    d.stop_and_check(&tag);
}
