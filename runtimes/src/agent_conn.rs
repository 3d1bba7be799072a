//! The daemon's end of a sandbox agent's stdio: framed requests on its
//! stdin, framed answers on its stdout, and its stderr drained into the
//! daemon's log (the last lines kept for error messages).

use ember_proto::{encode, frame_len, FrameError, FromAgent, ToAgent};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};

type Writer = Box<dyn AsyncWrite + Unpin + Send>;
type Reader = Box<dyn AsyncRead + Unpin + Send>;

const STDERR_TAIL_LINES: usize = 20;

pub struct AgentConn {
    stdin: Writer,
    stdout: BufReader<Reader>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

impl AgentConn {
    /// The pipes of a runtime process the agent inherited.
    pub fn new(id: &str, stdin: ChildStdin, stdout: ChildStdout, stderr: ChildStderr) -> AgentConn {
        AgentConn::from_streams(id, Box::new(stdin), Box::new(stdout), Box::new(stderr))
    }

    /// Any three streams (e.g. pipes handed to an in-process runtime).
    pub fn from_streams(id: &str, stdin: Writer, stdout: Reader, stderr: Reader) -> AgentConn {
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail2 = tail.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(sandbox = %id, "sandbox stderr: {line}");
                let mut t = tail2.lock().unwrap_or_else(|e| e.into_inner());
                if t.len() == STDERR_TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
        AgentConn {
            stdin,
            stdout: BufReader::new(stdout),
            stderr_tail: tail,
        }
    }

    /// The last lines the sandbox (runtime or agent) wrote on stderr.
    pub fn stderr_tail(&self) -> String {
        let t = self.stderr_tail.lock().unwrap_or_else(|e| e.into_inner());
        t.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    pub async fn send(&mut self, msg: &ToAgent) -> Result<(), AgentConnError> {
        let buf = encode(msg)?;
        self.stdin
            .write_all(&buf)
            .await
            .map_err(AgentConnError::Write)?;
        self.stdin.flush().await.map_err(AgentConnError::Write)
    }

    pub async fn recv(&mut self) -> Result<FromAgent, AgentConnError> {
        let mut prefix = [0u8; 4];
        if let Err(source) = self.stdout.read_exact(&mut prefix).await {
            return Err(AgentConnError::Closed {
                source,
                stderr: self.stderr_tail(),
            });
        }
        let len = frame_len(prefix)?;
        let mut body = vec![0u8; len];
        self.stdout
            .read_exact(&mut body)
            .await
            .map_err(AgentConnError::Read)?;
        serde_json::from_slice(&body).map_err(AgentConnError::BadFrame)
    }
}

/// Why a message could not be sent to or read from the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentConnError {
    /// The message could not be framed, or a frame's length prefix is
    /// out of bounds.
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("writing to agent: {0}")]
    Write(std::io::Error),
    /// The agent's stdout ended (or failed) before a frame's length;
    /// `stderr` holds the last lines it wrote there.
    #[error("agent closed its output ({source}); stderr: {stderr}")]
    Closed {
        source: std::io::Error,
        stderr: String,
    },
    #[error("reading agent frame: {0}")]
    Read(std::io::Error),
    #[error("agent sent a bad frame: {0}")]
    BadFrame(serde_json::Error),
}
