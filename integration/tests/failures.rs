//! Failure paths on real runc: crashing handlers, oversized output and
//! results, leftover processes, clients that hang up, redeploys, draining.

use ember_integration::{backend, prerequisites_met, Daemon};
use serde_json::json;
use std::io::Write;
use std::time::{Duration, Instant};

const ECHO: &str = "def handler(event, context):\n    return {'event': event}\n";

#[test]
fn a_crashing_worker_is_reported_and_its_sandbox_replaced() {
    if !prerequisites_met("a_crashing_worker_is_reported_and_its_sandbox_replaced") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "1"]);
    let tag = d.tag();
    d.deploy_files(
        "exit3",
        &[(
            "main.py",
            "import os\ndef handler(e, c):\n    print('bye')\n    os._exit(3)\n",
        )],
        5000,
    );
    d.deploy_files(
        "segv",
        &[(
            "main.py",
            "import os, signal\ndef handler(e, c):\n    os.kill(os.getpid(), signal.SIGSEGV)\n",
        )],
        5000,
    );
    d.deploy_files("echo", &[("main.py", ECHO)], 5000);

    let a = d.invoke("exit3", "{}");
    assert_eq!(a.status, 502);
    let v = a.json();
    assert_eq!(v["error"]["code"], "crashed");
    assert_eq!(v["invocation"]["exit_code"], 3);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("status 3"),
        "{v}"
    );
    assert_eq!(v["invocation"]["stdout"], "bye\n");

    let v = d.invoke("segv", "{}").json();
    assert_eq!(v["error"]["code"], "crashed");
    assert_eq!(v["invocation"]["signal"], 11);

    let a = d.invoke("echo", r#"{"n": 1}"#);
    assert_eq!(a.status, 200);
    d.wait_pool_idle(1);
    // Destroying runs in the background (runsc takes a while): wait for it.
    let t = Instant::now();
    while d.pool()["destroyed_total"].as_u64().unwrap() < 1 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "crashed sandbox never destroyed: {}",
            d.pool()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    d.stop_and_check(&tag);
}

#[test]
fn output_and_results_are_bounded() {
    if !prerequisites_met("output_and_results_are_bounded") {
        return;
    }
    let mut d = Daemon::start(&[
        "--pool-size",
        "1",
        "--max-output-bytes",
        "1000",
        "--max-result-bytes",
        "2000",
    ]);
    let tag = d.tag();
    d.deploy_files(
        "chatty",
        &[("main.py", "import sys\ndef handler(e, c):\n    sys.stdout.write('x' * 5_000_000)\n    sys.stderr.write('y' * 3000)\n    return 'done'\n")],
        10000,
    );
    d.deploy_files(
        "huge",
        &[("main.py", "def handler(e, c):\n    return 'z' * 10000\n")],
        5000,
    );
    d.deploy_files(
        "notjson",
        &[("main.py", "def handler(e, c):\n    return {1, 2}\n")],
        5000,
    );

    let v = d.invoke("chatty", "{}").json();
    assert_eq!(v["result"], "done", "{v}");
    // The first 1000 bytes, then a marker line saying how much was dropped.
    let (out, err) = (v["stdout"].as_str().unwrap(), v["stderr"].as_str().unwrap());
    assert_eq!(&out[..1000], "x".repeat(1000));
    assert_eq!(
        &out[1000..],
        "\n[ember: output truncated at 1000 bytes, 4999000 more dropped]\n"
    );
    assert_eq!(v["stdout_truncated"], true);
    assert_eq!(&err[..1000], "y".repeat(1000));
    assert!(err.ends_with("2000 more dropped]\n"), "{err}");
    assert_eq!(v["stderr_truncated"], true);
    assert_eq!(v["limits_hit"], serde_json::json!(["output_truncated"]));

    let a = d.invoke("huge", "{}");
    assert_eq!(a.status, 502);
    assert_eq!(a.error_code(), "result_too_large");
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("2000"));

    let a = d.invoke("notjson", "{}");
    assert_eq!(a.status, 502);
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not JSON serializable"));
    d.stop_and_check(&tag);
}

#[test]
fn processes_left_running_by_a_handler_do_not_survive() {
    if !prerequisites_met("processes_left_running_by_a_handler_do_not_survive") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "1", "--max-sandboxes", "1"]);
    let tag = d.tag();
    let leaver = r#"import os, subprocess, threading, time
def handler(event, context):
    subprocess.Popen(['sleep', '300'])
    if os.fork() == 0:          # a daemonized grandchild in its own session
        os.setsid()
        if os.fork() == 0:
            time.sleep(300)
        os._exit(0)
    threading.Thread(target=time.sleep, args=(300,), daemon=False).start()
    return 'left some behind'
"#;
    let census = r#"import os
def handler(event, context):
    procs = []
    for p in os.listdir('/proc'):
        if p.isdigit():
            try:
                with open('/proc/%s/cmdline' % p, 'rb') as f:
                    procs.append(f.read().replace(b'\0', b' ').decode().strip())
            except OSError:
                pass
    return procs
"#;
    d.deploy_files("leaver", &[("main.py", leaver)], 5000);
    d.deploy_files("census", &[("main.py", census)], 5000);
    let a = d.invoke("leaver", "{}");
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let procs = d.invoke("census", "{}").json()["result"].clone();
    let list: Vec<&str> = procs
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        !list.iter().any(|p| p.contains("sleep")),
        "leftover processes: {list:?}"
    );
    // The agent, the zygote and the worker itself: nothing else.
    assert_eq!(list.len(), 3, "unexpected processes: {list:?}");
    d.stop_and_check(&tag);
}

#[test]
fn a_client_that_hangs_up_does_not_lose_the_sandbox() {
    if !prerequisites_met("a_client_that_hangs_up_does_not_lose_the_sandbox") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "1", "--max-sandboxes", "1"]);
    let tag = d.tag();
    d.deploy_files(
        "slow",
        &[(
            "main.py",
            "import time\ndef handler(e, c):\n    time.sleep(0.5)\n    return 1\n",
        )],
        5000,
    );
    d.deploy_files("echo", &[("main.py", ECHO)], 5000);
    d.wait_pool_idle(1);
    {
        let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
        s.write_all(
            b"POST /v1/functions/slow/invoke HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(100));
    } // hang up mid-invocation
    d.wait_pool_idle(1);
    let a = d.invoke("echo", r#"{"after": "hangup"}"#);
    assert_eq!(a.status, 200);
    assert_eq!(
        d.pool()["destroyed_total"],
        0,
        "a hang-up must not cost a sandbox"
    );
    d.stop_and_check(&tag);
}

#[test]
fn a_redeploy_takes_effect_for_the_next_invocation() {
    if !prerequisites_met("a_redeploy_takes_effect_for_the_next_invocation") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "1"]);
    let tag = d.tag();
    let a = d.deploy_files(
        "ver",
        &[("main.py", "def handler(e, c):\n    return 1\n")],
        5000,
    );
    assert_eq!(a.status, 201);
    let first_digest = a.json()["digest"].as_str().unwrap().to_string();
    assert_eq!(d.invoke("ver", "{}").json()["result"], 1);
    let a = d.deploy_files(
        "ver",
        &[("main.py", "def handler(e, c):\n    return 2\n")],
        5000,
    );
    assert_eq!(a.status, 200);
    assert_ne!(a.json()["digest"], first_digest.as_str());
    assert_eq!(d.invoke("ver", "{}").json()["result"], 2);
    // The old code is gone from the store once nothing uses it.
    assert!(!d.state.join("code/objects").join(&first_digest).exists());
    d.stop_and_check(&tag);
}

#[test]
fn running_invocations_keep_their_code_through_a_redeploy_and_a_delete() {
    if !prerequisites_met("running_invocations_keep_their_code_through_a_redeploy_and_a_delete") {
        return;
    }
    // The handler reads its own files after the redeploy or delete has
    // been answered: the old tree must still be there for it, and leave
    // the store once the invocation is over.
    const LATE_READ: &str = "import time\ndef handler(e, c):\n    time.sleep(e['s'])\n    return open('/fn/data.txt').read()\n";
    let mut d = Daemon::start(&["--pool-size", "1"]);
    let tag = d.tag();
    d.wait_pool_idle(1);
    let objects = d.state.join("code/objects");
    let deploy = |data: &str| {
        let a = d.deploy_files(
            "late",
            &[("main.py", LATE_READ), ("data.txt", data)],
            10_000,
        );
        assert!(
            a.status == 200 || a.status == 201,
            "{}",
            String::from_utf8_lossy(&a.body)
        );
        a.json()["digest"].as_str().unwrap().to_string()
    };
    let one = deploy("one");
    // Long enough for the redeploy's build to finish meanwhile (a gVisor
    // build sandbox takes a couple of seconds on this VM).
    let s = if backend() == "runsc" { 8 } else { 3 };
    let call = d.invoke_in_background("late", &format!(r#"{{"s": {s}}}"#));
    d.wait_busy("late");
    let two = deploy("two");
    assert!(
        objects.join(&one).is_dir(),
        "code removed under a running invocation"
    );
    let v = call.join().unwrap().expect("answered").json();
    assert_eq!(
        v["result"], "one",
        "the running invocation saw its code: {v}"
    );
    assert!(
        !objects.join(&one).exists(),
        "old code kept after its last use"
    );
    assert_eq!(d.invoke("late", r#"{"s": 0}"#).json()["result"], "two");

    let call = d.invoke_in_background("late", r#"{"s": 1}"#);
    d.wait_busy("late");
    assert_eq!(
        d.request("DELETE", "/v1/functions/late", "", b"").status,
        200
    );
    assert_eq!(d.invoke("late", "{}").error_code(), "function_not_found");
    let v = call.join().unwrap().expect("answered").json();
    assert_eq!(v["result"], "two", "{v}");
    assert!(
        !objects.join(&two).exists(),
        "deleted code kept after its last use"
    );
    d.stop_and_check(&tag);
}

#[test]
fn sigterm_lets_a_running_invocation_finish() {
    if !prerequisites_met("sigterm_lets_a_running_invocation_finish") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "1"]);
    let tag = d.tag();
    d.deploy_files(
        "slow",
        &[(
            "main.py",
            "import time\ndef handler(e, c):\n    time.sleep(1)\n    return 'finished'\n",
        )],
        5000,
    );
    d.wait_pool_idle(1);
    let call = d.invoke_in_background("slow", "{}");
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    d.stop_and_check(&tag);
    let a = call.join().unwrap().expect("answer before shutdown");
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["result"], json!("finished"));
    assert!(t.elapsed() < Duration::from_secs(30));
}

#[test]
fn sigterm_drains_refuses_new_work_and_interrupts_what_outlives_the_drain_timeout() {
    let name = "sigterm_drains_refuses_new_work_and_interrupts_what_outlives_the_drain_timeout";
    if !prerequisites_met(name) {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "2", "--drain-timeout-ms", "2000"]);
    let tag = d.tag();
    d.deploy_files(
        "slow",
        &[(
            "main.py",
            "import time\ndef handler(e, c):\n    time.sleep(1)\n    return 'finished'\n",
        )],
        10_000,
    );
    d.deploy_files(
        "stuck",
        &[(
            "main.py",
            "import time\ndef handler(e, c):\n    time.sleep(120)\n",
        )],
        300_000,
    );
    d.wait_pool_idle(2);
    let slow = d.invoke_in_background("slow", "{}");
    let stuck = d.invoke_in_background("stuck", "{}");
    let t = Instant::now();
    while d.get("/v1/invocations").json()["invocations"]
        .as_array()
        .map_or(0, |l| {
            l.iter().filter(|r| r["outcome"] == "running").count()
        })
        < 2
    {
        assert!(t.elapsed() < Duration::from_secs(20), "never both running");
        std::thread::sleep(Duration::from_millis(20));
    }
    d.sigterm();

    // While draining the API still answers, and says so.
    let t = Instant::now();
    while d.get("/v1/health").json()["status"] != "draining" {
        assert!(t.elapsed() < Duration::from_secs(5), "never draining");
        std::thread::sleep(Duration::from_millis(10));
    }
    let refused = d.invoke("slow", "{}");
    assert_eq!(refused.status, 503);
    assert_eq!(refused.error_code(), "shutting_down");
    let msg = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("shutting down"), "{msg}");

    // The running invocation finishes; the one past the drain timeout is
    // interrupted with the reason, not left hanging.
    let a = slow.join().unwrap().expect("slow answered");
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.json()["result"], json!("finished"));
    let b = stuck.join().unwrap().expect("stuck answered");
    assert_eq!(b.status, 503, "{}", String::from_utf8_lossy(&b.body));
    assert_eq!(b.error_code(), "interrupted");
    assert!(b.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("drain-timeout"));
    assert_eq!(b.json()["invocation"]["outcome"], "interrupted");

    // It exits cleanly with nothing left: containers, mounts, cgroups.
    d.stop_and_check(&tag);

    // Nothing lost: all three are on record after a restart.
    d.spawn();
    let outcomes = |f: &str| -> Vec<String> {
        d.get(&format!("/v1/invocations?function={f}")).json()["invocations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["outcome"].as_str().unwrap().to_string())
            .collect()
    };
    // The one refused while draining never ran: it left no record.
    assert_eq!(outcomes("slow"), ["ok"]);
    assert_eq!(outcomes("stuck"), ["interrupted"]);
    d.stop_and_check(&tag);
}

#[test]
fn a_second_sigterm_interrupts_running_invocations_at_once() {
    if !prerequisites_met("a_second_sigterm_interrupts_running_invocations_at_once") {
        return;
    }
    // A drain timeout longer than the client's read timeout (120 s): only
    // the second signal can end this invocation in time.
    let mut d = Daemon::start(&["--pool-size", "1", "--drain-timeout-ms", "600000"]);
    let tag = d.tag();
    d.deploy_files(
        "stuck",
        &[(
            "main.py",
            "import time\ndef handler(e, c):\n    time.sleep(900)\n",
        )],
        900_000,
    );
    let stuck = d.invoke_in_background("stuck", "{}");
    d.wait_busy("stuck");
    let t = Instant::now();
    d.sigterm();
    while d.get("/v1/health").json()["status"] != "draining" {
        assert!(t.elapsed() < Duration::from_secs(20), "never draining");
        std::thread::sleep(Duration::from_millis(10));
    }
    d.sigterm();
    let a = stuck
        .join()
        .unwrap()
        .expect("answered before the client gave up");
    assert_eq!(a.status, 503, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.error_code(), "interrupted");
    d.stop_and_check(&tag);
}

#[test]
fn a_full_pool_queues_then_refuses_with_pool_exhausted() {
    if !prerequisites_met("a_full_pool_queues_then_refuses_with_pool_exhausted") {
        return;
    }
    let mut d = Daemon::start(&[
        "--pool-size",
        "1",
        "--max-sandboxes",
        "1",
        "--queue-timeout-ms",
        "300",
    ]);
    let tag = d.tag();
    d.deploy_files("slow", &[("main.py", ember_integration::SLEEPER)], 10000);
    d.wait_pool_idle(1);
    let socket = d.socket.clone();
    let busy = std::thread::spawn(move || {
        ember_integration::http(
            &socket,
            "POST",
            "/v1/functions/slow/invoke",
            "application/json",
            br#"{"s": 2}"#,
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    let a = d.invoke("slow", r#"{"s": 0}"#);
    assert_eq!(a.status, 503, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.error_code(), "pool_exhausted");
    assert_eq!(busy.join().unwrap().expect("first invocation").status, 200);
    // Queued work that fits in the wait is served from the same sandbox.
    let socket = d.socket.clone();
    let first = std::thread::spawn(move || {
        ember_integration::http(
            &socket,
            "POST",
            "/v1/functions/slow/invoke",
            "application/json",
            br#"{"s": 0.1}"#,
        )
    });
    std::thread::sleep(Duration::from_millis(20));
    let a = d.invoke("slow", r#"{"s": 0}"#);
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let b = first.join().unwrap().unwrap();
    assert_eq!(b.status, 200);
    let queued = |x: &ember_integration::Answer| x.json()["timings_us"]["queue"].as_u64().unwrap();
    // Whichever came second waited for the one sandbox.
    assert!(queued(&a).max(queued(&b)) >= 1_000, "no invocation queued");
    d.stop_and_check(&tag);
}
