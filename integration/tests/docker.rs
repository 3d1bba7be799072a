//! `ember-runtime` as a Docker runtime (`daemon.json` `runtimes`), under a
//! private dockerd from Debian's docker.io: the profile comes from the
//! runtime entry's `runtimeArgs`, since Docker 20.10 cannot set OCI
//! annotations.

use ember_integration::containerd::{Dockerd, DOCKER_TOOLS};
use ember_integration::{bin, prerequisites_met, text, tool_present};
use serde_json::json;

#[test]
fn docker_runs_containers_through_ember_runtime() {
    let test = "docker_runs_containers_through_ember_runtime";
    if !prerequisites_met(test)
        || !DOCKER_TOOLS
            .iter()
            .all(|(path, package)| tool_present(test, path, package))
    {
        return;
    }
    let runtime = bin("ember-runtime");
    let runtime = runtime.to_str().unwrap();
    let dk = Dockerd::start(&json!({
        "runtimes": {
            "ember": { "path": runtime },
            "ember-strict": { "path": runtime, "runtimeArgs": ["--ember-profile", "strict"] },
        }
    }));
    dk.load_test_image();
    let status = "grep -E '^(Seccomp|CapEff|NoNewPrivs):' /proc/self/status";

    let out = dk.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--runtime",
        "ember",
        "ember-test:1",
        "/bin/sh",
        "-c",
        &format!("echo via-docker; {status}; exit 5"),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{stdout}\n{}\n{}",
        text(&out.stderr),
        dk.log()
    );
    assert!(stdout.contains("via-docker"), "{stdout}");
    // Docker's own seccomp profile, Docker's capabilities: unchanged.
    assert!(!stdout.contains("00000000000000e0"), "{stdout}");

    let out = dk.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--runtime",
        "ember-strict",
        "ember-test:1",
        "/bin/sh",
        "-c",
        status,
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("CapEff:\t00000000000000e0"), "{stdout}");
    assert!(stdout.contains("Seccomp:\t2"), "{stdout}");
    assert!(stdout.contains("NoNewPrivs:\t1"), "{stdout}");

    // A detached container: pause, unpause, stop, remove.
    let out = dk.docker(&[
        "run",
        "-d",
        "--name",
        "sleeper",
        "--network",
        "none",
        "--runtime",
        "ember",
        "ember-test:1",
        "/bin/sleep",
        "1000",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let state = || {
        text(
            &dk.docker(&["inspect", "--format", "{{.State.Status}}", "sleeper"])
                .stdout,
        )
        .trim()
        .to_string()
    };
    assert_eq!(state(), "running");
    assert!(dk.docker(&["pause", "sleeper"]).status.success());
    assert_eq!(state(), "paused");
    assert!(dk.docker(&["unpause", "sleeper"]).status.success());
    assert_eq!(state(), "running");
    assert!(dk.docker(&["kill", "sleeper"]).status.success());
    assert!(dk.docker(&["rm", "sleeper"]).status.success());
    assert_eq!(
        text(&dk.docker(&["ps", "--all", "--quiet"]).stdout).trim(),
        ""
    );
}
