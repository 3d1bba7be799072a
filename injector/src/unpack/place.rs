//! Writing entries below the destination directory, by descriptor:
//! parents created as needed but never passed through a symlink, nothing
//! written through or over an existing entry.

use super::Budget;
use crate::error::{io_err, StoreError};
use crate::fsat;
use crate::names::{shown, RelPath, MAX_PATH_BYTES};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The directory being filled.
pub(super) struct Dest {
    root: OwnedFd,
    path: PathBuf,
}

pub(super) fn bad(rel: &RelPath, reason: impl Into<String>) -> StoreError {
    StoreError::BadEntry {
        entry: rel.shown(),
        reason: reason.into(),
    }
}

impl Dest {
    /// Open `path`, which must be an empty directory (a leftover entry
    /// could be a link planted to redirect a write).
    pub(super) fn open_empty(path: &Path) -> Result<Dest, StoreError> {
        let root = fsat::open_dir_path(path).map_err(io_err(path))?;
        if let Some(name) = fsat::names(root.as_fd()).map_err(io_err(path))?.next() {
            let name = name.map_err(io_err(path))?;
            let source = io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "destination is not empty (has {})",
                    shown(name.as_encoded_bytes())
                ),
            );
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
        Ok(Dest {
            root,
            path: path.to_path_buf(),
        })
    }

    /// Where `rel` is, for messages.
    pub(super) fn path_of(&self, rel: &RelPath) -> PathBuf {
        self.path.join(rel.to_string())
    }

    /// The existing directory `rel`.
    pub(super) fn dir(&self, rel: &RelPath) -> Result<OwnedFd, StoreError> {
        fsat::open_dir_rel(self.root.as_fd(), rel.parts()).map_err(io_err(&self.path_of(rel)))
    }

    /// The parent directory of `rel`, missing directories on the way
    /// created (each counts as an entry). A parent that exists but is not
    /// a directory (say, a symlink an earlier entry planted) refuses the
    /// entry.
    pub(super) fn parent(&self, rel: &RelPath, budget: &mut Budget) -> Result<OwnedFd, StoreError> {
        let parents = rel.parent_parts();
        let mut cur =
            fsat::open_dir_rel::<&str>(self.root.as_fd(), &[]).map_err(io_err(&self.path))?;
        for (i, part) in parents.iter().enumerate() {
            let name = OsStr::new(part);
            cur = match fsat::open_dir(cur.as_fd(), name) {
                Ok(fd) => fd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    budget.entry()?;
                    let at = self.path.join(parents[..=i].join("/"));
                    fsat::make_dir(cur.as_fd(), name, 0o755).map_err(io_err(&at))?;
                    fsat::open_dir(cur.as_fd(), name).map_err(io_err(&at))?
                }
                Err(e) if is_not_dir(&e) => {
                    return Err(bad(rel, "has a parent that is not a directory"))
                }
                Err(e) => return Err(io_err(&self.path.join(parents[..=i].join("/")))(e)),
            };
        }
        Ok(cur)
    }
}

/// The error of opening a symlink or a file as a directory.
pub(super) fn is_not_dir(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR))
}

/// The last component of `rel`.
pub(super) fn name_of(rel: &RelPath) -> &OsStr {
    OsStr::new(rel.name())
}

/// Create the directory `rel` in `parent`; one that is already there (an
/// archive may list a directory after its contents) is fine.
pub(super) fn make_dir(
    dest: &Dest,
    parent: BorrowedFd<'_>,
    rel: &RelPath,
) -> Result<(), StoreError> {
    match fsat::make_dir(parent, name_of(rel), 0o755) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            match fsat::lstat_at(parent, name_of(rel)) {
                Ok(st) if fsat::Kind::of(&st) == fsat::Kind::Dir => Ok(()),
                _ => Err(bad(rel, "is a directory that collides with another entry")),
            }
        }
        Err(e) => Err(io_err(&dest.path_of(rel))(e)),
    }
}

/// Create the new file `rel` in `parent`, mode 0755 if `exec`, else 0644.
pub(super) fn create_file(
    dest: &Dest,
    parent: BorrowedFd<'_>,
    rel: &RelPath,
    exec: bool,
) -> Result<File, StoreError> {
    let mode = if exec { 0o755 } else { 0o644 };
    fsat::create_new(parent, name_of(rel), mode).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => bad(rel, "is a duplicate entry"),
        _ => io_err(&dest.path_of(rel))(e),
    })
}

/// Create the symlink `rel` in `parent`. Its target is never resolved
/// here: it resolves inside the sandbox's own root.
pub(super) fn make_symlink(
    dest: &Dest,
    parent: BorrowedFd<'_>,
    rel: &RelPath,
    target: &[u8],
) -> Result<(), StoreError> {
    if target.is_empty() {
        return Err(bad(rel, "is a symlink without a target"));
    }
    if target.len() > MAX_PATH_BYTES {
        return Err(bad(
            rel,
            "is a symlink whose target is longer than 4096 bytes",
        ));
    }
    if target.contains(&0) {
        return Err(bad(rel, "is a symlink whose target contains a NUL byte"));
    }
    fsat::make_symlink(OsStr::from_bytes(target), parent, name_of(rel)).map_err(|e| {
        match e.kind() {
            io::ErrorKind::AlreadyExists => bad(rel, "is a duplicate entry"),
            _ => io_err(&dest.path_of(rel))(e),
        }
    })
}

/// Copy exactly `size` bytes (already counted against the budget) from
/// an archive entry; fewer means the archive is cut short.
pub(super) fn copy_exact(
    dest: &Dest,
    rel: &RelPath,
    src: &mut impl Read,
    mut out: File,
    size: u64,
) -> Result<(), StoreError> {
    let n = io::copy(&mut src.take(size), &mut out).map_err(StoreError::BadArchive)?;
    if n != size {
        return Err(StoreError::BadArchive(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the archive ends inside {}", rel.shown()),
        )));
    }
    out.flush().map_err(io_err(&dest.path_of(rel)))
}

/// Copy a file while counting its bytes against the budget; reads at most
/// one byte past what is left, to tell "exactly at the limit" from "over".
pub(super) fn copy_counted(
    dest: &Dest,
    rel: &RelPath,
    src: impl Read,
    mut out: File,
    budget: &mut Budget,
    src_path: &Path,
) -> Result<(), StoreError> {
    let mut limited = src.take(budget.room().saturating_add(1));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match limited.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(src_path)(e)),
        };
        budget.spend(n as u64)?;
        out.write_all(&buf[..n])
            .map_err(io_err(&dest.path_of(rel)))?;
    }
    out.flush().map_err(io_err(&dest.path_of(rel)))
}
