//! Deploy builds: the agent of a throwaway sandbox whose `/fn` is a
//! function's freshly unpacked code, writable, prepares it for its
//! runtime and exits. Everything that interprets an upload runs here,
//! never in emberd: pip (offline, from the operator's wheels at
//! `/wheels`, the only source it may use) for `requirements.txt`,
//! Python's bytecode compiler, and the check that a Node.js function
//! ships the `node_modules` its `package.json` asks for.
//!
//! The agent first becomes the sandbox user (no capabilities, no new
//! privileges) and installs the base worker seccomp filter, so every step
//! runs as confined as a function would. Each step's output is kept up to
//! [`OUTPUT_TAIL`] bytes (its end, where tools say what went wrong).
//! Limits on time, memory, processes and disk are the daemon's (the
//! sandbox's cgroup, a size-limited `/fn`, a deadline).

use ember_proto::{BuildReport, BuildStep};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Bytes of a step's output kept (its end).
const OUTPUT_TAIL: usize = 8 * 1024;

/// Where vendored Python packages go, relative to `/fn` (the zygote adds
/// it to `sys.path`).
const PYTHON_DEPS: &str = ".ember/python";

/// Compiles every regular `.py` file under argv[1] to `__pycache__/*.pyc`
/// with unchecked-hash invalidation (the store is immutable), recording
/// `/fn/...` as the file name for tracebacks. Links are never followed
/// (they resolve inside the sandbox anyway). Syntax errors are left for
/// the import to report. Each file is written in full or the step fails:
/// `py_compile` ignores a short write (a full disk) and would leave a
/// truncated `.pyc` behind.
const PRECOMPILE: &str = r#"
import importlib._bootstrap_external as be, importlib.util, os, sys
root = sys.argv[1]

def write_all(path, data):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(tmp, path)

for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
    dirnames[:] = [d for d in dirnames if d != "__pycache__" and not os.path.islink(os.path.join(dirpath, d))]
    for name in filenames:
        src = os.path.join(dirpath, name)
        if not name.endswith(".py") or os.path.islink(src) or not os.path.isfile(src):
            continue
        with open(src, "rb") as f:
            source = f.read()
        try:
            code = compile(source, "/fn/" + os.path.relpath(src, root), "exec", dont_inherit=True)
        except (SyntaxError, ValueError):
            continue
        data = be._code_to_hash_pyc(code, importlib.util.source_hash(source), False)
        cfile = importlib.util.cache_from_source(src)
        os.makedirs(os.path.dirname(cfile), exist_ok=True)
        write_all(cfile, data)
"#;

/// The status of a step that could not start for the process limit.
pub const PROCESS_LIMIT: &str = "process limit";

/// What to build.
pub struct BuildOptions<'a> {
    pub language: crate::Language,
    pub interpreter: &'a str,
    /// The operator's wheels, mounted read-only (Python).
    pub wheels: Option<&'a str>,
    pub uid: u32,
    pub gid: u32,
    /// The build's `RLIMIT_NPROC` (the daemon sets it from the build's
    /// process limit).
    pub nproc: Option<u64>,
}

/// Why a deploy build could not start its steps.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("setgroups: {0}")]
    Setgroups(nix::Error),
    #[error("setresgid {gid}: {source}")]
    Setresgid { gid: u32, source: nix::Error },
    #[error("setresuid {uid}: {source}")]
    Setresuid { uid: u32, source: nix::Error },
    #[error("RLIMIT_NPROC {limit}: {source}")]
    Nproc { limit: u64, source: nix::Error },
    #[error("base worker filter: {0}")]
    BaseFilter(ember_profiles::ProfileError),
    #[error("installing the base filter: {0}")]
    InstallFilter(std::io::Error),
}

/// Why a `package.json` is refused.
#[derive(Debug, thiserror::Error)]
enum PackageJsonError {
    #[error("reading package.json: {0}")]
    Read(std::io::Error),
    #[error("package.json is larger than {PACKAGE_JSON_LIMIT} bytes")]
    TooLarge,
    #[error("package.json is not valid JSON: {0}")]
    NotJson(serde_json::Error),
    /// `names`: the dependencies it declares, joined with `, `.
    #[error(
        "package.json declares dependencies ({names}) but the function has no node_modules: run \
         `npm install` (or `npm ci`) in the function directory before deploying"
    )]
    NoNodeModules { names: String },
}

/// Become the sandbox user, run the steps, report.
pub fn run(opts: &BuildOptions<'_>) -> Result<BuildReport, BuildError> {
    become_user(opts.uid, opts.gid)?;
    // The build's process limit (this agent counts): a step refused a
    // process reports it as such.
    if let Some(n) = opts.nproc {
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NPROC, n, n)
            .map_err(|source| BuildError::Nproc { limit: n, source })?;
    }
    let base = ember_profiles::worker_base_program().map_err(BuildError::BaseFilter)?;
    crate::runner::install_filter(&base).map_err(BuildError::InstallFilter)?;
    let mut report = BuildReport::default();
    match opts.language {
        crate::Language::Python => python(opts, &mut report),
        crate::Language::Node => report.steps.push(node_modules()),
    }
    Ok(report)
}

/// Drop to `uid`/`gid` with no supplementary groups: the agent starts as
/// the sandbox's root with only the capabilities to do this.
fn become_user(uid: u32, gid: u32) -> Result<(), BuildError> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    setgroups(&[]).map_err(BuildError::Setgroups)?;
    let (g, u) = (Gid::from_raw(gid), Uid::from_raw(uid));
    setresgid(g, g, g).map_err(|source| BuildError::Setresgid { gid, source })?;
    setresuid(u, u, u).map_err(|source| BuildError::Setresuid { uid, source })
}

fn python(opts: &BuildOptions<'_>, report: &mut BuildReport) {
    if std::path::Path::new("/fn/requirements.txt").is_file() {
        let step = pip(opts);
        let ok = step.ok;
        report.steps.push(step);
        if !ok {
            return;
        }
        // pip's console scripts, not importable code.
        let _ = std::fs::remove_dir_all(format!("/fn/{PYTHON_DEPS}/bin"));
    }
    let mut cmd = interpreter(opts.interpreter);
    cmd.args(["-c", PRECOMPILE, "/fn"]);
    report.steps.push(run_step("precompile", cmd));
}

fn pip(opts: &BuildOptions<'_>) -> BuildStep {
    let Some(wheels) = opts.wheels else {
        return failed(
            "pip",
            "requirements.txt needs the operator's wheel directory (emberd --wheels-dir): \
             deploy builds have no network"
                .into(),
        );
    };
    let mut cmd = interpreter(opts.interpreter);
    cmd.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
        "--no-cache-dir",
        "--no-compile",
        "--only-binary=:all:",
        "--no-index",
        "--find-links",
        wheels,
        "--target",
    ])
    .arg(format!("/fn/{PYTHON_DEPS}"))
    .args(["-r", "/fn/requirements.txt"])
    .env("PIP_NO_WARN_SCRIPT_LOCATION", "1");
    run_step("pip", cmd)
}

/// The interpreter isolated from its environment and from the code it
/// works on: `-I` (no user site, no `PYTHON*` variables, the script's
/// directory not on `sys.path`), a neutral working directory.
fn interpreter(path: &str) -> Command {
    let mut cmd = Command::new(path);
    cmd.arg("-I")
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", "/tmp")
        .env("TMPDIR", "/tmp")
        .env("LANG", "C.UTF-8")
        .current_dir("/tmp");
    cmd
}

/// Run one program with its stdout and stderr on one pipe, keep the end
/// of what it says.
fn run_step(name: &str, mut cmd: Command) -> BuildStep {
    let started = Instant::now();
    let (r, w) = match nix::unistd::pipe() {
        Ok(p) => p,
        Err(e) => return failed(name, format!("pipe: {e}")),
    };
    let w2 = match w.try_clone() {
        Ok(w2) => w2,
        Err(e) => return failed(name, format!("dup: {e}")),
    };
    cmd.stdin(Stdio::null()).stdout(w).stderr(w2);
    // SAFETY: setsid is async-signal-safe; the step's own process group
    // lets nothing it starts outlive it unnoticed (the sandbox ends after
    // the build anyway).
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
            let mut step = failed(name, format!("starting {:?}: {e}", cmd.get_program()));
            step.status = PROCESS_LIMIT.into();
            return step;
        }
        Err(e) => return failed(name, format!("starting {:?}: {e}", cmd.get_program())),
    };
    drop(cmd);
    let output = read_tail(r);
    let status = child.wait();
    let (ok, status) = match status {
        Ok(s) if s.success() => (true, "exit status 0".to_string()),
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => (false, format!("exit status {c}")),
            (_, Some(sig)) => (false, format!("killed by signal {sig}")),
            _ => (false, s.to_string()),
        },
        Err(e) => (false, format!("waiting: {e}")),
    };
    BuildStep {
        name: name.to_string(),
        ok,
        status,
        output,
        duration_us: started.elapsed().as_micros() as u64,
    }
}

/// Read `r` to its end, keeping the last [`OUTPUT_TAIL`] bytes.
fn read_tail(r: OwnedFd) -> String {
    let mut f = std::fs::File::from(r);
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * OUTPUT_TAIL {
                    kept.drain(..kept.len() - OUTPUT_TAIL);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if kept.len() > OUTPUT_TAIL {
        kept.drain(..kept.len() - OUTPUT_TAIL);
    }
    String::from_utf8_lossy(&kept).trim().to_string()
}

fn failed(name: &str, output: String) -> BuildStep {
    BuildStep {
        name: name.to_string(),
        ok: false,
        status: "not run".into(),
        output,
        duration_us: 0,
    }
}

/// A `package.json` that declares dependencies needs a `node_modules`
/// beside it (ember runs no package manager for JavaScript).
fn node_modules() -> BuildStep {
    let started = Instant::now();
    let result = check_node(std::path::Path::new("/fn"));
    BuildStep {
        name: "node_modules".into(),
        ok: result.is_ok(),
        status: if result.is_ok() { "ok" } else { "refused" }.into(),
        output: result.err().map(|e| e.to_string()).unwrap_or_default(),
        duration_us: started.elapsed().as_micros() as u64,
    }
}

/// Most bytes of `package.json` read.
const PACKAGE_JSON_LIMIT: u64 = 1 << 20;

fn check_node(dir: &std::path::Path) -> Result<(), PackageJsonError> {
    let pj = dir.join("package.json");
    let text = match std::fs::File::open(&pj) {
        Ok(f) => {
            let mut text = Vec::new();
            f.take(PACKAGE_JSON_LIMIT + 1)
                .read_to_end(&mut text)
                .map_err(PackageJsonError::Read)?;
            if text.len() as u64 > PACKAGE_JSON_LIMIT {
                return Err(PackageJsonError::TooLarge);
            }
            text
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(PackageJsonError::Read(e)),
    };
    let v: serde_json::Value = serde_json::from_slice(&text).map_err(PackageJsonError::NotJson)?;
    let names: Vec<String> = v["dependencies"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    if names.is_empty() || dir.join("node_modules").is_dir() {
        return Ok(());
    }
    Err(PackageJsonError::NoNodeModules {
        names: names.join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_dependencies_must_be_shipped() {
        let code = tempfile::tempdir().unwrap();
        check_node(code.path()).unwrap();
        std::fs::write(code.path().join("package.json"), r#"{"name":"f"}"#).unwrap();
        check_node(code.path()).unwrap();
        std::fs::write(
            code.path().join("package.json"),
            r#"{"dependencies":{"left-pad":"1.3.0"}}"#,
        )
        .unwrap();
        let err = check_node(code.path()).unwrap_err().to_string();
        assert!(
            err.contains("left-pad") && err.contains("npm install"),
            "{err}"
        );
        std::fs::create_dir(code.path().join("node_modules")).unwrap();
        check_node(code.path()).unwrap();
        std::fs::write(code.path().join("package.json"), "{nope").unwrap();
        assert!(check_node(code.path()).is_err());
    }

    #[test]
    fn a_step_keeps_the_end_of_its_output_and_its_status() {
        let mut cmd = Command::new("/bin/sh");
        cmd.args([
            "-c",
            "i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done; echo last >&2; exit 3",
        ]);
        let step = run_step("t", cmd);
        assert!(!step.ok);
        assert_eq!(step.status, "exit status 3");
        assert!(
            step.output.ends_with("last"),
            "{}",
            &step.output[step.output.len() - 40..]
        );
        assert!(step.output.len() <= OUTPUT_TAIL);
        assert!(!step.output.contains("line 1\n"));
    }
}
