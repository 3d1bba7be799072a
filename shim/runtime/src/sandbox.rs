//! The `dev.ember.sandbox` annotation, on `create`/`run`: a container's
//! config becomes an ember sandbox of a language runtime, as emberd's own
//! bundles are, which emberd adopts into that runtime's pool once the
//! container starts (see [`crate::register`]).

use crate::AGENT_RUN_DIR;
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
}

/// The static agent a sandbox bundle binds in: `EMBER_AGENT`, else
/// `/usr/local/bin/ember-agent` (where `scripts/setup` installs it).
pub fn agent_path() -> PathBuf {
    std::env::var_os("EMBER_AGENT")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/local/bin/ember-agent"))
}

/// Turn a container's config into an ember sandbox of `runtime`, as
/// emberd's own bundles are: the host's `/usr`, `/etc`, ... bound
/// read-only over the image's root (read-only too), empty `/fn` and
/// `/tmp`, and ember's agent as the process, running the interpreter as
/// an unprivileged user and listening on a socket in a host directory of
/// the bundle (`ember-run/agent.sock`), where emberd connects. The
/// container's own command is replaced; its namespaces, cgroup and
/// resources stay.
pub fn make_sandbox(
    config: &mut Value,
    bundle: &Path,
    runtime: &str,
    agent: &Path,
) -> Result<(), SandboxError> {
    let language = Language::by_runtime(runtime).ok_or(SandboxError::UnknownRuntime)?;
    if !agent.is_file() {
        return Err(SandboxError::NoAgent {
            agent: agent.to_path_buf(),
        });
    }
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
    let run_dir = make_dirs(bundle, &rootfs)?;
    let mut binds = ember_runtimes::bundle::host_dirs(&rootfs)?;
    // Adopted containers keep the host's /etc as before (emberd's own
    // sandboxes get a generated one; see docs/isolation.md).
    let etc = rootfs.join("etc");
    std::fs::create_dir_all(&etc).map_err(io(&etc))?;
    binds.push("/etc".to_string());
    bind_mounts(config, &binds, agent, &run_dir)?;
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

/// The directories the sandbox's mounts need: `/fn`, `/tmp`, `/.ember/run`
/// and the agent's mount point in the root, and the bundle's host
/// directory for the agent's socket (private to root), which it returns.
fn make_dirs(bundle: &Path, rootfs: &Path) -> Result<PathBuf, SandboxError> {
    for d in ["fn", "tmp", ".ember/run"] {
        let p = rootfs.join(d);
        std::fs::create_dir_all(&p).map_err(io(&p))?;
    }
    let agent_target = rootfs.join(".ember/agent");
    if !agent_target.exists() {
        std::fs::write(&agent_target, b"").map_err(io(&agent_target))?;
    }
    let run_dir = bundle.join(AGENT_RUN_DIR);
    std::fs::create_dir_all(&run_dir).map_err(io(&run_dir))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(&run_dir))?;
    }
    Ok(run_dir)
}

/// The host's `binds` read-only, the agent read-only and the socket
/// directory read-write, in place of the image's mounts of those paths
/// (and of `/tmp` and `/fn`).
fn bind_mounts(
    config: &mut Value,
    binds: &[String],
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
        !binds.iter().any(|b| b == dest) && dest != "/tmp" && dest != "/fn"
    });
    for dir in binds {
        mounts.push(bind(dir, dir, "ro"));
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
