//! `ember-runtime`: the OCI runtime command line (runc's shape: global
//! flags, then `create`, `start`, `state`, `kill`, `delete`, `pause`,
//! `resume`, `exec`, `ps`, `features`, `spec`, ...) in front of a real
//! runtime, so containerd's runc v2 shim (`BinaryName`) and Docker
//! (`--runtime`) can use ember's sandbox profiles.
//!
//! It parses the command line with youki's `liboci-cli` (so a malformed
//! call is refused in the same terms), applies the profile a bundle names
//! in its `dev.ember.profile` annotation to the bundle's `config.json` on
//! `create` and `run`, then execs the delegate runtime (runc unless
//! configured) with the very same arguments. Exit codes, `state` JSON,
//! logs and error output are therefore the delegate's own, which is what
//! the shim parses.

use clap::{Parser, Subcommand};
use ember_profiles::Profile;
use serde_json::Value;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The annotation naming the ember profile to apply to a container.
pub const PROFILE_ANNOTATION: &str = "dev.ember.profile";

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
--ember-profile) gets that ember profile (seccomp allow-list, capabilities reduced to the profile's, no_new_privileges, \
masked paths); without the annotation the bundle is left as it is. Then the delegate \
runtime runs with the same arguments: runc, or what EMBER_RUNTIME_DELEGATE or the \
[ember_runtime] section of /etc/ember/ember.toml names (see docs/containerd.md)."
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
    pub fn configured(file: &crate::config_file::ConfigFile) -> Delegate {
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
            None if binary.file_name().is_some_and(|n| n == "runsc") => {
                vec!["--platform=ptrace".into(), "--network=none".into()]
            }
            None => Vec::new(),
        };
        Delegate { binary, args }
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

/// Apply the profile named by the bundle's `dev.ember.profile` annotation
/// to its `config.json`, in place. Returns the profile's name, or `None`
/// when the bundle names none (it is then left byte for byte as it was).
pub fn apply_profile_to_bundle(
    bundle: &Path,
    fallback: Option<&str>,
) -> Result<Option<&'static str>, RuntimeCliError> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|source| RuntimeCliError::Read {
        path: path.clone(),
        source,
    })?;
    let mut config: Value =
        serde_json::from_slice(&text).map_err(|e| RuntimeCliError::BadConfig {
            path: path.clone(),
            message: e.to_string(),
        })?;
    let Some(name) = config["annotations"][PROFILE_ANNOTATION]
        .as_str()
        .or(fallback)
        .map(str::to_string)
    else {
        return Ok(None);
    };
    let bad = |message: String| RuntimeCliError::BadProfile {
        path: path.clone(),
        name: name.clone(),
        message,
    };
    let profile = Profile::by_name(&name).map_err(|e| bad(e.to_string()))?;
    apply_profile(&mut config, &profile).map_err(bad)?;
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

/// What a profile does to any container's config: its seccomp filter
/// replaces the bundle's, capabilities are cut down to the profile's (a
/// profile never adds one), `noNewPrivileges` is set, and its masked and
/// read-only paths are added. Namespaces, mounts, resources and the
/// process itself stay the bundle's.
pub fn apply_profile(config: &mut Value, profile: &Profile) -> Result<(), String> {
    if !config.is_object() {
        return Err("config is not a JSON object".into());
    }
    let reference = profile
        .linux("/ember-runtime", &ember_profiles::Limits::default())
        .map_err(|e| e.to_string())?;
    let seccomp = serde_json::to_value(reference.seccomp()).map_err(|e| e.to_string())?;
    let mut process = oci_spec::runtime::Process::default();
    profile
        .apply_process(&mut process)
        .map_err(|e| e.to_string())?;
    let allowed: Vec<String> = process
        .capabilities()
        .as_ref()
        .and_then(|c| c.bounding().as_ref())
        .map(|set| {
            let mut v: Vec<String> = set.iter().map(|c| format!("CAP_{c}")).collect();
            v.sort();
            v
        })
        .unwrap_or_default();

    let linux = config
        .as_object_mut()
        .expect("checked above")
        .entry("linux")
        .or_insert_with(|| serde_json::json!({}));
    let linux = linux.as_object_mut().ok_or("linux is not a JSON object")?;
    linux.insert("seccomp".into(), seccomp);
    for (key, extra) in [
        ("maskedPaths", reference.masked_paths()),
        ("readonlyPaths", reference.readonly_paths()),
    ] {
        let list = linux
            .entry(key)
            .or_insert_with(|| serde_json::json!([]))
            .as_array_mut()
            .ok_or(format!("linux.{key} is not a list"))?;
        for p in extra.iter().flatten() {
            if !list.iter().any(|v| v == p) {
                list.push(Value::String(p.clone()));
            }
        }
    }

    let Some(process) = config.get_mut("process").and_then(Value::as_object_mut) else {
        // No process (a config for `exec` only): nothing more to restrict.
        return Ok(());
    };
    process.insert("noNewPrivileges".into(), Value::Bool(true));
    if let Some(caps) = process
        .get_mut("capabilities")
        .and_then(Value::as_object_mut)
    {
        for (_set, list) in caps.iter_mut() {
            if let Some(items) = list.as_array_mut() {
                items.retain(|c| c.as_str().is_some_and(|c| allowed.iter().any(|a| a == c)));
            }
        }
    }
    Ok(())
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
                "namespaces": [{"type": "pid"}],
                "maskedPaths": ["/proc/kcore", "/proc/custom"],
                "resources": {"memory": {"limit": 1000000}}
            }
        })
    }

    #[test]
    fn a_profile_restricts_but_keeps_the_bundle_otherwise() {
        let mut c = bundle_config();
        apply_profile(&mut c, &Profile::strict_profile()).unwrap();
        assert_eq!(c["process"]["noNewPrivileges"], true);
        assert_eq!(
            c["process"]["capabilities"]["bounding"],
            json!(["CAP_KILL", "CAP_SETUID"]),
            "only capabilities the profile allows remain, none added"
        );
        assert_eq!(
            c["process"]["capabilities"]["effective"],
            json!(["CAP_KILL"])
        );
        assert_eq!(c["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        let allowed: usize = c["linux"]["seccomp"]["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["names"].as_array().map_or(0, Vec::len))
            .sum();
        assert!(allowed > 200, "the profile's allow-list: {allowed} names");
        let masked = c["linux"]["maskedPaths"].as_array().unwrap();
        assert!(masked.contains(&json!("/proc/custom")), "bundle's own kept");
        assert!(masked.contains(&json!("/proc/keys")), "profile's added");
        assert_eq!(
            masked.iter().filter(|p| *p == "/proc/kcore").count(),
            1,
            "no duplicates"
        );
        assert_eq!(c["linux"]["namespaces"], json!([{"type": "pid"}]));
        assert_eq!(c["linux"]["resources"]["memory"]["limit"], 1000000);
        assert_eq!(c["process"]["args"], json!(["/bin/sh"]));
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
        let none = crate::config_file::ConfigFile::default();
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
    fn log_lines_are_dated() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
