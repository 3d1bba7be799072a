//! What can be wrong with the two filters given to [`intersect`](super::intersect).

#[derive(Debug, thiserror::Error)]
pub enum IntersectError {
    #[error("the {side}'s linux.seccomp is not a valid OCI seccomp section: {source}")]
    Parse {
        side: &'static str,
        source: serde_json::Error,
    },
    #[error("the {side}'s seccomp rule for {syscall:?} compares argument {index}; syscalls have arguments 0 to 5")]
    ArgIndex {
        side: &'static str,
        syscall: String,
        index: usize,
    },
}
