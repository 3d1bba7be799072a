//! File-system calls relative to a directory descriptor that never follow
//! a symlink, for walking trees someone else may be changing meanwhile
//! (an upload being unpacked, a sandbox user's files, an operator's
//! directory).
//!
//! Every name passed here is one path component. Opening a directory uses
//! `O_NOFOLLOW | O_DIRECTORY`, opening a file `O_NOFOLLOW | O_NOCTTY |
//! O_NONBLOCK` (a FIFO swapped in after a listing opens without blocking
//! and is then refused by its type), so a link is never followed and the
//! caller checks the type of what it actually opened with [`stat`].
//!
//! ```no_run
//! use ember_injector::fsat;
//! use std::os::fd::AsFd;
//! let root = fsat::open_dir_path("/srv/fn".as_ref())?;
//! let sub = fsat::open_dir(root.as_fd(), "pkg".as_ref())?;
//! for name in fsat::names(sub.as_fd())? {
//!     println!("{:?}", name?);
//! }
//! # Ok::<(), std::io::Error>(())
//! ```

use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::symlinkat;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);
const READ_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_NOCTTY)
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_CLOEXEC);
const CREATE_FLAGS: OFlag = OFlag::O_WRONLY
    .union(OFlag::O_CREAT)
    .union(OFlag::O_EXCL)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// What a directory entry is, without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    /// Devices, FIFOs, sockets.
    Other,
}

impl Kind {
    pub fn of(st: &FileStat) -> Kind {
        match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFDIR => Kind::Dir,
            SFlag::S_IFREG => Kind::File,
            SFlag::S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        }
    }
}

fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open call and is
    // owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Open the directory at `path`; its last component is not followed.
pub fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    Ok(owned(openat(None, path, DIR_FLAGS, Mode::empty())?))
}

/// Open the directory `name` inside `parent`.
pub fn open_dir(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(owned(openat(
        Some(parent.as_raw_fd()),
        name,
        DIR_FLAGS,
        Mode::empty(),
    )?))
}

/// Open the directory `rel` below `root`, one component at a time, none
/// followed. Holds at most two descriptors at once, however deep.
pub fn open_dir_rel<S: AsRef<OsStr>>(root: BorrowedFd<'_>, rel: &[S]) -> io::Result<OwnedFd> {
    let mut cur = open_dir(root, OsStr::new("."))?;
    for part in rel {
        cur = open_dir(cur.as_fd(), part.as_ref())?;
    }
    Ok(cur)
}

/// Open the file `name` inside `parent` for reading. May be any type but
/// a symlink: check it with [`stat`].
pub fn open_read(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<File> {
    let fd = openat(Some(parent.as_raw_fd()), name, READ_FLAGS, Mode::empty())?;
    Ok(File::from(owned(fd)))
}

/// Create the new regular file `name` inside `parent` (never through or
/// over an existing entry).
pub fn create_new(parent: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<File> {
    let mode = Mode::from_bits_truncate(mode);
    let fd = openat(Some(parent.as_raw_fd()), name, CREATE_FLAGS, mode)?;
    Ok(File::from(owned(fd)))
}

/// Create the directory `name` inside `parent`.
pub fn make_dir(parent: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    Ok(mkdirat(
        Some(parent.as_raw_fd()),
        name,
        Mode::from_bits_truncate(mode),
    )?)
}

/// Create the symlink `name` inside `parent`, pointing at `target`.
pub fn make_symlink(target: &OsStr, parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    Ok(symlinkat(target, Some(parent.as_raw_fd()), name)?)
}

/// The target of the symlink `name` inside `parent` (fails if it is not
/// a symlink).
pub fn read_link(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<OsString> {
    Ok(readlinkat(Some(parent.as_raw_fd()), name)?)
}

/// Status of `name` inside `parent`, not following a symlink.
pub fn lstat_at(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<FileStat> {
    Ok(fstatat(
        Some(parent.as_raw_fd()),
        name,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )?)
}

/// Set the mode of an open descriptor.
pub fn chmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    Ok(fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(mode))?)
}

/// Status of an open descriptor.
pub fn stat(fd: BorrowedFd<'_>) -> io::Result<FileStat> {
    Ok(fstat(fd.as_raw_fd())?)
}

/// The names in the directory `dir` (without `.` and `..`), read through
/// a descriptor of its own so `dir` can be used meanwhile.
pub fn names(dir: BorrowedFd<'_>) -> io::Result<Names> {
    let own = open_dir(dir, OsStr::new("."))?;
    Ok(Names(nix::dir::Dir::from(own)?.into_iter()))
}

/// Iterator over a directory's names; see [`names`].
pub struct Names(nix::dir::OwningIter);

impl Iterator for Names {
    type Item = io::Result<OsString>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let entry = match self.0.next()? {
                Ok(e) => e,
                Err(e) => return Some(Err(e.into())),
            };
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                return Some(Ok(OsStr::from_bytes(name).to_os_string()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_follows_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("d")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("f")).unwrap();
        let root = open_dir_path(dir.path()).unwrap();
        // O_DIRECTORY | O_NOFOLLOW on a symlink: ENOTDIR on Linux.
        let refused = |e: io::Error| matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR));
        assert!(refused(
            open_dir(root.as_fd(), OsStr::new("d")).unwrap_err()
        ));
        let err = open_read(root.as_fd(), OsStr::new("f")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
        assert!(refused(open_dir_rel(root.as_fd(), &["d"]).unwrap_err()));
        assert!(open_dir_path(&dir.path().join("d")).is_err());
        let err = create_new(root.as_fd(), OsStr::new("f"), 0o644).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(
            Kind::of(&lstat_at(root.as_fd(), OsStr::new("f")).unwrap()),
            Kind::Symlink
        );
        let mut names: Vec<_> = names(root.as_fd()).unwrap().map(|n| n.unwrap()).collect();
        names.sort();
        assert_eq!(names, ["d", "f"]);
    }

    #[test]
    fn a_fifo_opens_without_blocking_and_shows_its_type() {
        let dir = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(&dir.path().join("p"), Mode::from_bits_truncate(0o644)).unwrap();
        let root = open_dir_path(dir.path()).unwrap();
        let f = open_read(root.as_fd(), OsStr::new("p")).unwrap();
        assert_eq!(Kind::of(&stat(f.as_fd()).unwrap()), Kind::Other);
    }
}
