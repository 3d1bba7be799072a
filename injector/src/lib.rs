//! Code store and injection into sandboxes.
//!
//! Owns (a) the content-addressed, read-only store of function code under
//! the state dir, with hardened, bounded unpacking of uploaded archives and
//! copied directories (`unpack`, `names`, `fsat`), and (b) putting
//! that code read-only at `/fn`, plus a fresh tmpfs at `/tmp`, inside one
//! sandbox's mount namespace and taking both out again, verified, or (for
//! sandboxes behind a file proxy, like gVisor's) linking it into a
//! per-sandbox host directory bound at `/fn` and emptying that. It does
//! not own sandboxes, their lifetime or freezing (see `ember-runtimes`).

pub mod digest;
mod error;
pub mod fsat;
pub mod hostdir;
pub mod inject;
pub mod mountinfo;
pub mod names;
pub mod store;
mod syscalls;
pub mod unpack;

pub use error::{PrepareError, StoreError};
pub use hostdir::{HostDirError, HostDirSlot};
pub use inject::{verify_clean, InjectError, Injection, Injector};
pub use store::{no_prepare, CodeStore, Digest, Pin, Prepare, BUILD_FORMAT};
pub use unpack::{check_build_paths, copy_tree, unpack_tar, unpack_tar_gz, CopyRule, UnpackLimits};
