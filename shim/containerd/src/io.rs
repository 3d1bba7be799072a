//! A process's standard streams, as containerd names them: FIFOs it reads
//! and writes (CRI, `ctr`), or `file://` paths. The shim opens them and
//! hands them to the runtime as the process's own descriptors, so no byte
//! passes through the shim and a shim restart loses none.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::Stdio;

/// A stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("opening the {stream} of {process} ({path}): {source}")]
    Open {
        stream: &'static str,
        process: String,
        path: String,
        source: std::io::Error,
    },
    #[error("the {stream} of {process} is {uri:?}: only FIFOs and file:// paths are supported (no binary:// loggers)")]
    Unsupported {
        stream: &'static str,
        process: String,
        uri: String,
    },
    #[error("{process} asks for a terminal: the ember shim runs processes without one (no tty, no `kubectl exec -t`)")]
    Terminal { process: String },
}

/// The three streams of one process, opened.
pub struct ProcessIo {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

/// Where containerd wants a process's streams.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

impl StdioPaths {
    /// Opens the three streams of `process` (a name for messages).
    pub fn open(&self, process: &str) -> Result<ProcessIo, IoError> {
        if self.terminal {
            return Err(IoError::Terminal {
                process: process.to_string(),
            });
        }
        Ok(ProcessIo {
            stdin: open_input(&self.stdin, process)?,
            stdout: open_output(&self.stdout, "stdout", process)?,
            stderr: open_output(&self.stderr, "stderr", process)?,
        })
    }
}

fn open_input(uri: &str, process: &str) -> Result<Stdio, IoError> {
    if uri.is_empty() {
        return Ok(Stdio::null());
    }
    let path = local_path(uri, "stdin", process)?;
    // Non-blocking, so the open does not wait for a writer; the process
    // then reads as usual.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .map_err(|source| open_error("stdin", process, uri, source))?;
    clear_nonblock(&file).map_err(|source| open_error("stdin", process, uri, source))?;
    Ok(Stdio::from(file))
}

fn open_output(uri: &str, stream: &'static str, process: &str) -> Result<Stdio, IoError> {
    if uri.is_empty() {
        return Ok(Stdio::null());
    }
    let file = if let Some(path) = uri.strip_prefix("file://") {
        OpenOptions::new().create(true).append(true).open(path)
    } else {
        open_fifo_for_writing(&local_path(uri, stream, process)?)
    };
    file.map(Stdio::from)
        .map_err(|source| open_error(stream, process, uri, source))
}

/// A write-only descriptor of a FIFO, opened without waiting for a reader:
/// a read-write open never blocks, and with it held a write-only open finds
/// a reader. Only the write-only one is kept, so once every process holding
/// it has exited the reader (containerd) sees end of file and finishes the
/// log.
fn open_fifo_for_writing(path: &std::path::Path) -> std::io::Result<File> {
    let both = OpenOptions::new().read(true).write(true).open(path)?;
    use std::os::fd::AsRawFd;
    let again = format!("/proc/self/fd/{}", both.as_raw_fd());
    OpenOptions::new().write(true).open(again)
}

fn local_path(uri: &str, stream: &'static str, process: &str) -> Result<PathBuf, IoError> {
    match uri.split_once("://") {
        None => Ok(PathBuf::from(uri)),
        Some(("fifo", path)) => Ok(PathBuf::from(path)),
        Some(_) => Err(IoError::Unsupported {
            stream,
            process: process.to_string(),
            uri: uri.to_string(),
        }),
    }
}

fn clear_nonblock(file: &File) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let flags = fcntl(fd, FcntlArg::F_GETFL)?;
    let flags = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags))?;
    Ok(())
}

fn open_error(stream: &'static str, process: &str, path: &str, source: std::io::Error) -> IoError {
    IoError::Open {
        stream,
        process: process.to_string(),
        path: path.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_is_refused_with_the_reason() {
        let paths = StdioPaths {
            terminal: true,
            ..Default::default()
        };
        let e = paths.open("container c1").err().unwrap();
        assert!(
            e.to_string().contains("c1") && e.to_string().contains("terminal"),
            "{e}"
        );
    }

    #[test]
    fn binary_loggers_are_refused_by_uri() {
        let paths = StdioPaths {
            stdout: "binary:///usr/bin/logger?x=1".into(),
            ..Default::default()
        };
        let e = paths.open("container c1").err().unwrap();
        assert!(e.to_string().contains("binary:///usr/bin/logger"), "{e}");
    }

    #[test]
    fn file_uris_are_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.log");
        let paths = StdioPaths {
            stdout: format!("file://{}", out.display()),
            ..Default::default()
        };
        let io = paths.open("container c1").unwrap();
        let status = std::process::Command::new("/bin/sh")
            .args(["-c", "echo hello"])
            .stdin(io.stdin)
            .stdout(io.stdout)
            .stderr(io.stderr)
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(std::fs::read_to_string(out).unwrap(), "hello\n");
    }

    #[test]
    fn a_missing_fifo_is_named_in_the_error() {
        let paths = StdioPaths {
            stdout: "/nonexistent/ember/stdout".into(),
            ..Default::default()
        };
        let e = paths.open("exec e1").err().unwrap();
        assert!(
            e.to_string().contains("/nonexistent/ember/stdout") && e.to_string().contains("e1"),
            "{e}"
        );
    }
}
