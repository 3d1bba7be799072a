//! Injection through a host directory, for sandboxes whose files are
//! served from the host by a file proxy (gVisor's gofer) rather than by
//! the host kernel's mount namespaces: the directory is bound read-only at
//! `/fn` when the sandbox starts; injecting links the code tree into it
//! (hard links from the store: no data is copied), ejecting empties it.
//! With shared file access the proxy revalidates each lookup against the
//! host, so the sandbox sees exactly what the directory holds.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum HostDirError {
    #[error("linking {from} into the sandbox's code directory at {to}: {source}")]
    Link {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    #[error("emptying the sandbox's code directory {dir}: {source}")]
    Empty { dir: PathBuf, source: io::Error },
    #[error("the sandbox's code directory {dir} is not empty after eject")]
    NotEmpty { dir: PathBuf },
}

/// One sandbox's code directory (bound read-only at `/fn`) and `/tmp`
/// directory (bound read-write at `/tmp`) on the host.
#[derive(Debug, Clone)]
pub struct HostDirSlot {
    dir: PathBuf,
    tmp: Option<PathBuf>,
}

impl HostDirSlot {
    /// `dir` must exist, be empty, and be bound at `/fn` by the bundle;
    /// `tmp`, if given, is emptied with it on eject.
    pub fn new(dir: PathBuf, tmp: Option<PathBuf>) -> HostDirSlot {
        HostDirSlot { dir, tmp }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Link the tree at `code` into the directory. On error the directory
    /// is emptied again.
    pub fn inject(&self, code: &Path) -> Result<(), HostDirError> {
        let res = link_tree(code, &self.dir);
        if res.is_err() {
            let _ = self.eject();
        }
        res
    }

    /// Empty the code directory and the `/tmp` directory, verified.
    pub fn eject(&self) -> Result<(), HostDirError> {
        empty_dir(&self.dir)?;
        if let Some(tmp) = &self.tmp {
            empty_dir(tmp)?;
        }
        Ok(())
    }

    /// Empty the `/tmp` directory only (the code stays: a sandbox bound to
    /// its function), writable by anyone (mode 1777) or, `sealed`, by no
    /// one in the sandbox (0555: a function zygote's init must not leave
    /// files there).
    pub fn reset_tmp(&self, sealed: bool) -> Result<(), HostDirError> {
        use std::os::unix::fs::PermissionsExt;
        let Some(tmp) = &self.tmp else {
            return Ok(());
        };
        empty_dir(tmp)?;
        let mode = if sealed { 0o555 } else { 0o1777 };
        fs::set_permissions(tmp, fs::Permissions::from_mode(mode)).map_err(|source| {
            HostDirError::Empty {
                dir: tmp.to_path_buf(),
                source,
            }
        })
    }
}

/// Remove everything in `dir` (whatever the modes a function set: the
/// daemon is root on the host) and check it is empty.
fn empty_dir(dir: &Path) -> Result<(), HostDirError> {
    {
        let err = |source| HostDirError::Empty {
            dir: dir.to_path_buf(),
            source,
        };
        remove_entries(dir).map_err(err)?;
        if fs::read_dir(dir).map_err(err)?.next().is_some() {
            return Err(HostDirError::NotEmpty {
                dir: dir.to_path_buf(),
            });
        }
        Ok(())
    }
}

/// Remove everything in `dir`, not `dir` itself, following no link
/// (`remove_dir_all` opens each directory with `O_NOFOLLOW`).
pub(crate) fn remove_entries(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            fs::remove_dir_all(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Recreate `src`'s tree under `dst`: directories made, regular files
/// hard-linked (copied if the store is on another filesystem), symlinks
/// recreated as they are (they resolve inside the sandbox).
fn link_tree(src: &Path, dst: &Path) -> Result<(), HostDirError> {
    let err = |from: &Path, to: &Path| {
        let (from, to) = (from.to_path_buf(), to.to_path_buf());
        move |source| HostDirError::Link { from, to, source }
    };
    for entry in fs::read_dir(src).map_err(err(src, dst))? {
        let entry = entry.map_err(err(src, dst))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let kind = entry.file_type().map_err(err(&from, &to))?;
        if kind.is_dir() {
            fs::create_dir(&to).map_err(err(&from, &to))?;
            link_tree(&from, &to)?;
        } else if kind.is_symlink() {
            let target = fs::read_link(&from).map_err(err(&from, &to))?;
            std::os::unix::fs::symlink(target, &to).map_err(err(&from, &to))?;
        } else {
            match fs::hard_link(&from, &to) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                    fs::copy(&from, &to).map_err(err(&from, &to))?;
                }
                Err(e) => return Err(err(&from, &to)(e)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn inject_links_the_tree_and_eject_empties_it() {
        let t = tempfile::tempdir().unwrap();
        let code = t.path().join("code");
        fs::create_dir_all(code.join("pkg/sub")).unwrap();
        fs::write(code.join("main.py"), "x = 1\n").unwrap();
        fs::write(code.join("pkg/sub/m.py"), "y = 2\n").unwrap();
        std::os::unix::fs::symlink("main.py", code.join("alias.py")).unwrap();
        let slot_dir = t.path().join("slot");
        fs::create_dir(&slot_dir).unwrap();
        let tmp = t.path().join("tmp");
        fs::create_dir_all(tmp.join("deep")).unwrap();
        fs::write(tmp.join("deep/f"), "x").unwrap();
        let slot = HostDirSlot::new(slot_dir.clone(), Some(tmp.clone()));

        slot.inject(&code).unwrap();
        assert_eq!(
            fs::read_to_string(slot_dir.join("pkg/sub/m.py")).unwrap(),
            "y = 2\n"
        );
        assert_eq!(
            fs::metadata(slot_dir.join("main.py")).unwrap().ino(),
            fs::metadata(code.join("main.py")).unwrap().ino(),
            "files are hard links, not copies"
        );
        assert_eq!(
            fs::read_link(slot_dir.join("alias.py")).unwrap(),
            Path::new("main.py")
        );

        slot.eject().unwrap();
        assert_eq!(fs::read_dir(&slot_dir).unwrap().count(), 0);
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0, "/tmp emptied too");
        // The store's files are untouched.
        assert_eq!(fs::read_to_string(code.join("main.py")).unwrap(), "x = 1\n");

        // A failed injection leaves the slot empty.
        fs::write(slot_dir.join("main.py"), "stale").unwrap();
        assert!(slot.inject(&code).is_err());
        assert_eq!(fs::read_dir(&slot_dir).unwrap().count(), 0);
    }
}
