//! The content-addressed code store: `<root>/objects/<sha256>/` holds one
//! read-only tree per distinct code content. Uploads are unpacked into a
//! staging directory, checked, digested and renamed into place, so a tree
//! in `objects/` is always complete.

use crate::digest::digest_tree;
use flate2::read::GzDecoder;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("code store i/o on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("archive is not a valid tar.gz: {0}")]
    BadArchive(io::Error),
    #[error("archive entry {entry:?} is not allowed: {reason}")]
    BadEntry { entry: String, reason: &'static str },
    #[error("code is larger than the limit of {limit} bytes unpacked")]
    TooLarge { limit: u64 },
    #[error("code has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("code directory {0} does not exist or is not a directory")]
    NotADirectory(PathBuf),
    #[error("unknown code digest {0}")]
    Unknown(String),
    #[error("preparing code for its runtime: {0}")]
    Prepare(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Bounds on what one function's code may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    pub max_bytes: u64,
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_bytes: 256 * 1024 * 1024,
            max_entries: 20_000,
        }
    }
}

/// A code digest: lowercase hex SHA-256 of the canonical tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Accept only what `digest_tree` produces, so a digest can be used as a
    /// path component safely.
    pub fn parse(s: &str) -> Option<Digest> {
        let ok = s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Digest(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

/// Runtime-specific work on a freshly stored tree before it is sealed.
pub type Prepare<'a> = &'a (dyn Fn(&Path) -> Result<(), String> + Sync);

/// A `Prepare` that does nothing.
pub fn no_prepare(_: &Path) -> Result<(), String> {
    Ok(())
}

pub struct CodeStore {
    root: PathBuf,
}

static STAGING_SEQ: AtomicU64 = AtomicU64::new(0);

impl CodeStore {
    /// Open (creating if needed) the store at `root`, and drop staging
    /// leftovers of an interrupted upload.
    pub fn open(root: &Path) -> Result<CodeStore, StoreError> {
        let store = CodeStore {
            root: root.to_path_buf(),
        };
        let staging = store.staging_root();
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(io_err(&staging))?;
        }
        for dir in [store.objects_root(), staging] {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        // Only the daemon reads the store; sandboxes see one tree each,
        // through a mount of that tree (whose own modes are world-readable).
        fs::set_permissions(root, fs::Permissions::from_mode(0o700)).map_err(io_err(root))?;
        Ok(store)
    }

    fn objects_root(&self) -> PathBuf {
        self.root.join("objects")
    }

    fn staging_root(&self) -> PathBuf {
        self.root.join("staging")
    }

    /// Where the tree for `d` lives (it may not exist).
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.objects_root().join(d.as_str())
    }

    pub fn contains(&self, d: &Digest) -> bool {
        self.path(d).is_dir()
    }

    /// All digests in the store.
    pub fn list(&self) -> Result<Vec<Digest>, StoreError> {
        let dir = self.objects_root();
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let e = e.map_err(io_err(&dir))?;
            if let Some(d) = e.file_name().to_str().and_then(Digest::parse) {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn remove(&self, d: &Digest) -> Result<(), StoreError> {
        let p = self.path(d);
        match fs::remove_dir_all(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    fn new_staging(&self) -> Result<Staging, StoreError> {
        let p = self.staging_root().join(format!(
            "{}-{}",
            std::process::id(),
            STAGING_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&p).map_err(io_err(&p))?;
        Ok(Staging(p))
    }

    /// Unpack a gzip-compressed tar archive into the store. `prepare` runs
    /// on a new tree before it is sealed (e.g. to precompile bytecode); the
    /// digest covers only the uploaded content.
    pub fn put_tar_gz(
        &self,
        data: &[u8],
        limits: UnpackLimits,
        prepare: Prepare<'_>,
    ) -> Result<Digest, StoreError> {
        let staging = self.new_staging()?;
        unpack_tar(GzDecoder::new(data), &staging.0, limits)?;
        self.commit(staging, prepare)
    }

    /// Copy a host directory into the store (symlinks kept as links).
    pub fn put_dir(
        &self,
        src: &Path,
        limits: UnpackLimits,
        prepare: Prepare<'_>,
    ) -> Result<Digest, StoreError> {
        if !src.is_dir() {
            return Err(StoreError::NotADirectory(src.to_path_buf()));
        }
        let staging = self.new_staging()?;
        let mut budget = Budget::new(limits);
        copy_tree(src, &staging.0, &mut budget)?;
        self.commit(staging, prepare)
    }

    fn commit(&self, staging: Staging, prepare: Prepare<'_>) -> Result<Digest, StoreError> {
        let digest = Digest(digest_tree(&staging.0).map_err(io_err(&staging.0))?);
        let dest = self.path(&digest);
        if dest.exists() {
            return Ok(digest); // same content already stored; staging dropped
        }
        prepare(&staging.0).map_err(StoreError::Prepare)?;
        seal(&staging.0)?;
        fs::rename(&staging.0, &dest).map_err(io_err(&dest))?;
        std::mem::forget(staging);
        Ok(digest)
    }
}

/// Removes a staging directory unless committed.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

struct Budget {
    limits: UnpackLimits,
    bytes: u64,
    entries: u64,
}

impl Budget {
    fn new(limits: UnpackLimits) -> Budget {
        Budget {
            limits,
            bytes: 0,
            entries: 0,
        }
    }
    fn entry(&mut self) -> Result<(), StoreError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(StoreError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        Ok(())
    }
    fn room(&self) -> u64 {
        self.limits.max_bytes - self.bytes
    }
    fn spend(&mut self, n: u64) -> Result<(), StoreError> {
        self.bytes += n;
        if self.bytes > self.limits.max_bytes {
            return Err(StoreError::TooLarge {
                limit: self.limits.max_bytes,
            });
        }
        Ok(())
    }
}

/// A relative path with only normal components, or None.
fn clean_relative(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Create the parent directories of `rel` under `root`, refusing to pass
/// through a symlink (an earlier entry could have planted one pointing out
/// of the tree).
fn make_parents(
    root: &Path,
    rel: &Path,
    entry: &str,
    budget: &mut Budget,
) -> Result<(), StoreError> {
    let mut cur = root.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(_) => {
                    return Err(StoreError::BadEntry {
                        entry: entry.to_string(),
                        reason: "a parent path is not a directory",
                    })
                }
                Err(_) => {
                    budget.entry()?;
                    fs::create_dir(&cur).map_err(io_err(&cur))?;
                }
            }
        }
    }
    Ok(())
}

fn write_file(
    dest: &Path,
    mut src: impl Read,
    exec: bool,
    budget: &mut Budget,
) -> Result<(), StoreError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(if exec { 0o755 } else { 0o644 })
        .open(dest)
        .map_err(io_err(dest))?;
    // Read one byte past the budget to tell "exactly at" from "over".
    let mut limited = (&mut src).take(budget.room() + 1);
    let n = io::copy(&mut limited, &mut f).map_err(io_err(dest))?;
    budget.spend(n)?;
    f.flush().map_err(io_err(dest))
}

fn unpack_tar(reader: impl Read, root: &Path, limits: UnpackLimits) -> Result<(), StoreError> {
    let mut budget = Budget::new(limits);
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(StoreError::BadArchive)? {
        let mut entry = entry.map_err(StoreError::BadArchive)?;
        let raw = entry.path().map_err(StoreError::BadArchive)?.into_owned();
        let name = raw.display().to_string();
        let rel = clean_relative(&raw).ok_or_else(|| StoreError::BadEntry {
            entry: name.clone(),
            reason: "absolute paths and '..' are not allowed",
        })?;
        if rel.as_os_str().is_empty() {
            continue; // "./" itself
        }
        budget.entry()?;
        make_parents(root, &rel, &name, &mut budget)?;
        let dest = root.join(&rel);
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            match fs::symlink_metadata(&dest) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(StoreError::BadEntry {
                        entry: name,
                        reason: "directory collides with another entry",
                    })
                }
                Err(_) => fs::create_dir(&dest).map_err(io_err(&dest))?,
            }
        } else if kind.is_file() {
            let exec = entry
                .header()
                .mode()
                .map(|m| m & 0o111 != 0)
                .unwrap_or(false);
            if fs::symlink_metadata(&dest).is_ok() {
                return Err(StoreError::BadEntry {
                    entry: name,
                    reason: "duplicate entry",
                });
            }
            write_file(&dest, &mut entry, exec, &mut budget)?;
        } else if kind.is_symlink() {
            let target = entry
                .link_name()
                .map_err(StoreError::BadArchive)?
                .ok_or_else(|| StoreError::BadEntry {
                    entry: name.clone(),
                    reason: "symlink without a target",
                })?;
            // Links resolve inside the sandbox's own root, never on the
            // host: the store never follows them (O_NOFOLLOW, parent check).
            std::os::unix::fs::symlink(&target, &dest).map_err(io_err(&dest))?;
        } else {
            return Err(StoreError::BadEntry {
                entry: name,
                reason: "only regular files, directories and symlinks are allowed",
            });
        }
    }
    Ok(())
}

fn copy_tree(src: &Path, dest: &Path, budget: &mut Budget) -> Result<(), StoreError> {
    for e in fs::read_dir(src).map_err(io_err(src))? {
        let e = e.map_err(io_err(src))?;
        budget.entry()?;
        let from = e.path();
        let to = dest.join(e.file_name());
        let meta = fs::symlink_metadata(&from).map_err(io_err(&from))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            fs::create_dir(&to).map_err(io_err(&to))?;
            copy_tree(&from, &to, budget)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&from).map_err(io_err(&from))?;
            std::os::unix::fs::symlink(target, &to).map_err(io_err(&to))?;
        } else if ft.is_file() {
            let f = fs::File::open(&from).map_err(io_err(&from))?;
            write_file(&to, f, meta.permissions().mode() & 0o111 != 0, budget)?;
        } else {
            return Err(StoreError::BadEntry {
                entry: from.display().to_string(),
                reason: "only regular files, directories and symlinks are allowed",
            });
        }
    }
    Ok(())
}

/// Make a staged tree read-only and world-readable (sandboxed code runs as
/// an unprivileged user; the mount is read-only too).
fn seal(root: &Path) -> Result<(), StoreError> {
    for e in fs::read_dir(root).map_err(io_err(root))? {
        let e = e.map_err(io_err(root))?;
        let p = e.path();
        let meta = fs::symlink_metadata(&p).map_err(io_err(&p))?;
        if meta.is_dir() {
            seal(&p)?;
        } else if meta.is_file() {
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o555
            } else {
                0o444
            };
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).map_err(io_err(&p))?;
        }
    }
    fs::set_permissions(root, fs::Permissions::from_mode(0o555)).map_err(io_err(root))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;

    fn targz(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        let tar = b.into_inner().unwrap();
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        gz.finish().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, body: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append_data(&mut h, path, body).unwrap();
    }

    /// Write a raw header so paths the builder would refuse can be tested.
    fn raw(
        b: &mut tar::Builder<Vec<u8>>,
        path: &str,
        kind: tar::EntryType,
        link: Option<&str>,
        body: &[u8],
    ) {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(kind);
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        b.append(&h, body).unwrap();
    }

    #[test]
    fn same_content_same_digest_from_tar_and_dir() {
        let root = tempfile::tempdir().unwrap();
        let store = CodeStore::open(root.path()).unwrap();
        let gz = targz(|b| {
            file(b, "main.py", b"def handler(e, c):\n    return e\n");
            file(b, "pkg/util.py", b"X = 1\n");
        });
        let d1 = store
            .put_tar_gz(&gz, UnpackLimits::default(), &no_prepare)
            .unwrap();
        let src = tempfile::tempdir().unwrap();
        fs::write(
            src.path().join("main.py"),
            b"def handler(e, c):\n    return e\n",
        )
        .unwrap();
        fs::create_dir(src.path().join("pkg")).unwrap();
        fs::write(src.path().join("pkg/util.py"), b"X = 1\n").unwrap();
        let d2 = store
            .put_dir(src.path(), UnpackLimits::default(), &no_prepare)
            .unwrap();
        assert_eq!(d1, d2);
        assert_eq!(store.list().unwrap(), vec![d1.clone()]);
        let main = store.path(&d1).join("main.py");
        assert_eq!(
            fs::metadata(&main).unwrap().permissions().mode() & 0o777,
            0o444
        );
        assert!(fs::read_dir(root.path().join("staging"))
            .unwrap()
            .next()
            .is_none());
        store.remove(&d1).unwrap();
        assert!(!store.contains(&d1));
    }

    #[test]
    fn rejects_path_traversal() {
        let root = tempfile::tempdir().unwrap();
        let store = CodeStore::open(root.path()).unwrap();
        let gz = targz(|b| raw(b, "../evil.py", tar::EntryType::Regular, None, b"x"));
        let err = store
            .put_tar_gz(&gz, UnpackLimits::default(), &no_prepare)
            .unwrap_err();
        assert!(matches!(err, StoreError::BadEntry { .. }), "{err}");
        assert!(!root.path().join("evil.py").exists());
        let gz = targz(|b| raw(b, "/abs.py", tar::EntryType::Regular, None, b"x"));
        assert!(matches!(
            store.put_tar_gz(&gz, UnpackLimits::default(), &no_prepare),
            Err(StoreError::BadEntry { .. })
        ));
    }

    #[test]
    fn refuses_to_write_through_a_planted_symlink() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let store = CodeStore::open(root.path()).unwrap();
        let target = outside.path().to_str().unwrap().to_string();
        let gz = targz(|b| {
            raw(b, "link", tar::EntryType::Symlink, Some(&target), b"");
            raw(b, "link/owned.py", tar::EntryType::Regular, None, b"x");
        });
        let err = store
            .put_tar_gz(&gz, UnpackLimits::default(), &no_prepare)
            .unwrap_err();
        assert!(matches!(err, StoreError::BadEntry { .. }), "{err}");
        assert!(!outside.path().join("owned.py").exists());
    }

    #[test]
    fn enforces_size_and_entry_limits() {
        let root = tempfile::tempdir().unwrap();
        let store = CodeStore::open(root.path()).unwrap();
        let gz = targz(|b| file(b, "big.bin", &vec![7u8; 4096]));
        let limits = UnpackLimits {
            max_bytes: 4095,
            max_entries: 10,
        };
        assert!(matches!(
            store.put_tar_gz(&gz, limits, &no_prepare),
            Err(StoreError::TooLarge { limit: 4095 })
        ));
        let gz = targz(|b| {
            for i in 0..5 {
                file(b, &format!("f{i}.py"), b"");
            }
        });
        let limits = UnpackLimits {
            max_bytes: 1 << 20,
            max_entries: 3,
        };
        assert!(matches!(
            store.put_tar_gz(&gz, limits, &no_prepare),
            Err(StoreError::TooManyEntries { limit: 3 })
        ));
    }

    #[test]
    fn rejects_devices_and_garbage() {
        let root = tempfile::tempdir().unwrap();
        let store = CodeStore::open(root.path()).unwrap();
        let gz = targz(|b| raw(b, "dev", tar::EntryType::Char, None, b""));
        assert!(matches!(
            store.put_tar_gz(&gz, UnpackLimits::default(), &no_prepare),
            Err(StoreError::BadEntry { .. })
        ));
        assert!(matches!(
            store.put_tar_gz(b"definitely not gzip", UnpackLimits::default(), &no_prepare),
            Err(StoreError::BadArchive(_))
        ));
    }
}
