//! Deploy from git, end to end on a real emberd: a tag, a branch and a
//! full sha with a subdirectory, the commit recorded and shown, a redeploy
//! at another ref, the CLI; every mistake answered with its own code and
//! status; and the attacks a hostile repository can make (a symlink to a
//! host file, config and hooks that would run commands, a file past the
//! code limit, a history past the clone's room, a server that stalls, a
//! submodule pointing at a host repository), each contained.
//!
//! Repositories are made here with the `git` binary, under the daemon's
//! temp dir (mode 0755, so the unprivileged id emberd's git runs as can
//! read them).

use ember_integration::{free_port, http_tcp, prerequisites_met, tool_present, Daemon};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A local repository the test writes and commits to.
struct Repo {
    path: PathBuf,
}

impl Repo {
    fn init(path: PathBuf) -> Repo {
        std::fs::create_dir_all(&path).unwrap();
        let r = Repo { path };
        r.git(&["init", "-q", "-b", "main"]);
        r
    }

    fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=ember",
                "-c",
                "user.email=ember@example.com",
            ])
            .arg("-C")
            .arg(&self.path)
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .expect("run git");
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn write(&self, rel: &str, content: &[u8]) -> &Repo {
        let p = self.path.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    /// Commit everything; the new commit's sha.
    fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    fn repo(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

fn handler_returning(v: &str) -> Vec<u8> {
    format!("def handler(event, context):\n    return {{\"v\": {v:?}}}\n").into_bytes()
}

/// `PUT /v1/functions/{name}` with `"code": {"git": git}`.
fn deploy_git(d: &Daemon, name: &str, git: Value) -> ember_integration::Answer {
    let body = json!({ "code": { "git": git }, "timeout_ms": 5000 });
    d.request(
        "PUT",
        &format!("/v1/functions/{name}"),
        "application/json",
        body.to_string().as_bytes(),
    )
}

fn body(a: &ember_integration::Answer) -> String {
    String::from_utf8_lossy(&a.body).into_owned()
}

fn ready(test: &str) -> bool {
    prerequisites_met(test) && tool_present(test, "/usr/bin/git", "git")
}

#[test]
fn git_deploys_take_the_ref_and_subdir_and_record_the_commit() {
    if !ready("git_deploys_take_the_ref_and_subdir_and_record_the_commit") {
        return;
    }
    let d = Daemon::start(&["--pool-size", "1"]);
    let r = Repo::init(d.dir.path().join("repo"));
    r.write("README", b"not the function\n")
        .write("fn/main.py", &handler_returning("one"));
    let one = r.commit("one");
    r.git(&["tag", "v1"]);
    r.write("fn/main.py", &handler_returning("two"));
    let two = r.commit("two");
    r.git(&["checkout", "-q", "-b", "feature"]);
    r.write("fn/main.py", &handler_returning("three"));
    let three = r.commit("three");
    r.git(&["checkout", "-q", "main"]);

    let steps = [
        (
            json!({"repo": r.repo(), "ref": "v1", "subdir": "fn"}),
            "v1",
            &one,
            "one",
            201,
        ),
        (
            json!({"repo": r.repo(), "ref": "feature", "subdir": "fn/"}),
            "feature",
            &three,
            "three",
            200,
        ),
        (
            json!({"repo": r.repo(), "ref": two, "subdir": "fn"}),
            two.as_str(),
            &two,
            "two",
            200,
        ),
        (
            json!({"repo": r.repo(), "subdir": "fn"}),
            "HEAD",
            &two,
            "two",
            200,
        ),
    ];
    for (git, reference, commit, v, status) in steps {
        let a = deploy_git(&d, "g", git.clone());
        assert_eq!(a.status, status, "{git}: {}", body(&a));
        let rec = a.json();
        let want =
            json!({"git": {"repo": r.repo(), "ref": reference, "commit": commit, "subdir": "fn"}});
        assert_eq!(rec["source"], want, "{git}");
        let info = d.get("/v1/functions/g").json();
        assert_eq!(info["source"], want, "GET after {git}");
        let out = d.invoke("g", "{}");
        assert_eq!(out.status, 200, "{}", body(&out));
        assert_eq!(out.json()["result"]["v"], v, "{git}: {}", body(&out));
    }
    // The repository's root, when it holds the handler.
    let root = Repo::init(d.dir.path().join("root-repo"));
    root.write("main.py", &handler_returning("root"));
    let root_commit = root.commit("root");
    let a = deploy_git(&d, "groot", json!({"repo": root.repo()}));
    assert_eq!(a.status, 201, "{}", body(&a));
    assert_eq!(a.json()["source"]["git"]["commit"], root_commit.as_str());
    assert!(a.json()["source"]["git"].get("subdir").is_none());
    assert_eq!(d.invoke("groot", "{}").json()["result"]["v"], "root");
    // A redeploy from a directory drops the source.
    let a = d.deploy_files(
        "groot",
        &[("main.py", "def handler(e, c):\n    return 1\n")],
        5000,
    );
    assert!(a.json().get("source").is_none(), "{}", body(&a));

    // The CLI: a path as typed (canonicalized), a ref and a subdir.
    let typed = format!("{}/./../repo", r.repo());
    let out = d.cli(&[
        "deploy", "gcli", "--git", &typed, "--ref", "v1", "--subdir", "fn",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ember deploy --git: {err}");
    assert!(err.contains(&format!("git v1 at {}", &one[..12])), "{err}");
    assert_eq!(d.invoke("gcli", "{}").json()["result"]["v"], "one");
    let out = d.cli(&["function", "gcli"]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["source"]["git"]["commit"], one.as_str());
    assert_eq!(shown["source"]["git"]["repo"], r.repo());
    let out = d.cli(&["functions"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains(&format!("git v1@{}", &one[..12])), "{table}");
    // --ref without --git is a usage error, and the CLI runs no git.
    let out = d.cli(&["deploy", "gcli", "--ref", "v1"]);
    assert!(!out.status.success());
}

#[test]
fn bad_git_deploys_get_their_own_code_and_status() {
    if !ready("bad_git_deploys_get_their_own_code_and_status") {
        return;
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start(&["--pool-size", "1", "--http", &addr]);
    let r = Repo::init(d.dir.path().join("repo"));
    r.write("fn/main.py", &handler_returning("one"))
        .write("docs/README", b"no handler here\n");
    std::os::unix::fs::symlink("/etc", r.path.join("etc-link")).unwrap();
    r.commit("one");
    let locked = Repo::init(d.dir.path().join("locked"));
    locked.write("main.py", &handler_returning("x"));
    locked.commit("x");
    std::fs::set_permissions(&locked.path, std::fs::Permissions::from_mode(0o700)).unwrap();
    let missing = d.dir.path().join("no-such-repo");
    let missing = missing.to_str().unwrap();

    let cases = [
        (
            json!({"repo": r.repo(), "ref": "nope", "subdir": "fn"}),
            422,
            "git_ref_not_found",
            "\"nope\"",
        ),
        (
            json!({"repo": r.repo(), "subdir": "missing"}),
            422,
            "git_subdir_not_found",
            "\"missing\"",
        ),
        (
            json!({"repo": r.repo(), "subdir": "fn/main.py"}),
            422,
            "git_subdir_not_found",
            "fn/main.py",
        ),
        // A symlink in the tree is a blob, never a way out.
        (
            json!({"repo": r.repo(), "subdir": "etc-link"}),
            422,
            "git_subdir_not_found",
            "etc-link",
        ),
        (
            json!({"repo": r.repo(), "subdir": "docs"}),
            400,
            "invalid_code",
            "main.py",
        ),
        (
            json!({"repo": missing}),
            422,
            "git_unreachable",
            "unprivileged user",
        ),
        (
            json!({"repo": locked.repo()}),
            422,
            "git_unreachable",
            "unprivileged user",
        ),
        (
            json!({"repo": r.repo(), "ref": "--upload-pack=touch /tmp/x"}),
            400,
            "invalid_request",
            "ref",
        ),
        (
            json!({"repo": r.repo(), "ref": "-c"}),
            400,
            "invalid_request",
            "ref",
        ),
        (
            json!({"repo": r.repo(), "subdir": "../locked"}),
            400,
            "invalid_request",
            "subdir",
        ),
        (
            json!({"repo": "ext::sh -c touch% /tmp/pwned"}),
            400,
            "invalid_request",
            "repo",
        ),
        (
            json!({"repo": "relative/path"}),
            400,
            "invalid_request",
            "absolute",
        ),
        (
            json!({"repo": r.repo(), "branch": "main"}),
            400,
            "invalid_json",
            "branch",
        ),
    ];
    for (git, status, code, says) in cases {
        let a = deploy_git(&d, "bad", git.clone());
        let msg = a.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert_eq!(
            (a.status, a.error_code().as_str()),
            (status, code),
            "{git}: {msg}"
        );
        assert!(msg.contains(says), "{git}: {msg:?} should say {says}");
    }
    assert_eq!(d.get("/v1/functions/bad").status, 404);
    // The repository unreachable names itself and the uid to grant.
    let a = deploy_git(&d, "bad", json!({"repo": missing}));
    assert!(body(&a).contains(missing), "{}", body(&a));

    // Over HTTP (with the dashboard token): refused like a host path.
    let token = std::fs::read_to_string(d.state.join("dashboard-token")).unwrap();
    let bearer = format!("Bearer {}", token.trim());
    let body = json!({ "code": { "git": { "repo": r.repo(), "subdir": "fn" } } }).to_string();
    let a = http_tcp(
        &addr,
        "PUT",
        "/v1/functions/over-http",
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(
        (a.status, a.error_code().as_str()),
        (403, "host_path_forbidden")
    );
    assert_eq!(d.get("/v1/functions/over-http").status, 404);
}

/// Executable `script` at `path`.
fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn hostile_repositories_are_contained() {
    if !ready("hostile_repositories_are_contained") {
        return;
    }
    let d = Daemon::start(&[
        "--pool-size",
        "1",
        "--max-unpacked-code-bytes",
        &(1024 * 1024).to_string(),
    ]);

    // A symlink to a host file: kept a symlink, resolved (to nothing) in
    // the sandbox; the host file's content never reaches the function.
    let secret = d.dir.path().join("host-secret");
    std::fs::write(&secret, "HOST-SECRET-7f3a\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = Repo::init(d.dir.path().join("links"));
    r.write(
        "main.py",
        b"def handler(event, context):\n    out = {}\n    for f in ['leak', 'shadow', 'etc/hostname']:\n        try:\n            out[f] = open(f).read()\n        except Exception as e:\n            out[f] = type(e).__name__\n    return out\n",
    );
    std::os::unix::fs::symlink(&secret, r.path.join("leak")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", r.path.join("shadow")).unwrap();
    std::os::unix::fs::symlink("/etc", r.path.join("etc")).unwrap();
    r.commit("links");
    let a = deploy_git(&d, "links", json!({"repo": r.repo()}));
    assert_eq!(a.status, 201, "{}", body(&a));
    let digest = a.json()["digest"].as_str().unwrap().to_string();
    let stored = d.state.join("code/objects").join(&digest);
    for f in ["leak", "shadow", "etc"] {
        let m = std::fs::symlink_metadata(stored.join(f)).unwrap();
        assert!(m.file_type().is_symlink(), "{f} stored as {m:?}");
    }
    let out = d.invoke("links", "{}");
    let text = body(&out);
    assert!(!text.contains("HOST-SECRET"), "{text}");
    assert!(!text.contains("root:"), "{text}");

    // Config and hooks that would run commands on a clone, a checkout,
    // an upload-pack or a filter: none runs, as root or as git's id.
    let marks = d.dir.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    std::fs::set_permissions(&marks, std::fs::Permissions::from_mode(0o777)).unwrap();
    let hooks = d.dir.path().join("evil-hooks");
    std::fs::create_dir(&hooks).unwrap();
    let touch = |name: &str| format!("touch {}/{name}", marks.display());
    let h = Repo::init(d.dir.path().join("hooks"));
    h.write("main.py", &handler_returning("calm"))
        .write(".gitattributes", b"* filter=evil\n");
    h.commit("calm");
    for name in [
        "fsmonitor",
        "pack-objects-hook",
        "ssh",
        "alternate-refs",
        "smudge",
        "pager",
    ] {
        script(&hooks.join(name), &touch(name));
    }
    for hook in [
        "post-checkout",
        "post-commit",
        "post-merge",
        "post-rewrite",
        "reference-transaction",
        "pre-auto-gc",
        "post-index-change",
        "update",
        "post-update",
        "pre-receive",
        "post-receive",
        "push-to-checkout",
        "pre-push",
        "fsmonitor-watchman",
    ] {
        script(&h.path.join(".git/hooks").join(hook), &touch(hook));
        script(&hooks.join(hook), &touch(hook));
    }
    let p = |name: &str| hooks.join(name).to_str().unwrap().to_string();
    for (key, value) in [
        ("core.fsmonitor", p("fsmonitor")),
        ("core.hooksPath", hooks.to_str().unwrap().to_string()),
        ("uploadpack.packObjectsHook", p("pack-objects-hook")),
        ("core.sshCommand", p("ssh")),
        ("core.alternateRefsCommand", p("alternate-refs")),
        ("core.pager", p("pager")),
        ("filter.evil.smudge", p("smudge")),
    ] {
        h.git(&["config", key, &value]);
    }
    // The hooks are live for the repository's own git...
    h.write("main.py", &handler_returning("calm, again"));
    h.commit("again");
    assert!(
        marks.join("post-commit").exists(),
        "the test's hooks do not run"
    );
    for e in std::fs::read_dir(&marks).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    // ...and never for emberd's.
    let a = deploy_git(&d, "hooks", json!({"repo": h.repo()}));
    assert_eq!(a.status, 201, "{}", body(&a));
    assert_eq!(d.invoke("hooks", "{}").json()["result"]["v"], "calm, again");
    let ran: Vec<_> = std::fs::read_dir(&marks)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(ran.is_empty(), "commands of the repository ran: {ran:?}");

    // A file past --max-unpacked-code-bytes (1 MiB): refused by the
    // unpacker, whatever git compresses it to.
    let big = Repo::init(d.dir.path().join("big"));
    big.write("main.py", &handler_returning("big"))
        .write("blob.bin", &vec![0u8; 3 << 20]);
    big.commit("big");
    let a = deploy_git(&d, "big", json!({"repo": big.repo()}));
    assert_eq!(
        (a.status, a.error_code().as_str()),
        (413, "payload_too_large"),
        "{}",
        body(&a)
    );

    // A history past the clone's room (twice the code limit): the clone
    // fills its tmpfs and stops there.
    let heavy = Repo::init(d.dir.path().join("heavy"));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..(3 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    heavy.write("noise.bin", &noise);
    heavy.commit("noise");
    heavy.git(&["rm", "-q", "noise.bin"]);
    heavy.write("main.py", &handler_returning("light"));
    heavy.commit("light");
    let a = deploy_git(&d, "heavy", json!({"repo": heavy.repo()}));
    assert!(body(&a).contains("does not fit"), "{}", body(&a));
    assert_eq!(
        (a.status, a.error_code().as_str()),
        (413, "payload_too_large"),
        "{}",
        body(&a)
    );
    // Nothing of git is left in the run directory.
    let log = d.log();
    let left: Vec<_> = mounts_named(&format!("{}/builds/ember-git-", d.tag()));
    assert!(left.is_empty(), "git's tmpfs left mounted: {left:?}\n{log}");
}

/// Mount points whose path holds `part`.
fn mounts_named(part: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.contains(part))
        .map(String::from)
        .collect()
}

/// Accepts connections and never answers, holding each open; the held
/// connections, for the test to see whether the other end let go.
fn stalling_server() -> (u16, std::sync::mpsc::Receiver<std::net::TcpStream>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            if tx.send(conn).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

/// Whether the peer closed `conn` within `within` (after whatever it sent).
fn closed_by_peer(conn: &mut std::net::TcpStream, within: std::time::Duration) -> bool {
    use std::io::Read;
    conn.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn a_stalling_server_and_submodules_get_nothing_from_emberd() {
    if !ready("a_stalling_server_and_submodules_get_nothing_from_emberd") {
        return;
    }
    let d = Daemon::start(&["--pool-size", "1", "--git-timeout-s", "2"]);

    // A server that takes the connection and never answers: git is killed
    // at --git-timeout-s, helpers and all (the connection is let go), and
    // the deploy says why.
    let (port, held) = stalling_server();
    let a = deploy_git(
        &d,
        "stalled",
        json!({"repo": format!("http://127.0.0.1:{port}/stall.git")}),
    );
    assert_eq!(
        (a.status, a.error_code().as_str()),
        (422, "git_failed"),
        "{}",
        body(&a)
    );
    assert!(body(&a).contains("longer than 2 s"), "{}", body(&a));
    let mut conn = held
        .recv_timeout(std::time::Duration::from_secs(1))
        .expect("git never connected to the stalling server");
    assert!(
        closed_by_peer(&mut conn, std::time::Duration::from_secs(10)),
        "git (or its http helper) still holds the connection after the deploy failed"
    );
    assert_eq!(d.get("/v1/functions/stalled").status, 404);

    // A submodule pointing at a host repository: never fetched, so the
    // function gets an empty directory, not the other repository's files.
    let inner = Repo::init(d.dir.path().join("inner"));
    inner.write("secret.txt", b"SUBMODULE-SECRET-91c2\n");
    inner.commit("secret");
    let outer = Repo::init(d.dir.path().join("outer"));
    outer.write(
        "main.py",
        b"import os\ndef handler(event, context):\n    try:\n        return {'sub': sorted(os.listdir('sub')), 'secret': open('sub/secret.txt').read()}\n    except Exception as e:\n        return {'sub': sorted(os.listdir('sub')) if os.path.isdir('sub') else None, 'secret': type(e).__name__}\n",
    );
    outer.git(&[
        "-c",
        "protocol.file.allow=always",
        "submodule",
        "add",
        "-q",
        inner.repo(),
        "sub",
    ]);
    outer.commit("with a submodule");
    let a = deploy_git(&d, "outer", json!({"repo": outer.repo()}));
    assert_eq!(a.status, 201, "{}", body(&a));
    let digest = a.json()["digest"].as_str().unwrap().to_string();
    let stored = d.state.join("code/objects").join(&digest);
    let in_sub: Vec<_> = std::fs::read_dir(stored.join("sub"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(in_sub.is_empty(), "the submodule was fetched: {in_sub:?}");
    let out = d.invoke("outer", "{}");
    assert_eq!(out.status, 200, "{}", body(&out));
    let text = body(&out);
    assert!(!text.contains("SUBMODULE-SECRET"), "{text}");
    assert_eq!(
        out.json()["result"]["secret"],
        "FileNotFoundError",
        "{text}"
    );
}
