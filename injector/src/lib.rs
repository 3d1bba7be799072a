//! Code store and mount-namespace injection.
//!
//! Owns (a) the content-addressed, read-only store of function code under
//! the state dir, with safe unpacking of uploaded archives, and (b) putting
//! that code read-only at `/fn`, plus a fresh tmpfs at `/tmp`, inside one
//! sandbox's mount namespace and taking both out again, verified. It does
//! not own sandboxes, their lifetime or freezing (see `ember-runtimes`).

pub mod digest;
pub mod inject;
pub mod mountinfo;
pub mod store;
mod syscalls;

pub use inject::{verify_clean, InjectError, Injection, Injector};
pub use store::{no_prepare, CodeStore, Digest, Prepare, StoreError, UnpackLimits};
