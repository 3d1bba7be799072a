//! The agent's own failures: bad arguments, the socket it serves on,
//! privileges, emberd breaking the protocol, and whatever the zygote,
//! runner, invocation or bind modules report. Any of them ends the
//! sandbox: its text becomes the `Fatal` frame emberd logs.

use crate::check::MountinfoError;
use crate::function_zygote::BindError;
use crate::procs::ReapError;
use crate::runner::RunnerError;
use crate::worker::InvokeError;
use crate::zygote::ZygoteError;
use ember_proto::FrameError;

/// A command-line argument the agent cannot use.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("flag {flag} needs a value")]
    NeedsValue { flag: String },
    #[error("{flag} {value}: {source}")]
    NotANumber {
        flag: &'static str,
        value: String,
        source: std::num::ParseIntError,
    },
    #[error("unknown flag {flag}")]
    Unknown { flag: String },
}

/// Giving up the capabilities the agent no longer needs failed.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("reading capabilities: {0}")]
    Read(caps::errors::CapsError),
    #[error("dropping {cap}: {source}")]
    Drop {
        cap: caps::Capability,
        source: caps::errors::CapsError,
    },
}

/// Setting up the Unix socket emberd connects to (`--listen`).
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("listening on {path}: {source}")]
    Listen {
        path: String,
        source: std::io::Error,
    },
    #[error("chmod {path}: {source}")]
    Chmod {
        path: String,
        source: std::io::Error,
    },
    #[error("accepting on {path}: {source}")]
    Accept {
        path: String,
        source: std::io::Error,
    },
    #[error("socket {path}: {source}")]
    Clone {
        path: String,
        source: std::io::Error,
    },
}

/// emberd asked for something out of order. Functions are shown quoted
/// (`{:?}`).
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("protocol error: check or bind without an invocation")]
    CheckWithoutInvocation,
    /// `got`: the message received, in its debug form.
    #[error("protocol error: expected check, got {got}")]
    ExpectedCheck { got: String },
    #[error("protocol error: fork-mode invocation in a sandbox with a specialized runner")]
    ForkInSpecialized,
    #[error("protocol error: sandbox bound to {bound:?} asked to run {asked:?}")]
    WrongFunction { bound: String, asked: String },
    #[error("protocol error: runner bound to {bound:?} asked to run {asked:?}")]
    WrongRunnerFunction { bound: String, asked: String },
    #[error("protocol error: no zygote to fork from")]
    NoZygoteToFork,
    #[error("protocol error: bind of a bound sandbox")]
    AlreadyBound,
    #[error("protocol error: no zygote to bind")]
    NoZygoteToBind,
    #[error("protocol error: no zygote to take a runner from")]
    NoZygoteForRunner,
}

/// Why the agent stops serving.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Zygote(#[from] ZygoteError),
    #[error(transparent)]
    Runner(#[from] RunnerError),
    #[error(transparent)]
    Invoke(#[from] InvokeError),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Reap(#[from] ReapError),
    #[error(transparent)]
    Mounts(#[from] MountinfoError),
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("no interpreter started")]
    NoInterpreter,
    /// Writing the frame `what` (`ready`, `result`, `idle`) to emberd.
    #[error("writing {what}: {source}")]
    Write {
        what: &'static str,
        source: FrameError,
    },
    /// Reading the frame `what` (`request`, `check`) from emberd.
    #[error("reading {what}: {source}")]
    Read {
        what: &'static str,
        source: FrameError,
    },
    #[error("no bound baseline")]
    NoBoundBaseline,
    #[error("no runner")]
    NoRunner,
    #[error("profile {profile:?} is not available to node runners (only default)")]
    ProfileUnavailable { profile: String },
}

impl AgentError {
    /// `map_err` for writing the frame `what`.
    pub fn write(what: &'static str) -> impl FnOnce(FrameError) -> AgentError {
        move |source| AgentError::Write { what, source }
    }
}
