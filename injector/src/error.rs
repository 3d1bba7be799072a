//! The code store's error: everything that can go wrong putting code into
//! the store (unpacking, copying, checking names, sealing) as one type, so
//! the store, the unpacking and the name rules share it without importing
//! each other.

use crate::names::{shown_path, NameError};
use std::io;
use std::path::{Path, PathBuf};

/// What a runtime's `Prepare` step (see `store.rs`) may fail with.
pub type PrepareError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("code store i/o on {}: {source}", shown_path(.path))]
    Io { path: PathBuf, source: io::Error },
    #[error("archive is not a valid tar.gz: {0}")]
    BadArchive(io::Error),
    /// `entry` is already escaped and truncated (`names::shown`); a bad
    /// name ([`NameError`]) becomes one of these.
    #[error("code entry {entry}: {reason}")]
    BadEntry { entry: String, reason: String },
    #[error("the archive's {header} header declares {size} bytes, more than the {limit} allowed: refused before reading it")]
    ExtensionTooLarge {
        header: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("the archive's {header} header is malformed: {reason}")]
    BadExtension {
        header: &'static str,
        reason: String,
    },
    #[error("code is larger than the limit of {limit} bytes unpacked")]
    TooLarge { limit: u64 },
    #[error("code has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("code directory {} does not exist or is not a directory", shown_path(.0))]
    NotADirectory(PathBuf),
    /// A path deploy of something not every local user could read.
    #[error("{path} is not {need} by other users (mode {mode:04o}): ember copies only what any local user could read (the function would publish it); make it readable or upload a tar.gz")]
    NotReadable {
        path: String,
        mode: u32,
        need: &'static str,
    },
    #[error("{path} is on {fs}, whose files describe whoever reads them (here emberd) rather than hold code: refused")]
    KernelFileSystem { path: String, fs: &'static str },
    #[error("unknown code digest {0}")]
    Unknown(String),
    #[error("preparing code for its runtime: {0}")]
    Prepare(#[source] PrepareError),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl From<NameError> for StoreError {
    fn from(e: NameError) -> Self {
        StoreError::BadEntry {
            entry: e.entry,
            reason: e.reason.to_string(),
        }
    }
}
