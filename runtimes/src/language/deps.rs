//! A function's dependencies, prepared at deploy time inside its own code
//! tree, so they become part of its content-addressed code and no other
//! function ever sees them.
//!
//! - Python: a `requirements.txt` is installed by the deploy build
//!   (`language/build.rs`, in a sandbox, as the sandbox user, offline from the
//!   operator's wheels) into [`PYTHON_DEPS_DIR`], which the worker puts on
//!   `sys.path`. Before any build sees it, [`check_requirements`] makes
//!   sure the file names only packages and versions: no option, URL, path
//!   or file outside the tree reaches pip.
//! - Node.js: dependencies are shipped installed, in `node_modules` next
//!   to `package.json` (ember runs no package manager for JavaScript); the
//!   deploy build refuses a `package.json` that declares dependencies
//!   without `node_modules`, since every invocation would fail to import
//!   them.

mod pep508;
mod req_lines;
mod requirements;

pub use requirements::check_requirements;

use std::path::PathBuf;

/// A piece of a requirements file quoted in a reason: escaped, cut to
/// 60 characters (the line itself is quoted in full, up to 200).
fn snippet(text: &str) -> String {
    ember_injector::names::escape_truncated(text.as_bytes(), 60)
}

/// Where vendored Python packages live, relative to the code root (the
/// zygote adds `/fn/.ember/python` to `sys.path`).
pub const PYTHON_DEPS_DIR: &str = ".ember/python";

#[derive(Debug, thiserror::Error)]
pub enum DepsError {
    /// A line of a requirements file pip must not act on. `file` is
    /// relative to the code tree, `text` escaped and cut to 200
    /// characters.
    #[error("{file}, line {line}: {reason}: {text}")]
    Requirement {
        file: String,
        line: usize,
        text: String,
        reason: String,
    },
    /// A requirements file that cannot be checked as a whole (a symlink,
    /// too large, not UTF-8).
    #[error("{file} {reason}")]
    RequirementsFile { file: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}
