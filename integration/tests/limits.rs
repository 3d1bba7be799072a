//! Per-function limits, profiles at deploy, and the kill switch, on real
//! runc: the cgroup files of the running sandbox are read on the host.

use ember_integration::{prerequisites_met, Daemon};
use serde_json::json;
use std::time::{Duration, Instant};

const ECHO: &str = "def handler(event, context):\n    return {'event': event}\n";

/// The busy sandbox running `function`, polled from the API.
#[test]
fn function_limits_are_written_to_the_sandbox_cgroup() {
    if !prerequisites_met("function_limits_are_written_to_the_sandbox_cgroup") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "1"]);
    let tag = d.tag();
    let a = d.deploy_files_with(
        "limited",
        &[(
            "main.py",
            "import time\ndef handler(e, c):\n    time.sleep(e.get('sleep', 0))\n    return c.memory_limit_in_mb\n",
        )],
        json!({ "timeout_ms": 20000, "memory_mb": 96, "pids": 20, "cpu_shares": 256, "profile": "strict" }),
    );
    let rec = a.json();
    assert_eq!(rec["profile"], "strict");
    assert_eq!(rec["limits"]["memory_mb"], 96);
    assert_eq!(rec["limits"]["pids"], 20);

    let socket = d.socket.clone();
    let runner = std::thread::spawn(move || {
        ember_integration::http(
            &socket,
            "POST",
            "/v1/functions/limited/invoke",
            "application/json",
            br#"{"sleep": 1.5}"#,
        )
        .unwrap()
    });
    let sb = d.wait_busy("limited");
    let cg = |ctl: &str, file: &str| {
        let p = format!("/sys/fs/cgroup/{ctl}/ember/{tag}/{sb}/{file}");
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    if std::path::Path::new("/sys/fs/cgroup/memory").is_dir() {
        // The sandbox is listed busy as soon as it is taken; the limits are
        // written right after (thaw, then limits): give that a moment on a
        // loaded machine. The handler sleeps far longer.
        let t = std::time::Instant::now();
        while (cg("pids", "pids.max"), cg("cpu", "cpu.shares")) != (22, 256)
            && t.elapsed() < std::time::Duration::from_secs(1)
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(
            cg("pids", "pids.max"),
            22,
            "pids limit plus agent and zygote"
        );
        assert_eq!(cg("cpu", "cpu.shares"), 256);
        let mem = cg("memory", "memory.limit_in_bytes");
        // 96 MiB on top of the idle sandbox's own use (a few MiB to ~40).
        assert!(
            mem > 96 << 20 && mem < (96 + 64) << 20,
            "memory limit {mem}"
        );
    }
    let a = runner.join().unwrap();
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let v = a.json();
    assert_eq!(v["result"], 96, "context.memory_limit_in_mb");
    assert_eq!(v["profile"], "strict");
    assert_eq!(v["limits_hit"], json!([]));
    d.stop_and_check(&tag);
}

#[test]
fn deploy_refuses_unknown_profiles_and_bad_limits() {
    if !prerequisites_met("deploy_refuses_unknown_profiles_and_bad_limits") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "0"]);
    let tag = d.tag();
    let dir = d.dir.path().join("src-x");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("main.py"), ECHO).unwrap();
    for (settings, word) in [
        (json!({ "profile": "lax" }), "default, strict"),
        (json!({ "memory_mb": 1 }), "memory_mb"),
        (json!({ "pids": 0 }), "pids"),
        (json!({ "cpu_shares": 1 }), "cpu_shares"),
        (
            json!({ "max_output_bytes": 1u64 << 40 }),
            "max_output_bytes",
        ),
        (json!({ "max_event_bytes": 0 }), "max_event_bytes"),
        (json!({ "memroy_mb": 64 }), "memroy_mb"),
    ] {
        let a = d.put_function("x", &settings, &dir);
        assert_eq!(
            a.status,
            400,
            "{settings}: {}",
            String::from_utf8_lossy(&a.body)
        );
        let msg = a.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains(word), "{settings}: {msg}");
    }
    assert_eq!(
        d.get("/v1/functions/x").status,
        404,
        "a refused deploy left a function"
    );
    // Query form too.
    let a = d.request(
        "PUT",
        "/v1/functions/x?profile=nope",
        "application/gzip",
        b"not even a tarball",
    );
    assert_eq!(a.status, 400);
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("nope"));

    // A per-function event cap is a 413 before any sandbox is used.
    d.deploy_files_with(
        "small",
        &[("main.py", ECHO)],
        json!({ "max_event_bytes": 64 }),
    );
    let a = d.invoke("small", &json!({ "pad": "x".repeat(100) }).to_string());
    assert_eq!(a.status, 413);
    assert_eq!(a.error_code(), "payload_too_large");
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("limit is 64"));
    d.stop_and_check(&tag);
}

#[test]
fn the_kill_switch_ends_a_running_invocation() {
    if !prerequisites_met("the_kill_switch_ends_a_running_invocation") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "1"]);
    let tag = d.tag();
    d.deploy_files(
        "sleeper",
        &[("main.py", "import time\ndef handler(e, c):\n    print('started', flush=True)\n    time.sleep(600)\n")],
        900_000,
    );
    d.deploy_files("echo", &[("main.py", ECHO)], 5000);

    // Unknown and idle sandboxes are refused clearly.
    let a = d.request("POST", "/v1/sandboxes/nope/kill", "application/json", b"");
    assert_eq!(
        (a.status, a.error_code().as_str()),
        (404, "sandbox_not_found")
    );
    d.wait_pool_idle(1);
    let idle = d.get("/v1/sandboxes").json()["sandboxes"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let a = d.request(
        "POST",
        &format!("/v1/sandboxes/{idle}/kill"),
        "application/json",
        b"",
    );
    assert_eq!((a.status, a.error_code().as_str()), (409, "not_running"));
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("idle"));

    let socket = d.socket.clone();
    let runner = std::thread::spawn(move || {
        ember_integration::http(
            &socket,
            "POST",
            "/v1/functions/sleeper/invoke",
            "application/json",
            b"{}",
        )
        .unwrap()
    });
    let sb = d.wait_busy("sleeper");
    // Through the CLI, as an operator would.
    let out = d.cli(&["kill", &sb]);
    assert!(
        out.status.success(),
        "ember kill: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("sleeper"));
    let a = runner.join().unwrap();
    assert_eq!(a.status, 409, "{}", String::from_utf8_lossy(&a.body));
    let v = a.json();
    assert_eq!(v["error"]["code"], "killed");
    assert_eq!(v["invocation"]["outcome"], "killed");
    assert_eq!(v["invocation"]["sandbox"], sb);
    // The killed sandbox is gone and replaced; the pool serves on.
    assert_eq!(d.invoke("echo", "{}").status, 200);
    d.wait_pool_idle(1);
    let ids = d.sandbox_ids();
    assert!(
        !ids.contains(&sb),
        "killed sandbox {sb} still listed: {ids:?}"
    );
    // Its container goes in the background.
    let t = std::time::Instant::now();
    while ember_integration::runc_ids(&format!("ember-{tag}-")).contains(&sb) {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "killed sandbox {sb} still in the runtime"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    d.stop_and_check(&tag);
}

#[test]
fn a_pool_of_strict_sandboxes_confines_even_default_functions() {
    if !prerequisites_met("a_pool_of_strict_sandboxes_confines_even_default_functions") {
        return;
    }
    // The sandbox-level (OCI) filter of `strict`, compiled by runc: the
    // agent and the zygote must still start and serve under it.
    let mut d = Daemon::start(&["--pool-size", "1", "--sandbox-profile", "strict"]);
    let tag = d.tag();
    d.deploy_files(
        "probe",
        &[(
            "main.py",
            "import socket, subprocess, threading\n\
             def handler(e, c):\n\
             \x20   out = {}\n\
             \x20   try:\n\
             \x20       socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n\
             \x20       out['inet'] = 'opened'\n\
             \x20   except OSError as exc:\n\
             \x20       out['inet'] = exc.errno\n\
             \x20   socket.socketpair()\n\
             \x20   t = threading.Thread(target=lambda: out.setdefault('thread', 'ran'))\n\
             \x20   t.start(); t.join()\n\
             \x20   out['exec'] = subprocess.run(['/bin/true']).returncode\n\
             \x20   return out\n",
        )],
        10_000,
    );
    let a = d.invoke("probe", "{}");
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let v = a.json();
    assert_eq!(v["profile"], "default");
    // EPERM from the sandbox filter though the function's profile allows
    // INET sockets; threads (clone3 -> ENOSYS -> clone) and exec still work.
    assert_eq!(
        v["result"],
        json!({ "inet": 1, "thread": "ran", "exec": 0 })
    );
    d.stop_and_check(&tag);

    // A profile emberd does not know stops it at start, with the list.
    let out = std::process::Command::new(ember_integration::bin("emberd"))
        .args(["--sandbox-profile", "lax", "--state-dir", "/nonexistent"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lax") && err.contains("default, strict"),
        "{err}"
    );
}

#[test]
fn a_handler_that_survives_its_pids_limit_is_still_reported() {
    if !prerequisites_met("a_handler_that_survives_its_pids_limit_is_still_reported") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "1"]);
    let tag = d.tag();
    // Forks until the limit refuses, then cleans up and returns normally.
    d.deploy_files_with(
        "careful",
        &[(
            "main.py",
            "import os, time\n\
             def handler(e, c):\n\
             \x20   kids = []\n\
             \x20   try:\n\
             \x20       while True:\n\
             \x20           pid = os.fork()\n\
             \x20           if pid == 0:\n\
             \x20               time.sleep(30)\n\
             \x20               os._exit(0)\n\
             \x20           kids.append(pid)\n\
             \x20   except OSError:\n\
             \x20       pass\n\
             \x20   for k in kids:\n\
             \x20       os.kill(k, 9)\n\
             \x20       os.waitpid(k, 0)\n\
             \x20   return len(kids)\n",
        )],
        json!({ "timeout_ms": 10_000, "pids": 8 }),
    );
    d.deploy_files("echo", &[("main.py", ECHO)], 5000);
    let a = d.invoke("careful", "{}");
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let v = a.json();
    assert_eq!(v["outcome"], "ok");
    assert!(v["result"].as_u64().unwrap() < 8, "{v}");
    assert_eq!(v["limits_hit"], json!(["pids"]), "{v}");
    // The sandbox that hit its limit is not reused.
    let t = Instant::now();
    while d.pool()["destroyed_total"].as_u64().unwrap() < 1 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "never discarded: {}",
            d.pool()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let next = d.invoke("echo", "{}").json();
    assert_ne!(next["sandbox"], v["sandbox"]);
    d.stop_and_check(&tag);
}
