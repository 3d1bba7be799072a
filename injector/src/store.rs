//! The content-addressed code store: `<root>/objects/<sha256>/` holds one
//! read-only tree per distinct code content. Uploads are unpacked into a
//! staging directory (by `unpack.rs`, which owns what may be written),
//! checked, digested and renamed into place, so a tree in `objects/` is
//! always complete.
//!
//! A tree in use (being deployed, injected into a running invocation) is
//! held by a [`Pin`]; [`CodeStore::remove_unused`] leaves pinned trees in
//! place and says so, so whoever drops the last pin can collect them.

use crate::digest::digest_tree;
use crate::error::io_err;
pub use crate::error::{PrepareError, StoreError};
use crate::fsat::{self, Kind};
use crate::unpack::{copy_tree, unpack_tar_gz, CopyRule, UnpackLimits};
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

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
pub type Prepare<'a> = &'a (dyn Fn(&Path) -> Result<(), PrepareError> + Sync);

/// A `Prepare` that does nothing.
pub fn no_prepare(_: &Path) -> Result<(), PrepareError> {
    Ok(())
}

pub struct CodeStore {
    root: PathBuf,
    pins: Arc<Mutex<Pins>>,
}

/// Trees in use, and those whose removal waits for their last pin.
#[derive(Default)]
struct Pins {
    count: HashMap<Digest, usize>,
    doomed: HashSet<Digest>,
}

/// Keeps one tree in the store while held. Dropping it just unpins;
/// [`Pin::release`] also says whether a removal was put off for it.
#[must_use = "the tree may be removed once the pin is dropped"]
pub struct Pin {
    pins: Arc<Mutex<Pins>>,
    digest: Digest,
    released: bool,
}

impl Pin {
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Unpin. `Some(digest)`: this was the last pin of a tree someone
    /// tried to remove meanwhile; try [`CodeStore::remove_unused`] again.
    pub fn release(mut self) -> Option<Digest> {
        self.released = true;
        self.unpin()
    }

    fn unpin(&self) -> Option<Digest> {
        let mut p = lock(&self.pins);
        let n = p.count.get_mut(&self.digest)?;
        *n -= 1;
        if *n > 0 {
            return None;
        }
        p.count.remove(&self.digest);
        p.doomed.remove(&self.digest).then(|| self.digest.clone())
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        if !self.released {
            self.unpin();
        }
    }
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pin({})", self.digest)
    }
}

fn lock(pins: &Mutex<Pins>) -> MutexGuard<'_, Pins> {
    // The map stays consistent across a panic elsewhere (updates are
    // single statements).
    pins.lock().unwrap_or_else(|e| e.into_inner())
}

static STAGING_SEQ: AtomicU64 = AtomicU64::new(0);

/// How trees are made today, written next to each tree as it is stored
/// (`objects/<digest>.built`). A tree without it, or with another, was
/// built by an older emberd (whose builds ran pip and the bytecode
/// compiler as root on the host): it is never served, and a deploy of the
/// same content builds it again.
pub const BUILD_FORMAT: &str = "ember build 2: in a sandbox, as the sandbox user\n";

impl CodeStore {
    /// Open (creating if needed) the store at `root`, and drop staging
    /// leftovers of an interrupted upload.
    pub fn open(root: &Path) -> Result<CodeStore, StoreError> {
        let store = CodeStore {
            root: root.to_path_buf(),
            pins: Arc::default(),
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

    fn marker(&self, d: &Digest) -> PathBuf {
        self.objects_root().join(format!("{}.built", d.as_str()))
    }

    /// Whether the tree `d` is stored and was made the current way
    /// ([`BUILD_FORMAT`]).
    pub fn is_current(&self, d: &Digest) -> bool {
        self.contains(d) && fs::read_to_string(self.marker(d)).is_ok_and(|m| m == BUILD_FORMAT)
    }

    /// Pin the tree `d` if it is stored and current.
    pub fn pin_current(&self, d: &Digest) -> Option<Pin> {
        let mut p = lock(&self.pins);
        self.is_current(d).then(|| self.pin_locked(&mut p, d))
    }

    /// Store the built tree at `src` (written by a sandbox user: copied
    /// under [`CopyRule::Untrusted`], links never followed, `limits`
    /// applied) as the content `digest` (the digest of the upload it was
    /// built from), sealed and current. A tree already stored under that
    /// digest is kept if current (a concurrent deploy of the same content
    /// won) and replaced if built the old way.
    pub fn commit_built(
        &self,
        src: &Path,
        digest: Digest,
        limits: UnpackLimits,
    ) -> Result<Pin, StoreError> {
        let staging = self.new_staging()?;
        copy_tree(src, &staging.0, limits, CopyRule::Untrusted)?;
        seal(&staging.0)?;
        let dest = self.path(&digest);
        let mut p = lock(&self.pins);
        if self.is_current(&digest) {
            return Ok(self.pin_locked(&mut p, &digest));
        }
        if dest.exists() {
            // Built the old way: out of the way first, so the marker
            // never stands next to it.
            let old = self.staging_root().join(format!(
                "legacy-{}-{}",
                std::process::id(),
                STAGING_SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            fs::rename(&dest, &old).map_err(io_err(&dest))?;
            let _ = fs::remove_dir_all(&old);
        }
        let marker = self.marker(&digest);
        fs::write(&marker, BUILD_FORMAT).map_err(io_err(&marker))?;
        fs::rename(&staging.0, &dest).map_err(io_err(&dest))?;
        std::mem::forget(staging);
        Ok(self.pin_locked(&mut p, &digest))
    }

    /// Pin the tree `d` if it is stored.
    pub fn pin(&self, d: &Digest) -> Option<Pin> {
        let mut p = lock(&self.pins);
        self.contains(d).then(|| self.pin_locked(&mut p, d))
    }

    fn pin_locked(&self, p: &mut Pins, d: &Digest) -> Pin {
        *p.count.entry(d.clone()).or_default() += 1;
        // Stored (again) for someone: an earlier removal no longer stands.
        p.doomed.remove(d);
        Pin {
            pins: self.pins.clone(),
            digest: d.clone(),
            released: false,
        }
    }

    /// Remove the tree `d` unless it is pinned or `in_use` says it is
    /// needed (asked with the store locked, so nobody pins it meanwhile).
    /// `Ok(false)`: kept; if pinned, the last [`Pin::release`] returns
    /// `d` so the caller can try again.
    pub fn remove_unused(
        &self,
        d: &Digest,
        in_use: impl FnOnce() -> bool,
    ) -> Result<bool, StoreError> {
        let trash = {
            let mut p = lock(&self.pins);
            if p.count.contains_key(d) {
                p.doomed.insert(d.clone());
                return Ok(false);
            }
            if in_use() {
                return Ok(false);
            }
            // A rename under the lock, the slow removal after it: pins
            // (taken on the hot path) never wait for a large tree to go.
            let src = self.path(d);
            let trash = self.staging_root().join(format!(
                "removed-{}-{}",
                std::process::id(),
                STAGING_SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_file(self.marker(d));
            match fs::rename(&src, &trash) {
                Ok(()) => trash,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(io_err(&src)(e)),
            }
        };
        fs::remove_dir_all(&trash).map_err(io_err(&trash))?;
        Ok(true)
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
    ) -> Result<Pin, StoreError> {
        let staging = self.new_staging()?;
        unpack_tar_gz(data, &staging.0, limits)?;
        self.commit(staging, prepare)
    }

    /// Copy an operator's host directory into the store (symlinks kept
    /// as links), under [`CopyRule::HostDir`].
    pub fn put_dir(
        &self,
        src: &Path,
        limits: UnpackLimits,
        prepare: Prepare<'_>,
    ) -> Result<Pin, StoreError> {
        let staging = self.new_staging()?;
        copy_tree(src, &staging.0, limits, CopyRule::HostDir)?;
        self.commit(staging, prepare)
    }

    /// Digest the staged tree and move it into place, pinned. Same
    /// content already stored (or stored meanwhile by a concurrent upload):
    /// that tree is pinned and the staging dropped.
    fn commit(&self, staging: Staging, prepare: Prepare<'_>) -> Result<Pin, StoreError> {
        let digest = Digest(digest_tree(&staging.0).map_err(io_err(&staging.0))?);
        if let Some(pin) = self.pin(&digest) {
            return Ok(pin);
        }
        prepare(&staging.0).map_err(StoreError::Prepare)?;
        seal(&staging.0)?;
        let dest = self.path(&digest);
        let mut p = lock(&self.pins);
        if !dest.exists() {
            let marker = self.marker(&digest);
            fs::write(&marker, BUILD_FORMAT).map_err(io_err(&marker))?;
            fs::rename(&staging.0, &dest).map_err(io_err(&dest))?;
            std::mem::forget(staging);
        }
        Ok(self.pin_locked(&mut p, &digest))
    }
}

/// Removes a staging directory unless committed.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Make a staged tree read-only and world-readable (sandboxed code runs as
/// an unprivileged user; the mount is read-only too). By descriptor, like
/// the unpacking: a path in the tree may be as long as `PATH_MAX` itself.
fn seal(root: &Path) -> Result<(), StoreError> {
    let top = fsat::open_dir_path(root).map_err(io_err(root))?;
    let mut todo = vec![Vec::new()];
    while let Some(rel) = todo.pop() {
        let path = root.join(rel.iter().collect::<PathBuf>());
        seal_dir(top.as_fd(), &rel, &mut todo).map_err(io_err(&path))?;
    }
    Ok(())
}

/// Seal the directory `rel` and its files; its subdirectories go on
/// `todo`.
fn seal_dir(
    top: BorrowedFd<'_>,
    rel: &[OsString],
    todo: &mut Vec<Vec<OsString>>,
) -> io::Result<()> {
    let dir = fsat::open_dir_rel(top, rel)?;
    fsat::chmod(dir.as_fd(), 0o555)?;
    for name in fsat::names(dir.as_fd())? {
        let name = name?;
        match Kind::of(&fsat::lstat_at(dir.as_fd(), &name)?) {
            Kind::Dir => todo.push([rel, &[name]].concat()),
            Kind::File => {
                let f = fsat::open_read(dir.as_fd(), &name)?;
                let exec = fsat::stat(f.as_fd())?.st_mode & 0o111 != 0;
                fsat::chmod(f.as_fd(), if exec { 0o555 } else { 0o444 })?;
            }
            Kind::Symlink | Kind::Other => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unpack::test_archives::{file, targz};

    #[test]
    fn same_content_same_digest_from_tar_and_dir() {
        let root = tempfile::tempdir().unwrap();
        let store = CodeStore::open(root.path()).unwrap();
        let gz = targz(|b| {
            file(b, "main.py", b"def handler(e, c):\n    return e\n");
            file(b, "pkg/util.py", b"X = 1\n");
        });
        let p1 = store
            .put_tar_gz(&gz, UnpackLimits::default(), &no_prepare)
            .unwrap();
        let d1 = p1.digest().clone();
        let src = tempfile::tempdir().unwrap();
        // A path deploy copies only what any local user could read.
        fs::set_permissions(src.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(
            src.path().join("main.py"),
            b"def handler(e, c):\n    return e\n",
        )
        .unwrap();
        fs::create_dir(src.path().join("pkg")).unwrap();
        fs::write(src.path().join("pkg/util.py"), b"X = 1\n").unwrap();
        let p2 = store
            .put_dir(src.path(), UnpackLimits::default(), &no_prepare)
            .unwrap();
        assert_eq!(&d1, p2.digest());
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
        drop((p1, p2));
        assert!(store.remove_unused(&d1, || false).unwrap());
        assert!(!store.contains(&d1));
        assert!(fs::read_dir(root.path().join("staging"))
            .unwrap()
            .next()
            .is_none());
    }

    fn put(store: &CodeStore, body: &[u8]) -> Pin {
        store
            .put_tar_gz(
                &targz(|b| file(b, "main.py", body)),
                UnpackLimits::default(),
                &no_prepare,
            )
            .unwrap()
    }

    #[test]
    fn built_trees_are_current_and_old_ones_are_never_served_but_rebuilt() {
        let root = tempfile::tempdir().unwrap();
        let store = CodeStore::open(root.path()).unwrap();
        let built = tempfile::tempdir().unwrap();
        fs::write(built.path().join("main.py"), b"x = 1\n").unwrap();
        fs::create_dir(built.path().join("__pycache__")).unwrap();
        fs::write(built.path().join("__pycache__/main.pyc"), b"pyc").unwrap();
        let d = Digest::parse(&"ab".repeat(32)).unwrap();
        let pin = store
            .commit_built(built.path(), d.clone(), UnpackLimits::default())
            .unwrap();
        assert!(store.is_current(&d));
        assert!(store.path(&d).join("__pycache__/main.pyc").is_file());
        drop(pin);
        // A tree an older emberd built: no marker.
        fs::remove_file(store.marker(&d)).unwrap();
        assert!(store.contains(&d) && !store.is_current(&d));
        assert!(store.pin_current(&d).is_none(), "an old build is served");
        assert!(
            store.pin(&d).is_some(),
            "still there for whoever asks plainly"
        );
        // Deploying the same content again builds it the current way.
        fs::write(built.path().join("rebuilt"), b"1").unwrap();
        let pin = store
            .commit_built(built.path(), d.clone(), UnpackLimits::default())
            .unwrap();
        assert!(store.is_current(&d));
        assert!(store.path(&d).join("rebuilt").is_file());
        drop(pin);
        // Removal takes the marker with it.
        assert!(store.remove_unused(&d, || false).unwrap());
        assert!(!store.marker(&d).exists());
        assert_eq!(store.list().unwrap(), vec![]);
    }

    #[test]
    fn a_pinned_tree_outlives_its_removal_until_the_last_pin_goes() {
        let root = tempfile::tempdir().unwrap();
        let store = CodeStore::open(root.path()).unwrap();
        let deploy = put(&store, b"x = 1\n");
        let d = deploy.digest().clone();
        let invocation = store.pin(&d).expect("stored");
        // Removal while pinned is put off, whatever the caller thinks.
        assert!(!store.remove_unused(&d, || false).unwrap());
        assert!(store.path(&d).join("main.py").is_file());
        assert_eq!(deploy.release(), None, "another pin remains");
        assert!(store.contains(&d));
        assert_eq!(invocation.release(), Some(d.clone()), "last pin, doomed");
        assert!(store.remove_unused(&d, || false).unwrap());
        assert!(!store.contains(&d));
        assert!(store.pin(&d).is_none(), "nothing to pin once removed");
        // Removing again, or what never was, is no error.
        assert!(!store.remove_unused(&d, || false).unwrap());
    }

    #[test]
    fn a_tree_still_in_use_is_kept_and_dropping_a_pin_does_not_doom_it() {
        let root = tempfile::tempdir().unwrap();
        let store = CodeStore::open(root.path()).unwrap();
        let p = put(&store, b"y = 2\n");
        let d = p.digest().clone();
        assert_eq!(p.release(), None, "nobody tried to remove it");
        assert!(!store.remove_unused(&d, || true).unwrap());
        assert!(store.contains(&d));
        // A plain drop unpins too.
        let pin = store.pin(&d).unwrap();
        drop(pin);
        assert!(store.remove_unused(&d, || false).unwrap());
    }

    #[test]
    fn storing_the_same_content_again_revokes_a_put_off_removal() {
        let root = tempfile::tempdir().unwrap();
        let store = CodeStore::open(root.path()).unwrap();
        let running = put(&store, b"z = 3\n");
        let d = running.digest().clone();
        assert!(!store.remove_unused(&d, || false).unwrap());
        let redeploy = put(&store, b"z = 3\n");
        assert_eq!(redeploy.digest(), &d);
        assert_eq!(running.release(), None, "the redeploy still holds it");
        assert_eq!(redeploy.release(), None, "its removal was revoked");
        assert!(store.contains(&d));
    }

    #[test]
    fn concurrent_uploads_of_the_same_content_both_succeed() {
        let root = tempfile::tempdir().unwrap();
        let store = CodeStore::open(root.path()).unwrap();
        // Slow preparation keeps both uploads between "not stored yet" and
        // the rename into place.
        let slow = |_: &Path| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            Ok(())
        };
        let gz = targz(|b| file(b, "main.py", b"same"));
        let pins: Vec<Pin> = std::thread::scope(|s| {
            let a = s.spawn(|| store.put_tar_gz(&gz, UnpackLimits::default(), &slow));
            let b = s.spawn(|| store.put_tar_gz(&gz, UnpackLimits::default(), &slow));
            [a, b].map(|t| t.join().unwrap().unwrap()).into()
        });
        assert_eq!(pins[0].digest(), pins[1].digest());
        assert_eq!(store.list().unwrap(), vec![pins[0].digest().clone()]);
        assert!(fs::read_dir(root.path().join("staging"))
            .unwrap()
            .next()
            .is_none());
    }

    #[test]
    fn a_path_as_long_as_names_allow_is_stored() {
        // 4095 bytes inside the tree: past PATH_MAX with the store's
        // directory in front, so every step must work by descriptor.
        let root = tempfile::tempdir().unwrap();
        let store = CodeStore::open(root.path()).unwrap();
        let deep = vec!["p".repeat(255); 16].join("/");
        let gz = targz(|b| file(b, &deep, b"deep"));
        let pin = store
            .put_tar_gz(&gz, UnpackLimits::default(), &no_prepare)
            .unwrap();
        assert!(store.contains(pin.digest()));
        let d = pin.digest().clone();
        drop(pin);
        assert!(store.remove_unused(&d, || false).unwrap());
    }
}
