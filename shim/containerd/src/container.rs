//! One container a shim runs: its bundle, root filesystem, init and
//! exec'd processes, and the runtime that drives it.

use crate::error::TaskError;
use crate::io::StdioPaths;
use crate::process::ProcState;
use crate::runtime::Runtime;
use containerd_shim::protos::types::mount::Mount;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A process exec'd into a container.
pub struct ExecProc {
    pub stdio: StdioPaths,
    /// The OCI process (containerd's `spec`), as `exec --process` reads it.
    pub process_file: PathBuf,
    /// Where runc writes the exec'd process's host pid, so signals reach it
    /// and not only the `exec` command that waits for it.
    pub pid_file: Option<PathBuf>,
    pub state: Arc<ProcState>,
}

impl Drop for ExecProc {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.process_file);
        if let Some(p) = &self.pid_file {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// How a container's exit is learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitVia {
    /// Its init pid exits (runc, crun; and a gVisor pod's first container,
    /// whose sandbox process exits with the container's status).
    Pid,
    /// `runsc wait`: a container that joined a gVisor sandbox reports the
    /// sandbox's pid, which lives on after it.
    RuntimeWait,
}

/// A container of this shim.
pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub stdio: StdioPaths,
    pub runtime: Runtime,
    pub init: Arc<ProcState>,
    pub execs: HashMap<String, ExecProc>,
    /// Whether the shim mounted `<bundle>/rootfs` (and so unmounts it).
    pub mounted_rootfs: bool,
    pub exit_via: ExitVia,
}

impl Container {
    pub fn exec(&self, exec_id: &str) -> Result<&ExecProc, TaskError> {
        self.execs.get(exec_id).ok_or_else(|| TaskError::NoExec {
            id: self.id.clone(),
            exec: exec_id.to_string(),
        })
    }

    /// The process an RPC names: the init for an empty exec id.
    pub fn process(&self, exec_id: &str) -> Result<&Arc<ProcState>, TaskError> {
        if exec_id.is_empty() {
            Ok(&self.init)
        } else {
            self.exec(exec_id).map(|e| &e.state)
        }
    }

    /// Files for a new exec (its id checked to be a plain name first: it
    /// becomes part of a path in the bundle).
    pub fn exec_files(&self, exec_id: &str) -> Result<(PathBuf, Option<PathBuf>), TaskError> {
        check_exec_id(exec_id)?;
        let process = self.bundle.join(format!("exec-{exec_id}.json"));
        // runsc's exec has no use for a host pid: its processes live in the
        // sandbox; signals go through the exec command.
        let pid = (!self.runtime.config.runtime.reports_sandbox_pid())
            .then(|| self.bundle.join(format!("exec-{exec_id}.pid")));
        Ok((process, pid))
    }
}

pub fn check_exec_id(exec_id: &str) -> Result<(), TaskError> {
    let ok = !exec_id.is_empty()
        && exec_id.len() <= 128
        && !exec_id.starts_with('.')
        && exec_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(TaskError::BadExecId(exec_id.to_string()))
    }
}

/// Mounts containerd's snapshot mounts at `<bundle>/rootfs`. Returns
/// whether anything was mounted (none: the bundle brings its root).
pub fn mount_rootfs(id: &str, bundle: &Path, mounts: &[Mount]) -> Result<bool, TaskError> {
    if mounts.is_empty() {
        return Ok(false);
    }
    let target = bundle.join("rootfs");
    std::fs::create_dir_all(&target).map_err(|source| TaskError::Write {
        id: id.to_string(),
        path: target.clone(),
        source,
    })?;
    for m in mounts {
        let fs_type = (!m.type_.is_empty()).then_some(m.type_.as_str());
        let source = (!m.source.is_empty()).then_some(m.source.as_str());
        containerd_shim::mount::mount_rootfs(fs_type, source, &m.options, &target).map_err(
            |e| TaskError::Mount {
                id: id.to_string(),
                fs_type: m.type_.clone(),
                source_path: m.source.clone(),
                reason: e.to_string(),
            },
        )?;
    }
    Ok(true)
}

/// Unmounts `<bundle>/rootfs` (lazily: a process of the runtime may still
/// hold it for a moment).
pub fn unmount_rootfs(bundle: &Path) {
    let target = bundle.join("rootfs");
    if let Err(e) = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH) {
        if e != nix::errno::Errno::EINVAL && e != nix::errno::Errno::ENOENT {
            log::warn!("unmounting {}: {e}", target.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_ids_that_could_leave_the_bundle_are_refused() {
        for bad in ["", "../x", "a/b", ".hidden", "a b", &"x".repeat(129)] {
            assert!(check_exec_id(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["exec1", "0123abcdef", "a.b_c-d"] {
            check_exec_id(good).unwrap();
        }
    }
}
