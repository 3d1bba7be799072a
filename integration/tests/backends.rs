//! One emberd with pools on several backends: functions choose theirs at
//! deploy, and each runs in a sandbox of that backend.

use ember_integration::{prerequisites_met, Daemon};
use serde_json::json;

fn installed(b: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {b}")])
        .stdout(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn functions_choose_their_backend_in_one_daemon() {
    if !prerequisites_met("functions_choose_their_backend_in_one_daemon") {
        return;
    }
    // libcontainer is a library inside emberd: always there.
    let backends: Vec<&str> = ["runc", "crun", "runsc", "libcontainer"]
        .into_iter()
        .filter(|b| *b == "libcontainer" || installed(b))
        .collect();
    if backends.len() < 2 {
        assert!(
            std::env::var_os("EMBER_REQUIRE_INTEGRATION").is_none(),
            "needs two of runc, crun, runsc installed (scripts/setup installs all three)"
        );
        eprintln!("skipped: needs two of runc, crun, runsc");
        return;
    }
    let list = backends.join(",");
    let mut d = Daemon::start(&["--pool-size", "1", "--backend", &list]);
    let tag = d.tag();
    let code = "import os\ndef handler(e, c):\n    open('/tmp/mine', 'w').write(c.function_name)\n    return {'fn': sorted(os.listdir('/fn')), 'tmp': sorted(os.listdir('/tmp'))}\n";
    for b in &backends {
        let a = d.deploy_files_with(
            &format!("on-{b}"),
            &[("main.py", code), (&format!("only-{b}.txt"), b)],
            json!({ "timeout_ms": 10_000, "backend": b }),
        );
        assert_eq!(a.json()["backend"], *b);
    }
    // Twice round, so each backend's sandbox is reused after another
    // function of its own ran in it.
    for _ in 0..2 {
        for b in &backends {
            let a = d.invoke(&format!("on-{b}"), "{}");
            assert_eq!(a.status, 200, "{b}: {}", String::from_utf8_lossy(&a.body));
            let v = a.json();
            assert!(
                v["sandbox"].as_str().unwrap().contains(&format!("-{b}-")),
                "{b}: ran in {}",
                v["sandbox"]
            );
            assert_eq!(
                v["result"],
                json!({ "fn": ["__pycache__", "main.py", format!("only-{b}.txt")], "tmp": ["mine"] })
            );
        }
    }
    let pools = d.get("/v1/pools").json();
    let names: Vec<&str> = pools["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["backend"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), backends.len(), "{pools}");
    let last = backends[backends.len() - 1];
    let one = d.get(&format!("/v1/pools/python3?backend={last}"));
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["backend"], last);
    let a = d.get("/v1/pools/python3?backend=nope");
    assert_eq!((a.status, a.error_code().as_str()), (404, "pool_not_found"));

    // A backend this daemon does not run is refused at deploy.
    let dir = d.dir.path().join("src-on-runc");
    let body = json!({ "code": { "path": dir }, "backend": "youki" });
    let a = d.request(
        "PUT",
        "/v1/functions/x",
        "application/json",
        body.to_string().as_bytes(),
    );
    assert_eq!(a.status, 400);
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains(&list.replace(',', ", ")));
    d.stop_and_check(&tag);
    // Nothing left in any backend.
    for b in backends.iter().filter(|b| **b != "libcontainer") {
        let out = std::process::Command::new(b)
            .args(["list", "--quiet"])
            .output()
            .unwrap();
        let left = String::from_utf8_lossy(&out.stdout);
        assert!(
            !left.contains(&format!("ember-{tag}-")),
            "{b} still lists {left}"
        );
    }
}
