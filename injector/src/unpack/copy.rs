//! Copying a directory tree into an empty directory, safe against a tree
//! that changes while it is copied (a sandbox user racing the copy, an
//! entry swapped for a symlink or a FIFO between listing and opening).
//!
//! Every directory is opened by descriptor from the tree's root, one
//! component at a time with `O_NOFOLLOW`, and what was opened is checked
//! by `fstat`, never by the listing. Directories still to copy wait as
//! paths, not open descriptors: a deep tree costs a few reopenings, not
//! one descriptor per level (emberd's descriptor limit is shared).

use super::place::{self, bad, Dest};
use super::{build_paths, host_dir, Budget, UnpackLimits};
use crate::error::{io_err, StoreError};
use crate::fsat::{self, Kind};
use crate::names::RelPath;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Whose tree is copied, and so which rules apply beyond the common ones
/// (no link followed, only files, directories and symlinks, the budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyRule {
    /// An operator's host directory (a path deploy): only what any local
    /// user could read is copied (regular files readable by others,
    /// directories readable and searchable by others, every directory
    /// above the source searchable by others, no kernel file systems),
    /// and symlinks where the deploy build writes are refused.
    HostDir,
    /// A tree an unprivileged sandbox user wrote, copied back into the
    /// store: no permission rule.
    Untrusted,
}

/// Copy the tree at `src` into `dest`, an existing empty directory.
/// Symlinks are recreated as symlinks, never followed; files are written
/// new, mode 0755 if the source is executable by anyone, else 0644.
pub fn copy_tree(
    src: &Path,
    dest: &Path,
    limits: UnpackLimits,
    rule: CopyRule,
) -> Result<(), StoreError> {
    let out = Dest::open_empty(dest)?;
    let root = match rule {
        CopyRule::HostDir => host_dir::open_root(src)?,
        CopyRule::Untrusted => fsat::open_dir_path(src).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP) => {
                StoreError::NotADirectory(src.to_path_buf())
            }
            _ => io_err(src)(e),
        })?,
    };
    let mut walk = Walk {
        src,
        root,
        out,
        rule,
        budget: Budget::new(limits),
        todo: vec![RelPath::root()],
    };
    while let Some(rel) = walk.todo.pop() {
        walk.copy_dir(&rel)?;
    }
    if rule == CopyRule::HostDir {
        build_paths::check_build_paths(dest)?;
    }
    Ok(())
}

struct Walk<'a> {
    src: &'a Path,
    root: OwnedFd,
    out: Dest,
    rule: CopyRule,
    budget: Budget,
    /// Directories created in `out` whose contents are still to copy.
    todo: Vec<RelPath>,
}

impl Walk<'_> {
    fn src_path(&self, rel: &RelPath) -> PathBuf {
        self.src.join(rel.to_string())
    }

    fn copy_dir(&mut self, rel: &RelPath) -> Result<(), StoreError> {
        let path = self.src_path(rel);
        let from =
            fsat::open_dir_rel(self.root.as_fd(), rel.parts()).map_err(
                |e| match place::is_not_dir(&e) {
                    true => bad(rel, "was replaced while being copied"),
                    false => io_err(&path)(e),
                },
            )?;
        if self.rule == CopyRule::HostDir {
            host_dir::check_dir(from.as_fd(), &path)?;
        }
        let to = self.out.dir(rel)?;
        for name in fsat::names(from.as_fd()).map_err(io_err(&path))? {
            let name = name.map_err(io_err(&path))?;
            self.budget.entry()?;
            let child = rel.join(&name)?;
            self.copy_entry(from.as_fd(), to.as_fd(), &child)?;
        }
        Ok(())
    }

    /// Copy one entry of `from` into `to`. The listing's type only
    /// chooses how to open it; what is copied is what was opened.
    fn copy_entry(
        &mut self,
        from: BorrowedFd<'_>,
        to: BorrowedFd<'_>,
        rel: &RelPath,
    ) -> Result<(), StoreError> {
        let name = OsStr::new(rel.name());
        let st = fsat::lstat_at(from, name).map_err(io_err(&self.src_path(rel)))?;
        match Kind::of(&st) {
            Kind::Dir => {
                let made = fsat::make_dir(to, name, 0o755);
                made.map_err(io_err(&self.out.path_of(rel)))?;
                self.todo.push(rel.clone());
                Ok(())
            }
            Kind::Symlink => {
                // readlinkat fails on anything but a symlink: a swap
                // since the listing is an error, not a followed link.
                let target = fsat::read_link(from, name).map_err(io_err(&self.src_path(rel)))?;
                self.budget.spend(target.len() as u64)?;
                place::make_symlink(&self.out, to, rel, target.as_bytes())
            }
            Kind::File => self.copy_file(from, to, rel),
            Kind::Other => Err(bad(rel, not_copied("a device, FIFO or socket"))),
        }
    }

    fn copy_file(
        &mut self,
        from: BorrowedFd<'_>,
        to: BorrowedFd<'_>,
        rel: &RelPath,
    ) -> Result<(), StoreError> {
        let path = self.src_path(rel);
        let file =
            fsat::open_read(from, OsStr::new(rel.name())).map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => bad(rel, "was replaced by a symlink while being copied"),
                _ => io_err(&path)(e),
            })?;
        let st = fsat::stat(file.as_fd()).map_err(io_err(&path))?;
        if Kind::of(&st) != Kind::File {
            return Err(bad(rel, not_copied("no longer a regular file")));
        }
        if self.rule == CopyRule::HostDir {
            host_dir::check_file(file.as_fd(), &st, &path)?;
        }
        let exec = st.st_mode & 0o111 != 0;
        let out = place::create_file(&self.out, to, rel, exec)?;
        place::copy_counted(&self.out, rel, file, out, &mut self.budget, &path)
    }
}

fn not_copied(what: &str) -> String {
    format!("is {what}: only regular files, directories and symlinks are copied")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A source directory any local user could read.
    fn public_src() -> tempfile::TempDir {
        let src = tempfile::tempdir().unwrap();
        chmod(src.path(), 0o755);
        src
    }

    fn copy(src: &Path, rule: CopyRule) -> (tempfile::TempDir, Result<(), StoreError>) {
        copy_with(src, rule, UnpackLimits::default())
    }

    fn copy_with(
        src: &Path,
        rule: CopyRule,
        limits: UnpackLimits,
    ) -> (tempfile::TempDir, Result<(), StoreError>) {
        let dest = tempfile::tempdir().unwrap();
        let r = copy_tree(src, dest.path(), limits, rule);
        (dest, r)
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn copies_files_dirs_and_links_as_links() {
        let src = public_src();
        let s = src.path();
        fs::write(s.join("main.py"), "x").unwrap();
        fs::write(s.join("run.sh"), "#!/bin/sh\n").unwrap();
        chmod(&s.join("run.sh"), 0o744);
        fs::create_dir(s.join("pkg")).unwrap();
        fs::write(s.join("pkg/util.py"), "y").unwrap();
        symlink("/etc/passwd", s.join("passwd")).unwrap();
        for rule in [CopyRule::HostDir, CopyRule::Untrusted] {
            let (dest, r) = copy(s, rule);
            r.unwrap();
            let d = dest.path();
            assert_eq!(fs::read(d.join("pkg/util.py")).unwrap(), b"y");
            assert_eq!(mode(&d.join("main.py")), 0o644);
            assert_eq!(mode(&d.join("run.sh")), 0o755);
            assert_eq!(
                fs::read_link(d.join("passwd")).unwrap(),
                Path::new("/etc/passwd")
            );
        }
    }

    #[test]
    fn host_dir_copies_only_what_others_could_read() {
        let src = public_src();
        let s = src.path();
        fs::write(s.join("secret.env"), "TOKEN=1").unwrap();
        chmod(&s.join("secret.env"), 0o600);
        let err = copy(s, CopyRule::HostDir).1.unwrap_err().to_string();
        let want = format!(
            "{} is not readable by other users (mode 0600): ember copies only what any local user could read",
            s.join("secret.env").display()
        );
        assert!(err.starts_with(&want), "{err}");
        assert!(
            err.ends_with("make it readable or upload a tar.gz"),
            "{err}"
        );
        // A tree written by a sandbox user has no such rule.
        copy(s, CopyRule::Untrusted).1.unwrap();

        chmod(&s.join("secret.env"), 0o644);
        fs::create_dir(s.join("private")).unwrap();
        chmod(&s.join("private"), 0o711);
        let err = copy(s, CopyRule::HostDir).1.unwrap_err().to_string();
        assert!(
            err.contains("private is not readable and searchable by other users (mode 0711)"),
            "{err}"
        );
    }

    #[test]
    fn host_dir_needs_every_directory_above_searchable() {
        let top = tempfile::tempdir().unwrap();
        chmod(top.path(), 0o750);
        let src = top.path().join("fn");
        fs::create_dir(&src).unwrap();
        chmod(&src, 0o755);
        fs::write(src.join("main.py"), "x").unwrap();
        let err = copy(&src, CopyRule::HostDir).1.unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                StoreError::NotReadable {
                    need: "searchable",
                    mode: 0o750,
                    ..
                }
            ),
            "{msg}"
        );
        assert!(msg.starts_with(&top.path().display().to_string()), "{msg}");
        // Reached through a symlink from a public place: the real path
        // is what counts.
        let public = public_src();
        symlink(&src, public.path().join("via")).unwrap();
        let r = copy(&public.path().join("via"), CopyRule::HostDir).1;
        assert!(
            matches!(
                r,
                Err(StoreError::NotReadable {
                    need: "searchable",
                    ..
                })
            ),
            "{r:?}"
        );
        chmod(top.path(), 0o751);
        copy(&src, CopyRule::HostDir).1.unwrap();
    }

    #[test]
    fn kernel_file_systems_are_refused() {
        let random = Path::new("/proc/sys/kernel/random");
        if !random.is_dir() {
            eprintln!("SKIPPED: needs /proc mounted");
            return;
        }
        let r = copy(random, CopyRule::HostDir).1;
        assert!(
            matches!(r, Err(StoreError::KernelFileSystem { fs: "procfs", .. })),
            "{r:?}"
        );
    }

    #[test]
    fn devices_fifos_and_sockets_are_refused() {
        let src = public_src();
        nix::unistd::mkfifo(
            &src.path().join("pipe"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        for rule in [CopyRule::HostDir, CopyRule::Untrusted] {
            let r = copy(src.path(), rule).1;
            assert!(
                matches!(&r, Err(StoreError::BadEntry { entry, reason }) if entry == "pipe" && reason.contains("FIFO")),
                "{r:?}"
            );
        }
    }

    /// A walk over `src` into a fresh destination, to call its steps as if
    /// the tree had changed since it was listed.
    fn walk(src: &Path, dest: &Path) -> Walk<'static> {
        Walk {
            src: Box::leak(src.to_path_buf().into_boxed_path()),
            root: fsat::open_dir_path(src).unwrap(),
            out: Dest::open_empty(dest).unwrap(),
            rule: CopyRule::Untrusted,
            budget: Budget::new(UnpackLimits::default()),
            todo: Vec::new(),
        }
    }

    #[test]
    fn an_entry_swapped_after_listing_is_neither_followed_nor_blocked_on() {
        let src = public_src();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), "host secret").unwrap();
        symlink(outside.path().join("secret"), src.path().join("was-a-file")).unwrap();
        nix::unistd::mkfifo(
            &src.path().join("now-a-fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        symlink(outside.path(), src.path().join("was-a-dir")).unwrap();
        let dest = tempfile::tempdir().unwrap();
        let mut w = walk(src.path(), dest.path());
        let from = fsat::open_dir_path(src.path()).unwrap();
        let to = fsat::open_dir_path(dest.path()).unwrap();
        let rel = |n: &str| RelPath::root().join(OsStr::new(n)).unwrap();
        // Listed as a file, now a symlink: not followed.
        let r = w.copy_file(from.as_fd(), to.as_fd(), &rel("was-a-file"));
        assert!(r.unwrap_err().to_string().contains("replaced by a symlink"));
        // Listed as a file, now a FIFO: opened without blocking, refused.
        let r = w.copy_file(from.as_fd(), to.as_fd(), &rel("now-a-fifo"));
        assert!(r
            .unwrap_err()
            .to_string()
            .contains("no longer a regular file"));
        // Listed as a directory, now a symlink: not entered.
        fs::create_dir(dest.path().join("was-a-dir")).unwrap();
        let r = w.copy_dir(&rel("was-a-dir"));
        assert!(r.unwrap_err().to_string().contains("replaced"));
        assert!(!dest.path().join("was-a-file").exists());
        assert!(fs::read_dir(dest.path().join("was-a-dir"))
            .unwrap()
            .next()
            .is_none());
    }

    #[test]
    fn the_budget_applies_to_copies() {
        let src = public_src();
        fs::write(src.path().join("a"), vec![1u8; 1000]).unwrap();
        symlink("x".repeat(100), src.path().join("l")).unwrap();
        let limits = |max_bytes, max_entries| UnpackLimits {
            max_bytes,
            max_entries,
        };
        copy_with(src.path(), CopyRule::Untrusted, limits(1100, 2))
            .1
            .unwrap();
        let r = copy_with(src.path(), CopyRule::Untrusted, limits(1099, 2)).1;
        assert!(
            matches!(r, Err(StoreError::TooLarge { limit: 1099 })),
            "{r:?}"
        );
        let r = copy_with(src.path(), CopyRule::Untrusted, limits(1100, 1)).1;
        assert!(
            matches!(r, Err(StoreError::TooManyEntries { limit: 1 })),
            "{r:?}"
        );
    }

    #[test]
    fn names_are_checked_like_archive_names() {
        let src = public_src();
        let bad = OsStr::from_bytes(b"bad\xff\x1b.py");
        fs::write(src.path().join(bad), "").unwrap();
        let r = copy(src.path(), CopyRule::Untrusted).1;
        assert!(
            matches!(&r, Err(StoreError::BadEntry { entry, reason }) if entry == "bad\\xff\\x1b.py" && reason.contains("UTF-8")),
            "{r:?}"
        );
    }

    #[test]
    fn only_host_dirs_are_checked_for_build_paths() {
        let src = public_src();
        symlink("/etc", src.path().join("__pycache__")).unwrap();
        let r = copy(src.path(), CopyRule::HostDir).1;
        assert!(
            matches!(&r, Err(StoreError::BadEntry { reason, .. }) if reason.contains("deploy build writes")),
            "{r:?}"
        );
        copy(src.path(), CopyRule::Untrusted).1.unwrap();
    }

    #[test]
    fn a_missing_source_is_not_a_directory() {
        for rule in [CopyRule::HostDir, CopyRule::Untrusted] {
            let r = copy(Path::new("/nonexistent/ember"), rule).1;
            assert!(matches!(r, Err(StoreError::NotADirectory(_))), "{r:?}");
        }
    }
}
