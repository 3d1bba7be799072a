//! The rule for copying an operator's host directory (a path deploy).
//! emberd copies as root, and the function would publish what it copied,
//! so it copies only what any local user could read anyway: every
//! directory on the way to the source searchable by others, every
//! directory in it readable and searchable by others, every file readable
//! by others. Kernel file systems (`/proc`, `/sys`, ...) are refused
//! outright: their world-readable files describe whoever reads them, here
//! emberd (its memory map, its mounts), and hold no code.

use crate::error::{io_err, StoreError};
use crate::fsat;
use crate::names::shown_path;
use nix::sys::stat::FileStat;
use nix::sys::statfs::{self, FsType};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

const OTHERS_READ: u32 = 0o004;
const OTHERS_SEARCH: u32 = 0o001;

/// Open the source directory, checking every directory above it is
/// searchable by others. The check runs on the real path (symlinks in
/// `src` resolved), each directory opened without following links, so
/// it covers the directories a local user would really pass through.
pub(super) fn open_root(src: &Path) -> Result<OwnedFd, StoreError> {
    let not_a_dir = || StoreError::NotADirectory(src.to_path_buf());
    let real = std::fs::canonicalize(src).map_err(|_| not_a_dir())?;
    let mut path = PathBuf::from("/");
    let mut cur = fsat::open_dir_path(&path).map_err(io_err(&path))?;
    for part in real.components() {
        let Component::Normal(name) = part else {
            continue;
        };
        let st = fsat::stat(cur.as_fd()).map_err(io_err(&path))?;
        require(&st, OTHERS_SEARCH, "searchable", &path)?;
        path.push(name);
        cur = fsat::open_dir(cur.as_fd(), name).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP) => not_a_dir(),
            _ => io_err(&path)(e),
        })?;
    }
    Ok(cur)
}

/// A directory about to be copied (the source itself included).
pub(super) fn check_dir(dir: BorrowedFd<'_>, path: &Path) -> Result<(), StoreError> {
    check_fs(dir, path)?;
    let st = fsat::stat(dir).map_err(io_err(path))?;
    require(
        &st,
        OTHERS_READ | OTHERS_SEARCH,
        "readable and searchable",
        path,
    )
}

/// A regular file about to be copied, `st` its status.
pub(super) fn check_file(
    file: BorrowedFd<'_>,
    st: &FileStat,
    path: &Path,
) -> Result<(), StoreError> {
    check_fs(file, path)?;
    require(st, OTHERS_READ, "readable", path)
}

fn require(st: &FileStat, bits: u32, need: &'static str, path: &Path) -> Result<(), StoreError> {
    if st.st_mode & bits == bits {
        return Ok(());
    }
    Err(StoreError::NotReadable {
        path: shown_path(path),
        mode: st.st_mode & 0o7777,
        need,
    })
}

fn check_fs(fd: BorrowedFd<'_>, path: &Path) -> Result<(), StoreError> {
    let fs = statfs::fstatfs(fd)
        .map_err(|e| io_err(path)(io::Error::from(e)))?
        .filesystem_type();
    match kernel_fs(fs) {
        Some(name) => Err(StoreError::KernelFileSystem {
            path: shown_path(path),
            fs: name,
        }),
        None => Ok(()),
    }
}

/// The name of a kernel file system whose files are generated for their
/// reader rather than stored.
fn kernel_fs(fs: FsType) -> Option<&'static str> {
    const KERNEL: &[(FsType, &str)] = &[
        (statfs::PROC_SUPER_MAGIC, "procfs"),
        (statfs::SYSFS_MAGIC, "sysfs"),
        (statfs::DEBUGFS_MAGIC, "debugfs"),
        (statfs::TRACEFS_MAGIC, "tracefs"),
        (statfs::SECURITYFS_MAGIC, "securityfs"),
        (statfs::CGROUP_SUPER_MAGIC, "cgroupfs"),
        (statfs::CGROUP2_SUPER_MAGIC, "cgroup2fs"),
        (statfs::BPF_FS_MAGIC, "bpffs"),
        (statfs::SELINUX_MAGIC, "selinuxfs"),
        (statfs::SMACK_MAGIC, "smackfs"),
        (statfs::DEVPTS_SUPER_MAGIC, "devpts"),
    ];
    KERNEL.iter().find(|(t, _)| *t == fs).map(|(_, n)| *n)
}
