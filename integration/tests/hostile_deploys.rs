//! The isolation suite, deploy and host side: hostile uploads (what emberd
//! unpacks and what the deploy build sees), hostile requirements, limits
//! of the build sandbox, the HTTP listener under a flood of idle
//! connections, host paths over HTTP, operator caps, and terminal escapes
//! in the CLI. Every attack must fail.
//!
//! Attacks on the deploy build run on every backend (the build runs in a
//! sandbox of the function's backend); attacks on emberd's own code run
//! on runc only (the other columns say so). The table "deploys" in
//! docs/isolation.md is generated from what this suite saw, one column
//! per backend (`EMBER_BLESS=1` rewrites it).

use ember_integration::table::{check_column, Row};
use ember_integration::{
    backend, have_pip, http_tcp, prerequisites_met, tool_present, write_wheel, Daemon,
};
use serde_json::json;
use std::io::Write;
use std::time::{Duration, Instant};

/// The cell of a host-side attack on a backend other than runc.
const SAME_AS_RUNC: &str = "same as runc (emberd's own code, not the backend's)";

/// A gzip-compressed tar built entry by entry with raw headers, so the
/// test can write what a well-behaved tar tool would refuse.
struct Upload(tar::Builder<Vec<u8>>);

impl Upload {
    fn new() -> Upload {
        Upload(tar::Builder::new(Vec::new()))
    }

    fn file(mut self, path: &str, body: &[u8]) -> Upload {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        self.0.append_data(&mut h, path, body).unwrap();
        self
    }

    fn symlink(mut self, path: &str, target: &str) -> Upload {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o777);
        h.set_entry_type(tar::EntryType::Symlink);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }

    fn gz(self) -> Vec<u8> {
        gzip(&self.0.into_inner().unwrap())
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn put(d: &Daemon, name: &str, gz: &[u8]) -> ember_integration::Answer {
    d.request(
        "PUT",
        &format!("/v1/functions/{name}"),
        "application/gzip",
        gz,
    )
}

fn refused(a: &ember_integration::Answer) -> String {
    format!(
        "refused: {} {}",
        a.status,
        a.json()["error"]["code"].as_str().unwrap_or("?")
    )
}

#[test]
fn hostile_deploys_are_refused_or_contained() {
    let test = "hostile_deploys_are_refused_or_contained";
    if !prerequisites_met(test) || !have_pip(test) {
        return;
    }
    let be = backend();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    rows.extend(build_attacks(&mut failures));
    rows.extend(build_limits(&mut failures));
    let host = [
        "requirements.txt naming a host file (-r /etc/shadow)",
        "requirements.txt naming a loopback URL (-r http://127.0.0.1:PORT/...)",
        "a 512 MiB GNU long name in a 1 MB upload",
        "a 300-character file name",
        "deploy code an older emberd built as root",
        "deploy from a host path over HTTP (with the dashboard token)",
        "deploy a host directory holding a 0600 file",
        "ask for more memory, processes or CPU than the operator allows",
        "outgrow the daemon's cgroup budget (memory, pids)",
        "hold 200 idle connections to the HTTP listener",
        "print terminal escapes through ember invoke and ember logs",
    ];
    if be == "runc" {
        rows.extend(host_side(&mut failures));
    } else {
        rows.extend(host.iter().map(|t| Row::new(t, "default", SAME_AS_RUNC)));
    }
    assert!(
        failures.is_empty(),
        "hostile deploys on {be}:\n{}",
        failures.join("\n")
    );
    let titles: Vec<&str> = rows.iter().map(|r| r.attack.as_str()).collect();
    assert_eq!(&titles[titles.len() - host.len()..], host);
    check_column("deploys", &be, &rows);
}

/// What an upload can try against the deploy build.
fn build_attacks(failures: &mut Vec<String>) -> Vec<Row> {
    let wheels = tempfile::tempdir().unwrap();
    write_wheel(wheels.path(), "emberdep", "VALUE = 'from the wheel'\n");
    let wheels_dir = wheels.path().to_str().unwrap().to_string();
    let mut d = Daemon::start(&["--pool-size", "1", "--wheels-dir", &wheels_dir]);
    let tag = d.tag();
    let mut rows = Vec::new();

    // A pip of its own (and a sitecustomize) that would write on the
    // host if the build imported it as root there.
    let marker = std::env::temp_dir().join(format!("ember-pwned-{tag}"));
    let _ = std::fs::remove_file(&marker);
    let evil = format!("open({:?}, 'w').write('pwned')\n", marker.to_str().unwrap());
    let gz = Upload::new()
        .file(
            "main.py",
            b"import emberdep\ndef handler(e, c):\n    return emberdep.VALUE\n",
        )
        .file("requirements.txt", b"emberdep==1.0\n")
        .file("pip/__init__.py", evil.as_bytes())
        .file("pip/__main__.py", evil.as_bytes())
        .file("sitecustomize.py", evil.as_bytes())
        .gz();
    let a = put(&d, "shadow-pip", &gz);
    let ran = marker.exists();
    let v = d.invoke("shadow-pip", "{}").json();
    if !(a.status == 201 && !ran && v["result"] == "from the wheel") {
        failures.push(format!(
            "shadowing pip: deploy {} marker {ran} invoke {v}",
            a.status
        ));
    }
    rows.push(Row::new(
        "ship a pip package and a sitecustomize that run at deploy",
        "default",
        if ran {
            "allowed: ran on the host".to_string()
        } else {
            "blocked: the build ran the real pip, isolated (-I, a neutral directory), in a sandbox; nothing ran on the host".to_string()
        },
    ));

    // Symlinks where the build writes, pointing at a host directory.
    let target = tempfile::tempdir().unwrap();
    for (title, entry) in [
        ("a __pycache__ symlink into a host directory", "__pycache__"),
        (
            "a .ember/python symlink into a host directory",
            ".ember/python",
        ),
        (
            "a node_modules/.bin symlink into a host directory",
            "node_modules/.bin",
        ),
    ] {
        let gz = Upload::new()
            .file("main.py", b"def handler(e, c):\n    return 1\n")
            .symlink(entry, target.path().to_str().unwrap())
            .gz();
        let a = put(&d, "planted-link", &gz);
        let touched = std::fs::read_dir(target.path()).unwrap().count();
        if a.status != 400 || touched != 0 {
            failures.push(format!("{title}: {} {touched}", a.status));
        }
        rows.push(Row::new(
            title,
            "default",
            format!("blocked: {}, nothing written through it", refused(&a)),
        ));
    }
    d.stop_and_check(&tag);
    let _ = std::fs::remove_file(&marker);
    rows
}

/// (what the table calls it, emberd's flags, the upload's files, the
/// error code expected).
type LimitCase<'a> = (&'a str, &'a [&'a str], Vec<(&'a str, String)>, &'a str);

/// Each limit of the build sandbox, reached: its own error, nothing kept.
fn build_limits(failures: &mut Vec<String>) -> Vec<Row> {
    let wheels = tempfile::tempdir().unwrap();
    write_wheel(wheels.path(), "emberdep", "VALUE = 1\n");
    let wheels_dir = wheels.path().to_str().unwrap().to_string();
    // About 600 KB of source whose bytecode holds as much again (each
    // line a distinct string constant): the two do not fit in 1 MiB.
    let big_source: String = (0..6_000)
        .map(|i| format!("s_{i} = '{}{i}'\n", "x".repeat(90)))
        .collect();
    let cases: [LimitCase; 4] = [
        (
            "a build past its time (--build-timeout-ms 1)",
            &["--build-timeout-ms", "1"],
            vec![("main.py", "def handler(e, c):\n    return 1\n".into())],
            "build_timeout",
        ),
        (
            "a build past its memory (pip under --build-memory-mb 24)",
            &["--build-memory-mb", "24"],
            vec![
                ("main.py", "def handler(e, c):\n    return 1\n".into()),
                ("requirements.txt", "emberdep==1.0\n".into()),
            ],
            "build_oom",
        ),
        (
            "a build past its disk (600 KB of source and its bytecode, --build-disk-mb 1)",
            &["--build-disk-mb", "1"],
            vec![("main.py", big_source)],
            "build_disk_full",
        ),
        (
            "a build past its processes (--build-pids 1)",
            &["--build-pids", "1"],
            vec![("main.py", "def handler(e, c):\n    return 1\n".into())],
            "build_pids",
        ),
    ];
    let mut rows = Vec::new();
    for (title, flags, files, code) in cases {
        let mut args = vec!["--pool-size", "0", "--wheels-dir", &wheels_dir];
        args.extend(flags);
        let mut d = Daemon::start(&args);
        let tag = d.tag();
        let mut up = Upload::new();
        for (f, body) in &files {
            up = up.file(f, body.as_bytes());
        }
        let a = put(&d, "limited", &up.gz());
        let got = a.json()["error"]["code"].as_str().unwrap_or("").to_string();
        if got != code {
            failures.push(format!(
                "{title}: {} {}",
                a.status,
                String::from_utf8_lossy(&a.body)
            ));
        }
        let listed = d.get("/v1/functions").json()["functions"]
            .as_array()
            .map_or(0, Vec::len);
        if listed != 0 {
            failures.push(format!("{title}: the function was deployed anyway"));
        }
        rows.push(Row::new(
            title,
            "default",
            format!("contained: {} `{code}`, nothing deployed", a.status),
        ));
        d.stop_and_check(&tag);
    }
    rows
}

/// Attacks on emberd's own code paths (runc only).
fn host_side(failures: &mut Vec<String>) -> Vec<Row> {
    let port = ember_integration::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut d = Daemon::start(&[
        "--pool-size",
        "1",
        "--http",
        &addr,
        "--max-function-memory-mb",
        "1024",
        "--sandboxes-memory-mb",
        "3000",
        "--sandboxes-pids",
        "2000",
    ]);
    let tag = d.tag();
    let mut rows = Vec::new();
    let check = |ok: bool, what: String, failures: &mut Vec<String>| {
        if !ok {
            failures.push(what);
        }
    };

    // requirements.txt naming a host file, and a URL on loopback.
    let gz = Upload::new()
        .file("main.py", b"def handler(e, c):\n    return 1\n")
        .file("requirements.txt", b"-r /etc/shadow\n")
        .gz();
    let a = put(&d, "reqs", &gz);
    let msg = String::from_utf8_lossy(&a.body).into_owned();
    check(
        a.status == 400 && !msg.contains("root:") && msg.contains("line 1"),
        format!("-r /etc/shadow: {msg}"),
        failures,
    );
    rows.push(Row::new(
        "requirements.txt naming a host file (-r /etc/shadow)",
        "default",
        format!(
            "blocked: {}, naming the line; no host file read",
            refused(&a)
        ),
    ));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!(
        "-r http://127.0.0.1:{}/reqs.txt\n",
        listener.local_addr().unwrap().port()
    );
    let gz = Upload::new()
        .file("main.py", b"def handler(e, c):\n    return 1\n")
        .file("requirements.txt", url.as_bytes())
        .gz();
    let a = put(&d, "reqs", &gz);
    let contacted = listener.accept().is_ok();
    check(
        a.status == 400 && !contacted,
        format!("-r URL: {} contacted {contacted}", a.status),
        failures,
    );
    rows.push(Row::new(
        "requirements.txt naming a loopback URL (-r http://127.0.0.1:PORT/...)",
        "default",
        format!("blocked: {}, nothing connected to the port", refused(&a)),
    ));

    // A long-name header far bigger than the upload.
    let started = Instant::now();
    let a = put(&d, "longname", &long_name_bomb(512 << 20));
    let took = started.elapsed();
    let peak = peak_rss_mb(d.pid());
    check(
        a.status == 400 && peak < 256 && took < Duration::from_secs(30),
        format!("long name: {} peak {peak} MB in {took:?}", a.status),
        failures,
    );
    rows.push(Row::new(
        "a 512 MiB GNU long name in a 1 MB upload",
        "default",
        format!(
            "blocked: {} before the name is read; emberd stays under 256 MB",
            refused(&a)
        ),
    ));
    let name = "n".repeat(300) + ".py";
    let gz = Upload::new()
        .file("main.py", b"def handler(e, c):\n    return 1\n")
        .file(&name, b"x = 1\n")
        .gz();
    let a = put(&d, "longfile", &gz);
    check(
        a.status == 400,
        format!("300 chars: {}", a.status),
        failures,
    );
    rows.push(Row::new(
        "a 300-character file name",
        "default",
        format!("blocked: {}", refused(&a)),
    ));

    rows.push(old_build(&d, failures));
    rows.extend(host_paths(&d, &addr, failures));
    rows.extend(caps(&d, &tag, failures));
    rows.push(idle_flood(&d, &addr, failures));
    d.stop_and_check(&tag);
    rows.push(terminal_escapes(failures));
    rows
}

/// A gzip'd tar whose first header is a GNU long name (`././@LongLink`)
/// of `size` bytes of zeros: about a thousandth of that once compressed.
fn long_name_bomb(size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    h.set_mode(0o644);
    h.set_size(size);
    h.set_entry_type(tar::EntryType::GNULongName);
    h.set_cksum();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(h.as_bytes()).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..(size >> 20) {
        enc.write_all(&zeros).unwrap();
    }
    enc.finish().unwrap()
}

/// The peak resident size of process `pid` so far, in MB.
fn peak_rss_mb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// Code an older emberd built (no build marker): never served, rebuilt
/// by a redeploy of the same content.
fn old_build(d: &Daemon, failures: &mut Vec<String>) -> Row {
    let a = d.deploy_files(
        "legacy",
        &[("main.py", "def handler(e, c):\n    return 7\n")],
        5000,
    );
    let digest = a.json()["digest"].as_str().unwrap().to_string();
    let marker = d.state.join("code/objects").join(format!("{digest}.built"));
    std::fs::remove_file(&marker).expect("build marker");
    let refused_now = d.invoke("legacy", "{}");
    let again = d.deploy_files(
        "legacy",
        &[("main.py", "def handler(e, c):\n    return 7\n")],
        5000,
    );
    let v = d.invoke("legacy", "{}").json();
    if refused_now.status != 409 || again.status != 200 || v["result"] != 7 {
        failures.push(format!(
            "old build: {} then {} {v}",
            refused_now.status, again.status
        ));
    }
    Row::new(
        "deploy code an older emberd built as root",
        "default",
        format!(
            "blocked: {}; a redeploy builds it again",
            refused(&refused_now)
        ),
    )
}

/// Host paths: never over HTTP; over the socket, only what any user may
/// read.
fn host_paths(d: &Daemon, addr: &str, failures: &mut Vec<String>) -> Vec<Row> {
    let token = std::fs::read_to_string(d.state.join("dashboard-token")).unwrap();
    let bearer = format!("Bearer {}", token.trim());
    let src = d.dir.path().join("src-open");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("main.py"), "def handler(e, c):\n    return 1\n").unwrap();
    let body = json!({ "code": { "path": src } }).to_string();
    let a = http_tcp(
        addr,
        "PUT",
        "/v1/functions/over-http",
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
    .unwrap();
    let code = a.json()["error"]["code"].as_str().unwrap_or("").to_string();
    if a.status != 403 || code != "host_path_forbidden" {
        failures.push(format!("path over http: {} {code}", a.status));
    }
    let mut rows = vec![Row::new(
        "deploy from a host path over HTTP (with the dashboard token)",
        "default",
        format!("blocked: {} {code}", a.status),
    )];
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(src.join("secret.txt"), "root only").unwrap();
    std::fs::set_permissions(
        src.join("secret.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let a = d.request(
        "PUT",
        "/v1/functions/private",
        "application/json",
        body.as_bytes(),
    );
    let msg = String::from_utf8_lossy(&a.body).into_owned();
    if a.status != 400 || !msg.contains("secret.txt") || msg.contains("root only") {
        failures.push(format!("0600 file: {} {msg}", a.status));
    }
    rows.push(Row::new(
        "deploy a host directory holding a 0600 file",
        "default",
        format!("blocked: {}, naming the file; nothing copied", refused(&a)),
    ));
    rows
}

/// What a deploy may ask for, and what all sandboxes may use together.
fn caps(d: &Daemon, tag: &str, failures: &mut Vec<String>) -> Vec<Row> {
    let mut said = Vec::new();
    for (key, value, flag) in [
        ("memory_mb", 65_536, "--max-function-memory-mb"),
        ("pids", 32_768, "--max-function-pids"),
        ("cpu_shares", 262_144, "--max-function-cpu-shares"),
    ] {
        let src = d.dir.path().join("src-caps");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("main.py"), "def handler(e, c):\n    return 1\n").unwrap();
        let a = d.put_function("greedy", &json!({ key: value }), &src);
        let msg = String::from_utf8_lossy(&a.body).into_owned();
        if a.status != 400 || !msg.contains(flag) {
            failures.push(format!("{key} {value}: {} {msg}", a.status));
        }
        said.push(format!("{key} {}", a.status));
    }
    let mut rows = vec![Row::new(
        "ask for more memory, processes or CPU than the operator allows",
        "default",
        format!("blocked: {}, naming the flag", said.join(", ")),
    )];
    let read = |controller: &str, file: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{controller}/ember/{tag}/{file}"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let memory = read("memory", "memory.limit_in_bytes");
    let pids = read("pids", "pids.max");
    if memory != (3000u64 << 20).to_string() || pids != "2000" {
        failures.push(format!("budget: memory {memory} pids {pids}"));
    }
    rows.push(Row::new(
        "outgrow the daemon's cgroup budget (memory, pids)",
        "default",
        "blocked: the daemon's parent cgroup holds every sandbox to --sandboxes-memory-mb and --sandboxes-pids",
    ));
    rows
}

/// Idle connections from a local user without the token: the listener
/// keeps at most 64, the socket API and sandbox creation go on.
fn idle_flood(d: &Daemon, addr: &str, failures: &mut Vec<String>) -> Row {
    let held: Vec<std::net::TcpStream> = (0..200)
        .filter_map(|_| std::net::TcpStream::connect(addr).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // Those past the limit were closed at once.
    let closed = held
        .iter()
        .filter(|s| {
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            matches!(std::io::Read::read(&mut &**s, &mut [0u8; 1]), Ok(0))
        })
        .count();
    let fds = std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .map(|r| r.count())
        .unwrap_or(0);
    // The socket API still answers, and a new sandbox can be made.
    let health = d.get("/v1/health").status;
    d.deploy_files(
        "after-flood",
        &[("main.py", "def handler(e, c):\n    return 2\n")],
        5000,
    );
    let v = d.invoke("after-flood", "{}").json();
    drop(held);
    let ok = closed >= 200 - 64 && health == 200 && v["result"] == 2 && fds < 200;
    if !ok {
        failures.push(format!(
            "flood: {closed} closed, health {health}, fds {fds}, invoke {v}"
        ));
    }
    Row::new(
        "hold 200 idle connections to the HTTP listener",
        "default",
        "contained: 64 kept (closed after 10 s without a request), the rest closed at once; the socket API and sandboxes unaffected",
    )
}

/// A function's output with escape sequences, printed by the CLI to a
/// terminal: spelled out, not interpreted.
fn terminal_escapes(failures: &mut Vec<String>) -> Row {
    if !tool_present("terminal_escapes", "/usr/bin/script", "bsdutils") {
        return Row::new(
            "print terminal escapes through ember invoke and ember logs",
            "default",
            "not run: no script(1)",
        );
    }
    let mut d = Daemon::start(&["--pool-size", "1"]);
    let tag = d.tag();
    d.deploy_files(
        "loud",
        &[(
            "main.py",
            "import sys\ndef handler(e, c):\n    print('\\x1b]0;pwned\\x07\\x1b[2Jhi')\n    raise ValueError('\\x1b[31mred')\n",
        )],
        5000,
    );
    let run = |args: &[&str]| {
        let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
        let mut cmd = vec![
            quote(ember_integration::bin("ember").to_str().unwrap()),
            "--socket".into(),
            quote(d.socket.to_str().unwrap()),
        ];
        cmd.extend(args.iter().map(|a| quote(a)));
        let out = std::process::Command::new("/usr/bin/script")
            .args(["-qfec", &cmd.join(" "), "/dev/null"])
            .env("TERM", "dumb")
            .output()
            .expect("script");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let invoke = run(&["invoke", "-v", "loud"]);
    let logs = run(&["logs", "loud"]);
    for (what, tty) in [("invoke", &invoke), ("logs", &logs)] {
        if tty.contains('\x1b') || !tty.contains("\\x1b]0;pwned\\x07") {
            failures.push(format!("{what} printed raw escapes: {tty:?}"));
        }
    }
    d.stop_and_check(&tag);
    Row::new(
        "print terminal escapes through ember invoke and ember logs",
        "default",
        "blocked: escaped on a terminal (\\x1b...); ember --raw prints them as they are",
    )
}
