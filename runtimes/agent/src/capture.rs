//! Capturing a worker's output and result pipes up to a cap.

use ember_proto::frame_len;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::unistd::read;
use std::os::fd::{AsRawFd, OwnedFd};

/// Bytes read from one pipe, up to a cap; the rest is drained and dropped so
/// the writer never blocks on a full pipe.
pub struct Capture {
    pub fd: Option<OwnedFd>,
    pub buf: Vec<u8>,
    cap: usize,
    pub truncated: bool,
    dropped: u64,
}

impl Capture {
    pub fn new(fd: OwnedFd, cap: usize) -> Capture {
        let _ = fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
        Capture {
            fd: Some(fd),
            buf: Vec::new(),
            cap,
            truncated: false,
            dropped: 0,
        }
    }

    /// Start capturing a new invocation on the same pipe (a specialized
    /// runner keeps its pipes): what is buffered is dropped.
    pub fn reset(&mut self, cap: usize) {
        self.pump();
        self.buf.clear();
        self.cap = cap;
        self.truncated = false;
        self.dropped = 0;
    }

    /// Read what is available now; closes the fd at EOF.
    pub fn pump(&mut self) {
        let Some(fd) = &self.fd else { return };
        let mut chunk = [0u8; 65536];
        loop {
            match read(fd.as_raw_fd(), &mut chunk) {
                Ok(0) => {
                    self.fd = None;
                    return;
                }
                Ok(n) => {
                    let room = self.cap.saturating_sub(self.buf.len());
                    if n > room {
                        self.truncated = true;
                        self.dropped += (n - room) as u64;
                    }
                    self.buf.extend_from_slice(&chunk[..n.min(room)]);
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    }

    /// The captured text; when bytes were dropped, a marker line says how
    /// many, so a reader of the log cannot mistake it for the whole output.
    pub fn text(&self) -> String {
        let mut text = String::from_utf8_lossy(&self.buf).into_owned();
        if self.truncated {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&format!(
                "[ember: output truncated at {} bytes, {} more dropped]\n",
                self.cap, self.dropped
            ));
        }
        text
    }
}

pub fn result_complete(buf: &[u8]) -> bool {
    if buf.len() < 4 {
        return false;
    }
    match frame_len([buf[0], buf[1], buf[2], buf[3]]) {
        Ok(len) => buf.len() >= 4 + len,
        Err(_) => true,
    }
}

pub fn parse_result(buf: &[u8]) -> Option<serde_json::Value> {
    if !result_complete(buf) {
        return None;
    }
    let len = frame_len([buf[0], buf[1], buf[2], buf[3]]).ok()?;
    serde_json::from_slice(&buf[4..4 + len]).ok()
}
