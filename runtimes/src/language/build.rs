//! Deploy builds: preparing a function's uploaded code for its runtime
//! (installing `requirements.txt` with pip, compiling Python bytecode,
//! checking a Node.js function ships its `node_modules`) inside a
//! throwaway sandbox of the function's backend, never in emberd.
//!
//! emberd unpacks the upload (a data-only operation, `ember-injector`)
//! into a [`BuildDir`]: a size-limited tmpfs on the host, which is the
//! build's disk budget. The build sandbox binds it read-write at `/fn`,
//! runs as the sandbox user in its own user namespace, with the sandbox
//! profile's seccomp filter and the base worker filter, no network, the
//! operator's wheels read-only at `/wheels`, a memory and process limit
//! and a deadline. Each limit reached has its own error. emberd then
//! copies the result into the code store without following links.

use crate::backend::{Backend, Injection};
use crate::bundle::{write_bundle, BuildMounts, BundleSpec};
use crate::cgroup::CgroupLayout;
use crate::error::RuntimeError;
use crate::language::Interpreter;
use crate::sandbox_files::SandboxFiles;
use crate::userns::{IdBlock, IdRange};
use ember_profiles::{Limits, Profile};
use ember_proto::{BuildReport, FromAgent};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The sandbox user's id inside (see `bundle::SANDBOX_UID`).
const BUILD_UID: u32 = crate::bundle::SANDBOX_UID;

/// How far a build may go.
#[derive(Debug, Clone, Copy)]
pub struct BuildLimits {
    pub memory_bytes: u64,
    pub pids: i64,
    /// Size of the build's `/fn`: the upload and everything the build adds.
    pub disk_bytes: u64,
    pub timeout: Duration,
}

/// What every build of one backend is made from.
#[derive(Debug, Clone)]
pub struct BuildConfig {
    pub backend: Arc<dyn Backend>,
    pub files: SandboxFiles,
    /// Where build directories go (under the daemon's run directory).
    pub builds_dir: PathBuf,
    pub cgroup_parent: String,
    pub userns: Option<(IdRange, PathBuf)>,
    /// The sandbox profile (its OCI seccomp filter and capabilities).
    pub profile: Profile,
    pub limits: BuildLimits,
    pub wheels: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the build sandbox could not run: {0}")]
    Sandbox(#[from] RuntimeError),
    #[error("the deploy build took longer than {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("the deploy build ran out of memory (limit {} MiB)", .0 >> 20)]
    Oom(u64),
    #[error("the deploy build hit its process limit ({0} processes and threads)")]
    Pids(i64),
    #[error("the deploy build filled its disk (the code and what the build adds may take {} MiB)", .0 >> 20)]
    DiskFull(u64),
    #[error("{step} failed during the deploy build ({status}): {output}")]
    Failed {
        step: String,
        status: String,
        output: String,
    },
    #[error("preparing the build directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One build's directory: `fn/`, a tmpfs of the build's disk budget the
/// upload is unpacked into, and the sandbox's bundle. Unmounted and
/// removed on drop.
pub struct BuildDir {
    id: String,
    root: PathBuf,
    ids: Option<IdBlock>,
}

impl BuildDir {
    /// Make the directory and its tmpfs, and reserve the build's ids.
    pub fn create(cfg: &BuildConfig, id: &str) -> Result<BuildDir, BuildError> {
        let root = cfg.builds_dir.join(id);
        let dir_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BuildError::Dir { path, source }
        };
        std::fs::create_dir_all(root.join("fn")).map_err(dir_err(&root))?;
        let ids = match &cfg.userns {
            Some((range, locks)) => Some(range.allocate(locks).map_err(RuntimeError::from)?),
            None => None,
        };
        let dir = BuildDir {
            id: id.to_string(),
            root,
            ids,
        };
        let opts = format!("size={},mode=0755", cfg.limits.disk_bytes);
        nix::mount::mount(
            Some("tmpfs"),
            &dir.work(),
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
        .map_err(|e| dir_err(&dir.work())(e.into()))?;
        Ok(dir)
    }

    /// Where the upload goes (the build's `/fn`).
    pub fn work(&self) -> PathBuf {
        self.root.join("fn")
    }

    fn bundle(&self) -> PathBuf {
        self.root.join("bundle")
    }

    /// The host id the sandbox user has in the build.
    fn build_uid(&self) -> u32 {
        self.ids
            .as_ref()
            .map_or(BUILD_UID, |b| b.host_id(BUILD_UID))
    }

    /// Run the build for `interpreter`'s language over the unpacked code.
    pub async fn run(
        &self,
        cfg: &BuildConfig,
        cgroups: &CgroupLayout,
        interpreter: &Interpreter,
    ) -> Result<BuildReport, BuildError> {
        hand_over(&self.work(), self.build_uid()).map_err(|source| BuildError::Dir {
            path: self.work(),
            source,
        })?;
        let cgroups_path = format!("{}/{}", cfg.cgroup_parent, self.id);
        let host_kernel = cfg.backend.injection() == Injection::MountNamespace;
        let work = self.work();
        write_bundle(&BundleSpec {
            dir: &self.bundle(),
            files: &cfg.files,
            interpreter,
            userns: self.ids.as_ref().map(|b| b.host_base),
            host_kernel,
            cgroups_path: &cgroups_path,
            profile: &cfg.profile,
            limits: Limits {
                memory_bytes: cfg.limits.memory_bytes,
                pids: cfg.limits.pids,
            },
            host_code: None,
            build: Some(BuildMounts {
                work: &work,
                wheels: cfg.wheels.as_deref(),
            }),
        })?;
        let limits = cgroups.limits(&cgroups_path);
        let outcome = self.run_sandbox(cfg).await;
        // Read before the delete removes the cgroup.
        let hits = limits.hits();
        let _ = cfg.backend.delete(&self.id).await;
        let report = match outcome {
            Err(BuildError::Sandbox(e)) if hits.oom_kills > 0 => {
                tracing::debug!("build sandbox lost to its OOM: {e}");
                return Err(BuildError::Oom(cfg.limits.memory_bytes));
            }
            // The limit refused a process the runtime itself needed to
            // start the sandbox (youki's takes two). When `runc run` fails
            // it removes the cgroup, counters and all, before they can be
            // read: its init's EAGAIN ("Resource temporarily unavailable",
            // from pthread_create or fork) says the same.
            Err(BuildError::Sandbox(e)) if hits.pids_max > 0 || refused_a_task(&e) => {
                tracing::debug!("build sandbox could not start under its pids limit: {e}");
                return Err(BuildError::Pids(cfg.limits.pids));
            }
            other => other?,
        };
        if hits.oom_kills > 0 {
            return Err(BuildError::Oom(cfg.limits.memory_bytes));
        }
        // The agent says "process limit" where no cgroup counts (gVisor).
        let refused_fork = report.failed().is_some_and(|s| s.status == "process limit");
        if hits.pids_max > 0 || refused_fork {
            return Err(BuildError::Pids(cfg.limits.pids));
        }
        if let Some(step) = report.failed() {
            if disk_full(&self.work()) {
                return Err(BuildError::DiskFull(cfg.limits.disk_bytes));
            }
            return Err(BuildError::Failed {
                step: step.name.clone(),
                status: step.status.clone(),
                output: step.output.clone(),
            });
        }
        Ok(report)
    }

    async fn run_sandbox(&self, cfg: &BuildConfig) -> Result<BuildReport, BuildError> {
        let started = std::time::Instant::now();
        // Never cancelled halfway: a runtime still creating the container
        // when the deadline hit would make it after the delete.
        let (_pid, mut conn) = cfg.backend.run(&self.id, &self.bundle()).await?;
        let left = cfg.limits.timeout.saturating_sub(started.elapsed());
        let answer = match tokio::time::timeout(left, conn.recv()).await {
            Ok(a) => a,
            Err(_) => return Err(BuildError::Timeout(cfg.limits.timeout)),
        };
        let agent_err = |message: String| {
            BuildError::Sandbox(RuntimeError::Agent {
                id: self.id.clone(),
                message,
            })
        };
        match answer {
            Ok(FromAgent::Built(report)) => Ok(report),
            Ok(FromAgent::Fatal { message }) => Err(agent_err(message)),
            Ok(other) => Err(agent_err(format!("expected a build report, got {other:?}"))),
            Err(e) => Err(agent_err(format!("{e}; stderr: {}", conn.stderr_tail()))),
        }
    }
}

impl Drop for BuildDir {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.work(), nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Give the tree at `root` to the build's sandbox user (it writes
/// `__pycache__` and `.ember/python` into it), links included, following
/// none.
fn hand_over(root: &Path, uid: u32) -> std::io::Result<()> {
    use nix::fcntl::AtFlags;
    use nix::unistd::{fchownat, Gid, Uid};
    let own = |p: &Path| {
        fchownat(
            None,
            p,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(uid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(std::io::Error::from)
    };
    own(root)?;
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let path = entry.path();
        own(&path)?;
        if entry.file_type()?.is_dir() {
            hand_over(&path, uid)?;
        }
    }
    Ok(())
}

/// Whether the build's tmpfs is (all but) full: what a failed step most
/// likely ran into.
fn disk_full(work: &Path) -> bool {
    match nix::sys::statvfs::statvfs(work) {
        Ok(s) => s.blocks_available() < 16,
        Err(_) => false,
    }
}

/// Whether the runtime could not start the sandbox for want of a thread or
/// process (EAGAIN), which under a build's pids limit is that limit.
fn refused_a_task(e: &RuntimeError) -> bool {
    e.to_string().contains("Resource temporarily unavailable")
}
