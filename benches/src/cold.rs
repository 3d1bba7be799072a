//! The baseline: `<runtime> run` of the same handler in a fresh container
//! with the same lean root filesystem ember's sandboxes use (read-only host
//! binds, no network), timed from spawn to exit.

use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// One bundle directory per run; removed (and the container force-deleted)
/// on drop.
struct Bundle {
    dir: tempfile::TempDir,
    id: String,
    runtime: Runtime,
}

/// A runtime binary and the global flags it needs here.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub binary: PathBuf,
    pub global_args: Vec<String>,
}

impl Runtime {
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.args(&self.global_args);
        c
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = self
            .runtime
            .command()
            .args(["delete", "--force", &self.id])
            .stderr(Stdio::null())
            .status();
    }
}

fn mount(dest: &str, source: &str, typ: &str, opts: &[&str]) -> serde_json::Value {
    json!({ "destination": dest, "source": source, "type": typ, "options": opts })
}

/// The language of the handler a cold start runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// `/fn/main.py`, `handler(event, context)`.
    Python,
    /// `/fn/index.js`, `exports.handler(event, context)` (may be async).
    Node,
}

fn process_args(lang: Lang, event: &str) -> Vec<String> {
    match lang {
        Lang::Python => {
            let script = format!(
                "import sys, json; sys.path.insert(0, '/fn'); import main; \
                 print(json.dumps(main.handler(json.loads({event:?}), None)))"
            );
            vec![
                "/usr/bin/python3".into(),
                "-I".into(),
                "-B".into(),
                "-c".into(),
                script,
            ]
        }
        Lang::Node => {
            let script = format!(
                "const m = require('/fn/index.js'); \
                 Promise.resolve(m.handler(JSON.parse({event:?}), {{}})).then((r) => console.log(JSON.stringify(r)))"
            );
            vec!["/usr/bin/node".into(), "-e".into(), script]
        }
    }
}

fn bundle(runtime: &Runtime, id: &str, code: &Path, event: &str, lang: Lang) -> Result<Bundle> {
    let dir = tempfile::Builder::new().prefix("bench-cold-").tempdir()?;
    let rootfs = dir.path().join("rootfs");
    for d in ["proc", "dev", "fn", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=64k"],
        ),
        mount(
            "/tmp",
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", "mode=1777", "size=64m"],
        ),
        mount(
            "/fn",
            &code.to_string_lossy(),
            "bind",
            &["bind", "ro", "nosuid", "nodev"],
        ),
    ];
    std::fs::create_dir_all(rootfs.join("etc"))?;
    let mut dirs = ember_runtimes::bundle::host_dirs(&rootfs)?;
    dirs.push("/etc".to_string());
    for d in dirs {
        mounts.push(mount(&d, &d, "bind", &["bind", "ro", "nosuid", "nodev"]));
    }
    let config = json!({
        "ociVersion": "1.0.2",
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "bench",
        "process": {
            "terminal": false,
            "user": { "uid": 65534, "gid": 65534 },
            "args": process_args(lang, event),
            "env": ["PATH=/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8"],
            "cwd": "/fn",
            "noNewPrivileges": true,
            "capabilities": { "bounding": [], "effective": [], "permitted": [], "inheritable": [], "ambient": [] }
        },
        "mounts": mounts,
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "mount"}, {"type": "network"},
                {"type": "ipc"}, {"type": "uts"}, {"type": "cgroup"}
            ],
            "cgroupsPath": format!("/bench/{id}"),
            "resources": { "memory": { "limit": 536870912 }, "pids": { "limit": 256 } },
            "rootfsPropagation": "private",
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    });
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_vec_pretty(&config)?,
    )?;
    Ok(Bundle {
        dir,
        id: id.to_string(),
        runtime: runtime.clone(),
    })
}

/// Time `<runtime> run` of the handler `n` times, with a progress bar
/// saying `phase` (on a terminal); returns milliseconds.
pub fn run(
    runtime: &Runtime,
    phase: String,
    code: &Path,
    event: &str,
    n: usize,
    expect: &str,
) -> Result<Vec<f64>> {
    run_lang(runtime, phase, code, event, n, expect, Lang::Python)
}

/// [`run`] for a handler in `lang`.
pub fn run_lang(
    runtime: &Runtime,
    phase: String,
    code: &Path,
    event: &str,
    n: usize,
    expect: &str,
    lang: Lang,
) -> Result<Vec<f64>> {
    let mut samples = Vec::with_capacity(n);
    let bar = ember_term::bar(n as u64, phase);
    for i in 0..n {
        let id = format!("bench-cold-{}-{i}", std::process::id());
        let b = bundle(runtime, &id, code, event, lang)?;
        let t = Instant::now();
        let out = runtime
            .command()
            .arg("run")
            .arg("--bundle")
            .arg(b.dir.path())
            .arg(&id)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", runtime.binary.display()))?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !stdout.contains(expect) {
            bail!(
                "cold start {i} failed ({}): stdout {stdout:?} stderr {:?}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        samples.push(ms);
        bar.inc(1);
    }
    Ok(samples)
}
