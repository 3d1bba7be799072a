use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("writing sandbox bundle at {path}: {source}")]
    Bundle {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("rendering sandbox config: {0}")]
    Profile(#[from] ember_profiles::ProfileError),
    #[error("running {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("`{op}` of sandbox {id} failed ({status}): {stderr}")]
    RuntimeFailed {
        op: &'static str,
        id: String,
        status: String,
        stderr: String,
    },
    #[error("agent of sandbox {id}: {message}")]
    Agent { id: String, message: String },
    /// The connection to a sandbox's agent failed (no answer, bad frame).
    #[error("agent of sandbox {id}: {source}")]
    AgentConn {
        id: String,
        source: crate::agent_conn::AgentConnError,
    },
    #[error("agent of sandbox {id} did not answer within {waited_ms} ms")]
    AgentTimeout { id: String, waited_ms: u64 },
    #[error("cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no {what} cgroup hierarchy is mounted")]
    NoCgroup { what: &'static str },
    #[error("unknown backend {name:?} (known: {known})")]
    UnknownBackend { name: String, known: String },
    #[error("opening mount namespace of sandbox pid {pid}: {source}")]
    Namespace { pid: u32, source: std::io::Error },
    #[error(transparent)]
    Userns(#[from] crate::userns::UsernsError),
}
