//! Content digest of a code tree: SHA-256 over a canonical, sorted walk of
//! names, kinds, executable bits, symlink targets and file contents, so the
//! same tree gives the same digest however it arrived (tar or directory).

use crate::fsat::{self, Kind};
use sha2::{Digest as _, Sha256};
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Hex SHA-256 of the tree at `root`. Fails on anything that is not a
/// regular file, a directory or a symlink.
///
/// The walk goes by descriptor (a path inside the tree may be as long as
/// `PATH_MAX` on its own) and keeps at most a few descriptors open: a
/// directory left for a subdirectory is reopened when its turn comes
/// back, so a deep tree does not use one per level.
pub fn digest_tree(root: &Path) -> io::Result<String> {
    let top = fsat::open_dir_path(root)?;
    let mut h = Sha256::new();
    let first = fsat::open_dir(top.as_fd(), OsStr::new("."))?;
    let mut stack = vec![Frame::new(first, Vec::new())?];
    while let Some(frame) = stack.last_mut() {
        let Some(name) = frame.names.pop() else {
            stack.pop();
            continue;
        };
        let dir = match frame.dir.take() {
            Some(d) => d,
            None => fsat::open_dir_rel(top.as_fd(), &frame.rel)?,
        };
        let mut rel = frame.rel.clone();
        rel.push(name);
        if let Some(sub) = hash_entry(&dir, &rel, &mut h)? {
            stack.push(sub);
        } else {
            frame.dir = Some(dir);
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// A directory being walked: its names still to hash, in reverse order.
struct Frame {
    rel: Vec<OsString>,
    names: Vec<OsString>,
    /// Open until the walk descends into a subdirectory.
    dir: Option<OwnedFd>,
}

impl Frame {
    fn new(dir: OwnedFd, rel: Vec<OsString>) -> io::Result<Frame> {
        let mut names = fsat::names(dir.as_fd())?.collect::<io::Result<Vec<_>>>()?;
        names.sort_by(|a, b| b.cmp(a));
        Ok(Frame {
            rel,
            names,
            dir: Some(dir),
        })
    }
}

/// Hash the entry `rel` (the last component inside `dir`); a directory
/// is returned as the frame to walk next.
fn hash_entry(dir: &OwnedFd, rel: &[OsString], h: &mut Sha256) -> io::Result<Option<Frame>> {
    let name = rel.last().map(|n| n.as_os_str()).unwrap_or_default();
    let path = rel
        .iter()
        .map(|n| n.as_bytes())
        .collect::<Vec<_>>()
        .join(&b'/');
    let st = fsat::lstat_at(dir.as_fd(), name)?;
    match Kind::of(&st) {
        Kind::Dir => {
            record(h, b"d", &path);
            let sub = fsat::open_dir(dir.as_fd(), name)?;
            Ok(Some(Frame::new(sub, rel.to_vec())?))
        }
        Kind::Symlink => {
            record(h, b"l", &path);
            h.update(fsat::read_link(dir.as_fd(), name)?.as_bytes());
            h.update(b"\0");
            Ok(None)
        }
        Kind::File => {
            let mut f = fsat::open_read(dir.as_fd(), name)?;
            let st = fsat::stat(f.as_fd())?;
            let exec = st.st_mode & 0o111 != 0;
            record(h, if exec { b"x" } else { b"f" }, &path);
            h.update((st.st_size as u64).to_be_bytes());
            hash_contents(&mut f, h)?;
            Ok(None)
        }
        Kind::Other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is not a file, directory or symlink",
                crate::names::shown(&path)
            ),
        )),
    }
}

fn record(h: &mut Sha256, kind: &[u8], path: &[u8]) {
    h.update(kind);
    h.update(b"\0");
    h.update(path);
    h.update(b"\0");
}

fn hash_contents(f: &mut impl Read, h: &mut Sha256) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn digest_depends_on_content_names_and_exec_bit() {
        let a = tempfile::tempdir().unwrap();
        fs::write(a.path().join("main.py"), "x = 1\n").unwrap();
        let d1 = digest_tree(a.path()).unwrap();
        assert_eq!(d1, digest_tree(a.path()).unwrap());
        fs::write(a.path().join("main.py"), "x = 2\n").unwrap();
        let d2 = digest_tree(a.path()).unwrap();
        assert_ne!(d1, d2);
        fs::set_permissions(a.path().join("main.py"), fs::Permissions::from_mode(0o755)).unwrap();
        assert_ne!(d2, digest_tree(a.path()).unwrap());
        fs::rename(a.path().join("main.py"), a.path().join("other.py")).unwrap();
        assert_ne!(d2, digest_tree(a.path()).unwrap());
    }

    /// The digest names stored trees: it must not change with the walk.
    #[test]
    fn digest_of_a_known_tree_is_stable() {
        let a = tempfile::tempdir().unwrap();
        let p = a.path();
        fs::write(p.join("main.py"), "def handler(e, c):\n    return e\n").unwrap();
        fs::write(p.join("run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(p.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir_all(p.join("pkg/sub")).unwrap();
        fs::write(p.join("pkg/__init__.py"), "").unwrap();
        fs::write(p.join("pkg/sub/z.txt"), vec![b'z'; 70_000]).unwrap();
        fs::create_dir(p.join("empty")).unwrap();
        std::os::unix::fs::symlink("../main.py", p.join("pkg/link")).unwrap();
        assert_eq!(
            digest_tree(p).unwrap(),
            "be664627733dcaf487d84eceb88c82fd8b4a1a4f44d17f188200799161bb8f9d"
        );
    }
}
