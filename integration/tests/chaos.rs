//! Chaos: load from several clients while faults are injected one after
//! another (agents, zygotes, workers, Node runners and idle sandboxes
//! killed, the runtime killed mid-create, a busy sandbox frozen from
//! outside, the state filesystem filled and freed, emberd SIGKILLed and
//! restarted). Then, after a last restart: every answered invocation has
//! its record with the outcome it was answered with; at most one
//! unexpected failure per fault; nothing leaked (containers, cgroups,
//! mounts, descriptors, processes, zombies).
//!
//! Bounded: about a minute per backend. Runs on the suite's backend
//! (`EMBER_TEST_BACKEND`); the Node runner fault only where Node is
//! installed.

use ember_integration::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What one client was answered: the invocation's id and outcome, or the
/// refusal's code (an answer without an id has no record to check).
#[derive(Debug, Clone)]
struct Answered {
    function: String,
    status: u16,
    id: Option<String>,
    outcome: String,
}

impl Answered {
    fn from(function: &str, a: &Answer) -> Answered {
        let v = a.json();
        let (id, outcome) = if a.status == 200 {
            (v["id"].as_str().map(String::from), v["outcome"].as_str())
        } else {
            let outcome = v["invocation"]["outcome"]
                .as_str()
                .or(v["error"]["code"].as_str());
            (
                v["error"]["invocation_id"].as_str().map(String::from),
                outcome,
            )
        };
        Answered {
            function: function.to_string(),
            status: a.status,
            id,
            outcome: outcome.unwrap_or("?").to_string(),
        }
    }
}

/// Clients invoking the function mix in a loop until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answered>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(socket: &Path, functions: &[(&str, &str)], clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|c| {
                let (stop, answers, socket) = (stop.clone(), answers.clone(), socket.to_owned());
                let mix: Vec<(String, String)> = functions
                    .iter()
                    .map(|(f, e)| (f.to_string(), e.to_string()))
                    .collect();
                std::thread::spawn(move || {
                    let mut i = c;
                    while !stop.load(Ordering::Relaxed) {
                        let (f, event) = &mix[i % mix.len()];
                        i += 1;
                        let path = format!("/v1/functions/{f}/invoke");
                        // A connection error (emberd killed) is no answer.
                        if let Ok(a) =
                            http(&socket, "POST", &path, "application/json", event.as_bytes())
                        {
                            answers.lock().unwrap().push(Answered::from(f, &a));
                        } else {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
            })
            .collect();
        Load {
            stop,
            answers,
            threads,
        }
    }

    /// Run for `d`, then stop; the answers.
    fn finish_after(self, d: Duration) -> Vec<Answered> {
        std::thread::sleep(d);
        self.finish()
    }

    fn answered(&self) -> usize {
        self.answers.lock().unwrap().len()
    }

    fn finish(self) -> Vec<Answered> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("client thread");
        }
        Arc::try_unwrap(self.answers)
            .expect("clients gone")
            .into_inner()
            .unwrap()
    }
}

/// A process of a sandbox: its host pid and its parent's.
#[derive(Debug, Clone, Copy)]
struct Proc {
    pid: u32,
    ppid: u32,
}

fn parent_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The processes of `sandbox`, with the depth of each below the sandbox's
/// own first process (0: the agent; 1: a zygote or a Node runner; 2: a
/// worker).
fn tree(tag: &str, sandbox: &str) -> Vec<(Proc, usize)> {
    let procs: Vec<Proc> = sandbox_host_pids(tag, sandbox)
        .into_iter()
        .filter_map(|pid| {
            Some(Proc {
                pid,
                ppid: parent_of(pid)?,
            })
        })
        .collect();
    let inside = |p: u32| procs.iter().any(|q| q.pid == p);
    let depth = |mut p: Proc| {
        let mut d = 0;
        while inside(p.ppid) {
            d += 1;
            p = *procs.iter().find(|q| q.pid == p.ppid).unwrap();
        }
        d
    };
    procs.iter().map(|p| (*p, depth(*p))).collect()
}

fn sigkill(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Sandboxes in `state` (`idle`, `busy`) of `runtime`, with the function
/// they serve (if any).
fn sandboxes(d: &Daemon, runtime: &str, state: &str) -> Vec<(String, String)> {
    d.get("/v1/sandboxes").json()["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == state && s["runtime"] == runtime)
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["function"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Kill the process at `depth` in a sandbox of `runtime` in `state`
/// (optionally serving `function`); whether one was found within 10 s.
fn kill_in_sandbox(
    d: &Daemon,
    tag: &str,
    runtime: &str,
    state: &str,
    function: Option<&str>,
    depth: usize,
) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        for (sb, f) in sandboxes(d, runtime, state) {
            if function.is_some_and(|want| want != f) {
                continue;
            }
            if let Some((p, _)) = tree(tag, &sb).into_iter().find(|(_, dd)| *dd == depth) {
                eprintln!(
                    "chaos: killing pid {} at depth {depth} of {state} sandbox {sb} ({f})",
                    p.pid
                );
                sigkill(p.pid);
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Freeze a sandbox running `function` through its v1 freezer cgroup,
/// behind emberd's back.
fn freeze_busy(d: &Daemon, tag: &str, function: &str) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if let Some((sb, _)) = sandboxes(d, "python3", "busy")
            .into_iter()
            .find(|(_, f)| f == function)
        {
            let path = PathBuf::from(format!(
                "/sys/fs/cgroup/freezer/ember/{tag}/{sb}/freezer.state"
            ));
            if std::fs::write(&path, "FROZEN").is_ok() {
                eprintln!("chaos: froze busy sandbox {sb} from outside");
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// The runtime's command line creating one of `tag`'s containers.
fn creating_runtime(tag: &str) -> Option<u32> {
    let prefix = format!("ember-{tag}-");
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let runtime = args.first().is_some_and(|a| {
            ["runc", "crun", "runsc"]
                .iter()
                .any(|r| Path::new(a).file_name().is_some_and(|n| n == *r))
        });
        let creates = args.iter().any(|a| a == "run" || a == "create");
        if runtime && creates && args.iter().any(|a| a.starts_with(&prefix)) {
            return Some(pid);
        }
    }
    None
}

/// Have the pool create (kill an idle sandbox's agent, which the pool
/// replaces) and kill the runtime while it creates.
fn kill_runtime_mid_create(d: &Daemon, tag: &str) -> bool {
    let t = Instant::now();
    let mut provoked = false;
    while t.elapsed() < Duration::from_secs(15) {
        if let Some(pid) = creating_runtime(tag) {
            eprintln!("chaos: killing the runtime (pid {pid}) mid-create");
            sigkill(pid);
            return true;
        }
        if !provoked {
            provoked = kill_in_sandbox(d, tag, "python3", "idle", None, 0);
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    false
}

/// Fill the filesystem at `dir`; the file that does, to remove.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("chaos-fill");
    let mut f = std::fs::File::create(&path).expect("fill file");
    let block = vec![0u8; 1 << 16];
    while f.write_all(&block).is_ok() {}
    // The last few bytes too.
    while f.write_all(&[0u8; 512]).is_ok() {}
    let _ = f.sync_all();
    path
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Children of `pid` that are zombies.
fn zombies_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so after ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.first() == Some(&"Z") && f.get(1).and_then(|x| x.parse::<u32>().ok()) == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// Every record of `function`, by id (paged: the API gives at most
/// 10,000 at a time).
fn records(d: &Daemon, function: &str) -> HashMap<String, Value> {
    let mut all = HashMap::new();
    let mut since = i64::MIN;
    loop {
        let page = d.get(&format!(
            "/v1/invocations?function={function}&limit=10000&output=false&since={since}"
        ));
        assert_eq!(page.status, 200, "{}", text(&page.body));
        let list = page.json()["invocations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let before = all.len();
        for r in &list {
            all.insert(r["id"].as_str().unwrap().to_string(), r.clone());
        }
        if list.len() < 10_000 || all.len() == before {
            return all;
        }
        // `since` is exclusive and in ms: step back one to miss none.
        since = list.last().unwrap()["started_at"].as_i64().unwrap() - 1;
    }
}

/// A small tmpfs on the daemon's state dir (unmounted by the daemon's drop).
fn small_state_fs(d: &Daemon, mib: u64) {
    std::fs::create_dir_all(&d.state).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &d.state,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some(format!("size={mib}m,mode=0700").as_str()),
    )
    .expect("mount a tmpfs for the state dir");
}

#[test]
fn chaos_nothing_answered_is_lost_and_nothing_leaks() {
    let name = "chaos_nothing_answered_is_lost_and_nothing_leaks";
    if !prerequisites_met(name) {
        return;
    }
    let node = Path::new("/usr/bin/node").exists();
    let runtimes = if node { "python3,node" } else { "python3" };
    let mut d = Daemon::prepare(&[
        "--runtimes",
        runtimes,
        "--pool-size",
        "2",
        "--max-sandboxes",
        "6",
        "--queue-timeout-ms",
        "20000",
    ]);
    small_state_fs(&d, 48);
    d.spawn();
    let tag = d.tag();
    let slow =
        "import time\ndef handler(e, c):\n    time.sleep(e.get('s', 0.3))\n    return 'slept'\n";
    let hello = "def handler(e, c):\n    return {'hello': e.get('n')}\n";
    d.deploy_files_with(
        "hello",
        &[("main.py", hello)],
        json!({ "timeout_ms": 5000 }),
    );
    d.deploy_files_with(
        "plain",
        &[("main.py", hello)],
        json!({ "timeout_ms": 5000, "zygote": false }),
    );
    d.deploy_files_with(
        "counter",
        &[(
            "main.py",
            "n = 0\ndef handler(e, c):\n    global n\n    n += 1\n    return n\n",
        )],
        json!({ "timeout_ms": 5000, "mode": "specialized" }),
    );
    d.deploy_files_with("slow", &[("main.py", slow)], json!({ "timeout_ms": 3000 }));
    let mut mix = vec![
        ("hello", r#"{"n":1}"#),
        ("plain", r#"{"n":2}"#),
        ("counter", "{}"),
        ("slow", r#"{"s":0.3}"#),
    ];
    if node {
        d.deploy_files_with(
            "nhello",
            &[(
                "index.js",
                "exports.handler = async (e) => ({ node: e.n });\n",
            )],
            json!({ "runtime": "node", "timeout_ms": 5000 }),
        );
        mix.push(("nhello", r#"{"n":3}"#));
    }
    // Every function once, so bound sandboxes and zygotes exist.
    for (f, e) in &mix {
        let a = d.invoke(f, e);
        assert_eq!(a.status, 200, "{f}: {}", text(&a.body));
    }

    let load = Load::start(&d.socket, &mix, 4);
    let mut faults: Vec<&str> = Vec::new();
    let hit = |ok: bool, what: &'static str, faults: &mut Vec<&str>| {
        if ok {
            faults.push(what);
        } else {
            eprintln!("chaos: no chance to inject {what}");
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    std::thread::sleep(Duration::from_secs(2));
    hit(
        kill_in_sandbox(&d, &tag, "python3", "idle", None, 0),
        "idle agent",
        &mut faults,
    );
    hit(
        kill_in_sandbox(&d, &tag, "python3", "idle", None, 1),
        "idle zygote",
        &mut faults,
    );
    hit(
        kill_in_sandbox(&d, &tag, "python3", "busy", Some("slow"), 2),
        "busy worker",
        &mut faults,
    );
    hit(
        kill_in_sandbox(&d, &tag, "python3", "busy", Some("slow"), 1),
        "busy zygote",
        &mut faults,
    );
    if node {
        hit(
            kill_in_sandbox(&d, &tag, "node", "idle", None, 1),
            "idle node runner",
            &mut faults,
        );
        hit(
            kill_in_sandbox(&d, &tag, "node", "busy", None, 1),
            "busy node runner",
            &mut faults,
        );
    }
    hit(
        kill_runtime_mid_create(&d, &tag),
        "runtime mid-create",
        &mut faults,
    );
    hit(
        freeze_busy(&d, &tag, "slow"),
        "frozen busy sandbox",
        &mut faults,
    );
    // Out of space: answers keep their records.
    let filler = fill(&d.state);
    let before = load.answered();
    std::thread::sleep(Duration::from_secs(4));
    let health = d.get("/v1/health").json();
    eprintln!(
        "chaos: state dir full; {} answered meanwhile; health {health}",
        load.answered() - before
    );
    // SIGKILL with the disk still full, then free it and restart.
    d.crash();
    std::fs::remove_file(&filler).unwrap();
    d.spawn();
    faults.push("emberd SIGKILL");
    std::thread::sleep(Duration::from_secs(3));
    d.crash();
    d.spawn();
    faults.push("emberd SIGKILL");
    std::thread::sleep(Duration::from_secs(3));
    let answers = load.finish();

    // Settle, then measure what a quiet daemon holds, then a round of load
    // and a fault again: descriptors back to where they were.
    for (f, e) in &mix {
        d.invoke(f, e);
    }
    // A first round grows the pools to what load keeps warm, so the
    // second compares like with like.
    Load::start(&d.socket, &mix, 4).finish_after(Duration::from_secs(2));
    d.wait_pool_idle(1);
    let base_fds = fd_count(d.pid());
    let base_sandboxes = d.sandbox_ids().len();
    let load = Load::start(&d.socket, &mix, 4);
    std::thread::sleep(Duration::from_secs(2));
    kill_in_sandbox(&d, &tag, "python3", "idle", None, 0);
    std::thread::sleep(Duration::from_secs(2));
    let late = load.finish();
    d.wait_pool_idle(1);
    let fds = fd_count(d.pid());
    // Each sandbox more than before holds a few (its pidfds, its agent's
    // socket, its freezer): a leak per invocation or per fault exceeds it.
    let more = d.sandbox_ids().len().saturating_sub(base_sandboxes);

    // The last restart: everything answered is on record as answered.
    d.crash();
    d.spawn();
    let mut recs: HashMap<String, Value> = HashMap::new();
    for (f, _) in &mix {
        recs.extend(records(&d, f));
    }
    let mut lost = Vec::new();
    let mut wrong = Vec::new();
    for a in answers.iter().chain(&late) {
        let Some(id) = &a.id else { continue };
        match recs.get(id) {
            None => lost.push(a.clone()),
            Some(r) if r["outcome"] != a.outcome.as_str() => {
                wrong.push((a.clone(), r["outcome"].clone()))
            }
            Some(_) => {}
        }
    }
    let failed: Vec<&Answered> = answers
        .iter()
        .chain(&late)
        .filter(|a| a.status != 200)
        .collect();
    let ok = answers
        .iter()
        .chain(&late)
        .filter(|a| a.status == 200)
        .count();
    eprintln!(
        "chaos: {} answered ({ok} ok, {} failed), {} faults ({faults:?}), {} records",
        answers.len() + late.len(),
        failed.len(),
        faults.len() + 1,
        recs.len()
    );
    for f in &failed {
        eprintln!("chaos: {} failed: {f:?}", f.function);
    }
    assert!(ok > 200, "too little load got through: {ok}");
    assert!(
        lost.is_empty(),
        "answered without a record after restart: {lost:?}"
    );
    assert!(wrong.is_empty(), "recorded with another outcome: {wrong:?}");
    // The late round's fault counts too.
    assert!(
        failed.len() <= faults.len() + 1,
        "{} unexpected failures for {} faults: {failed:?}",
        failed.len(),
        faults.len() + 1
    );
    assert!(
        fds <= base_fds + 4 + 8 * more,
        "emberd holds {fds} descriptors after load and a fault, {base_fds} before \
         ({more} sandboxes more)"
    );
    let z = zombies_of(d.pid());
    assert!(z.is_empty(), "zombies under emberd: {z:?}");
    d.stop_and_check(&tag);
    let runtimes_left = creating_runtime(&tag);
    assert!(
        runtimes_left.is_none(),
        "a runtime process of this daemon is left: {runtimes_left:?}"
    );
}
