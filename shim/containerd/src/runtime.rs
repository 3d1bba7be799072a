//! The runtime commands a shim runs: `ember-runtime` (which applies ember's
//! profiles and hands each command to runc or runsc), and the delegate
//! itself for what only it knows (`runsc wait`).
//!
//! The shim is its containers' subreaper and reaps every child as it
//! exits, so a command's exit status comes from the reaper's notice
//! ([`containerd_shim::monitor`]), never from `waitpid` here.

use crate::config::ShimConfig;
use crate::io::ProcessIo;
use containerd_shim::monitor::{monitor_subscribe, wait_pid, Topic};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A runtime command failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("starting {binary} {action} {id}: {source}")]
    Spawn {
        binary: PathBuf,
        action: &'static str,
        id: String,
        source: std::io::Error,
    },
    #[error("{binary} {action} {id} exited with {code}: {message}")]
    Failed {
        binary: PathBuf,
        action: &'static str,
        id: String,
        code: i32,
        message: String,
    },
    #[error("{action} {id}: reading {path}: {source}")]
    PidFile {
        action: &'static str,
        id: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("watching for the exit of {binary} {action} {id}: {reason}")]
    Monitor {
        binary: PathBuf,
        action: &'static str,
        id: String,
        reason: String,
    },
    #[error("{binary} wait {id} printed {output:?}, not its exit status")]
    WaitOutput {
        binary: PathBuf,
        id: String,
        output: String,
    },
    #[error("containerd-shim-ember-v1 {shim} cannot drive {path} ({found}): install both from one build (scripts/install-node)")]
    Version {
        shim: &'static str,
        path: PathBuf,
        found: String,
    },
}

impl RuntimeError {
    /// Whether the runtime failed because the container does not exist
    /// (runc: "container does not exist"; runsc: "... not found", "...
    /// does not exist").
    pub fn says_gone(&self) -> bool {
        match self {
            RuntimeError::Failed { message, .. } => {
                let m = message.to_ascii_lowercase();
                m.contains("does not exist") || m.contains("not found")
            }
            _ => false,
        }
    }
}

/// The commands of one namespace's containers.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub config: ShimConfig,
    /// `<config.root>/<namespace>`: the runtime's state directory.
    pub root: PathBuf,
}

/// What a finished command left.
struct Finished {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Runtime {
    pub fn new(config: ShimConfig, namespace: &str) -> Runtime {
        let root = config.root.join(namespace);
        Runtime { config, root }
    }

    /// `ember-runtime` with the delegate named in its environment and the
    /// shim's state root.
    fn ember(&self) -> Command {
        let mut cmd = Command::new(&self.config.ember_runtime);
        cmd.env("EMBER_RUNTIME_DELEGATE", &self.config.runtime_binary)
            .env(
                "EMBER_RUNTIME_DELEGATE_ARGS",
                self.config.runtime_args.join(" "),
            )
            .arg("--root")
            .arg(&self.root);
        if let Some(p) = &self.config.profile {
            cmd.args(["--ember-profile", p]);
        }
        cmd
    }

    /// The delegate runtime itself, with its global flags.
    fn delegate(&self) -> Command {
        let mut cmd = Command::new(&self.config.runtime_binary);
        cmd.args(&self.config.runtime_args)
            .arg("--root")
            .arg(&self.root);
        cmd
    }

    /// Checks that `ember-runtime` is of this shim's version: the shim
    /// relies on what that build of it does to bundles and execs.
    pub fn check_version(&self) -> Result<(), RuntimeError> {
        let mut cmd = Command::new(&self.config.ember_runtime);
        cmd.arg("--version");
        let out = run(cmd, &self.config.ember_runtime, "--version", "", None)?;
        let found = out.stdout.trim().to_string();
        let ours = env!("CARGO_PKG_VERSION");
        if found.split_whitespace().last() == Some(ours) {
            return Ok(());
        }
        Err(RuntimeError::Version {
            shim: ours,
            path: self.config.ember_runtime.clone(),
            found,
        })
    }

    /// `create`: the container's init waits for `start`; its streams are
    /// `io`. Returns the pid the runtime wrote (runsc: the sandbox's).
    pub fn create(&self, id: &str, bundle: &Path, io: ProcessIo) -> Result<u32, RuntimeError> {
        let pid_file = bundle.join("init.pid");
        let pid_arg = pid_file.to_string_lossy();
        let bundle_arg = bundle.to_string_lossy();
        let args = [
            "create",
            "--bundle",
            &bundle_arg,
            "--pid-file",
            &pid_arg,
            id,
        ];
        self.with_streams("create", id, bundle, &args, io)?;
        read_pid(&pid_file, "create", id)
    }

    /// `start`. A container joining a gVisor sandbox takes its streams
    /// from `runsc start` (the sandbox receives them then, not at create):
    /// `io` is given for those.
    pub fn start(
        &self,
        id: &str,
        bundle: &Path,
        io: Option<ProcessIo>,
    ) -> Result<(), RuntimeError> {
        match io {
            Some(io) => self.with_streams("start", id, bundle, &["start", id], io),
            None => self.checked("start", id, &["start", id]),
        }
    }

    /// `ember-runtime` with `args`, the process's streams as its own: its
    /// errors come from its JSON log in the bundle, not its stderr.
    fn with_streams(
        &self,
        action: &'static str,
        id: &str,
        bundle: &Path,
        args: &[&str],
        io: ProcessIo,
    ) -> Result<(), RuntimeError> {
        let log = bundle.join("ember-runtime.log");
        let mut cmd = self.ember();
        cmd.arg("--log")
            .arg(&log)
            .args(["--log-format", "json"])
            .args(args);
        let binary = &self.config.ember_runtime;
        let out = run_with(cmd, binary, action, id, Some(io))?;
        if out.code != 0 {
            return Err(failed(binary, action, id, out.code, last_error(&log)));
        }
        Ok(())
    }

    pub fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), RuntimeError> {
        let signal = signal.to_string();
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([id, &signal]);
        self.checked("kill", id, &args)
    }

    pub fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        self.checked("delete", id, &["delete", "--force", id])
    }

    pub fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        self.checked("pause", id, &["pause", id])
    }

    pub fn resume(&self, id: &str) -> Result<(), RuntimeError> {
        self.checked("resume", id, &["resume", id])
    }

    /// `update --resources FILE`: FILE holds the OCI `LinuxResources`.
    pub fn update(&self, id: &str, resources: &Path) -> Result<(), RuntimeError> {
        let file = resources.to_string_lossy();
        self.checked("update", id, &["update", "--resources", &file, id])
    }

    /// The host pids of a container's processes (`ps --format json`).
    pub fn ps(&self, id: &str) -> Result<Vec<u32>, RuntimeError> {
        let mut cmd = self.ember();
        cmd.args(["ps", "--format", "json", id]);
        let binary = &self.config.ember_runtime;
        let out = run(cmd, binary, "ps", id, None)?;
        // runsc lists processes as objects; runc as bare pids.
        let pids: Vec<serde_json::Value> =
            serde_json::from_str(out.stdout.trim()).unwrap_or_default();
        Ok(pids
            .iter()
            .filter_map(|p| p.as_u64().or_else(|| p.get("PID").and_then(|v| v.as_u64())))
            .filter_map(|p| u32::try_from(p).ok())
            .collect())
    }

    /// Starts `exec --process FILE` in the foreground: the child runs as
    /// long as the exec'd process and exits with its status. Returns the
    /// child's pid.
    pub fn spawn_exec(
        &self,
        id: &str,
        process: &Path,
        pid_file: Option<&Path>,
        io: ProcessIo,
    ) -> Result<u32, RuntimeError> {
        let mut cmd = self.ember();
        cmd.arg("exec").arg("--process").arg(process);
        if let Some(p) = pid_file {
            cmd.arg("--pid-file").arg(p);
        }
        // A process group of its own: a signal for the exec reaches
        // ember-runtime and the delegate's `exec` under it, which forwards
        // it into the container.
        use std::os::unix::process::CommandExt;
        cmd.arg(id)
            .process_group(0)
            .stdin(io.stdin)
            .stdout(io.stdout)
            .stderr(io.stderr);
        let child = cmd.spawn().map_err(|source| RuntimeError::Spawn {
            binary: self.config.ember_runtime.clone(),
            action: "exec",
            id: id.to_string(),
            source,
        })?;
        Ok(child.id())
    }

    /// `runsc wait ID`: blocks until the container's init exits, and
    /// gives its exit status (128 + signal for a signal).
    pub fn wait(&self, id: &str) -> Result<u32, RuntimeError> {
        let mut cmd = self.delegate();
        cmd.args(["wait", id]);
        let binary = &self.config.runtime_binary;
        let out = run(cmd, binary, "wait", id, None)?;
        let parsed: Option<u32> = serde_json::from_str::<serde_json::Value>(out.stdout.trim())
            .ok()
            .and_then(|v| v.get("exitStatus").and_then(|s| s.as_u64()))
            .and_then(|s| u32::try_from(s).ok());
        parsed.ok_or_else(|| RuntimeError::WaitOutput {
            binary: binary.clone(),
            id: id.to_string(),
            output: format!("{}{}", out.stdout, out.stderr),
        })
    }

    /// `ember-runtime` with `args`, its output captured; a failure
    /// carries its stderr.
    fn checked(&self, action: &'static str, id: &str, args: &[&str]) -> Result<(), RuntimeError> {
        let mut cmd = self.ember();
        cmd.args(args);
        let binary = &self.config.ember_runtime;
        run(cmd, binary, action, id, None).map(drop)
    }
}

/// Runs `cmd` with captured output; a non-zero exit is an error carrying
/// its stderr.
fn run(
    cmd: Command,
    binary: &Path,
    action: &'static str,
    id: &str,
    io: Option<ProcessIo>,
) -> Result<Finished, RuntimeError> {
    let out = run_with(cmd, binary, action, id, io)?;
    if out.code != 0 {
        let message = if out.stderr.trim().is_empty() {
            out.stdout.trim().to_string()
        } else {
            out.stderr.trim().to_string()
        };
        return Err(failed(binary, action, id, out.code, message));
    }
    Ok(out)
}

/// Runs `cmd` to its end: with `io` as its streams, else capturing them.
fn run_with(
    mut cmd: Command,
    binary: &Path,
    action: &'static str,
    id: &str,
    io: Option<ProcessIo>,
) -> Result<Finished, RuntimeError> {
    // Subscribed before the spawn, so an exit reaped at once is not missed.
    let exits = monitor_subscribe(Topic::Pid).map_err(|e| RuntimeError::Monitor {
        binary: binary.to_path_buf(),
        action,
        id: id.to_string(),
        reason: e.to_string(),
    })?;
    match io {
        Some(io) => cmd.stdin(io.stdin).stdout(io.stdout).stderr(io.stderr),
        None => cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    };
    let mut child = cmd.spawn().map_err(|source| RuntimeError::Spawn {
        binary: binary.to_path_buf(),
        action,
        id: id.to_string(),
        source,
    })?;
    // Dropped with the command, the parent's copies of the streams close
    // here: only the child (and what it starts) holds them.
    drop(cmd);
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    let code = wait_pid(pid, exits);
    let text = |h: Option<std::thread::JoinHandle<String>>| {
        h.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    Ok(Finished {
        code,
        stdout: text(stdout),
        stderr: text(stderr),
    })
}

fn drain<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        // Bounded: a runtime's output is a state or an error, not a log.
        let _ = r.by_ref().take(1 << 20).read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn failed(
    binary: &Path,
    action: &'static str,
    id: &str,
    code: i32,
    message: String,
) -> RuntimeError {
    RuntimeError::Failed {
        binary: binary.to_path_buf(),
        action,
        id: id.to_string(),
        code,
        message,
    }
}

fn read_pid(path: &Path, action: &'static str, id: &str) -> Result<u32, RuntimeError> {
    let text = std::fs::read_to_string(path).map_err(|source| RuntimeError::PidFile {
        action,
        id: id.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    text.trim().parse().map_err(|_| RuntimeError::PidFile {
        action,
        id: id.to_string(),
        path: path.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{text:?} is not a pid"),
        ),
    })
}

/// The last error a runtime wrote to its `--log-format json` log: what
/// runc and ember-runtime say when `create` fails.
pub fn last_error(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v.get("level").and_then(|l| l.as_str()) == Some("error"))
        .and_then(|v| v.get("msg").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_else(|| format!("no error in {}", log.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_error_of_a_json_log_is_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log.json");
        std::fs::write(
            &log,
            "{\"level\":\"error\",\"msg\":\"first\"}\n{\"level\":\"info\",\"msg\":\"x\"}\n\
             {\"level\":\"error\",\"msg\":\"ember-runtime: unknown profile \\\"nope\\\"\"}\n{\"level\":\"warning\",\"msg\":\"y\"}\n",
        )
        .unwrap();
        assert_eq!(last_error(&log), "ember-runtime: unknown profile \"nope\"");
        assert!(last_error(&dir.path().join("none")).contains("no error in"));
    }
}
