//! What can go wrong in `ember-runtime` before the delegate runs, each
//! naming the file or container it is about. `main` reports them (see
//! [`crate::report`]) and exits 1; the delegate's own failures are its own.

use crate::register::RegisterError;
use crate::sandbox::SandboxError;
use crate::{PROFILE_ANNOTATION, SANDBOX_ANNOTATION};
use ember_profiles::apply::RestrictError;
use ember_profiles::ProfileError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeCliError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid OCI config: {source}")]
    BadConfig {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("annotation {PROFILE_ANNOTATION}={name:?} in {path}: {source}")]
    BadProfile {
        path: PathBuf,
        name: String,
        source: ProfileError,
    },
    #[error("{path}: {source}")]
    Restrict {
        path: PathBuf,
        source: RestrictError,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("running delegate runtime {binary}: {source}")]
    Exec {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("annotation {SANDBOX_ANNOTATION}={runtime:?} in {path}: {source}")]
    BadSandbox {
        path: PathBuf,
        runtime: String,
        source: Box<SandboxError>,
    },
    #[error("registering sandbox {id} with emberd at {socket}: {source}")]
    Register {
        id: String,
        socket: PathBuf,
        source: Box<RegisterError>,
    },
}
