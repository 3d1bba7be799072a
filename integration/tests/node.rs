//! JavaScript functions on Node.js: CommonJS and ES modules, sync and
//! async handlers, errors with their stack, timeouts, and Node next to
//! Python in one daemon. Node always runs specialized: the sandbox keeps
//! the function loaded.

use ember_integration::{prerequisites_met, tool_present, Daemon};
use serde_json::json;

fn ready(test: &str) -> bool {
    prerequisites_met(test) && tool_present(test, "/usr/bin/node", "nodejs")
}

fn node_daemon(extra: &[&str]) -> Daemon {
    let mut args = vec!["--runtimes", "python3,node", "--pool-size", "1"];
    args.extend_from_slice(extra);
    let d = Daemon::start(&args);
    d.wait_runtime_idle("node", 1);
    d.wait_runtime_idle("python3", 1);
    d
}

#[test]
fn javascript_handlers_sync_async_esm_errors_and_timeouts() {
    if !ready("javascript_handlers_sync_async_esm_errors_and_timeouts") {
        return;
    }
    let mut d = node_daemon(&[]);
    let tag = d.tag();
    let node = json!({ "runtime": "node", "timeout_ms": 2000 });

    // CommonJS, synchronous, module state kept between invocations.
    let a = d.deploy_files_with(
        "cjs",
        &[(
            "index.js",
            "let n = 0;\nexports.handler = (event, context) => {\n  n += 1;\n  console.log('seen', event.x);\n  console.error('to stderr');\n  return { n, x: event.x, fn: context.functionName, left: context.getRemainingTimeInMillis() > 0 };\n};\n",
        )],
        node.clone(),
    );
    assert_eq!(
        a.json()["mode"],
        "specialized",
        "node defaults to specialized"
    );
    assert_eq!(a.json()["handler"], "index.handler");
    let first = d.invoke("cjs", r#"{"x": "é"}"#);
    assert_eq!(
        first.status,
        200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    let v = first.json();
    assert_eq!(
        v["result"],
        json!({ "n": 1, "x": "é", "fn": "cjs", "left": true })
    );
    assert_eq!(v["stdout"], "seen é\n");
    assert_eq!(v["stderr"], "to stderr\n");
    assert_eq!(v["mode"], "specialized");
    assert_ne!(v["start"], "warm", "the first invocation binds a sandbox");
    let second = d.invoke("cjs", r#"{"x": 2}"#).json();
    assert_eq!(second["start"], "warm", "{second}");
    assert_eq!(second["sandbox"], v["sandbox"]);
    assert_eq!(
        second["result"]["n"], 2,
        "module state survives in specialized mode"
    );
    assert_eq!(
        second["timings_us"]["inject"], 0,
        "a bound sandbox has its code already"
    );

    // An ES module (package.json type=module) with an async handler.
    d.deploy_files_with(
        "esm",
        &[
            ("package.json", r#"{"type": "module"}"#),
            ("lib/util.js", "export const double = (x) => x * 2;\n"),
            (
                "app/main.js",
                "import { double } from '../lib/util.js';\nimport { setTimeout as sleep } from 'node:timers/promises';\nexport async function run(event) {\n  await sleep(5);\n  return { doubled: double(event.n) };\n}\n",
            ),
        ],
        json!({ "runtime": "node", "handler": "app/main.run", "timeout_ms": 2000 }),
    );
    let v = d.invoke("esm", r#"{"n": 21}"#).json();
    assert_eq!(v["result"], json!({ "doubled": 42 }), "{v}");

    // .mjs without package.json, a promise-returning handler.
    d.deploy_files_with(
        "mjs",
        &[(
            "index.mjs",
            "export const handler = (e) => Promise.resolve({ ok: e.ok });\n",
        )],
        node.clone(),
    );
    assert_eq!(
        d.invoke("mjs", r#"{"ok": true}"#).json()["result"],
        json!({ "ok": true })
    );

    // A thrown error: type, message and a stack naming the user's file.
    d.deploy_files_with(
        "throws",
        &[(
            "index.js",
            "function inner(x) { throw new RangeError('bad value ' + x); }\nexports.handler = async (e) => inner(e.v);\n",
        )],
        node.clone(),
    );
    let a = d.invoke("throws", r#"{"v": 7}"#);
    assert_eq!(a.status, 502);
    let v = a.json();
    assert_eq!(v["error"]["code"], "handler_error");
    assert_eq!(v["error"]["type"], "RangeError");
    assert_eq!(v["invocation"]["error"]["message"], "bad value 7");
    let stack = v["error"]["traceback"].as_str().unwrap();
    assert!(stack.contains("/fn/index.js:1"), "{stack}");
    assert!(!stack.contains("[eval]"), "bootstrap frames leak: {stack}");
    // A handler error leaves the runner usable: same sandbox, warm.
    let again = d.invoke("throws", r#"{"v": 8}"#).json();
    assert_eq!(again["invocation"]["start"], "warm", "{again}");

    // A missing export names what is missing.
    d.deploy_files_with(
        "noexport",
        &[("index.js", "exports.other = () => 1;\n")],
        node.clone(),
    );
    let v = d.invoke("noexport", "{}").json();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exports no function \"handler\""),
        "{v}"
    );

    // An exception thrown by a timer outside the handler's promise fails
    // the invocation, and the sandbox is replaced.
    d.deploy_files_with(
        "stray",
        &[(
            "index.js",
            "exports.handler = () => { setTimeout(() => { throw new Error('late boom'); }, 1); return new Promise((r) => setTimeout(r, 100)); };\n",
        )],
        node.clone(),
    );
    let v = d.invoke("stray", "{}").json();
    assert_eq!(v["error"]["message"], "Error: late boom", "{v}");
    let next = d.invoke("stray", "{}").json();
    assert_ne!(
        next["invocation"]["sandbox"], v["invocation"]["sandbox"],
        "a runner with an uncaught exception must not serve again"
    );

    // A busy loop: timeout, sandbox destroyed, the next call still works.
    d.deploy_files_with(
        "spin",
        &[(
            "index.js",
            "exports.handler = (e) => { if (e.spin) { for (;;) {} } return 'fine'; };\n",
        )],
        json!({ "runtime": "node", "timeout_ms": 300 }),
    );
    let a = d.invoke("spin", r#"{"spin": true}"#);
    assert_eq!(a.status, 504, "{}", String::from_utf8_lossy(&a.body));
    let spun = a.json()["invocation"]["sandbox"].clone();
    let ok = d.invoke("spin", "{}").json();
    assert_eq!(ok["result"], "fine");
    assert_ne!(ok["sandbox"], spun, "a timed-out runner is never reused");

    // A process.exit in the handler is a crash with its exit code.
    d.deploy_files_with(
        "exits",
        &[("index.js", "exports.handler = () => process.exit(3);\n")],
        node.clone(),
    );
    let v = d.invoke("exits", "{}").json();
    assert_eq!(v["error"]["code"], "crashed", "{v}");
    assert_eq!(v["invocation"]["exit_code"], 3);

    d.stop_and_check(&tag);
}

#[test]
fn node_refuses_fork_mode_and_strict_profile_at_deploy() {
    if !ready("node_refuses_fork_mode_and_strict_profile_at_deploy") {
        return;
    }
    let mut d = node_daemon(&[]);
    let tag = d.tag();
    let dir = d.dir.path().join("src-bad");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.js"), "exports.handler = () => 1;\n").unwrap();
    for (settings, says) in [
        (json!({ "runtime": "node", "mode": "fork" }), "cannot fork"),
        (
            json!({ "runtime": "node", "profile": "strict" }),
            "only \"default\"",
        ),
        (
            json!({ "runtime": "node", "handler": "../index.handler" }),
            "invalid handler",
        ),
        (
            json!({ "runtime": "python3", "mode": "sometimes" }),
            "invalid mode",
        ),
    ] {
        let a = d.put_function("bad", &settings, &dir);
        assert_eq!(
            a.status,
            400,
            "{settings}: {}",
            String::from_utf8_lossy(&a.body)
        );
        let msg = a.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains(says), "{settings}: {msg}");
    }
    assert_eq!(d.get("/v1/functions/bad").status, 404, "nothing stored");
    d.stop_and_check(&tag);
}

#[test]
fn node_and_python_functions_interleave_in_one_daemon() {
    if !ready("node_and_python_functions_interleave_in_one_daemon") {
        return;
    }
    let mut d = node_daemon(&[]);
    let tag = d.tag();
    d.deploy_files_with(
        "js",
        &[("index.js", "exports.handler = async (e) => ({ lang: 'js', n: e.n, files: require('fs').readdirSync('/fn') });\n")],
        json!({ "runtime": "node" }),
    );
    d.deploy_files(
        "py",
        &[("main.py", "import os\ndef handler(e, c):\n    return {'lang': 'py', 'n': e['n'], 'files': sorted(f for f in os.listdir('/fn') if f != '__pycache__')}\n")],
        5000,
    );
    d.deploy_files_with(
        "pyspec",
        &[("main.py", "calls = 0\ndef handler(e, c):\n    global calls\n    calls += 1\n    return {'lang': 'py-specialized', 'calls': calls}\n")],
        json!({ "mode": "specialized" }),
    );
    for n in 0..4 {
        let js = d.invoke("js", &format!(r#"{{"n": {n}}}"#)).json();
        assert_eq!(
            js["result"],
            json!({ "lang": "js", "n": n, "files": ["index.js"] }),
            "{js}"
        );
        assert!(js["sandbox"].as_str().unwrap().contains("-node-"), "{js}");
        let py = d.invoke("py", &format!(r#"{{"n": {n}}}"#)).json();
        assert_eq!(
            py["result"],
            json!({ "lang": "py", "n": n, "files": ["main.py"] }),
            "{py}"
        );
        assert_eq!(py["mode"], "fork");
        // Fork mode: warm starts fork from the function's zygote, each
        // from the post-init state (the result above is the same each time).
        let spec = d.invoke("pyspec", "{}").json();
        assert_eq!(
            spec["result"]["calls"],
            n + 1,
            "python specialized keeps its module: {spec}"
        );
        if n > 0 {
            assert_eq!(spec["start"], "warm", "{spec}");
        }
    }
    // Each bound sandbox serves its own function (the fork-mode one through
    // its function zygote): listed with it, and never shared.
    let sb = d.get("/v1/sandboxes").json();
    let bound: Vec<&str> = sb["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["bound_to"].as_str())
        .collect();
    assert!(
        bound.contains(&"js") && bound.contains(&"pyspec") && bound.contains(&"py"),
        "{sb}"
    );
    // One per specialized function; fork mode may keep two for one called
    // back to back (each returns while the other serves).
    let count = |f: &str| bound.iter().filter(|b| **b == f).count();
    assert_eq!((count("js"), count("pyspec")), (1, 1), "{sb}");
    assert_eq!(
        bound.len(),
        2 + count("py"),
        "bound only to these functions: {sb}"
    );
    d.stop_and_check(&tag);
}
