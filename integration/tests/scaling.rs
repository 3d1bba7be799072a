//! Pools that follow demand, configured by the config file: under load a
//! pool keeps `headroom` free sandboxes beyond those in use (up to
//! `max_warm`), so a rising load finds them made; idle, it shrinks back to
//! `min_warm`.

use ember_integration::{prerequisites_met, Daemon};
use serde_json::json;
use std::time::{Duration, Instant};

fn burst(d: &Daemon, n: usize) -> Vec<serde_json::Value> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| s.spawn(|| d.invoke("slow", "{}").json()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn wait_for(d: &Daemon, what: &str, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let t = Instant::now();
    loop {
        let p = d.pool();
        if ok(&p) {
            return p;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{what}: {p}; log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn pools_grow_ahead_of_a_rising_load_and_shrink_when_idle() {
    if !prerequisites_met("pools_grow_ahead_of_a_rising_load_and_shrink_when_idle") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ember.toml");
    std::fs::write(
        &config,
        "[pools.python3]\nmin_warm = 1\nmax_warm = 5\nheadroom = 2\nmax = 8\nidle_trim_ms = 1500\n",
    )
    .unwrap();
    let mut d = Daemon::start(&["--config", config.to_str().unwrap()]);
    let tag = d.tag();
    let p = d.pool();
    assert_eq!(
        (
            p["min_warm"].clone(),
            p["max_warm"].clone(),
            p["headroom"].clone()
        ),
        (json!(1), json!(5), json!(2)),
        "the config file's section applies: {p}"
    );
    d.wait_pool_idle(1);
    d.deploy_files(
        "slow",
        &[(
            "main.py",
            "import time\ndef handler(e, c):\n    time.sleep(0.3)\n    return 1\n",
        )],
        5000,
    );
    // Two at once: in use 2 + headroom 2, so the pool makes 4.
    let first = burst(&d, 2);
    assert!(first.iter().all(|v| v["outcome"] == "ok"), "{first:?}");
    let grown = wait_for(&d, "pool did not grow to 4 warm", |p| {
        p["idle"].as_u64() >= Some(4) && p["creating"] == 0
    });
    assert!(grown["target"].as_u64().unwrap() >= 4, "{grown}");
    // The load rises to four at once: all served hot (or warm, by the
    // sandboxes the first burst bound to the function), no cold start.
    let second = burst(&d, 4);
    let kinds: Vec<&str> = second
        .iter()
        .map(|v| v["start"].as_str().unwrap_or("?"))
        .collect();
    assert!(
        kinds.iter().all(|k| *k == "hot" || *k == "warm"),
        "{second:?}"
    );
    // Idle: back to min_warm generic sandboxes (the ones bound to the
    // function's zygote stay until --specialized-idle-ms).
    wait_for(&d, "pool did not shrink to min_warm", |p| {
        p["idle"].as_u64().unwrap_or(0) - p["bound"].as_u64().unwrap_or(0) == 1
            && p["target"] == 1
            && p["busy"] == 0
            && p["destroyed_total"].as_u64() >= Some(3)
    });
    d.stop_and_check(&tag);
}

#[test]
fn a_bad_config_file_stops_emberd_with_the_reason() {
    if !prerequisites_met("a_bad_config_file_stops_emberd_with_the_reason") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ember.toml");
    std::fs::write(&config, "[pools.python3]\nmin_warm = 2\nmax_wram = 4\n").unwrap();
    let out = std::process::Command::new(ember_integration::bin("emberd"))
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--agent")
        .arg(ember_integration::agent_path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ember.toml") && err.contains("max_wram"),
        "{err}"
    );
}
