//! Driving an OCI runtime binary with runc's command line (runc, crun,
//! runsc): start a detached container whose PID 1 keeps our stdio pipes,
//! force-delete, list. The backends in `backend.rs` wrap it.

use crate::agent_conn::AgentConn;
use crate::error::RuntimeError;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// Longest a short runtime subcommand (list, delete, pause) may take.
const CLI_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct CliDriver {
    pub binary: PathBuf,
    /// `--root` for the runtime's state; `None` uses its default
    /// (`/run/runc`, `/run/crun`, `/var/run/runsc`), so operators see
    /// ember's sandboxes in a plain `runc list`.
    pub root: Option<PathBuf>,
    /// Global flags before the subcommand (runsc's `--platform`, ...).
    pub global_args: Vec<String>,
}

/// One row of `runc list --format json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ContainerInfo {
    pub id: String,
    pub pid: i64,
    pub status: String,
    pub bundle: PathBuf,
}

impl CliDriver {
    fn command(&self) -> Command {
        let mut c = Command::new(&self.binary);
        if let Some(root) = &self.root {
            c.arg("--root").arg(root);
        }
        c.args(&self.global_args);
        c.kill_on_drop(false);
        c
    }

    /// `runc run --detach`: the container's init inherits the stdio pipes
    /// ("detached pass-through"), which become the agent connection. Returns
    /// the init's host pid and the connection.
    pub async fn run_detached(
        &self,
        id: &str,
        bundle: &Path,
    ) -> Result<(u32, AgentConn), RuntimeError> {
        let pid_file = bundle.join("init.pid");
        let mut child = self
            .command()
            .arg("run")
            .arg("--detach")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| RuntimeError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let status = child.wait().await.map_err(|source| RuntimeError::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        if !status.success() {
            // The container is gone, so nothing else holds the pipe: read
            // runc's complaint to the end (bounded in time all the same).
            let mut msg = String::new();
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(2),
                stderr.read_to_string(&mut msg),
            )
            .await;
            return Err(RuntimeError::RuntimeFailed {
                op: "run",
                id: id.to_string(),
                status: status.to_string(),
                stderr: msg.trim().to_string(),
            });
        }
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .ok_or_else(|| RuntimeError::RuntimeFailed {
                op: "run",
                id: id.to_string(),
                status: status.to_string(),
                stderr: format!("no pid in {}", pid_file.display()),
            })?;
        Ok((pid, AgentConn::new(id, stdin, stdout, stderr)))
    }

    /// Run a short subcommand to completion; one that hangs (a runtime
    /// waiting on a wedged container) is killed after `CLI_TIMEOUT`.
    async fn output(&self, args: &[&str]) -> Result<std::process::Output, RuntimeError> {
        let mut cmd = self.command();
        cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
        match tokio::time::timeout(CLI_TIMEOUT, cmd.output()).await {
            Ok(out) => out.map_err(|source| RuntimeError::Spawn {
                binary: self.binary.clone(),
                source,
            }),
            Err(_) => Err(RuntimeError::RuntimeFailed {
                op: "cli",
                id: args.join(" "),
                status: "timed out".into(),
                stderr: format!("no answer within {} s", CLI_TIMEOUT.as_secs()),
            }),
        }
    }

    /// `runc delete --force`: kills (thawing if needed) and removes the
    /// container and its cgroups. A container runc does not know is fine.
    pub async fn delete_force(&self, id: &str) -> Result<(), RuntimeError> {
        let out = self.output(&["delete", "--force", id]).await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success()
            || stderr.contains("does not exist")
            || stderr.contains("not found")
            || stderr.contains("No such file")
        {
            return Ok(());
        }
        Err(RuntimeError::RuntimeFailed {
            op: "delete",
            id: id.to_string(),
            status: out.status.to_string(),
            stderr: stderr.trim().to_string(),
        })
    }

    /// `<runtime> <op> <id>` (pause, resume), failing with its stderr.
    pub async fn simple(&self, op: &'static str, id: &str) -> Result<(), RuntimeError> {
        let out = self.output(&[op, id]).await?;
        if out.status.success() {
            return Ok(());
        }
        Err(RuntimeError::RuntimeFailed {
            op,
            id: id.to_string(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }

    /// Containers runc knows in its root.
    pub async fn list(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let out = self.output(&["list", "--format", "json"]).await?;
        if !out.status.success() {
            return Err(RuntimeError::RuntimeFailed {
                op: "list",
                id: String::new(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let text = String::from_utf8_lossy(&out.stdout);
        if text.trim().is_empty() || text.trim() == "null" {
            return Ok(Vec::new());
        }
        serde_json::from_str(&text).map_err(|e| RuntimeError::RuntimeFailed {
            op: "list",
            id: String::new(),
            status: out.status.to_string(),
            stderr: format!("unparseable output: {e}"),
        })
    }
}
