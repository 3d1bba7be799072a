//! Dependencies belong to their function: installed at deploy into its
//! own code tree (Python's requirements.txt, offline from a wheel
//! directory; Node's shipped node_modules), importable by it, invisible to
//! every other function.

use ember_integration::{have_pip, prerequisites_met, tool_present, write_wheel, Daemon};
use serde_json::json;

#[test]
fn vendored_python_dependencies_are_visible_only_to_their_function() {
    let test = "vendored_python_dependencies_are_visible_only_to_their_function";
    if !prerequisites_met(test) {
        return;
    }
    if !have_pip(test) {
        return;
    }
    let wheels = tempfile::tempdir().unwrap();
    write_wheel(
        wheels.path(),
        "emberdep",
        "GREETING = 'from a vendored wheel'\n",
    );
    let wheels_dir = wheels.path().to_str().unwrap().to_string();
    let mut d = Daemon::start(&["--pool-size", "1", "--wheels-dir", &wheels_dir]);
    let tag = d.tag();
    let uses = "def handler(e, c):\n    import emberdep\n    return emberdep.GREETING\n";
    d.deploy_files_with(
        "with-dep",
        &[("main.py", uses), ("requirements.txt", "emberdep==1.0\n")],
        json!({}),
    );
    d.deploy_files_with("without-dep", &[("main.py", uses)], json!({}));
    // Specialized mode finds them too.
    d.deploy_files_with(
        "with-dep-spec",
        &[("main.py", uses), ("requirements.txt", "emberdep\n")],
        json!({ "mode": "specialized" }),
    );
    for _ in 0..2 {
        let v = d.invoke("with-dep", "{}").json();
        assert_eq!(v["result"], "from a vendored wheel", "{v}");
        let v = d.invoke("without-dep", "{}").json();
        assert_eq!(v["error"]["type"], "ModuleNotFoundError", "{v}");
        let v = d.invoke("with-dep-spec", "{}").json();
        assert_eq!(v["result"], "from a vendored wheel", "{v}");
    }
    // A requirement the wheel dir cannot satisfy fails the deploy with
    // pip's reason, and stores nothing.
    let src = d.dir.path().join("src-broken");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("main.py"), uses).unwrap();
    std::fs::write(
        src.join("requirements.txt"),
        "not-a-real-package-ember==1\n",
    )
    .unwrap();
    let body = json!({ "code": { "path": src } });
    let a = d.request(
        "PUT",
        "/v1/functions/broken",
        "application/json",
        body.to_string().as_bytes(),
    );
    assert_eq!(a.status, 400, "{}", String::from_utf8_lossy(&a.body));
    let msg = a.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("not-a-real-package-ember"), "{msg}");
    assert_eq!(d.get("/v1/functions/broken").status, 404);
    d.stop_and_check(&tag);
}

#[test]
fn node_modules_are_visible_only_to_their_function() {
    let test = "node_modules_are_visible_only_to_their_function";
    if !prerequisites_met(test) || !tool_present(test, "/usr/bin/node", "nodejs") {
        return;
    }
    let mut d = Daemon::start(&["--runtimes", "node", "--pool-size", "1"]);
    let tag = d.tag();
    d.wait_runtime_idle("node", 1);
    let uses = "exports.handler = () => require('tiny-dep').hello();\n";
    let node = json!({ "runtime": "node" });
    d.deploy_files_with(
        "with-mods",
        &[
            ("index.js", uses),
            (
                "package.json",
                r#"{"name": "with-mods", "dependencies": {"tiny-dep": "1.0.0"}}"#,
            ),
            (
                "node_modules/tiny-dep/package.json",
                r#"{"name": "tiny-dep", "version": "1.0.0", "main": "lib.js"}"#,
            ),
            (
                "node_modules/tiny-dep/lib.js",
                "exports.hello = () => 'from node_modules';\n",
            ),
        ],
        node.clone(),
    );
    d.deploy_files_with("without-mods", &[("index.js", uses)], node.clone());
    let v = d.invoke("with-mods", "{}").json();
    assert_eq!(v["result"], "from node_modules", "{v}");
    let v = d.invoke("without-mods", "{}").json();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("Cannot find module 'tiny-dep'"),
        "{v}"
    );
    // Declared but not installed: refused at deploy with what to do.
    let src = d.dir.path().join("src-nomods");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("index.js"), uses).unwrap();
    std::fs::write(
        src.join("package.json"),
        r#"{"dependencies": {"tiny-dep": "1.0.0"}}"#,
    )
    .unwrap();
    let body = json!({ "runtime": "node", "code": { "path": src } });
    let a = d.request(
        "PUT",
        "/v1/functions/nomods",
        "application/json",
        body.to_string().as_bytes(),
    );
    assert_eq!(a.status, 400);
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("npm install"));
    d.stop_and_check(&tag);
}
