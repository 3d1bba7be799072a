//! A sandbox leased from its pool for one invocation, and what a
//! session's call holds of its session.

use crate::pool::Pool;
use ember_runtimes::Sandbox;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

/// A sandbox taken from a pool for one invocation. Dropped, it goes back
/// as unusable (the pool destroys and replaces it): every early return on
/// the invocation path gives the sandbox up without a word. Only
/// [`Lease::hand_back`] lets a healthy one serve again.
pub(super) struct Lease {
    pool: Arc<Pool>,
    sb: Option<Sandbox>,
}

impl Lease {
    pub(super) fn new(pool: Arc<Pool>, sb: Sandbox) -> Lease {
        Lease { pool, sb: Some(sb) }
    }

    /// The pool the sandbox came from.
    pub(super) fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The pool and the sandbox, for the way back after a healthy
    /// invocation (which ends in `Pool::release`).
    pub(super) fn hand_back(mut self) -> (Arc<Pool>, Sandbox) {
        let sb = self
            .sb
            .take()
            .expect("a lease holds its sandbox until handed back");
        (self.pool.clone(), sb)
    }
}

impl Deref for Lease {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        self.sb
            .as_ref()
            .expect("a lease holds its sandbox until handed back")
    }
}

impl DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut Sandbox {
        self.sb
            .as_mut()
            .expect("a lease holds its sandbox until handed back")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(sb) = self.sb.take() {
            self.pool.release(sb, false);
        }
    }
}

/// A session's call holds the session's slot (no other call runs) until
/// the sandbox is back in it, or gone.
pub(super) struct SessionCall {
    pub(super) session: Arc<crate::sessions::Session>,
    pub(super) slot: tokio::sync::OwnedMutexGuard<Option<Sandbox>>,
    /// Set once the call was healthy and its sandbox goes back to the
    /// session; left unset, the session ends.
    pub(super) kept: Arc<std::sync::atomic::AtomicBool>,
}
