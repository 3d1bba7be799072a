//! Unpacking function code from hostile input into an empty directory:
//! an uploaded tar.gz ([`unpack_tar_gz`]), an operator's host directory
//! or a tree a sandbox user wrote ([`copy_tree`]). The store
//! (`store.rs`) decides where that directory is and what happens to it
//! afterwards; this module owns what may be written into it.
//!
//! emberd runs as root, so everything here assumes the input was made to
//! hurt it:
//!
//! - nothing is followed: every directory and file is opened by
//!   descriptor, one component at a time, with `O_NOFOLLOW` (`fsat`);
//!   symlinks are recreated as symlinks, to resolve inside the sandbox;
//! - only regular files, directories and symlinks are written, files new
//!   (`O_CREAT | O_EXCL`), mode 0644 or 0755;
//! - every byte read and every entry counts against [`UnpackLimits`],
//!   tar headers and extension records included, and nothing is read
//!   whole into memory unless it is small and capped (`extensions.rs`);
//! - names obey `names.rs` (plain UTF-8 components, `NAME_MAX`,
//!   `PATH_MAX`) and are shown escaped in every message;
//! - symlinks where the deploy build writes are refused
//!   ([`check_build_paths`]).
//!
//! ```no_run
//! use ember_injector::unpack::{copy_tree, unpack_tar_gz, CopyRule, UnpackLimits};
//! # let upload: Vec<u8> = Vec::new();
//! unpack_tar_gz(&upload, "/var/lib/ember/code/staging/1".as_ref(), UnpackLimits::default())?;
//! copy_tree(
//!     "/srv/functions/hello".as_ref(),
//!     "/var/lib/ember/code/staging/2".as_ref(),
//!     UnpackLimits::default(),
//!     CopyRule::HostDir,
//! )?;
//! # Ok::<(), ember_injector::StoreError>(())
//! ```

mod build_paths;
mod copy;
mod extensions;
mod host_dir;
mod place;
mod tar_stream;
#[cfg(test)]
pub(crate) mod test_archives;

pub use build_paths::check_build_paths;
pub use copy::{copy_tree, CopyRule};

use crate::error::StoreError;
use flate2::read::GzDecoder;
use std::path::Path;

/// Bounds on what one function's code may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    /// Bytes read: file contents and symlink targets; for an archive also
    /// every header block, extension record and padding.
    pub max_bytes: u64,
    /// Entries: files, directories, symlinks; for an archive also every
    /// header, extension headers included.
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

/// Unpack a gzip-compressed tar archive into `dest`, an existing empty
/// directory.
pub fn unpack_tar_gz(data: &[u8], dest: &Path, limits: UnpackLimits) -> Result<(), StoreError> {
    tar_stream::unpack_tar(GzDecoder::new(data), dest, limits)?;
    check_build_paths(dest)
}

/// Unpack an uncompressed tar stream (`git archive`'s output, say) into
/// `dest`, an existing empty directory, with the same bounds and rules
/// as an upload.
pub fn unpack_tar(
    reader: impl std::io::Read,
    dest: &Path,
    limits: UnpackLimits,
) -> Result<(), StoreError> {
    tar_stream::unpack_tar(reader, dest, limits)?;
    check_build_paths(dest)
}

/// What has been spent of an [`UnpackLimits`].
pub(crate) struct Budget {
    limits: UnpackLimits,
    bytes: u64,
    entries: u64,
}

impl Budget {
    pub(crate) fn new(limits: UnpackLimits) -> Budget {
        Budget {
            limits,
            bytes: 0,
            entries: 0,
        }
    }

    /// Count one more entry.
    pub(crate) fn entry(&mut self) -> Result<(), StoreError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(StoreError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        Ok(())
    }

    /// Bytes left.
    pub(crate) fn room(&self) -> u64 {
        self.limits.max_bytes.saturating_sub(self.bytes)
    }

    /// Count `n` more bytes (sizes come from hostile headers: saturating).
    pub(crate) fn spend(&mut self, n: u64) -> Result<(), StoreError> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > self.limits.max_bytes {
            return Err(StoreError::TooLarge {
                limit: self.limits.max_bytes,
            });
        }
        Ok(())
    }
}
