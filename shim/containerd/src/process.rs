//! One process a shim tracks (a container's init or an exec'd process):
//! its status, and its exit for whoever waits.

use containerd_shim::api::Status;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use std::sync::{Condvar, Mutex};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exit {
    pub status: u32,
    pub at_secs: i64,
    pub at_nanos: i32,
}

impl Exit {
    pub fn now(status: u32) -> Exit {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Exit {
            status,
            at_secs: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
            at_nanos: i32::try_from(t.subsec_nanos()).unwrap_or(0),
        }
    }

    pub fn timestamp(&self) -> Timestamp {
        let mut t = Timestamp::new();
        t.seconds = self.at_secs;
        t.nanos = self.at_nanos;
        t
    }
}

#[derive(Debug, Clone, Copy)]
struct Inner {
    status: Status,
    pid: u32,
    exit: Option<Exit>,
}

/// A process's state, shared by the RPCs and the exit watcher.
#[derive(Debug)]
pub struct ProcState {
    inner: Mutex<Inner>,
    exited: Condvar,
}

impl ProcState {
    pub fn created(pid: u32) -> ProcState {
        ProcState {
            inner: Mutex::new(Inner {
                status: Status::CREATED,
                pid,
                exit: None,
            }),
            exited: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere leaves plain data behind: keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> Status {
        self.lock().status
    }

    pub fn pid(&self) -> u32 {
        self.lock().pid
    }

    pub fn exit(&self) -> Option<Exit> {
        self.lock().exit
    }

    pub fn set_running(&self, pid: u32) {
        let mut s = self.lock();
        if s.exit.is_none() {
            s.status = Status::RUNNING;
            s.pid = pid;
        }
    }

    pub fn set_paused(&self, paused: bool) {
        let mut s = self.lock();
        if s.exit.is_none() {
            s.status = if paused {
                Status::PAUSED
            } else {
                Status::RUNNING
            };
        }
    }

    /// Records the exit, once; returns it if this call recorded it (so
    /// one exit event is sent per process).
    pub fn set_exited(&self, status: u32) -> Option<Exit> {
        let mut s = self.lock();
        if s.exit.is_some() {
            return None;
        }
        let exit = Exit::now(status);
        s.exit = Some(exit);
        s.status = Status::STOPPED;
        self.exited.notify_all();
        Some(exit)
    }

    /// Blocks until the process has exited.
    pub fn wait(&self) -> Exit {
        let mut s = self.lock();
        loop {
            if let Some(e) = s.exit {
                return e;
            }
            s = self.exited.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn an_exit_is_recorded_once_and_wakes_waiters() {
        let p = Arc::new(ProcState::created(7));
        let waiter = {
            let p = Arc::clone(&p);
            std::thread::spawn(move || p.wait().status)
        };
        p.set_running(7);
        assert_eq!(p.status(), Status::RUNNING);
        assert_eq!(p.set_exited(3).map(|e| e.status), Some(3));
        assert!(
            p.set_exited(9).is_none(),
            "a second exit must not be recorded"
        );
        assert_eq!(waiter.join().unwrap(), 3);
        assert_eq!(p.status(), Status::STOPPED);
        p.set_running(8);
        p.set_paused(true);
        assert_eq!(
            p.status(),
            Status::STOPPED,
            "an exited process stays stopped"
        );
    }
}
