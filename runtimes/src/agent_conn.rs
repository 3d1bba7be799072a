//! The daemon's end of a sandbox agent's stdio: framed requests on its
//! stdin, framed answers on its stdout, and its stderr drained into the
//! daemon's log (the last lines kept for error messages).

use ember_proto::{encode, frame_len, FromAgent, ToAgent};
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

    pub async fn send(&mut self, msg: &ToAgent) -> Result<(), String> {
        let buf = encode(msg).map_err(|e| e.to_string())?;
        self.stdin
            .write_all(&buf)
            .await
            .map_err(|e| format!("writing to agent: {e}"))?;
        self.stdin
            .flush()
            .await
            .map_err(|e| format!("writing to agent: {e}"))
    }

    pub async fn recv(&mut self) -> Result<FromAgent, String> {
        let mut prefix = [0u8; 4];
        self.stdout.read_exact(&mut prefix).await.map_err(|e| {
            format!(
                "agent closed its output ({e}); stderr: {}",
                self.stderr_tail()
            )
        })?;
        let len = frame_len(prefix).map_err(|e| e.to_string())?;
        let mut body = vec![0u8; len];
        self.stdout
            .read_exact(&mut body)
            .await
            .map_err(|e| format!("reading agent frame: {e}"))?;
        serde_json::from_slice(&body).map_err(|e| format!("agent sent a bad frame: {e}"))
    }
}
