//! `ember-runtime`: the OCI runtime command line (runc's shape: global
//! flags, then `create`, `start`, `state`, `kill`, `delete`, `pause`,
//! `resume`, `exec`, `ps`, `features`, `spec`, ...) in front of a real
//! runtime, so containerd's runc v2 shim (`BinaryName`) and Docker
//! (`--runtime`) can use ember's sandbox profiles.
//!
//! It parses the command line with youki's `liboci-cli` (so a malformed
//! call is refused in the same terms), applies the profile a bundle names
//! in its `dev.ember.profile` annotation to the bundle's `config.json` on
//! `create` and `run` ([`restrict`]: a profile only ever takes permissions
//! away) and restricts processes `exec`'d into such a container the same
//! way ([`exec`]), then execs the delegate runtime (runc unless
//! configured) with the very same arguments (for such an `exec`, the same
//! but restricted). Exit codes, `state` JSON, logs and error output are
//! therefore the delegate's own, which is what the shim parses.

pub mod exec;
mod restrict;

pub use restrict::{
    apply_profile, check_mount_namespace, restrict_process, AllowedCaps, RestrictError,
};

use clap::{Parser, Subcommand};
use ember_profiles::Profile;
use serde_json::Value;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The annotation naming the ember profile to apply to a container.
pub const PROFILE_ANNOTATION: &str = "dev.ember.profile";

/// The annotation that makes a container an ember sandbox of a language
/// runtime (`python3`, `node`): its process becomes ember's agent, which
/// emberd adopts into that runtime's pool once the container starts.
pub const SANDBOX_ANNOTATION: &str = "dev.ember.sandbox";

/// Host directory, inside the bundle, holding the agent's socket.
const AGENT_RUN_DIR: &str = "ember-run";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeCliError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid OCI config: {message}")]
    BadConfig { path: PathBuf, message: String },
    #[error("annotation {PROFILE_ANNOTATION}={name:?} in {path}: {message}")]
    BadProfile {
        path: PathBuf,
        name: String,
        message: String,
    },
    #[error("{path}: {source}")]
    Restrict {
        path: PathBuf,
        source: RestrictError,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("running delegate runtime {binary}: {source}")]
    Exec {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("annotation {SANDBOX_ANNOTATION}={runtime:?} in {path}: {message}")]
    BadSandbox {
        path: PathBuf,
        runtime: String,
        message: String,
    },
    #[error("registering sandbox {id} with emberd at {socket}: {message}")]
    Register {
        id: String,
        socket: PathBuf,
        message: String,
    },
}

/// The command line, in runc's shape.
#[derive(Debug, Parser)]
#[command(
    name = "ember-runtime",
    version,
    about = "OCI runtime for containerd and Docker: runc's command line, ember's sandbox profiles",
    long_about = "Takes runc's command line (global flags, then create, start, state, kill, \
delete, pause, resume, exec, ps, features, spec, ...). On create and run, a bundle whose \
config.json carries the annotation dev.ember.profile=<default|strict> (or, without it, \
--ember-profile) gets that ember profile, which only takes permissions away: its seccomp \
allow-list intersected with the bundle's filter, capabilities reduced to the profile's, \
no_new_privileges, masked paths; the container needs its own mount namespace. Processes \
exec'd into such a container get no more capabilities and no_new_privileges. Without the \
annotation the bundle is left as it is. Then the delegate runtime runs with the same \
arguments: runc, or what EMBER_RUNTIME_DELEGATE or the [ember_runtime] section of \
/etc/ember/ember.toml names (see docs/containerd.md)."
)]
pub struct RuntimeCli {
    #[command(flatten)]
    pub global: liboci_cli::GlobalOpts,
    /// ember profile for bundles without a `dev.ember.profile` annotation
    /// (for callers that cannot set annotations, e.g. Docker's
    /// `runtimeArgs`); not passed on to the delegate.
    #[arg(long = "ember-profile", global = true, value_name = "PROFILE")]
    pub ember_profile: Option<String>,
    #[command(subcommand)]
    pub command: RuntimeCommand,
}

#[derive(Debug, Subcommand)]
pub enum RuntimeCommand {
    #[command(flatten)]
    Standard(Box<liboci_cli::StandardCmd>),
    #[command(flatten)]
    Common(Box<liboci_cli::CommonCmd>),
}

impl RuntimeCommand {
    /// The bundle whose config a profile may change (`create`, `run`).
    pub fn bundle(&self) -> Option<&Path> {
        match self {
            RuntimeCommand::Standard(c) => match c.as_ref() {
                liboci_cli::StandardCmd::Create(c) => Some(&c.bundle),
                _ => None,
            },
            RuntimeCommand::Common(c) => match c.as_ref() {
                liboci_cli::CommonCmd::Run(r) => Some(&r.bundle),
                _ => None,
            },
        }
    }
}

impl RuntimeCommand {
    /// The options of an `exec`.
    pub fn exec(&self) -> Option<&liboci_cli::Exec> {
        match self {
            RuntimeCommand::Common(c) => match c.as_ref() {
                liboci_cli::CommonCmd::Exec(e) => Some(e),
                _ => None,
            },
            RuntimeCommand::Standard(_) => None,
        }
    }

    /// The container `start` starts (after which a sandbox registers).
    pub fn started(&self) -> Option<&str> {
        match self {
            RuntimeCommand::Standard(c) => match c.as_ref() {
                liboci_cli::StandardCmd::Start(s) => Some(&s.container_id),
                _ => None,
            },
            RuntimeCommand::Common(_) => None,
        }
    }
}

/// The runtime `ember-runtime` hands every command to.
#[derive(Debug, Clone, PartialEq)]
pub struct Delegate {
    pub binary: PathBuf,
    /// Global flags put before the caller's (e.g. runsc's `--platform`).
    pub args: Vec<String>,
}

impl Delegate {
    /// `EMBER_RUNTIME_DELEGATE` (and `EMBER_RUNTIME_DELEGATE_ARGS`,
    /// space-separated), else the config file's `[ember_runtime]`, else runc.
    pub fn configured(file: &ember_api::config_file::ConfigFile) -> Delegate {
        let env_binary = std::env::var_os("EMBER_RUNTIME_DELEGATE").filter(|v| !v.is_empty());
        let env_args = std::env::var("EMBER_RUNTIME_DELEGATE_ARGS").ok();
        let section = &file.ember_runtime;
        let binary = env_binary
            .map(PathBuf::from)
            .or_else(|| section.delegate.clone().map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("runc"));
        let args = match env_args {
            Some(a) => a.split_whitespace().map(str::to_string).collect(),
            None if section.delegate_args.is_some() => {
                section.delegate_args.clone().unwrap_or_default()
            }
            // gVisor here needs ptrace and no network stack of its own.
            None if is_runsc(&binary) => {
                vec!["--platform=ptrace".into(), "--network=none".into()]
            }
            None => Vec::new(),
        };
        Delegate { binary, args }
    }

    /// Whether the delegate is gVisor's runsc (whose flags differ).
    pub fn is_runsc(&self) -> bool {
        is_runsc(&self.binary)
    }

    /// The delegate's `state` of container `id` (same `--root`).
    pub fn state(&self, global: &liboci_cli::GlobalOpts, id: &str) -> Result<Value, String> {
        let mut cmd = std::process::Command::new(&self.binary);
        cmd.args(&self.args);
        if let Some(root) = &global.root {
            cmd.arg("--root").arg(root);
        }
        let out = cmd
            .args(["state", id])
            .output()
            .map_err(|e| format!("{} state {id}: {e}", self.binary.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} state {id}: {}",
                self.binary.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("state of {id}: {e}"))
    }

    /// The delegate's argv: its own global flags, then the caller's
    /// arguments unchanged but for ember's own `--ember-profile`.
    pub fn argv(&self, caller: &[OsString]) -> Vec<OsString> {
        let mut out: Vec<OsString> = self.args.iter().map(OsString::from).collect();
        let mut skip_value = false;
        for a in caller {
            if skip_value {
                skip_value = false;
                continue;
            }
            if a == "--ember-profile" {
                skip_value = true;
                continue;
            }
            if a.to_string_lossy().starts_with("--ember-profile=") {
                continue;
            }
            out.push(a.clone());
        }
        out
    }
}

fn is_runsc(binary: &Path) -> bool {
    binary.file_name().is_some_and(|n| n == "runsc")
}

/// Prepare a bundle before `create`/`run`, in place: a bundle annotated
/// `dev.ember.sandbox` becomes an ember sandbox (see [`make_sandbox`]); the
/// profile named by `dev.ember.profile` (or `fallback`, from
/// `--ember-profile`; `default` for sandboxes) is applied. Returns the
/// profile applied, or `None` when the bundle asks for nothing (it is
/// then left byte for byte as it was).
pub fn apply_profile_to_bundle(
    bundle: &Path,
    fallback: Option<&str>,
) -> Result<Option<&'static str>, RuntimeCliError> {
    prepare_bundle(bundle, fallback, None)
}

/// [`apply_profile_to_bundle`] with the agent binary a sandbox bundle binds
/// in (`None`: [`agent_path`]).
pub fn prepare_bundle(
    bundle: &Path,
    fallback: Option<&str>,
    agent: Option<&Path>,
) -> Result<Option<&'static str>, RuntimeCliError> {
    let path = bundle.join("config.json");
    let mut config = read_config(&path)?;
    let Some(name) = requested_profile(&config, fallback) else {
        return Ok(None);
    };
    let profile = Profile::by_name(&name).map_err(|e| RuntimeCliError::BadProfile {
        path: path.clone(),
        name: name.clone(),
        message: e.to_string(),
    })?;
    let restrict = |source| RuntimeCliError::Restrict {
        path: path.clone(),
        source,
    };
    // Before the sandbox rewrite writes anything into the bundle.
    check_mount_namespace(&config, &profile).map_err(restrict)?;
    if let Some(runtime) = config["annotations"][SANDBOX_ANNOTATION]
        .as_str()
        .map(str::to_string)
    {
        let agent = agent.map(Path::to_path_buf).unwrap_or_else(agent_path);
        make_sandbox(&mut config, bundle, &runtime, &agent).map_err(|message| {
            RuntimeCliError::BadSandbox {
                path: path.clone(),
                runtime,
                message,
            }
        })?;
    }
    apply_profile(&mut config, &profile).map_err(restrict)?;
    let out = serde_json::to_vec_pretty(&config).map_err(|e| RuntimeCliError::BadConfig {
        path: path.clone(),
        message: e.to_string(),
    })?;
    // Replace, never half-write: the delegate reads it next.
    let tmp = bundle.join(".config.json.ember");
    std::fs::write(&tmp, out)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| RuntimeCliError::Write {
            path: path.clone(),
            source,
        })?;
    Ok(Some(profile.name))
}

/// A bundle's `config.json`, parsed.
pub fn read_config(path: &Path) -> Result<Value, RuntimeCliError> {
    let text = std::fs::read(path).map_err(|source| RuntimeCliError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|e| RuntimeCliError::BadConfig {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The profile a container's config asks for: its `dev.ember.profile`
/// annotation, else `fallback` (`--ember-profile`), else `default` for an
/// ember sandbox (`dev.ember.sandbox`). `None`: no profile applies.
pub fn requested_profile(config: &Value, fallback: Option<&str>) -> Option<String> {
    let annotations = &config["annotations"];
    annotations[PROFILE_ANNOTATION]
        .as_str()
        .or(fallback)
        .or(annotations[SANDBOX_ANNOTATION].as_str().map(|_| "default"))
        .map(str::to_string)
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
) -> Result<(), String> {
    let language = ember_runtimes::Language::by_runtime(runtime)
        .ok_or_else(|| format!("unknown runtime (known: {})", "python3, node"))?;
    if !agent.is_file() {
        return Err(format!(
            "ember-agent {} does not exist (set EMBER_AGENT, or run scripts/setup)",
            agent.display()
        ));
    }
    let interpreter = ember_runtimes::Interpreter {
        language,
        path: match language {
            ember_runtimes::Language::Python => "/usr/bin/python3".into(),
            ember_runtimes::Language::Node => "/usr/bin/node".into(),
        },
    };
    let root = config["root"]["path"]
        .as_str()
        .ok_or("config has no root.path")?
        .to_string();
    let rootfs = if Path::new(&root).is_absolute() {
        PathBuf::from(&root)
    } else {
        bundle.join(&root)
    };
    let io = |what: &Path, e: std::io::Error| format!("{}: {e}", what.display());
    for d in ["fn", "tmp", ".ember/run"] {
        let p = rootfs.join(d);
        std::fs::create_dir_all(&p).map_err(|e| io(&p, e))?;
    }
    let agent_target = rootfs.join(".ember/agent");
    if !agent_target.exists() {
        std::fs::write(&agent_target, b"").map_err(|e| io(&agent_target, e))?;
    }
    let run_dir = bundle.join(AGENT_RUN_DIR);
    std::fs::create_dir_all(&run_dir).map_err(|e| io(&run_dir, e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io(&run_dir, e))?;
    }
    let mut binds = ember_runtimes::bundle::host_dirs(&rootfs).map_err(|e| e.to_string())?;
    // Adopted containers keep the host's /etc as before (emberd's own
    // sandboxes get a generated one; see docs/isolation.md).
    std::fs::create_dir_all(rootfs.join("etc")).map_err(|e| io(&rootfs.join("etc"), e))?;
    binds.push("/etc".to_string());
    let bind = |dest: &str, source: &str, mode: &str| {
        serde_json::json!({
            "destination": dest, "source": source, "type": "bind",
            "options": ["bind", mode, "nosuid", "nodev"],
        })
    };
    let mounts = config
        .as_object_mut()
        .ok_or("config is not a JSON object")?
        .entry("mounts")
        .or_insert_with(|| serde_json::json!([]))
        .as_array_mut()
        .ok_or("mounts is not a list")?;
    // The image's own mounts of these paths would hide the host's.
    mounts.retain(|m| {
        let dest = m["destination"].as_str().unwrap_or("");
        !binds.iter().any(|b| b == dest) && dest != "/tmp" && dest != "/fn"
    });
    for dir in &binds {
        mounts.push(bind(dir, dir, "ro"));
    }
    mounts.push(bind(
        ember_runtimes::bundle::AGENT_PATH,
        &agent.to_string_lossy(),
        "ro",
    ));
    mounts.push(bind("/.ember/run", &run_dir.to_string_lossy(), "rw"));
    let mut args = vec![ember_runtimes::bundle::AGENT_PATH.to_string()];
    args.extend(interpreter.agent_args());
    args.extend(
        [
            "--uid",
            &ember_runtimes::bundle::SANDBOX_UID.to_string(),
            "--gid",
            &ember_runtimes::bundle::SANDBOX_UID.to_string(),
            "--listen",
            "/.ember/run/agent.sock",
        ]
        .map(str::to_string),
    );
    let process = config
        .as_object_mut()
        .ok_or("config is not a JSON object")?
        .entry("process")
        .or_insert_with(|| serde_json::json!({}));
    process["args"] = serde_json::json!(args);
    process["env"] = serde_json::json!(["PATH=/usr/local/bin:/usr/bin:/bin"]);
    process["cwd"] = serde_json::json!("/");
    process["user"] = serde_json::json!({ "uid": 0, "gid": 0 });
    process["terminal"] = serde_json::json!(false);
    config["root"]["readonly"] = serde_json::json!(true);
    Ok(())
}

/// Where emberd's API is: `EMBER_SOCKET`, else its default.
pub fn emberd_socket() -> PathBuf {
    std::env::var_os("EMBER_SOCKET")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/ember/ember.sock"))
}

/// After a successful `start`: if the container is an ember sandbox, tell
/// emberd to adopt it. `state` is the delegate's `state` JSON of it.
pub fn register_if_sandbox(
    state: &Value,
    socket: &Path,
) -> Result<Option<String>, RuntimeCliError> {
    let Some(runtime) = state["annotations"][SANDBOX_ANNOTATION].as_str() else {
        return Ok(None);
    };
    let id = state["id"].as_str().unwrap_or_default().to_string();
    let fail = |message: String| RuntimeCliError::Register {
        id: id.clone(),
        socket: socket.to_path_buf(),
        message,
    };
    let bundle = PathBuf::from(state["bundle"].as_str().unwrap_or_default());
    let config: Value = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| fail(format!("cannot read {}/config.json", bundle.display())))?;
    let cgroups_path = config["linux"]["cgroupsPath"]
        .as_str()
        .filter(|p| p.starts_with('/'))
        .ok_or_else(|| {
            fail("the container has no cgroupfs cgroupsPath (the systemd cgroup driver is not supported for sandboxes)".into())
        })?
        .to_string();
    let body = serde_json::json!({
        "id": id,
        "runtime": runtime,
        "pid": state["pid"].as_u64().unwrap_or(0),
        "socket": bundle.join(AGENT_RUN_DIR).join("agent.sock"),
        "cgroups_path": cgroups_path,
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let client = ember_api::client::Client::new(socket);
    let answer = rt
        .block_on(client.request(
            hyper::Method::POST,
            "/v1/sandboxes",
            Some("application/json"),
            body.to_string(),
        ))
        .map_err(|e| fail(e.to_string()))?;
    if !answer.status.is_success() {
        return Err(fail(answer.error_message()));
    }
    Ok(Some(id))
}

/// Write an error where the caller looks for it: stderr, and the `--log`
/// file in the `--log-format` the shim parses (runc writes JSON lines with
/// `level`, `msg`, `time`; containerd reports the last error line).
pub fn report_error(global: &liboci_cli::GlobalOpts, message: &str) {
    eprintln!("ember-runtime: {message}");
    let Some(log) = &global.log else { return };
    let line = if global.log_format.as_deref() == Some("json") {
        serde_json::json!({
            "level": "error",
            "msg": format!("ember-runtime: {message}"),
            "time": now_rfc3339(),
        })
        .to_string()
    } else {
        format!("level=error msg={:?}", format!("ember-runtime: {message}"))
    };
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = writeln!(f, "{line}");
    }
}

fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bundle_config() -> Value {
        json!({
            "ociVersion": "1.0.2",
            "process": {
                "args": ["/bin/sh"],
                "cwd": "/",
                "capabilities": {
                    "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW", "CAP_SETUID"],
                    "effective": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"],
                    "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"]
                }
            },
            "root": {"path": "rootfs"},
            "linux": {
                "namespaces": [{"type": "pid"}, {"type": "mount"}],
                "maskedPaths": ["/proc/kcore", "/proc/custom"],
                "resources": {"memory": {"limit": 1000000}}
            }
        })
    }

    #[test]
    fn bundles_without_the_annotation_are_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let text = serde_json::to_vec_pretty(&bundle_config()).unwrap();
        std::fs::write(dir.path().join("config.json"), &text).unwrap();
        assert_eq!(apply_profile_to_bundle(dir.path(), None).unwrap(), None);
        assert_eq!(std::fs::read(dir.path().join("config.json")).unwrap(), text);
        // `--ember-profile` applies where there is no annotation.
        assert_eq!(
            apply_profile_to_bundle(dir.path(), Some("default")).unwrap(),
            Some("default")
        );
    }

    #[test]
    fn the_annotation_applies_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = bundle_config();
        c["annotations"] = json!({ PROFILE_ANNOTATION: "strict" });
        std::fs::write(dir.path().join("config.json"), c.to_string()).unwrap();
        // The annotation wins over `--ember-profile`.
        assert_eq!(
            apply_profile_to_bundle(dir.path(), Some("default")).unwrap(),
            Some("strict")
        );
        let after: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(after["process"]["noNewPrivileges"], true);
        c["annotations"] = json!({ PROFILE_ANNOTATION: "lax" });
        std::fs::write(dir.path().join("config.json"), c.to_string()).unwrap();
        let e = apply_profile_to_bundle(dir.path(), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("lax") && e.contains("strict"), "{e}");
        std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
        assert!(matches!(
            apply_profile_to_bundle(dir.path(), None),
            Err(RuntimeCliError::BadConfig { .. })
        ));
    }

    #[test]
    fn a_bundle_sharing_a_mount_namespace_is_refused_untouched() {
        let bundle = tempfile::tempdir().unwrap();
        std::fs::create_dir(bundle.path().join("rootfs")).unwrap();
        let agent = bundle.path().join("ember-agent");
        std::fs::write(&agent, b"#!agent").unwrap();
        let mut c = bundle_config();
        c["linux"]["namespaces"] = json!([{"type": "pid"}]);
        c["annotations"] = json!({ PROFILE_ANNOTATION: "strict", SANDBOX_ANNOTATION: "python3" });
        let text = serde_json::to_vec_pretty(&c).unwrap();
        std::fs::write(bundle.path().join("config.json"), &text).unwrap();
        let e = prepare_bundle(bundle.path(), None, Some(&agent)).unwrap_err();
        assert!(matches!(e, RuntimeCliError::Restrict { .. }), "{e:?}");
        let e = e.to_string();
        assert!(
            e.contains(
                "ember profile \"strict\" needs the container to have its own mount namespace"
            ),
            "{e}"
        );
        assert_eq!(
            std::fs::read(bundle.path().join("config.json")).unwrap(),
            text
        );
        for d in ["rootfs/fn", "ember-run"] {
            assert!(
                !bundle.path().join(d).exists(),
                "{d} made for a refused bundle"
            );
        }
    }

    #[test]
    fn the_command_line_has_runcs_shape() {
        let cli = RuntimeCli::try_parse_from([
            "ember-runtime",
            "--root",
            "/run/containerd/runc/k8s.io",
            "--log",
            "/run/x/log.json",
            "--log-format",
            "json",
            "--systemd-cgroup",
            "create",
            "--bundle",
            "/run/x",
            "--pid-file",
            "/run/x/init.pid",
            "c1",
        ])
        .unwrap();
        assert_eq!(cli.global.log_format.as_deref(), Some("json"));
        assert!(cli.global.systemd_cgroup);
        assert_eq!(cli.command.bundle(), Some(Path::new("/run/x")));
        for args in [
            vec!["ember-runtime", "state", "c1"],
            vec!["ember-runtime", "kill", "c1", "9"],
            vec!["ember-runtime", "kill", "--all", "c1", "KILL"],
            vec!["ember-runtime", "delete", "--force", "c1"],
            vec!["ember-runtime", "pause", "c1"],
            vec!["ember-runtime", "resume", "c1"],
            vec!["ember-runtime", "ps", "--format", "json", "c1"],
            vec!["ember-runtime", "features"],
            vec![
                "ember-runtime",
                "exec",
                "--process",
                "/tmp/p.json",
                "--detach",
                "--pid-file",
                "/tmp/p.pid",
                "c1",
            ],
        ] {
            let cli = RuntimeCli::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(cli.command.bundle(), None, "{args:?}");
        }
        let cli = RuntimeCli::try_parse_from([
            "ember-runtime",
            "--ember-profile",
            "strict",
            "--root",
            "/r",
            "create",
            "--bundle",
            "/b",
            "c1",
        ])
        .unwrap();
        assert_eq!(cli.ember_profile.as_deref(), Some("strict"));
        assert!(RuntimeCli::try_parse_from(["ember-runtime", "frobnicate", "c1"]).is_err());
        assert!(RuntimeCli::try_parse_from(["ember-runtime", "create"]).is_err());
    }

    #[test]
    fn the_delegate_is_runc_unless_configured() {
        let none = ember_api::config_file::ConfigFile::default();
        // Only meaningful when the environment does not name one.
        if std::env::var_os("EMBER_RUNTIME_DELEGATE").is_none() {
            let d = Delegate::configured(&none);
            assert_eq!(d.binary, PathBuf::from("runc"));
            assert!(d.args.is_empty());
            let mut file = none.clone();
            file.ember_runtime.delegate = Some("/usr/bin/runsc".into());
            let d = Delegate::configured(&file);
            assert_eq!(d.args, vec!["--platform=ptrace", "--network=none"]);
            let argv = d.argv(&[
                "--ember-profile".into(),
                "strict".into(),
                "--ember-profile=default".into(),
                "state".into(),
                "c1".into(),
            ]);
            assert_eq!(argv, ["--platform=ptrace", "--network=none", "state", "c1"]);
        }
    }

    #[test]
    fn a_sandbox_annotation_makes_an_ember_sandbox_of_the_container() {
        let bundle = tempfile::tempdir().unwrap();
        std::fs::create_dir(bundle.path().join("rootfs")).unwrap();
        let agent = bundle.path().join("ember-agent");
        std::fs::write(&agent, b"#!agent").unwrap();
        let mut c = bundle_config();
        c["annotations"] = json!({ SANDBOX_ANNOTATION: "python3" });
        c["mounts"] = json!([{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}]);
        std::fs::write(bundle.path().join("config.json"), c.to_string()).unwrap();
        let applied = prepare_bundle(bundle.path(), None, Some(&agent)).unwrap();
        assert_eq!(
            applied,
            Some("default"),
            "sandboxes get the default profile"
        );
        let after: Value =
            serde_json::from_slice(&std::fs::read(bundle.path().join("config.json")).unwrap())
                .unwrap();
        let args: Vec<&str> = after["process"]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args[0], "/.ember/agent");
        assert!(args
            .windows(2)
            .any(|w| w == ["--python", "/usr/bin/python3"]));
        assert!(args
            .windows(2)
            .any(|w| w == ["--listen", "/.ember/run/agent.sock"]));
        assert_eq!(after["root"]["readonly"], true);
        let mounts = after["mounts"].as_array().unwrap();
        let dest = |d: &str| mounts.iter().find(|m| m["destination"] == d);
        assert_eq!(
            dest("/.ember/agent").unwrap()["source"],
            agent.to_str().unwrap()
        );
        assert!(dest("/usr").unwrap()["options"]
            .as_array()
            .unwrap()
            .contains(&json!("ro")));
        assert!(dest("/tmp").is_none(), "the image's /tmp mount is dropped");
        let run = bundle.path().join(AGENT_RUN_DIR);
        assert_eq!(
            dest("/.ember/run").unwrap()["source"],
            run.to_str().unwrap()
        );
        for d in ["rootfs/fn", "rootfs/tmp", "rootfs/.ember/run", "ember-run"] {
            assert!(bundle.path().join(d).is_dir(), "{d}");
        }
        // A runtime ember does not have, or a missing agent, is refused.
        c["annotations"] = json!({ SANDBOX_ANNOTATION: "ruby" });
        std::fs::write(bundle.path().join("config.json"), c.to_string()).unwrap();
        let e = prepare_bundle(bundle.path(), None, Some(&agent))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ruby") && e.contains("python3"), "{e}");
        c["annotations"] = json!({ SANDBOX_ANNOTATION: "python3" });
        std::fs::write(bundle.path().join("config.json"), c.to_string()).unwrap();
        let e = prepare_bundle(bundle.path(), None, Some(&bundle.path().join("nope")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("EMBER_AGENT"), "{e}");
    }

    #[test]
    fn registration_needs_a_cgroupfs_path() {
        let bundle = tempfile::tempdir().unwrap();
        std::fs::write(
            bundle.path().join("config.json"),
            json!({"linux": {"cgroupsPath": "system.slice:ctr:x"}}).to_string(),
        )
        .unwrap();
        let state = json!({
            "id": "x", "pid": 1, "bundle": bundle.path(),
            "annotations": { SANDBOX_ANNOTATION: "python3" },
        });
        let e = register_if_sandbox(&state, Path::new("/nonexistent.sock"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("systemd cgroup driver"), "{e}");
        let plain = json!({ "id": "y", "pid": 1, "bundle": "/x", "annotations": {} });
        assert_eq!(
            register_if_sandbox(&plain, Path::new("/nonexistent.sock")).unwrap(),
            None
        );
    }

    #[test]
    fn log_lines_are_dated() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
