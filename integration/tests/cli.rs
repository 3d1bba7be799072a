//! The `ember` CLI forms users and scripts depend on, against a real emberd.

use ember_integration::{have_pip, prerequisites_met, text, tool_present, write_wheel, Daemon};
use serde_json::json;
use std::process::Command;

#[test]
fn init_deploy_invoke_list_with_the_cli() {
    if !prerequisites_met("init_deploy_invoke_list_with_the_cli") {
        return;
    }
    let mut d = Daemon::start(&[]);
    let tag = d.tag();
    let fn_dir = d.dir.path().join("greeter");
    let fn_dir_s = fn_dir.to_str().unwrap();

    let out = d.cli(&["init", fn_dir_s]);
    assert!(out.status.success(), "init: {}", text(&out.stderr));
    assert!(fn_dir.join("main.py").is_file() && fn_dir.join("ember.json").is_file());
    // init refuses to overwrite.
    assert!(!d.cli(&["init", fn_dir_s]).status.success());

    let out = d.cli(&["deploy", fn_dir_s, "--name", "greet"]);
    assert!(out.status.success(), "deploy: {}", text(&out.stderr));

    let out = d.cli(&["invoke", "greet", "--data", r#"{"name":"Ada"}"#]);
    assert!(out.status.success(), "invoke: {}", text(&out.stderr));
    let result: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is the JSON result");
    assert_eq!(
        result,
        json!({"greeting": "Hello, Ada!", "function": "greet"})
    );
    assert!(
        out.stderr.is_empty(),
        "timings only with --verbose: {}",
        text(&out.stderr)
    );

    let out = d.cli(&["invoke", "greet", "--data", r#"{"name":"Bo"}"#, "--verbose"]);
    assert!(out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("total") && err.contains("inject") && err.contains("greeting Bo"),
        "{err}"
    );

    // The manifest's name is used when --name is absent.
    let out = d.cli(&["deploy", fn_dir_s]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = d.cli(&["functions"]);
    assert!(out.status.success());
    let list = text(&out.stdout);
    assert!(
        list.contains("greet") && list.contains("greeter") && list.contains("main.handler"),
        "{list}"
    );

    let out = d.cli(&["pool"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("python3"));

    // Errors: non-zero exit, message on stderr, nothing on stdout.
    let out = d.cli(&["invoke", "missing"]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("not deployed"),
        "{}",
        text(&out.stderr)
    );
    let out = d.cli(&["invoke", "greet", "--data", "{broken"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("not valid JSON"));

    std::fs::write(
        fn_dir.join("main.py"),
        "def handler(e, c):\n    raise KeyError('nope')\n",
    )
    .unwrap();
    assert!(d
        .cli(&["deploy", fn_dir_s, "--name", "greet"])
        .status
        .success());
    let out = d.cli(&["invoke", "greet"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("KeyError") && err.contains("Traceback"),
        "{err}"
    );

    assert!(d.cli(&["delete", "greet"]).status.success());
    assert!(!d.cli(&["invoke", "greet"]).status.success());
    d.stop_and_check(&tag);
}

#[test]
fn cli_explains_a_missing_daemon() {
    if !prerequisites_met("cli_explains_a_missing_daemon") {
        return;
    }
    let out = std::process::Command::new(ember_integration::bin("ember"))
        .args(["--socket", "/nonexistent/ember.sock", "functions"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is emberd running"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn init_a_javascript_function_and_test_it_without_deploying() {
    let test = "init_a_javascript_function_and_test_it_without_deploying";
    if !prerequisites_met(test) || !ember_integration::tool_present(test, "/usr/bin/node", "nodejs")
    {
        return;
    }
    let mut d = Daemon::start(&["--runtimes", "python3,node", "--pool-size", "1"]);
    let tag = d.tag();
    let js = d.dir.path().join("hello-js");
    let js_s = js.to_str().unwrap();
    let out = d.cli(&["init", "--runtime", "node", js_s]);
    assert!(out.status.success(), "init: {}", text(&out.stderr));
    assert!(js.join("index.js").is_file());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(js.join("ember.json")).unwrap()).unwrap();
    assert_eq!(manifest["runtime"], "node");
    assert_eq!(manifest["handler"], "index.handler");

    // `ember test` runs it in a throwaway sandbox: result on stdout,
    // output and timings on stderr, nothing deployed, no sandbox left.
    let before = d.runtime_pool("node");
    let out = d.cli(&["test", js_s, "--data", r#"{"name":"Ada"}"#]);
    assert!(out.status.success(), "test: {}", text(&out.stderr));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        result,
        json!({"greeting": "Hello, Ada!", "function": "hello-js"})
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("greeting Ada") && err.contains("cold start"),
        "{err}"
    );
    assert_eq!(d.get("/v1/functions").json()["functions"], json!([]));
    let t = std::time::Instant::now();
    while d.get("/v1/sandboxes").json()["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["function"] == "hello-js")
    {
        assert!(t.elapsed().as_secs() < 10, "throwaway sandbox kept");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let after = d.runtime_pool("node");
    assert_eq!(
        after["hot_starts_total"], before["hot_starts_total"],
        "no pool sandbox used"
    );

    // A Python function too, and a failing one says why.
    let py = d.dir.path().join("hello-py");
    let py_s = py.to_str().unwrap();
    assert!(d.cli(&["init", py_s]).status.success());
    let out = d.cli(&["test", py_s]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::write(py.join("main.py"), "def handler(e, c):\n    return 1 / 0\n").unwrap();
    let out = d.cli(&["test", py_s]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("ZeroDivisionError"),
        "{}",
        text(&out.stderr)
    );
    let out = d.cli(&["test", py_s, "--runtime", "cobol"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unknown runtime"),
        "{}",
        text(&out.stderr)
    );
    d.stop_and_check(&tag);
}

/// Run `ember` against `d` under a pseudo-terminal (util-linux `script`),
/// as a user at a terminal would; its stdout and stderr both come back in
/// the output's stdout, escapes and carriage returns included.
fn cli_on_a_terminal(d: &Daemon, args: &[&str]) -> std::process::Output {
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let ember = ember_integration::bin("ember");
    let mut cmd = vec![
        quote(ember.to_str().unwrap()),
        "--socket".into(),
        quote(d.socket.to_str().unwrap()),
    ];
    cmd.extend(args.iter().map(|a| quote(a)));
    Command::new("/usr/bin/script")
        .args(["-qfec", &cmd.join(" "), "/dev/null"])
        // indicatif draws nothing for an unset or dumb TERM (as in CI).
        .env("TERM", "xterm")
        .output()
        .expect("run script")
}

/// The spinner was drawn, and its line erased (`ESC [2K`) after its last
/// frame and before `line` was written.
fn cleared_before(tty: &str, line: &str) -> bool {
    let Some(last_frame) = tty.rfind("installing dependencies") else {
        return false;
    };
    let after = &tty[last_frame..];
    matches!(
        (after.find("\x1b[2K"), after.find(line)),
        (Some(clear), Some(at)) if clear < at
    )
}

#[test]
fn deploy_with_requirements_shows_progress_on_a_terminal_only() {
    let test = "deploy_with_requirements_shows_progress_on_a_terminal_only";
    if !prerequisites_met(test)
        || !tool_present(test, "/usr/bin/script", "bsdutils")
        || !have_pip(test)
    {
        return;
    }
    let wheels = tempfile::tempdir().unwrap();
    write_wheel(wheels.path(), "emberdep", "GREETING = 'from a wheel'\n");
    let mut d = Daemon::start(&[
        "--pool-size",
        "1",
        "--wheels-dir",
        wheels.path().to_str().unwrap(),
    ]);
    let tag = d.tag();
    let dir = d.dir.path().join("with-dep");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("main.py"),
        "def handler(e, c):\n    import emberdep\n    return emberdep.GREETING\n",
    )
    .unwrap();
    std::fs::write(dir.join("requirements.txt"), "emberdep==1.0\n").unwrap();
    let dir_s = dir.to_str().unwrap();

    // On a terminal: a spinner names the phase while emberd runs pip,
    // then is cleared before the result line.
    let out = cli_on_a_terminal(&d, &["deploy", dir_s, "--name", "dep-tty"]);
    let tty = text(&out.stdout);
    assert!(out.status.success(), "{tty}");
    assert!(
        tty.contains("installing dependencies from requirements.txt (wheels only)"),
        "no spinner: {tty:?}"
    );
    assert!(
        cleared_before(&tty, "deployed dep-tty"),
        "spinner cleared, then the result line: {tty:?}"
    );
    assert_eq!(d.invoke("dep-tty", "{}").json()["result"], "from a wheel");

    // A failing install: the spinner is cleared before the error.
    std::fs::write(
        dir.join("requirements.txt"),
        "not-a-real-package-ember==1\n",
    )
    .unwrap();
    let out = cli_on_a_terminal(&d, &["deploy", dir_s, "--name", "dep-broken"]);
    let tty = text(&out.stdout);
    assert!(!out.status.success(), "{tty}");
    assert!(
        cleared_before(&tty, "error: ") && tty.contains("not-a-real-package-ember"),
        "spinner cleared, then the error: {tty:?}"
    );
    std::fs::write(dir.join("requirements.txt"), "emberdep==1.0\n").unwrap();

    // ember test installs too, and says so.
    let out = cli_on_a_terminal(&d, &["test", dir_s]);
    let tty = text(&out.stdout);
    assert!(out.status.success(), "{tty}");
    assert!(
        tty.contains("installing dependencies from requirements.txt (wheels only), then running"),
        "no spinner: {tty:?}"
    );
    assert!(tty.contains("\"from a wheel\""), "{tty:?}");

    // Without a terminal (pipes, as in scripts and CI): no progress at all,
    // just the result line.
    let out = d.cli(&["deploy", dir_s, "--name", "dep-plain"]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert!(
        !err.contains("installing") && !err.contains("uploading") && !err.contains("packing"),
        "progress text without a terminal: {err:?}"
    );
    assert!(
        !err.contains('\r') && !err.contains('\x1b'),
        "terminal control without a terminal: {err:?}"
    );
    assert!(
        err.starts_with("deployed dep-plain (python3, main.handler,") && err.lines().count() == 1,
        "{err:?}"
    );
    d.stop_and_check(&tag);
}

#[test]
fn sessions_with_the_cli() {
    if !prerequisites_met("sessions_with_the_cli") {
        return;
    }
    let mut d = Daemon::start(&["--pool-size", "1"]);
    let tag = d.tag();
    let dir = d.dir.path().join("counter");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("main.py"),
        "n = 0\ndef handler(event, context):\n    global n\n    n += 1\n    return {'n': n}\n",
    )
    .unwrap();
    let dir_s = dir.to_str().unwrap();
    for name in ["counter", "other"] {
        let out = d.cli(&["deploy", dir_s, "--name", name, "--session-idle-s", "60"]);
        assert!(out.status.success(), "deploy: {}", text(&out.stderr));
    }
    let f = d.get("/v1/functions/counter").json();
    assert_eq!(f["session_idle_s"], json!(60), "{f}");

    // The id alone on stdout, for `S=$(ember session open f)`.
    let out = d.cli(&["session", "open", "counter"]);
    assert!(out.status.success(), "open: {}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    assert_eq!(id.len(), 32, "{id:?}");
    assert!(text(&out.stderr).contains("ember invoke counter --session"));

    for want in [1, 2] {
        let out = d.cli(&["invoke", "counter", "--session", &id]);
        assert!(out.status.success(), "invoke: {}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v, json!({ "n": want }), "state kept between the calls");
    }
    // Without --session: a fresh worker, no state.
    let out = d.cli(&["invoke", "counter"]);
    assert_eq!(text(&out.stdout).trim(), r#"{"n":1}"#);
    // Another function's session is refused before any call.
    let out = d.cli(&["invoke", "other", "--session", &id]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is a session of function counter, not of other"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        d.get(&format!("/v1/sessions/{id}")).json()["invocations"],
        json!(2)
    );

    let out = d.cli(&["session", "list"]);
    assert!(out.status.success(), "list: {}", text(&out.stderr));
    let list = text(&out.stdout);
    let line = list.lines().find(|l| l.starts_with(&id)).expect("its row");
    assert!(
        line.contains("counter") && line.contains(" open "),
        "{list}"
    );
    assert!(line.contains("MiB"), "{list}");
    let out = d.cli(&["session", "show", &id]);
    assert!(
        text(&out.stdout).contains("invocations   2"),
        "{}",
        text(&out.stdout)
    );

    let out = d.cli(&["session", "close", &id]);
    assert!(out.status.success(), "close: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("after 2 invocations"));
    let out = d.cli(&["invoke", "counter", "--session", &id]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("has ended (closed)"),
        "{}",
        text(&out.stderr)
    );
    let out = d.cli(&["session", "list", "--ended"]);
    assert!(
        text(&out.stdout).contains("ended (closed)"),
        "{}",
        text(&out.stdout)
    );
    let out = d.cli(&["session", "show", "0123"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("session_not_found, HTTP 404"),
        "{}",
        text(&out.stderr)
    );
    d.stop_and_check(&tag);
}
