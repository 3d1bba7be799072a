//! Content digest of a code tree: SHA-256 over a canonical, sorted walk of
//! names, kinds, executable bits, symlink targets and file contents, so the
//! same tree gives the same digest however it arrived (tar or directory).

use sha2::{Digest as _, Sha256};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Hex SHA-256 of the tree at `root`. Fails on anything that is not a
/// regular file, a directory or a symlink.
pub fn digest_tree(root: &Path) -> io::Result<String> {
    let mut h = Sha256::new();
    walk(root, Path::new(""), &mut h)?;
    Ok(hex::encode(h.finalize()))
}

fn walk(root: &Path, rel: &Path, h: &mut Sha256) -> io::Result<()> {
    let mut names: Vec<_> = fs::read_dir(root.join(rel))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        let rel = rel.join(&name);
        let full = root.join(&rel);
        let meta = fs::symlink_metadata(&full)?;
        let ft = meta.file_type();
        let path = rel.as_os_str().as_bytes();
        if ft.is_dir() {
            h.update(b"d\0");
            h.update(path);
            h.update(b"\0");
            walk(root, &rel, h)?;
        } else if ft.is_symlink() {
            h.update(b"l\0");
            h.update(path);
            h.update(b"\0");
            h.update(fs::read_link(&full)?.as_os_str().as_bytes());
            h.update(b"\0");
        } else if ft.is_file() {
            let exec = meta.permissions().mode() & 0o111 != 0;
            h.update(if exec { b"x\0" } else { b"f\0" });
            h.update(path);
            h.update(b"\0");
            h.update(meta.len().to_be_bytes());
            let mut f = fs::File::open(&full)?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a file, directory or symlink", full.display()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
