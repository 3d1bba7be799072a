//! Invocation records, `ember logs`, `/metrics` (parsed with a real
//! Prometheus text parser), and invocations cut off by a crash recorded as
//! `interrupted`, with the old run's sandboxes, mounts and cgroups removed.

use ember_integration::{cgroup_leftovers, prerequisites_met, runc_ids, text, Daemon};
use serde_json::json;

#[test]
fn invocations_are_recorded_and_shown_as_logs_and_metrics() {
    if !prerequisites_met("invocations_are_recorded_and_shown_as_logs_and_metrics") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "1"]);
    let tag = d.tag();
    d.wait_pool_idle(1);
    let rec = d
        .deploy_files(
            "talker",
            &[(
                "main.py",
                "def handler(e, c):\n    print('said', e['n'])\n    if e['n'] == 2:\n        raise ValueError('two')\n    return e['n']\n",
            )],
            5000,
        )
        .json();
    for n in 0..3 {
        d.invoke("talker", &format!(r#"{{"n": {n}}}"#));
    }
    // Read your writes: answered invocations show at once, with their
    // outcome, though the history writer works in the background.
    let v = d.get("/v1/functions/talker/logs").json();
    let logs = v["invocations"].as_array().unwrap().clone();
    assert_eq!(logs.len(), 3, "{v}");
    let outcomes: Vec<&str> = logs
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["ok", "ok", "handler_error"]);
    assert_eq!(logs[1]["stdout"], "said 1\n");
    assert_eq!(logs[1]["result_bytes"], 1);
    assert_eq!(logs[2]["error"], "ValueError: two");
    for r in &logs {
        assert_eq!(r["digest"], rec["digest"], "the version that ran");
        assert_eq!(r["backend"], ember_integration::backend());
        assert!(r["sandbox"].as_str().unwrap().starts_with("ember-"), "{r}");
        assert!(r["timings_us"]["total"].as_u64().unwrap() > 0, "{r}");
        assert!(r["finished_at"].as_i64() >= r["started_at"].as_i64());
    }
    let all = d.get("/v1/invocations?function=talker&limit=2").json();
    assert_eq!(all["invocations"].as_array().unwrap().len(), 2, "limit");
    // Summaries without the output, sizes kept.
    let bare = d.get("/v1/invocations?function=talker&output=false").json();
    let bare = bare["invocations"].as_array().unwrap();
    assert_eq!(bare.len(), logs.len());
    for (b, r) in bare.iter().zip(&logs) {
        assert!(
            b.get("stdout").is_none() && b.get("stderr").is_none(),
            "{b}"
        );
        assert_eq!(b["stdout_bytes"], r["stdout_bytes"]);
        assert_eq!(b["id"], r["id"]);
    }
    assert!(logs.iter().any(|r| r["stdout_bytes"].as_u64() > Some(0)));
    assert_eq!(d.get("/v1/invocations?output=maybe").status, 400);
    let future = crate_now_ms() + 60_000;
    let none = d.get(&format!("/v1/invocations?since={future}")).json();
    assert_eq!(none["invocations"], json!([]));
    assert_eq!(d.get("/v1/functions/never/logs").status, 404);
    assert_eq!(d.get("/v1/invocations?limit=0").status, 400);
    assert_eq!(d.get("/v1/invocations?bogus=1").status, 400);

    // The CLI.
    let out = d.cli(&["logs", "talker"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("stdout: said 0")
            && shown.contains("handler_error")
            && shown.contains("ValueError: two"),
        "{shown}"
    );
    let out = d.cli(&["logs", "talker", "--since", "1h"]);
    assert_eq!(text(&out.stdout).matches("=== ").count(), 3);
    assert!(!d
        .cli(&["logs", "talker", "--since", "soon"])
        .status
        .success());

    // Metrics, parsed as Prometheus would.
    let a = d.get("/metrics");
    assert_eq!(a.status, 200);
    let body = text(&a.body);
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                prometheus_parse::Value::Histogram(h) => {
                    h.iter().map(|b| b.count).fold(0.0, f64::max)
                }
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{body}"))
    };
    assert_eq!(
        value(
            "ember_invocations_total",
            &[("function", "talker"), ("outcome", "ok")]
        ),
        2.0
    );
    assert_eq!(
        value(
            "ember_invocations_total",
            &[("function", "talker"), ("outcome", "handler_error")]
        ),
        1.0
    );
    assert_eq!(
        value("ember_invocation_phase_seconds", &[("phase", "run")]),
        3.0
    );
    assert!(value("ember_starts_total", &[("start", "hot")]) >= 1.0);
    assert!(
        value(
            "ember_pool_sandboxes",
            &[("runtime", "python3"), ("state", "target")]
        ) >= 1.0
    );
    assert!(value("ember_sandboxes_created_total", &[("runtime", "python3")]) >= 1.0);
    d.stop_and_check(&tag);
}

fn crate_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn an_invocation_cut_off_by_a_crash_is_recorded_as_interrupted() {
    if !prerequisites_met("an_invocation_cut_off_by_a_crash_is_recorded_as_interrupted") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "1"]);
    let tag = d.tag();
    d.deploy_files(
        "slow",
        &[(
            "main.py",
            "import time\ndef handler(e, c):\n    time.sleep(30)\n",
        )],
        60_000,
    );
    let caller = d.invoke_in_background("slow", "{}");
    // Killed as soon as its sandbox is busy, before its record's row may
    // be written: the journal has it from before it took the sandbox.
    d.wait_busy("slow");
    let old = d.sandbox_ids();
    d.crash();
    // The caller lost its daemon mid-invocation; what it got is moot.
    let _ = caller.join();
    // The busy sandbox is still there (its code mounted in its namespace;
    // on runsc its /tmp also on the host).
    let left = runc_ids(&format!("ember-{tag}-"));
    assert!(old.iter().all(|id| left.contains(id)), "{old:?} {left:?}");
    let mounted = |id: &str| {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.contains(id))
    };
    d.spawn();
    // Every container, mount and cgroup of the old run is gone, and the
    // pool refilled with new sandboxes.
    let now = runc_ids(&format!("ember-{tag}-"));
    for id in &old {
        assert!(!now.contains(id), "old sandbox {id} survived: {now:?}");
        assert!(!mounted(id), "a mount of old sandbox {id} survived");
        for cg in cgroup_leftovers(&tag) {
            assert!(
                !cg.join(id).exists(),
                "cgroup {} survived",
                cg.join(id).display()
            );
        }
    }
    d.wait_pool_idle(1);
    let v = d.get("/v1/invocations?function=slow").json();
    let r = &v["invocations"][0];
    assert_eq!(r["outcome"], "interrupted", "{v}");
    assert!(r["error"].as_str().unwrap().contains("emberd stopped"));
    // The function is still there and works.
    assert_eq!(d.get("/v1/functions/slow").status, 200);
    d.stop_and_check(&tag);
}
