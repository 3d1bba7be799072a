//! Invocation records on a full state filesystem: emberd keeps answering,
//! says its history is degraded, and loses no answered invocation's
//! outcome, neither when space comes back nor across a SIGKILL before it
//! does. The state dir is a small tmpfs the test mounts (root).

use ember_integration::{assert_no_leftovers, prerequisites_met, Daemon};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Prints 8 KB: what the records of a few hundred invocations hold is
/// more than any slack SQLite's files have.
const CHATTY: &str = "def handler(event, context):\n    print('x' * 8000)\n    return event\n";

/// A tmpfs mounted for the test, unmounted (lazily, whatever still holds
/// it) on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        nix::mount::mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size},mode=0755").as_str()),
        )
        .expect("mount tmpfs");
        Tmpfs(at.to_path_buf())
    }

    /// Fill what is left with a file; returns it.
    fn fill(&self) -> PathBuf {
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        for chunk in [1 << 20, 4096, 1] {
            let buf = vec![0u8; chunk];
            while f.write_all(&buf).is_ok() {}
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A daemon whose state dir is a small tmpfs; the daemon goes first.
struct Rig {
    d: Daemon,
    fs: Tmpfs,
}

fn rig() -> Rig {
    let mut d = Daemon::prepare(&["--pool-size", "1"]);
    let fs = Tmpfs::mount(&d.state, "64m");
    d.spawn();
    d.deploy_files("chatty", &[("main.py", CHATTY)], 10_000);
    Rig { d, fs }
}

/// Stop emberd, unmount its state dir, and check nothing is left.
fn stop_and_check(rig: Rig) {
    let Rig { mut d, fs } = rig;
    let tag = d.tag();
    d.stop();
    drop(fs);
    assert_no_leftovers(&tag, &d.state);
}

/// Invoke `n` times; every one must be answered 200. Their ids.
fn invoke_all(d: &Daemon, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let a = d.invoke("chatty", &format!("{{\"i\": {i}}}"));
            assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
            a.json()["id"].as_str().expect("id").to_string()
        })
        .collect()
}

/// Wait until `GET /v1/health` satisfies `ok`; its answer.
fn wait_health(d: &Daemon, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let t = Instant::now();
    loop {
        let h = d.get("/v1/health").json();
        if ok(&h) {
            return h;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "never {what}: {h}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn degraded(d: &Daemon) -> Value {
    let h = wait_health(d, "degraded", |h| {
        h["history"]["status"] == "degraded" && h["history"]["waiting"].as_u64() > Some(0)
    });
    assert_eq!(h["status"], "degraded", "{h}");
    let error = h["history"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("full"), "{h}");
    let metrics = String::from_utf8_lossy(&d.get("/metrics").body).to_string();
    assert!(
        metrics.contains("\nember_history_degraded 1\n"),
        "{metrics}"
    );
    h
}

/// The records of `chatty`, by id.
fn records(d: &Daemon) -> BTreeMap<String, Value> {
    let all = d.get("/v1/invocations?function=chatty&limit=10000").json();
    all["invocations"]
        .as_array()
        .expect("invocations")
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

fn assert_all_ok(ids: &[String], recs: &BTreeMap<String, Value>) {
    let wrong: Vec<_> = ids
        .iter()
        .filter(|id| recs.get(*id).map(|r| r["outcome"].clone()) != Some("ok".into()))
        .map(|id| (id, recs.get(id).map(|r| r["outcome"].clone())))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} answered invocations without their ok record: {:?}",
        wrong.len(),
        ids.len(),
        &wrong[..wrong.len().min(10)]
    );
}

#[test]
fn answered_invocations_keep_their_outcome_across_a_full_disk_and_a_sigkill() {
    let test = "answered_invocations_keep_their_outcome_across_a_full_disk_and_a_sigkill";
    if !prerequisites_met(test) {
        return;
    }
    let mut rig = rig();
    let filler = rig.fs.fill();
    let ids = invoke_all(&rig.d, 300);
    let h = degraded(&rig.d);
    eprintln!("health with the disk full: {h}");

    // Killed before space comes back: what waited was only in memory and
    // in the journal.
    rig.d.crash();
    std::fs::remove_file(&filler).expect("free space");
    rig.d.spawn();
    let h = wait_health(&rig.d, "ok", |h| h["status"] == "ok");
    assert_eq!(h["history"]["waiting"], 0, "{h}");
    let recs = records(&rig.d);
    assert_all_ok(&ids, &recs);
    // Their output never reached SQLite: its first bytes, its size.
    let r = &recs[&ids[ids.len() - 1]];
    assert_eq!(r["stdout_bytes"], 8001, "{r}");
    assert!(r["stdout"].as_str().unwrap().len() < 8001, "{r}");
    stop_and_check(rig);
}

#[test]
fn records_waiting_on_a_full_disk_are_written_when_space_comes_back() {
    let test = "records_waiting_on_a_full_disk_are_written_when_space_comes_back";
    if !prerequisites_met(test) {
        return;
    }
    let rig = rig();
    let filler = rig.fs.fill();
    let ids = invoke_all(&rig.d, 300);
    degraded(&rig.d);

    std::fs::remove_file(&filler).expect("free space");
    let h = wait_health(&rig.d, "ok again", |h| {
        h["status"] == "ok" && h["history"]["waiting"] == 0
    });
    assert!(h["history"].get("error").is_none(), "{h}");
    let recs = records(&rig.d);
    assert_all_ok(&ids, &recs);
    // Written whole: they were kept in memory, output and all.
    assert!(ids
        .iter()
        .all(|id| recs[id]["stdout"].as_str().unwrap().len() == 8001));
    // Hundreds of failed writes, one line per 10 s.
    let warned = rig.d.log().matches("writing invocation records").count();
    assert!(
        (1..=2).contains(&warned),
        "{warned} lines:\n{}",
        rig.d.log()
    );
    let metrics = String::from_utf8_lossy(&rig.d.get("/metrics").body).to_string();
    assert!(
        metrics.contains("\nember_history_degraded 0\n"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("\nember_history_write_errors_total 0\n"),
        "{metrics}"
    );
    stop_and_check(rig);
}

#[test]
fn emberd_starts_on_a_full_disk_and_catches_up_when_space_comes_back() {
    let test = "emberd_starts_on_a_full_disk_and_catches_up_when_space_comes_back";
    if !prerequisites_met(test) {
        return;
    }
    let mut rig = rig();
    let filler = rig.fs.fill();
    let mut ids = invoke_all(&rig.d, 100);
    degraded(&rig.d);
    // Killed and started again on the still full disk: what the journal
    // holds is enough to start on, and invocations are still answered.
    rig.d.crash();
    rig.d.spawn();
    degraded(&rig.d);
    ids.extend(invoke_all(&rig.d, 50));

    std::fs::remove_file(&filler).expect("free space");
    wait_health(&rig.d, "ok again", |h| {
        h["status"] == "ok" && h["history"]["waiting"] == 0
    });
    assert_all_ok(&ids, &records(&rig.d));
    stop_and_check(rig);
}
