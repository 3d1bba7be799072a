//! Wire protocol between `emberd` and `ember-agent` (PID 1 in a sandbox).
//!
//! Owns the message types and the frame codec (a big-endian `u32` length
//! followed by that many bytes of JSON) spoken over the agent's stdin and
//! stdout pipes. It does not own transport, timeouts or process handling:
//! callers give it any `Read`/`Write`. Kept dependency-light because the
//! agent links it statically.

use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};

/// Largest frame either side accepts. Events and results are bounded well
/// below this by the daemon; the cap only stops a corrupt length prefix from
/// allocating gigabytes.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// Version of this protocol. The agent reports it in `Ready`; the daemon
/// refuses an agent that speaks another (a stale `ember-agent` binary).
pub const PROTOCOL_VERSION: u32 = 5;

/// Messages the daemon sends to the agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToAgent {
    /// Run one invocation in a fresh worker. The code must already be
    /// mounted at `/fn` and a fresh tmpfs at `/tmp`.
    Invoke(InvokeRequest),
    /// Sent after `/fn` and `/tmp` are unmounted: check that the sandbox is
    /// as clean as it was before the invocation and answer `Idle`.
    Check,
    /// Sent instead of `Check` after a fork-mode invocation whose sandbox
    /// the daemon binds to its function: `/fn` stays mounted, `/tmp` is
    /// unmounted (module init cannot leave files there for invocations).
    /// The agent checks the sandbox is clean, then turns the spare into
    /// the function's zygote (it imports the handler's module and runs its
    /// init once; each later invocation forks a worker from it) and
    /// answers `Bound`.
    Bind(BindRequest),
    /// Kill every process but the agent, then exit.
    Shutdown,
}

/// One invocation, as the agent receives it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InvokeRequest {
    pub id: String,
    pub function: String,
    /// `module.function`, already validated by the daemon.
    pub handler: String,
    /// The event as JSON text, passed through untouched.
    pub event: String,
    pub timeout_ms: u64,
    /// Cap for each of stdout and stderr; bytes past it are dropped.
    pub max_output_bytes: usize,
    /// Cap for the serialized result.
    pub max_result_bytes: usize,
    pub memory_limit_mb: u64,
    /// Sandbox profile whose worker filters the worker installs before
    /// user code runs (`default`, `strict`).
    pub profile: String,
    /// How the handler runs: a fresh worker per invocation, or a process
    /// bound to this function that keeps it loaded.
    #[serde(default)]
    pub mode: Mode,
    /// Where the sandbox's cgroup cannot count the function's processes
    /// (gVisor, whose cgroup holds its own threads): the most processes
    /// and threads the function may have, enforced as the worker's
    /// `RLIMIT_NPROC`; `None`: the cgroup's pids limit applies.
    #[serde(default)]
    pub nproc: Option<u64>,
}

/// What a function zygote needs: the function, how to confine it, and how
/// long its init may take.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BindRequest {
    pub function: String,
    /// `module.function`; the zygote imports `module`.
    pub handler: String,
    /// Installed before the import, like a worker's.
    pub profile: String,
    /// See [`InvokeRequest::nproc`].
    #[serde(default)]
    pub nproc: Option<u64>,
    /// How long the import may take (the function's timeout).
    pub timeout_ms: u64,
    /// Cap for each of the init's stdout and stderr.
    pub max_output_bytes: usize,
}

/// How a function zygote's init ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InitOutcome {
    /// Imported and checked: invocations fork from it.
    Ready,
    /// The import raised (or the zygote could not be confined).
    Error,
    /// The import ran past the function's timeout and was killed.
    Timeout,
    /// The zygote died during its init (a signal, `os._exit`, the OOM
    /// killer).
    Crashed,
    /// The init left something that a fork would share between
    /// invocations or break (threads, child processes, open files,
    /// shared memory).
    Unsafe,
    /// The sandbox was not clean before the bind (`message` says how);
    /// nothing was started.
    NotClean,
    /// The init ran into the function's memory limit (the daemon tells,
    /// from the sandbox's cgroup; the agent sees a crash).
    Oom,
}

impl InitOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            InitOutcome::Ready => "zygote_ready",
            InitOutcome::Error => "init_error",
            InitOutcome::Timeout => "init_timeout",
            InitOutcome::Crashed => "init_crashed",
            InitOutcome::Unsafe => "init_unsafe",
            InitOutcome::NotClean => "not_clean",
            InitOutcome::Oom => "init_oom",
        }
    }
}

/// The answer to `Bind`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BindReport {
    pub outcome: InitOutcome,
    /// Why it is not ready (the exception, the threads found, ...).
    pub message: String,
    /// What the init printed.
    pub stdout: String,
    pub stderr: String,
    pub init_us: u64,
    /// The function zygote's pid (0 unless ready).
    pub zygote_pid: u32,
}

pub use ember_api::Mode;

/// Messages the agent sends to the daemon.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromAgent {
    /// The zygote has preloaded its modules and waits for work.
    Ready(Ready),
    /// The outcome of one invocation. The worker is killed by then; what
    /// it left running is swept before `Idle`.
    Result(InvokeResult),
    /// The answer to `Check`: the invocation's processes are gone and the
    /// next worker is forked and warmed. `problems` lists every way the
    /// sandbox differs from its clean state (stray processes, mounts); the
    /// daemon reuses the sandbox only if it is empty, and freezes it only
    /// after this.
    Idle {
        spare_pid: u32,
        strays_killed: u32,
        problems: Vec<String>,
    },
    /// The agent cannot go on (zygote died, protocol error); it exits next.
    Fatal { message: String },
    /// A deploy build (an agent started with `--build`) is over; the
    /// agent exits next.
    Built(BuildReport),
    /// The answer to `Bind`. Unless the outcome is `Ready` the sandbox
    /// cannot serve (its spare became the failed zygote): the daemon
    /// discards it.
    Bound(BindReport),
}

/// What a deploy build did, step by step, inside its sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct BuildReport {
    pub steps: Vec<BuildStep>,
}

impl BuildReport {
    /// The first step that failed, if any.
    pub fn failed(&self) -> Option<&BuildStep> {
        self.steps.iter().find(|s| !s.ok)
    }
}

/// One step of a deploy build (`pip`, `precompile`, `node_modules`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BuildStep {
    pub name: String,
    pub ok: bool,
    /// How it ended, for a step that ran a program: `exit status 1`,
    /// `killed by signal 9`.
    pub status: String,
    /// The end of its output (stdout and stderr together), or why it
    /// failed for a step the agent does itself.
    pub output: String,
    pub duration_us: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ready {
    /// [`PROTOCOL_VERSION`] of the agent (absent before version 2).
    #[serde(default)]
    pub protocol: u32,
    /// The ember release the agent was built from (its crate version, as
    /// `ember-agent --version` prints it); empty from agents older than
    /// this field. emberd refuses an agent of another release
    /// ([`Ready::check`]): on a Kubernetes node the agent is the node's
    /// (`scripts/install-node`) and emberd the image's.
    #[serde(default)]
    pub version: String,
    pub zygote_pid: u32,
    pub runtime_version: String,
    /// Time the zygote took to start and import its preloads.
    pub preload_us: u64,
}

impl Ready {
    /// Whether emberd of release `daemon_version` may use this agent: the
    /// same release and the same [`PROTOCOL_VERSION`].
    pub fn check(&self, daemon_version: &str) -> Result<(), Mismatch> {
        if self.version == daemon_version && self.protocol == PROTOCOL_VERSION {
            return Ok(());
        }
        Err(Mismatch {
            agent_version: self.version.clone(),
            agent_protocol: self.protocol,
            daemon_version: daemon_version.to_string(),
        })
    }
}

/// An agent of another release (or protocol) than the emberd it talks to.
/// Says both sides' versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Empty: an agent older than version reporting.
    pub agent_version: String,
    pub agent_protocol: u32,
    pub daemon_version: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let agent = if self.agent_version.is_empty() {
            "of a release older than version reporting".to_string()
        } else {
            self.agent_version.clone()
        };
        write!(
            f,
            "ember-agent {agent} (protocol {}) does not match emberd {} (protocol {})",
            self.agent_protocol, self.daemon_version, PROTOCOL_VERSION
        )
    }
}

impl std::error::Error for Mismatch {}

/// How an invocation ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The handler returned a JSON-serializable value.
    Ok,
    /// The handler (or its import) raised; see `error`.
    HandlerError,
    /// The worker ran past `timeout_ms` and was killed.
    Timeout,
    /// The worker died without a result (signal, `os._exit`, OOM kill).
    Crashed,
    /// The serialized result was larger than `max_result_bytes`.
    ResultTooLarge,
    /// The worker could not be confined (its seccomp filter failed to
    /// install); no user code ran.
    SetupError,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::HandlerError => "handler_error",
            Outcome::Timeout => "timeout",
            Outcome::Crashed => "crashed",
            Outcome::ResultTooLarge => "result_too_large",
            Outcome::SetupError => "setup_error",
        }
    }
}

/// An exception raised by user code.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HandlerError {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    pub traceback: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InvokeResult {
    pub id: String,
    pub outcome: Outcome,
    /// The handler's return value as JSON text (only with `Outcome::Ok`).
    pub result: Option<String>,
    pub error: Option<HandlerError>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// From the request reaching the agent to the result being read.
    pub run_us: u64,
    /// Part of `run_us`: the worker installing its seccomp filters.
    #[serde(default)]
    pub confine_us: u64,
    /// Exit status of the worker, if it exited by itself.
    pub exit_code: Option<i32>,
    /// Signal that ended the worker, if any.
    pub signal: Option<i32>,
    /// The function's processes were at its `nproc` limit when it ended
    /// (only reported where the request set one).
    #[serde(default)]
    pub pids_hit: bool,
}

/// Errors of the frame codec.
#[derive(Debug)]
pub enum FrameError {
    /// The peer closed the stream at a frame boundary.
    Closed,
    Io(io::Error),
    TooLarge(usize),
    Json(serde_json::Error),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Closed => write!(f, "peer closed the stream"),
            FrameError::Io(e) => write!(f, "frame i/o: {e}"),
            FrameError::TooLarge(n) => {
                write!(f, "frame of {n} bytes exceeds {MAX_FRAME_BYTES}")
            }
            FrameError::Json(e) => write!(f, "frame is not a valid message: {e}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Encode one message as a frame (length prefix included).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let body = serde_json::to_vec(msg).map_err(FrameError::Json)?;
    if body.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Write one message as a single frame and flush.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    let buf = encode(msg)?;
    w.write_all(&buf).map_err(FrameError::Io)?;
    w.flush().map_err(FrameError::Io)
}

/// Parse a frame length prefix, rejecting absurd sizes.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Read one frame and decode it.
pub fn read_frame<R: Read, T: for<'de> Deserialize<'de>>(r: &mut R) -> Result<T, FrameError> {
    let mut prefix = [0u8; 4];
    match r.read_exact(&mut prefix) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(FrameError::Io(e)),
    }
    let len = frame_len(prefix)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).map_err(FrameError::Io)?;
    serde_json::from_slice(&body).map_err(FrameError::Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let msg = ToAgent::Invoke(InvokeRequest {
            id: "i1".into(),
            function: "f".into(),
            handler: "main.handler".into(),
            event: r#"{"x":"é"}"#.into(),
            timeout_ms: 10,
            max_output_bytes: 5,
            max_result_bytes: 6,
            memory_limit_mb: 7,
            profile: "strict".into(),
            mode: Mode::Specialized,
            nproc: None,
        });
        let mut buf = Vec::new();
        write_frame(&mut buf, &msg).unwrap();
        write_frame(&mut buf, &ToAgent::Shutdown).unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame::<_, ToAgent>(&mut r).unwrap(), msg);
        assert_eq!(read_frame::<_, ToAgent>(&mut r).unwrap(), ToAgent::Shutdown);
        assert!(matches!(
            read_frame::<_, ToAgent>(&mut r),
            Err(FrameError::Closed)
        ));
    }

    fn ready(version: &str, protocol: u32) -> Ready {
        Ready {
            protocol,
            version: version.into(),
            zygote_pid: 7,
            runtime_version: "3.11".into(),
            preload_us: 1,
        }
    }

    #[test]
    fn an_agent_of_the_daemons_release_and_protocol_is_accepted() {
        assert_eq!(ready("1.2.3", PROTOCOL_VERSION).check("1.2.3"), Ok(()));
    }

    #[test]
    fn an_agent_of_another_release_is_refused_naming_both_versions() {
        let e = ready("1.2.2", PROTOCOL_VERSION).check("1.2.3").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "ember-agent 1.2.2 (protocol {PROTOCOL_VERSION}) does not match emberd 1.2.3 \
                 (protocol {PROTOCOL_VERSION})"
            )
        );
        let e = ready("1.2.3", PROTOCOL_VERSION - 1)
            .check("1.2.3")
            .unwrap_err();
        assert!(e
            .to_string()
            .contains(&format!("protocol {}", PROTOCOL_VERSION - 1)));
    }

    #[test]
    fn an_agent_that_does_not_say_its_version_is_refused() {
        // What an agent from before the field sends.
        let old = format!(
            r#"{{"type":"ready","protocol":{PROTOCOL_VERSION},"zygote_pid":1,"runtime_version":"x","preload_us":2}}"#
        );
        let FromAgent::Ready(r) = serde_json::from_str(&old).unwrap() else {
            panic!("not ready")
        };
        assert_eq!(r.version, "");
        let e = r.check("1.2.3").unwrap_err().to_string();
        assert!(
            e.contains("older than version reporting") && e.contains("emberd 1.2.3"),
            "{e}"
        );
    }

    #[test]
    fn oversized_prefix_is_rejected_without_allocating() {
        let mut r = &[0xffu8, 0xff, 0xff, 0xff][..];
        assert!(matches!(
            read_frame::<_, ToAgent>(&mut r),
            Err(FrameError::TooLarge(_))
        ));
    }

    #[test]
    fn truncated_body_is_an_io_error() {
        let mut buf = encode(&ToAgent::Shutdown).unwrap();
        buf.truncate(buf.len() - 1);
        let mut r = &buf[..];
        assert!(matches!(
            read_frame::<_, ToAgent>(&mut r),
            Err(FrameError::Io(_))
        ));
    }
}
