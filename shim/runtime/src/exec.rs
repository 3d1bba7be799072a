//! `exec` into a container an ember profile applies to: the new process
//! gets no more than the profile allows, like the container's own.
//!
//! The runtime takes an exec'd process's capabilities and
//! `noNewPrivileges` from the caller (containerd passes `--process FILE`
//! with its default capabilities, `kubectl exec` does this), not from the
//! container. So the profile is found again (the delegate's `state` names
//! the bundle, whose `config.json` carries the annotation) and the call is
//! rewritten: a `--process` file is replaced by a restricted copy next to
//! it, `--cap` arguments the profile does not allow are dropped and
//! `--no-new-privs` is added. The seccomp filter of an exec'd process is
//! the container's, already restricted at `create`.

use crate::{read_config, requested_profile, Delegate, RuntimeCli, RuntimeCliError, StateError};
use ember_profiles::apply::{restrict_process, AllowedCaps};
use ember_profiles::{Profile, ProfileError};
use liboci_cli::{Exec, GlobalOpts};
use serde_json::Value;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("finding container {id}'s bundle: {source}")]
    State { id: String, source: StateError },
    #[error("container {id}: the delegate's state names no bundle")]
    NoBundle { id: String },
    #[error(transparent)]
    Config(#[from] RuntimeCliError),
    #[error("container {id}: ember profile {name:?}: {source}")]
    Profile {
        id: String,
        name: String,
        source: ProfileError,
    },
    #[error("reading process file {path}: {source}")]
    ReadProcess {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("process file {path} is not a JSON object: {message}")]
    BadProcess { path: PathBuf, message: String },
    #[error("writing the restricted copy of process file {path}: {source}")]
    WriteProcess {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How to run the delegate for an `exec`.
#[derive(Debug)]
pub enum ExecPlan {
    /// No profile applies: the caller's arguments, unchanged.
    Unchanged,
    /// The delegate's arguments (after its own global flags), and the
    /// restricted process file they name, removed when dropped: the
    /// delegate must have returned by then.
    Restricted {
        args: Vec<OsString>,
        process: Option<tempfile::TempPath>,
    },
}

/// Plan `exec` under the profile of the container it enters, if any.
pub fn plan(delegate: &Delegate, cli: &RuntimeCli, exec: &Exec) -> Result<ExecPlan, ExecError> {
    let fallback = cli.ember_profile.as_deref();
    let Some(profile) = container_profile(delegate, &cli.global, &exec.container_id, fallback)?
    else {
        return Ok(ExecPlan::Unchanged);
    };
    let caps = AllowedCaps::of(&profile).map_err(|source| ExecError::Profile {
        id: exec.container_id.clone(),
        name: profile.name.to_string(),
        source,
    })?;
    let process = match &exec.process {
        Some(path) => Some(restricted_copy(path, &caps)?),
        None => None,
    };
    // runsc's exec has no --no-new-privs and refuses flags it does not know.
    let no_new_privs = exec.no_new_privs || !delegate.is_runsc();
    let args = exec_args(&cli.global, exec, process.as_deref(), &caps, no_new_privs);
    Ok(ExecPlan::Restricted { args, process })
}

/// The profile of container `id`, as `create` applied it: from its
/// bundle's `config.json`, or `fallback` (`--ember-profile`).
fn container_profile(
    delegate: &Delegate,
    global: &GlobalOpts,
    id: &str,
    fallback: Option<&str>,
) -> Result<Option<Profile>, ExecError> {
    let state = delegate
        .state(global, id)
        .map_err(|source| ExecError::State {
            id: id.to_string(),
            source,
        })?;
    let bundle = state["bundle"]
        .as_str()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| ExecError::NoBundle { id: id.to_string() })?;
    let config = read_config(&Path::new(bundle).join("config.json"))?;
    let Some(name) = requested_profile(&config, fallback) else {
        return Ok(None);
    };
    Profile::by_name(&name)
        .map(Some)
        .map_err(|source| ExecError::Profile {
            id: id.to_string(),
            name,
            source,
        })
}

/// A copy of process file `path`, next to it, cut to `caps` with no new
/// privileges. Next to it: the caller chose that directory for process
/// files (containerd's is private to it).
fn restricted_copy(path: &Path, caps: &AllowedCaps) -> Result<tempfile::TempPath, ExecError> {
    let text = std::fs::read(path).map_err(|source| ExecError::ReadProcess {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |message: String| ExecError::BadProcess {
        path: path.to_path_buf(),
        message,
    };
    let mut process: Value = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let fields = process
        .as_object_mut()
        .ok_or_else(|| bad("not an object".into()))?;
    restrict_process(fields, caps);
    let write_err = |source| ExecError::WriteProcess {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut copy = tempfile::Builder::new()
        .prefix(".ember-process-")
        .suffix(".json")
        .tempfile_in(dir)
        .map_err(write_err)?;
    serde_json::to_writer(&mut copy, &process)
        .map_err(std::io::Error::from)
        .and_then(|()| copy.flush())
        .map_err(write_err)?;
    Ok(copy.into_temp_path())
}

/// The delegate's `exec` command line, rebuilt from what `liboci-cli`
/// parsed (so no flag of the caller is misread): `process` instead of the
/// caller's `--process`, only the `--cap`s the profile allows, and
/// `--no-new-privs` if `no_new_privs`.
pub fn exec_args(
    global: &GlobalOpts,
    exec: &Exec,
    process: Option<&Path>,
    caps: &AllowedCaps,
    no_new_privs: bool,
) -> Vec<OsString> {
    let mut a = Argv::default();
    a.value("--log", global.log.as_deref());
    a.flag("--debug", global.debug);
    a.value("--log-format", global.log_format.as_deref());
    a.value("--root", global.root.as_deref());
    a.flag("--systemd-cgroup", global.systemd_cgroup);
    a.flag("exec", true);
    a.value("--console-socket", exec.console_socket.as_deref());
    a.value("--cwd", exec.cwd.as_deref());
    for (k, v) in &exec.env {
        a.value("--env", Some(format!("{k}={v}")));
    }
    a.flag("--tty", exec.tty);
    a.value("--user", exec.user.map(|(u, g)| user_spec(u, g)));
    for g in &exec.additional_gids {
        a.value("--additional-gids", Some(g.to_string()));
    }
    a.value("--process", process);
    a.flag("--detach", exec.detach);
    a.value("--pid-file", exec.pid_file.as_deref());
    a.value("--process-label", exec.process_label.as_deref());
    a.value("--apparmor", exec.apparmor.as_deref());
    a.flag("--no-new-privs", no_new_privs);
    for cap in exec.cap.iter().filter(|c| caps.allows(c)) {
        a.value("--cap", Some(cap));
    }
    let fds = (exec.preserve_fds != 0).then(|| exec.preserve_fds.to_string());
    a.value("--preserve-fds", fds);
    a.flag("--ignore-paused", exec.ignore_paused);
    a.value("--cgroup", exec.cgroup.as_deref());
    a.0.push(exec.container_id.clone().into());
    a.0.extend(exec.command.iter().map(OsString::from));
    a.0
}

fn user_spec(uid: u32, gid: Option<u32>) -> String {
    match gid {
        Some(g) => format!("{uid}:{g}"),
        None => uid.to_string(),
    }
}

#[derive(Default)]
struct Argv(Vec<OsString>);

impl Argv {
    fn flag(&mut self, name: &str, on: bool) {
        if on {
            self.0.push(name.into());
        }
    }

    fn value(&mut self, name: &str, value: Option<impl Into<OsString>>) {
        if let Some(v) = value {
            self.0.push(name.into());
            self.0.push(v.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    fn parse(args: &[&str]) -> RuntimeCli {
        RuntimeCli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn strict_caps() -> AllowedCaps {
        AllowedCaps::of(&Profile::strict_profile()).unwrap()
    }

    #[test]
    fn the_rebuilt_exec_line_means_what_the_callers_did() {
        let cli = parse(&[
            "ember-runtime",
            "--root",
            "/run/r",
            "--log",
            "/run/x/log.json",
            "--log-format",
            "json",
            "--systemd-cgroup",
            "--ember-profile",
            "strict",
            "exec",
            "-d",
            "--pid-file",
            "/run/x/p.pid",
            "--env",
            "A=b=c",
            "-u",
            "1000:1000",
            "-g",
            "7",
            "--cwd",
            "/w",
            "--cap",
            "CAP_KILL",
            "--cap",
            "CAP_SYS_ADMIN",
            "--preserve-fds",
            "2",
            "c1",
            "sh",
            "-c",
            "echo --cap",
        ]);
        let exec = cli.command.exec().unwrap();
        let args = exec_args(&cli.global, exec, None, &strict_caps(), true);
        let mut argv: Vec<OsString> = vec!["ember-runtime".into()];
        argv.extend(args.iter().cloned());
        let again = RuntimeCli::try_parse_from(&argv).unwrap();
        let rebuilt = again.command.exec().unwrap();
        assert!(rebuilt.no_new_privs, "{args:?}");
        assert_eq!(rebuilt.cap, ["CAP_KILL"], "CAP_SYS_ADMIN dropped");
        assert_eq!(
            again.ember_profile, None,
            "ember's flag is not the delegate's"
        );
        assert_eq!(format!("{:?}", again.global), format!("{:?}", cli.global));
        let same = |e: &Exec| {
            (
                format!("{:?} {:?} {:?}", e.env, e.user, e.additional_gids),
                format!("{:?} {:?} {:?}", e.cwd, e.pid_file, e.detach),
                format!("{:?} {:?} {:?}", e.preserve_fds, e.container_id, e.command),
            )
        };
        assert_eq!(same(rebuilt), same(exec));
        assert_eq!(rebuilt.command, ["sh", "-c", "echo --cap"]);
    }

    #[test]
    fn a_process_file_is_replaced_by_a_restricted_copy_next_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let original = dir.path().join("runc-process123");
        let all = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW", "CAP_SYS_ADMIN"];
        let p = json!({
            "args": ["sh"], "cwd": "/", "terminal": false,
            "capabilities": {"bounding": all, "effective": all, "permitted": all,
                             "inheritable": all, "ambient": all},
        });
        std::fs::write(&original, p.to_string()).unwrap();
        let copy = restricted_copy(&original, &strict_caps()).unwrap();
        assert_eq!(copy.parent(), Some(dir.path()));
        let got: Value = serde_json::from_slice(&std::fs::read(&copy).unwrap()).unwrap();
        assert_eq!(got["noNewPrivileges"], true);
        assert_eq!(got["capabilities"]["bounding"], json!(["CAP_KILL"]));
        assert_eq!(got["capabilities"]["ambient"], json!([]));
        assert_eq!(got["args"], json!(["sh"]));
        let untouched: Value = serde_json::from_slice(&std::fs::read(&original).unwrap()).unwrap();
        assert_eq!(untouched, p, "the caller's file is left as it was");
        let cli = parse(&["ember-runtime", "exec", "--process", "x", "-d", "c1"]);
        let exec = cli.command.exec().unwrap();
        let args = exec_args(&cli.global, exec, Some(&copy), &strict_caps(), false);
        let at = args.iter().position(|a| a == "--process").unwrap();
        assert_eq!(Path::new(&args[at + 1]), &*copy);
        assert!(
            !args.iter().any(|a| a == "--no-new-privs"),
            "runsc has none"
        );
        let path = copy.to_path_buf();
        drop(copy);
        assert!(!path.exists(), "the copy goes once the delegate returned");
        let e = restricted_copy(&dir.path().join("nope"), &strict_caps()).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        std::fs::write(&original, "[1]").unwrap();
        let e = restricted_copy(&original, &strict_caps()).unwrap_err();
        assert!(matches!(e, ExecError::BadProcess { .. }), "{e}");
    }

    /// A delegate whose `state` names `bundle`.
    fn fake_delegate(dir: &Path, bundle: &Path) -> Delegate {
        use std::os::unix::fs::PermissionsExt;
        let script = dir.join("fake-runc");
        let state = json!({"id": "c1", "status": "running", "bundle": bundle});
        std::fs::write(&script, format!("#!/bin/sh\necho '{state}'\n")).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        Delegate {
            binary: script,
            args: Vec::new(),
        }
    }

    #[test]
    fn the_containers_profile_is_found_through_its_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let delegate = fake_delegate(dir.path(), dir.path());
        let write = |annotations: Value| {
            let config = json!({"annotations": annotations});
            std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        };
        let line = ["ember-runtime", "exec", "--cap", "CAP_NET_RAW", "c1", "id"];
        let planned = |line: &[&str]| {
            let cli = parse(line);
            plan(&delegate, &cli, cli.command.exec().unwrap()).unwrap()
        };
        write(json!({}));
        assert!(matches!(planned(&line), ExecPlan::Unchanged));
        write(json!({"dev.ember.profile": "strict"}));
        let ExecPlan::Restricted { args, process } = planned(&line) else {
            panic!("strict container, unrestricted exec")
        };
        assert!(process.is_none());
        assert!(args.iter().any(|a| a == "--no-new-privs"), "{args:?}");
        assert!(!args.iter().any(|a| a == "CAP_NET_RAW"), "{args:?}");
        // Without the annotation, --ember-profile applies, as on create.
        write(json!({}));
        let mut with_flag = vec!["ember-runtime", "--ember-profile", "default"];
        with_flag.extend(&line[1..]);
        assert!(matches!(planned(&with_flag), ExecPlan::Restricted { .. }));
        write(json!({"dev.ember.profile": "lax"}));
        let cli = parse(&line);
        let e = plan(&delegate, &cli, cli.command.exec().unwrap()).unwrap_err();
        assert!(e.to_string().contains("lax"), "{e}");
    }

    #[test]
    fn a_container_without_a_bundle_state_is_an_error_not_a_pass() {
        // A delegate whose `state` fails: exec is refused, not let through.
        let delegate = Delegate {
            binary: PathBuf::from("/bin/false"),
            args: Vec::new(),
        };
        let cli = parse(&["ember-runtime", "exec", "c1", "true"]);
        let e = plan(&delegate, &cli, cli.command.exec().unwrap()).unwrap_err();
        assert!(matches!(e, ExecError::State { .. }), "{e}");
        assert!(e.to_string().contains("c1"), "{e}");
    }
}
