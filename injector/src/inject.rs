//! Putting code into a running sandbox's mount namespace and taking it out.
//!
//! The code directory is cloned as a detached mount (`open_tree`) in the
//! host namespace, made read-only/nosuid/nodev (`mount_setattr`), and then
//! attached at `/fn` by a thread that lives in the sandbox's mount
//! namespace (one per sandbox, for its whole life: joining a namespace per
//! invocation would cost a thread start and a `setns` each time). Only that
//! directory is cloned, so no other function's code is reachable through
//! the mount, and nothing is copied. A dedicated thread is needed because
//! `setns(CLONE_NEWNS)` is refused to a thread that shares its filesystem
//! context with others (every thread of a multi-threaded daemon);
//! `unshare(CLONE_FS)` first makes it private.

use crate::mountinfo;
use crate::syscalls::{self, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

/// Where the code appears inside the sandbox.
pub const CODE_MOUNT: &str = "/fn";
/// Where the per-invocation scratch tmpfs appears.
pub const SCRATCH_MOUNT: &str = "/tmp";

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("cloning code directory {path} as a mount: {source}")]
    OpenTree { path: PathBuf, source: io::Error },
    #[error("making the clone of {path} read-only: {source}")]
    SetAttr { path: PathBuf, source: io::Error },
    #[error("starting the injection thread: {0}")]
    Thread(io::Error),
    #[error("joining the sandbox mount namespace: {0}")]
    Setns(nix::Error),
    #[error("attaching {what} at {target} in the sandbox: {source}")]
    Attach {
        what: &'static str,
        target: &'static str,
        source: io::Error,
    },
    #[error("unmounting {target} in the sandbox: {source}")]
    Detach {
        target: &'static str,
        source: nix::Error,
    },
    #[error("{target} is still mounted in sandbox (pid {pid}) after eject")]
    StillMounted { pid: u32, target: &'static str },
    #[error("reading the mounts of sandbox pid {pid}: {source}")]
    MountInfo { pid: u32, source: io::Error },
}

/// Timings of one injection, for the invocation's breakdown.
#[derive(Debug, Clone, Copy, Default)]
pub struct Injection {
    pub clone_us: u64,
    pub attach_us: u64,
}

enum Job {
    Attach {
        tree: OwnedFd,
        tmpfs_bytes: u64,
        reply: mpsc::SyncSender<Result<(), InjectError>>,
    },
    Detach {
        reply: mpsc::SyncSender<Result<(), InjectError>>,
    },
    /// Replace `/tmp` only (`None`: unmount it and mount nothing).
    Scratch {
        tmpfs_bytes: Option<u64>,
        reply: mpsc::SyncSender<Result<(), InjectError>>,
    },
}

/// The injector of one sandbox: a thread parked in its mount namespace.
/// Dropping it ends the thread (and its hold on the namespace).
pub struct Injector {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pid: u32,
}

impl Injector {
    /// Start the thread in the mount namespace `mntns` of the process
    /// `pid` (used to verify ejection through its mountinfo).
    pub fn new(mntns: OwnedFd, pid: u32) -> Result<Injector, InjectError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name(format!("ember-ns-{pid}"))
            .spawn(move || {
                let joined = unshare(CloneFlags::CLONE_FS)
                    .and_then(|_| setns(&mntns, CloneFlags::CLONE_NEWNS))
                    .map_err(InjectError::Setns);
                drop(mntns);
                let ok = joined.is_ok();
                let _ = ready_tx.send(joined);
                if !ok {
                    return;
                }
                // Whether /tmp is the tmpfs this thread mounted (it can
                // then be emptied in place instead of replaced).
                let mut scratch_mounted = false;
                for job in rx {
                    match job {
                        Job::Attach {
                            tree,
                            tmpfs_bytes,
                            reply,
                        } => {
                            let res = attach(tree, tmpfs_bytes);
                            scratch_mounted = res.is_ok();
                            let _ = reply.send(res);
                        }
                        Job::Detach { reply } => {
                            scratch_mounted = false;
                            let _ = reply.send(detach());
                        }
                        Job::Scratch { tmpfs_bytes, reply } => {
                            let res = scratch(tmpfs_bytes, scratch_mounted);
                            scratch_mounted = tmpfs_bytes.is_some() && res.is_ok();
                            let _ = reply.send(res);
                        }
                    }
                }
            })
            .map_err(InjectError::Thread)?;
        ready_rx
            .recv()
            .map_err(|_| InjectError::Thread(io::Error::other("namespace thread died")))??;
        Ok(Injector {
            jobs: Some(tx),
            thread: Some(thread),
            pid,
        })
    }

    fn run(
        &self,
        job: impl FnOnce(mpsc::SyncSender<Result<(), InjectError>>) -> Job,
    ) -> Result<(), InjectError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let gone = || InjectError::Thread(io::Error::other("namespace thread is gone"));
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(job(reply))
            .map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }

    /// Mount `code_dir` read-only at `/fn` and a fresh tmpfs of
    /// `tmpfs_bytes` at `/tmp`. On error nothing stays mounted.
    pub fn inject(&self, code_dir: &Path, tmpfs_bytes: u64) -> Result<Injection, InjectError> {
        let t0 = Instant::now();
        let tree = syscalls::open_tree_clone(code_dir).map_err(|source| InjectError::OpenTree {
            path: code_dir.to_path_buf(),
            source,
        })?;
        syscalls::mount_setattr(
            tree.as_fd(),
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        )
        .map_err(|source| InjectError::SetAttr {
            path: code_dir.to_path_buf(),
            source,
        })?;
        let clone_us = t0.elapsed().as_micros() as u64;
        let t1 = Instant::now();
        self.run(|reply| Job::Attach {
            tree,
            tmpfs_bytes,
            reply,
        })?;
        Ok(Injection {
            clone_us,
            attach_us: t1.elapsed().as_micros() as u64,
        })
    }

    /// Unmount `/tmp` and `/fn`, then check in the sandbox's mountinfo that
    /// neither is mounted any more. Safe to call when nothing is mounted.
    pub fn eject(&self) -> Result<(), InjectError> {
        self.run(|reply| Job::Detach { reply })?;
        verify_clean(self.pid)
    }

    /// A sandbox that keeps its code (bound to one function in fork mode)
    /// gets an empty `/tmp` per invocation: the tmpfs mounted here is
    /// emptied in place, or, where there is none, a new one is mounted.
    pub fn fresh_scratch(&self, tmpfs_bytes: u64) -> Result<(), InjectError> {
        self.run(|reply| Job::Scratch {
            tmpfs_bytes: Some(tmpfs_bytes),
            reply,
        })
    }

    /// Unmount `/tmp` only, leaving the read-only root's empty directory
    /// (a function zygote's init must not leave files for invocations).
    pub fn drop_scratch(&self) -> Result<(), InjectError> {
        self.run(|reply| Job::Scratch {
            tmpfs_bytes: None,
            reply,
        })
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// In the sandbox's namespace: attach the code clone and a fresh tmpfs.
fn attach(tree: OwnedFd, tmpfs_bytes: u64) -> Result<(), InjectError> {
    syscalls::move_mount(tree.as_fd(), Path::new(CODE_MOUNT)).map_err(|source| {
        InjectError::Attach {
            what: "code",
            target: CODE_MOUNT,
            source,
        }
    })?;
    if let Err(e) = mount_scratch(tmpfs_bytes) {
        let _ = umount2(CODE_MOUNT, MntFlags::MNT_DETACH);
        return Err(e);
    }
    Ok(())
}

/// In the sandbox's namespace: a new empty tmpfs of `bytes` at `/tmp`.
fn mount_scratch(bytes: u64) -> Result<(), InjectError> {
    let opts = format!("size={bytes},mode=1777");
    mount(
        Some("tmpfs"),
        SCRATCH_MOUNT,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(opts.as_str()),
    )
    .map_err(|e| InjectError::Attach {
        what: "scratch tmpfs",
        target: SCRATCH_MOUNT,
        source: io::Error::from(e),
    })
}

/// In the sandbox's namespace: take `/tmp` out, then mount a fresh tmpfs
/// there if `tmpfs_bytes` is given.
fn scratch(tmpfs_bytes: Option<u64>, mounted: bool) -> Result<(), InjectError> {
    // A fresh /tmp where ours is mounted: emptied in place. Unmounting
    // costs an RCU grace period (milliseconds here), on the way back of
    // every invocation; deleting what one invocation wrote costs
    // microseconds, following no link planted there. What a straggler
    // writes afterwards the agent's clean-state check sees.
    let in_place = || crate::hostdir::remove_entries(Path::new(SCRATCH_MOUNT));
    if tmpfs_bytes.is_some() && mounted && in_place().is_ok() {
        return Ok(());
    }
    unmount_all(SCRATCH_MOUNT)?;
    match tmpfs_bytes {
        Some(bytes) => mount_scratch(bytes),
        None => Ok(()),
    }
}

/// In the sandbox's namespace: take `/tmp` and `/fn` out.
fn detach() -> Result<(), InjectError> {
    for target in [SCRATCH_MOUNT, CODE_MOUNT] {
        unmount_all(target)?;
    }
    Ok(())
}

/// Unmount everything stacked at `target`.
fn unmount_all(target: &'static str) -> Result<(), InjectError> {
    // Lazy detach: the mount leaves the namespace at once even if the
    // just-killed worker has not finished exiting (its cwd is in /fn);
    // nothing new can reach it after this. Repeat: user code could have
    // stacked mounts on the target.
    for _ in 0..8 {
        match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::Error::EINVAL) => break, // not a mount point
            Err(source) => return Err(InjectError::Detach { target, source }),
        }
    }
    Ok(())
}

/// Error if `/fn` or `/tmp` (or anything below them) is mounted in the
/// mount namespace of `pid`.
pub fn verify_clean(pid: u32) -> Result<(), InjectError> {
    let points =
        mountinfo::mount_points(pid).map_err(|source| InjectError::MountInfo { pid, source })?;
    for target in [CODE_MOUNT, SCRATCH_MOUNT] {
        if points.iter().any(|p| p.starts_with(target)) {
            return Err(InjectError::StillMounted { pid, target });
        }
    }
    Ok(())
}
