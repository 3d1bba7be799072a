//! emberd's wire vocabulary: everything that crosses its Unix socket.
//!
//! Owns the request and response types of the HTTP/1.1 + JSON API
//! (`docs/api.md`) shared by emberd, the `ember` CLI, `ember-runtime`, the
//! bench and the tests; the closed sets they are made of ([`Mode`],
//! [`Language`], [`Backend`], [`Outcome`], [`StartKind`], [`ErrorCode`]),
//! each serialized to the string the API has always used; the OpenAPI
//! document generated from them (`GET /v1/openapi.json`); the checks of
//! API input ([`validate`]); the configuration file ([`config_file`]); and
//! a client for the socket ([`client`]).
//!
//! Does not own what any of it means to the daemon: pools, sandboxes and
//! the invocation path are `ember-core`'s, HTTP routes and which status an
//! [`ErrorCode`] gets are `ember-server`'s.

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "config")]
pub mod config_file;
pub mod error;
pub mod function;
pub mod health;
pub mod invocation;
pub mod kinds;
pub mod openapi;
pub mod pool;
pub mod records;
pub mod session;
pub mod validate;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use function::{Concurrency, DeployOptions, FunctionLimits, FunctionRecord, ZygoteState};
pub use invocation::{HandlerErrorInfo, LimitHit, Outcome, Report, StartKind, Timings};
pub use kinds::{Backend, Language, Mode};
pub use pool::{PoolStatus, SandboxState, SandboxStatus};
pub use records::InvocationRecord;
pub use session::{SessionEnd, SessionInfo, SessionList, SessionPolicy, SessionQuery};
