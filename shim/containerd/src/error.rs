//! What a task RPC can fail with, and the ttrpc status containerd reads
//! from it (it maps `NOT_FOUND`, `FAILED_PRECONDITION`, ... to its own
//! error kinds, e.g. a kill of a finished process is not an error to it).

use crate::config::ConfigError;
use crate::io::IoError;
use crate::runtime::RuntimeError;
use containerd_shim::protos::ttrpc::{self, Code};

/// A task RPC failed.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("container {0} is not in this shim")]
    NoContainer(String),
    #[error("exec {exec} of container {id} is not in this shim")]
    NoExec { id: String, exec: String },
    #[error("container {0} is already in this shim")]
    Exists(String),
    #[error("exec {exec} of container {id} already exists")]
    ExecExists { id: String, exec: String },
    #[error("process already finished: {0}")]
    Finished(String),
    #[error("{what} is still running: kill it first")]
    Running { what: String },
    #[error("{what} has not been started")]
    NotStarted { what: String },
    #[error("exec id {0:?} is not a name (letters, digits, '.', '_', '-'; at most 128)")]
    BadExecId(String),
    #[error("{what} of container {id}: {reason}")]
    BadRequest {
        what: &'static str,
        id: String,
        reason: String,
    },
    #[error("mounting the root filesystem of {id} ({fs_type} from {source_path}): {reason}")]
    Mount {
        id: String,
        fs_type: String,
        source_path: String,
        reason: String,
    },
    #[error("writing {path} for {id}: {source}")]
    Write {
        id: String,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is not supported by the ember shim")]
    Unsupported(&'static str),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl TaskError {
    pub fn code(&self) -> Code {
        match self {
            TaskError::NoContainer(_) | TaskError::NoExec { .. } | TaskError::Finished(_) => {
                Code::NOT_FOUND
            }
            TaskError::Exists(_) | TaskError::ExecExists { .. } => Code::ALREADY_EXISTS,
            TaskError::Running { .. } | TaskError::NotStarted { .. } => Code::FAILED_PRECONDITION,
            TaskError::BadExecId(_)
            | TaskError::BadRequest { .. }
            | TaskError::Config(_)
            | TaskError::Io(_) => Code::INVALID_ARGUMENT,
            TaskError::Unsupported(_) => Code::UNIMPLEMENTED,
            TaskError::Mount { .. } | TaskError::Write { .. } | TaskError::Runtime(_) => {
                Code::UNKNOWN
            }
        }
    }
}

impl From<TaskError> for ttrpc::Error {
    fn from(e: TaskError) -> ttrpc::Error {
        log::error!("{e}");
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_process_is_not_found_to_containerd() {
        // containerd's kill treats NotFound as "already exited".
        assert_eq!(TaskError::Finished("c1".into()).code(), Code::NOT_FOUND);
        let e: ttrpc::Error = TaskError::NoContainer("c9".into()).into();
        match e {
            ttrpc::Error::RpcStatus(s) => {
                assert_eq!(s.code(), Code::NOT_FOUND);
                assert!(s.message().contains("c9"));
            }
            other => panic!("{other:?}"),
        }
    }
}
