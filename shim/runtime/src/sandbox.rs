//! The `dev.ember.sandbox` annotation, on `create`/`run`: a container's
//! config becomes an ember sandbox of a language runtime, as emberd's own
//! bundles are, which emberd adopts into that runtime's pool once the
//! container starts (see [`crate::register`]).

use crate::sandbox_dir::{SandboxDir, SandboxDirError};
use ember_runtimes::bundle::{AGENT_PATH, SANDBOX_UID};
use ember_runtimes::{Interpreter, Language};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Why a container cannot become an ember sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("unknown runtime (known: {})", ember_api::Language::names())]
    UnknownRuntime,
    #[error("ember-agent {agent} does not exist (set EMBER_AGENT, or run scripts/setup)")]
    NoAgent { agent: PathBuf },
    #[error("config has no root.path")]
    NoRoot,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    HostDirs(#[from] ember_runtimes::RuntimeError),
    #[error("config is not a JSON object")]
    NotAnObject,
    #[error("mounts is not a list")]
    MountsNotAList,
    #[error(transparent)]
    Dir(#[from] SandboxDirError),
    #[error("the container joins the pid namespace {path} (a pod sharing its process namespace: shareProcessNamespace): ember's agent must be PID 1 of a pid namespace of its own, where every other process is one of its invocations'")]
    SharedPidNamespace { path: String },
    #[error("the container has no pid namespace of its own (linux.namespaces has no \"pid\"): ember's agent must be PID 1 of a pid namespace of its own")]
    NoPidNamespace,
}

/// The static agent a sandbox bundle binds in: `EMBER_AGENT`, else
/// `ember-agent` next to this `ember-runtime` (an install puts both in one
/// directory, whatever its prefix), else `/usr/local/bin/ember-agent`
/// (where `scripts/setup` installs it).
pub fn agent_path() -> PathBuf {
    std::env::var_os("EMBER_AGENT")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.join("ember-agent")).filter(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("/usr/local/bin/ember-agent"))
}

/// Directories merged-/usr hosts have as symlinks into `/usr`: where an
/// image has a real directory instead (its own `/lib64`, say), the host's
/// is bound over it, or the host's interpreter would look for its loader
/// and libraries in the image's.
const LINKED_HOST_DIRS: &[&str] = &["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

/// Turn a container's config into an ember sandbox of `runtime`, as
/// emberd's own bundles are: the host's `/usr`, `/lib`, `/etc`, ... bound
/// read-only over the image's root (read-only too), empty `/fn` and
/// `/tmp`, and ember's agent as the process, running the interpreter as
/// an unprivileged user and listening on a socket in `dir` (a short host
/// path, see [`SandboxDir`]), where emberd connects. The container's own
/// command is replaced; its namespaces, cgroup and resources stay. It
/// must have a pid namespace of its own (the agent is its PID 1).
pub fn make_sandbox(
    config: &mut Value,
    bundle: &Path,
    runtime: &str,
    agent: &Path,
    dir: &SandboxDir,
) -> Result<(), SandboxError> {
    let language = Language::by_runtime(runtime).ok_or(SandboxError::UnknownRuntime)?;
    if !agent.is_file() {
        return Err(SandboxError::NoAgent {
            agent: agent.to_path_buf(),
        });
    }
    check_pid_namespace(config)?;
    let interpreter = Interpreter {
        language,
        path: match language {
            Language::Python => "/usr/bin/python3".into(),
            Language::Node => "/usr/bin/node".into(),
        },
    };
    let root = config["root"]["path"]
        .as_str()
        .ok_or(SandboxError::NoRoot)?
        .to_string();
    let rootfs = if Path::new(&root).is_absolute() {
        PathBuf::from(&root)
    } else {
        bundle.join(&root)
    };
    make_dirs(&rootfs)?;
    dir.create()?;
    let mut binds: Vec<(String, PathBuf)> = ember_runtimes::bundle::host_dirs(&rootfs)?
        .into_iter()
        .map(|d| (d.clone(), PathBuf::from(d)))
        .collect();
    binds.extend(shadowed_host_dirs(&rootfs)?);
    // Adopted containers keep the host's /etc as before (emberd's own
    // sandboxes get a generated one; see docs/isolation.md).
    let etc = rootfs.join("etc");
    std::fs::create_dir_all(&etc).map_err(io(&etc))?;
    binds.push(("/etc".to_string(), PathBuf::from("/etc")));
    bind_mounts(config, &binds, agent, &dir.run_dir())?;
    set_agent_process(config, &interpreter)?;
    config["root"]["readonly"] = json!(true);
    Ok(())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SandboxError + '_ {
    move |source| SandboxError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The agent is the container's PID 1, and everything else in its pid
/// namespace an invocation's: a namespace joined by path (a pod sharing
/// its processes) or the host's would have it kill the pod's processes as
/// leftovers.
fn check_pid_namespace(config: &Value) -> Result<(), SandboxError> {
    let pid = config["linux"]["namespaces"]
        .as_array()
        .and_then(|all| all.iter().find(|ns| ns["type"] == "pid"))
        .ok_or(SandboxError::NoPidNamespace)?;
    match pid["path"].as_str().filter(|p| !p.is_empty()) {
        Some(path) => Err(SandboxError::SharedPidNamespace {
            path: path.to_string(),
        }),
        None => Ok(()),
    }
}

/// The directories the sandbox's mounts need in its root: `/fn`, `/tmp`,
/// `/.ember/run` and the agent's mount point.
fn make_dirs(rootfs: &Path) -> Result<(), SandboxError> {
    for d in ["fn", "tmp", ".ember/run"] {
        let p = rootfs.join(d);
        std::fs::create_dir_all(&p).map_err(io(&p))?;
    }
    let agent_target = rootfs.join(".ember/agent");
    if !agent_target.exists() {
        std::fs::write(&agent_target, b"").map_err(io(&agent_target))?;
    }
    Ok(())
}

/// Where the host has a symlink into `/usr` ([`LINKED_HOST_DIRS`]) and
/// the image a real directory: the directory the host's link leads to,
/// to bind over the image's (`(destination, host source)`).
fn shadowed_host_dirs(rootfs: &Path) -> Result<Vec<(String, PathBuf)>, SandboxError> {
    let mut out = Vec::new();
    for dir in LINKED_HOST_DIRS {
        let host = Path::new(dir);
        let linked = std::fs::symlink_metadata(host).is_ok_and(|m| m.file_type().is_symlink());
        let inside = rootfs.join(dir.trim_start_matches('/'));
        let own_dir = std::fs::symlink_metadata(&inside).is_ok_and(|m| m.is_dir());
        if linked && own_dir {
            let target = std::fs::canonicalize(host).map_err(io(host))?;
            out.push((dir.to_string(), target));
        }
    }
    Ok(out)
}

/// The host's `binds` (destination, source) read-only, the agent
/// read-only and the socket directory read-write, in place of the image's
/// mounts of those paths (and of `/tmp` and `/fn`).
fn bind_mounts(
    config: &mut Value,
    binds: &[(String, PathBuf)],
    agent: &Path,
    run_dir: &Path,
) -> Result<(), SandboxError> {
    let bind = |dest: &str, source: &str, mode: &str| {
        json!({
            "destination": dest, "source": source, "type": "bind",
            "options": ["bind", mode, "nosuid", "nodev"],
        })
    };
    let mounts = config
        .as_object_mut()
        .ok_or(SandboxError::NotAnObject)?
        .entry("mounts")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .ok_or(SandboxError::MountsNotAList)?;
    // The image's own mounts of these paths would hide the host's.
    mounts.retain(|m| {
        let dest = m["destination"].as_str().unwrap_or("");
        !binds.iter().any(|(b, _)| b == dest) && dest != "/tmp" && dest != "/fn"
    });
    for (dest, source) in binds {
        mounts.push(bind(dest, &source.to_string_lossy(), "ro"));
    }
    mounts.push(bind(AGENT_PATH, &agent.to_string_lossy(), "ro"));
    mounts.push(bind("/.ember/run", &run_dir.to_string_lossy(), "rw"));
    Ok(())
}

/// The agent as the container's process, running `interpreter` as the
/// sandbox user and listening on `/.ember/run/agent.sock`.
fn set_agent_process(config: &mut Value, interpreter: &Interpreter) -> Result<(), SandboxError> {
    let mut args = vec![AGENT_PATH.to_string()];
    args.extend(interpreter.agent_args());
    args.extend(
        [
            "--uid",
            &SANDBOX_UID.to_string(),
            "--gid",
            &SANDBOX_UID.to_string(),
            "--listen",
            "/.ember/run/agent.sock",
        ]
        .map(str::to_string),
    );
    let process = config
        .as_object_mut()
        .ok_or(SandboxError::NotAnObject)?
        .entry("process")
        .or_insert_with(|| json!({}));
    process["args"] = json!(args);
    process["env"] = json!(["PATH=/usr/local/bin:/usr/bin:/bin"]);
    process["cwd"] = json!("/");
    process["user"] = json!({ "uid": 0, "gid": 0 });
    process["terminal"] = json!(false);
    Ok(())
}
