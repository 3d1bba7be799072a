//! The host directory of a container made an ember sandbox: a short path
//! (`/run/ember/a/<24 hex>`, from the runtime's `--root` and the container
//! id) whatever the bundle's path, so the agent's socket always fits in a
//! Unix socket address (107 bytes), even with CRI's 64-hex ids.
//!
//! ```text
//! /run/ember/a/<sha256(root \0 id), 24 hex>/      0700, never in the container
//!     run/                                        0700, bound at /.ember/run
//!         agent.sock                              0600, the agent listens here
//!     cgroup                                      its cgroupfs path (for thawing
//!                                                 without emberd), written on start
//! ```
//!
//! `create` makes it, `start` registers the socket with emberd, `exec` and
//! `kill` find the container an ember sandbox by its existence (no
//! `state` call) and `delete` removes it.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Where the directories go unless `EMBER_SANDBOX_DIRS` says otherwise.
pub const DEFAULT_BASE: &str = "/run/ember/a";

/// The longest path a Unix socket address holds (`sun_path` less its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Hex digits of the digest naming a directory: 96 bits, no collision in
/// any one host's lifetime.
const NAME_HEX: usize = 24;

/// Why a sandbox directory could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SandboxDirError {
    #[error("agent socket path {path} is {len} bytes, over the {MAX_SOCKET_PATH} a Unix socket address holds: set EMBER_SANDBOX_DIRS to a shorter directory")]
    TooLong { path: PathBuf, len: usize },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The host directory of one ember sandbox container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxDir {
    pub dir: PathBuf,
}

/// `EMBER_SANDBOX_DIRS`, else [`DEFAULT_BASE`].
pub fn base() -> PathBuf {
    std::env::var_os("EMBER_SANDBOX_DIRS")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BASE))
}

impl SandboxDir {
    /// The directory of container `id` under runtime root `root` (the
    /// caller's `--root`, as the shim passes it on every command).
    pub fn of(base: &Path, root: Option<&Path>, id: &str) -> SandboxDir {
        let mut h = Sha256::new();
        h.update(
            root.map(|r| r.as_os_str().as_encoded_bytes())
                .unwrap_or(b""),
        );
        h.update([0u8]);
        h.update(id.as_bytes());
        let name = hex::encode(h.finalize());
        SandboxDir {
            dir: base.join(&name[..NAME_HEX]),
        }
    }

    /// Bound at `/.ember/run` in the container: the socket's directory.
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// The agent's socket, as the host sees it.
    pub fn socket(&self) -> PathBuf {
        self.run_dir().join("agent.sock")
    }

    /// The container's cgroupfs path, kept for thawing it without emberd.
    pub fn cgroup_file(&self) -> PathBuf {
        self.dir.join("cgroup")
    }

    pub fn exists(&self) -> bool {
        self.dir.is_dir()
    }

    /// Make it (and its base), private to root; refuses a base so long
    /// the socket would not fit in a socket address.
    pub fn create(&self) -> Result<(), SandboxDirError> {
        let socket = self.socket();
        let len = socket.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(SandboxDirError::TooLong { path: socket, len });
        }
        for d in [&self.dir, &self.run_dir()] {
            make_private_dir(d)?;
        }
        Ok(())
    }

    /// Keep the container's cgroupfs path next to (not in) its socket's
    /// directory, out of the container's reach.
    pub fn save_cgroup(&self, cgroups_path: &str) -> Result<(), SandboxDirError> {
        let path = self.cgroup_file();
        std::fs::write(&path, cgroups_path).map_err(|source| SandboxDirError::Io { path, source })
    }

    /// The cgroupfs path [`save_cgroup`](Self::save_cgroup) kept.
    pub fn cgroup(&self) -> Option<String> {
        std::fs::read_to_string(self.cgroup_file())
            .ok()
            .filter(|p| p.starts_with('/'))
    }

    /// Remove it and everything in it (the container is gone).
    pub fn remove(&self) -> Result<(), SandboxDirError> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(SandboxDirError::Io {
                path: self.dir.clone(),
                source: e,
            }),
            _ => Ok(()),
        }
    }
}

/// `dir` and its missing parents, `dir` itself mode 0700.
fn make_private_dir(dir: &Path) -> Result<(), SandboxDirError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io = |source| SandboxDirError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_socket_of_a_cri_container_fits_in_a_socket_address() {
        let id = "a".repeat(64);
        let root = Path::new("/run/containerd/runc/k8s.io");
        let d = SandboxDir::of(Path::new(DEFAULT_BASE), Some(root), &id);
        let socket = d.socket();
        assert!(socket.as_os_str().len() <= 60, "{socket:?}");
        assert_eq!(d, SandboxDir::of(Path::new(DEFAULT_BASE), Some(root), &id));
        // Another root or id, another directory.
        assert_ne!(d, SandboxDir::of(Path::new(DEFAULT_BASE), None, &id));
        assert_ne!(
            d,
            SandboxDir::of(Path::new(DEFAULT_BASE), Some(root), &"b".repeat(64))
        );
    }

    #[test]
    fn it_is_private_and_removed_whole() {
        let base = tempfile::tempdir().unwrap();
        let d = SandboxDir::of(base.path(), None, "c1");
        assert!(!d.exists());
        d.create().unwrap();
        for p in [&d.dir, &d.run_dir()] {
            let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{p:?}");
        }
        d.save_cgroup("/k8s.io/c1").unwrap();
        assert_eq!(d.cgroup().as_deref(), Some("/k8s.io/c1"));
        std::fs::write(d.socket(), b"").unwrap();
        d.remove().unwrap();
        assert!(!d.exists());
        d.remove().unwrap();
        let long = base.path().join("x".repeat(100));
        let e = SandboxDir::of(&long, None, "c1").create().unwrap_err();
        assert!(e.to_string().contains("EMBER_SANDBOX_DIRS"), "{e}");
    }
}
