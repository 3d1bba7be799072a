//! Which route takes and answers what: the table the document is built
//! from, in docs/api.md's order.

use super::build::TestRequest;
use super::*;

/// One route emberd serves: what it takes, what it answers, and the error
/// codes it may answer besides `unauthorized` (over HTTP, every route).
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub operation_id: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub query: Query,
    pub body: Body,
    /// Success statuses, each with what it means.
    pub success: &'static [(u16, &'static str)],
    pub answer: Answer,
    pub errors: &'static [ErrorCode],
}

/// The HTTP method of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Put,
    Post,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

/// The query parameters of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    None,
    /// [`DeployOptions`], with a tar.gz body.
    Deploy,
    /// [`PoolQuery`].
    Pool,
    /// [`RecordQuery`].
    Records,
    /// [`RecordQuery`] but `function`, which the path names.
    FunctionRecords,
    /// [`SessionQuery`].
    Sessions,
}

/// The request body of a route.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    None,
    /// `application/gzip` (a tar.gz of the code) or `application/json`
    /// ([`DeployRequest`]).
    Deploy,
    /// Any JSON value (an empty body means `{}`).
    Event,
    /// `application/json` of a schema, by its name.
    Json(fn() -> Cow<'static, str>),
}

/// The body of a successful answer.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// `application/json` of a schema, by its name.
    Json(fn() -> Cow<'static, str>),
    /// Prometheus text format.
    Metrics,
    /// This document.
    OpenApi,
}

/// What an invocation may answer (`POST /v1/functions/{name}/invoke`).
const INVOKE_ERRORS: &[ErrorCode] = &[
    E::InvalidEvent,
    E::FunctionNotFound,
    E::FunctionPaused,
    E::PayloadTooLarge,
    E::RebuildRequired,
    E::HandlerError,
    E::Crashed,
    E::ResultTooLarge,
    E::Oom,
    E::Pids,
    E::Killed,
    E::Timeout,
    E::PoolExhausted,
    E::Overloaded,
    E::BackendUnavailable,
    E::ShuttingDown,
    E::HistoryFull,
    E::Interrupted,
    E::SandboxFailed,
    E::Internal,
];

/// What a session's call may answer: an invocation's, and the session's
/// own (no pool to wait for: the session holds its sandbox).
const SESSION_CALL_ERRORS: &[ErrorCode] = &[
    E::InvalidEvent,
    E::SessionNotFound,
    E::SessionEnded,
    E::SessionBusy,
    E::FunctionPaused,
    E::PayloadTooLarge,
    E::HandlerError,
    E::Crashed,
    E::ResultTooLarge,
    E::Oom,
    E::Pids,
    E::Killed,
    E::Timeout,
    E::HistoryFull,
    E::SandboxFailed,
    E::Internal,
];

/// What a deploy may answer.
const DEPLOY_ERRORS: &[ErrorCode] = &[
    E::InvalidRequest,
    E::InvalidJson,
    E::InvalidCode,
    E::InvalidRequirements,
    E::BuildFailed,
    E::BuildTimeout,
    E::BuildOom,
    E::BuildPids,
    E::BuildDiskFull,
    E::HostPathForbidden,
    E::GitUnreachable,
    E::GitRefNotFound,
    E::GitSubdirNotFound,
    E::GitFailed,
    E::PayloadTooLarge,
    E::UnsupportedMediaType,
    E::SandboxFailed,
    E::Internal,
];

/// What `POST /v1/test` may answer: a deploy's refusals, then an
/// invocation's (in a sandbox of its own: no pool to exhaust, no kill
/// switch).
const TEST_ERRORS: &[ErrorCode] = &[
    E::InvalidRequest,
    E::InvalidJson,
    E::InvalidEvent,
    E::InvalidCode,
    E::InvalidRequirements,
    E::BuildFailed,
    E::BuildTimeout,
    E::BuildOom,
    E::BuildPids,
    E::BuildDiskFull,
    E::HostPathForbidden,
    E::GitUnreachable,
    E::GitRefNotFound,
    E::GitSubdirNotFound,
    E::GitFailed,
    E::PayloadTooLarge,
    E::HandlerError,
    E::Crashed,
    E::ResultTooLarge,
    E::Oom,
    E::Pids,
    E::Timeout,
    E::ShuttingDown,
    E::Interrupted,
    E::SandboxFailed,
    E::Internal,
];

/// Every route of `ember-server`'s router, in docs/api.md's order.
pub const ROUTES: &[Route] = &[
    Route {
        method: Method::Get,
        path: "/v1/health",
        operation_id: "health",
        tag: "daemon",
        summary: "daemon status",
        query: Query::None,
        body: Body::None,
        success: &[(200, "the daemon's status")],
        answer: Answer::Json(<Health as ToSchema>::name),
        errors: &[],
    },
    Route {
        method: Method::Get,
        path: "/v1/openapi.json",
        operation_id: "openapi",
        tag: "daemon",
        summary: "this OpenAPI document",
        query: Query::None,
        body: Body::None,
        success: &[(200, "the OpenAPI 3.1 document of this API")],
        answer: Answer::OpenApi,
        errors: &[],
    },
    Route {
        method: Method::Put,
        path: "/v1/functions/{name}",
        operation_id: "deployFunction",
        tag: "functions",
        summary: "deploy or update a function",
        query: Query::Deploy,
        body: Body::Deploy,
        success: &[
            (201, "a new function was deployed"),
            (200, "an existing function was updated"),
        ],
        answer: Answer::Json(<FunctionRecord as ToSchema>::name),
        errors: DEPLOY_ERRORS,
    },
    Route {
        method: Method::Get,
        path: "/v1/functions",
        operation_id: "listFunctions",
        tag: "functions",
        summary: "list functions",
        query: Query::None,
        body: Body::None,
        success: &[(200, "every deployed function")],
        answer: Answer::Json(<FunctionList as ToSchema>::name),
        errors: &[E::Internal],
    },
    Route {
        method: Method::Get,
        path: "/v1/functions/{name}",
        operation_id: "getFunction",
        tag: "functions",
        summary: "one function",
        query: Query::None,
        body: Body::None,
        success: &[(200, "the function and the state of its zygote")],
        answer: Answer::Json(<FunctionInfo as ToSchema>::name),
        errors: &[E::FunctionNotFound, E::Internal],
    },
    Route {
        method: Method::Delete,
        path: "/v1/functions/{name}",
        operation_id: "deleteFunction",
        tag: "functions",
        summary: "delete a function",
        query: Query::None,
        body: Body::None,
        success: &[(200, "the function was deleted")],
        answer: Answer::Json(<Deleted as ToSchema>::name),
        errors: &[E::FunctionNotFound, E::Internal],
    },
    Route {
        method: Method::Post,
        path: "/v1/functions/{name}/pause",
        operation_id: "pauseFunction",
        tag: "functions",
        summary: "pause a function: refuse its invocations, release its bound sandboxes",
        query: Query::None,
        body: Body::None,
        success: &[(200, "the function is paused (or already was)")],
        answer: Answer::Json(<FunctionRecord as ToSchema>::name),
        errors: &[E::FunctionNotFound, E::Internal],
    },
    Route {
        method: Method::Post,
        path: "/v1/functions/{name}/resume",
        operation_id: "resumeFunction",
        tag: "functions",
        summary: "resume a paused function",
        query: Query::None,
        body: Body::None,
        success: &[(200, "the function runs again (or already did)")],
        answer: Answer::Json(<FunctionRecord as ToSchema>::name),
        errors: &[E::FunctionNotFound, E::Internal],
    },
    Route {
        method: Method::Post,
        path: "/v1/functions/{name}/invoke",
        operation_id: "invokeFunction",
        tag: "invocations",
        summary: "invoke a function",
        query: Query::None,
        body: Body::Event,
        success: &[(200, "the handler returned: the invocation report")],
        answer: Answer::Json(<Report as ToSchema>::name),
        errors: INVOKE_ERRORS,
    },
    Route {
        method: Method::Post,
        path: "/v1/functions/{name}/sessions",
        operation_id: "openSession",
        tag: "sessions",
        summary: "open a session: a warm sandbox of the function for this session alone",
        query: Query::None,
        body: Body::None,
        success: &[(201, "the session is open")],
        answer: Answer::Json(<SessionInfo as ToSchema>::name),
        errors: &[
            E::FunctionNotFound,
            E::FunctionPaused,
            E::SessionLimit,
            E::RebuildRequired,
            E::PoolExhausted,
            E::BackendUnavailable,
            E::ShuttingDown,
            E::SandboxFailed,
            E::Internal,
        ],
    },
    Route {
        method: Method::Post,
        path: "/v1/sessions/{id}/invoke",
        operation_id: "invokeSession",
        tag: "sessions",
        summary: "call a session: run the handler in the session's sandbox, state kept",
        query: Query::None,
        body: Body::Event,
        success: &[(200, "the handler returned: the invocation report")],
        answer: Answer::Json(<Report as ToSchema>::name),
        errors: SESSION_CALL_ERRORS,
    },
    Route {
        method: Method::Get,
        path: "/v1/sessions",
        operation_id: "listSessions",
        tag: "sessions",
        summary: "open sessions, of all functions or `?function=`; `?ended=true` adds ended ones",
        query: Query::Sessions,
        body: Body::None,
        success: &[(200, "sessions, open ones oldest first, then ended ones newest first")],
        answer: Answer::Json(<SessionList as ToSchema>::name),
        errors: &[E::InvalidRequest, E::Internal],
    },
    Route {
        method: Method::Get,
        path: "/v1/sessions/{id}",
        operation_id: "getSession",
        tag: "sessions",
        summary: "one session, open or ended",
        query: Query::None,
        body: Body::None,
        success: &[(200, "the session")],
        answer: Answer::Json(<SessionInfo as ToSchema>::name),
        errors: &[E::SessionNotFound, E::Internal],
    },
    Route {
        method: Method::Delete,
        path: "/v1/sessions/{id}",
        operation_id: "closeSession",
        tag: "sessions",
        summary: "close a session: stop its running call, destroy its sandbox",
        query: Query::None,
        body: Body::None,
        success: &[(200, "the session has ended: its record")],
        answer: Answer::Json(<SessionInfo as ToSchema>::name),
        errors: &[E::SessionNotFound, E::SessionEnded, E::Internal],
    },
    Route {
        method: Method::Post,
        path: "/v1/test",
        operation_id: "testFunction",
        tag: "invocations",
        summary: "run code once in a throwaway sandbox, without deploying it",
        query: Query::None,
        body: Body::Json(<TestRequest as ToSchema>::name),
        success: &[(200, "the handler returned: the invocation report")],
        answer: Answer::Json(<Report as ToSchema>::name),
        errors: TEST_ERRORS,
    },
    Route {
        method: Method::Get,
        path: "/v1/functions/{name}/logs",
        operation_id: "functionLogs",
        tag: "invocations",
        summary: "a function's invocation records (output, outcome, timings)",
        query: Query::FunctionRecords,
        body: Body::None,
        success: &[(200, "the function's invocation records, oldest first")],
        answer: Answer::Json(<InvocationList as ToSchema>::name),
        errors: &[E::InvalidRequest, E::FunctionNotFound, E::Internal],
    },
    Route {
        method: Method::Get,
        path: "/v1/invocations",
        operation_id: "listInvocations",
        tag: "invocations",
        summary: "invocation records, of all functions or `?function=`",
        query: Query::Records,
        body: Body::None,
        success: &[(200, "invocation records, oldest first")],
        answer: Answer::Json(<InvocationList as ToSchema>::name),
        errors: &[E::InvalidRequest, E::Internal],
    },
    Route {
        method: Method::Get,
        path: "/metrics",
        operation_id: "metrics",
        tag: "daemon",
        summary: "Prometheus metrics (text format)",
        query: Query::None,
        body: Body::None,
        success: &[(200, "Prometheus text format, version 0.0.4")],
        answer: Answer::Metrics,
        errors: &[],
    },
    Route {
        method: Method::Get,
        path: "/v1/pools",
        operation_id: "listPools",
        tag: "pools",
        summary: "warm pools, one per runtime and backend",
        query: Query::None,
        body: Body::None,
        success: &[(200, "every pool")],
        answer: Answer::Json(<PoolList as ToSchema>::name),
        errors: &[],
    },
    Route {
        method: Method::Get,
        path: "/v1/pools/{runtime}",
        operation_id: "getPool",
        tag: "pools",
        summary: "one pool (`?backend=`, default the first)",
        query: Query::Pool,
        body: Body::None,
        success: &[(200, "the pool")],
        answer: Answer::Json(<PoolStatus as ToSchema>::name),
        errors: &[E::InvalidRequest, E::PoolNotFound],
    },
    Route {
        method: Method::Put,
        path: "/v1/pools/{runtime}",
        operation_id: "resizePool",
        tag: "pools",
        summary: "resize a pool (`?backend=`)",
        query: Query::Pool,
        body: Body::Json(<PoolSize as ToSchema>::name),
        success: &[(200, "the pool's new state")],
        answer: Answer::Json(<PoolStatus as ToSchema>::name),
        errors: &[
            E::InvalidRequest,
            E::InvalidJson,
            E::PoolNotFound,
            E::PayloadTooLarge,
        ],
    },
    Route {
        method: Method::Get,
        path: "/v1/sandboxes",
        operation_id: "listSandboxes",
        tag: "sandboxes",
        summary: "every sandbox, idle or busy",
        query: Query::None,
        body: Body::None,
        success: &[(200, "every sandbox of every pool")],
        answer: Answer::Json(<SandboxList as ToSchema>::name),
        errors: &[],
    },
    Route {
        method: Method::Post,
        path: "/v1/sandboxes",
        operation_id: "adoptSandbox",
        tag: "sandboxes",
        summary: "adopt a sandbox someone else created (containerd, through `ember-runtime`)",
        query: Query::None,
        body: Body::Json(<AdoptRequest as ToSchema>::name),
        success: &[(201, "the sandbox is in its runtime's pool")],
        answer: Answer::Json(<Adopted as ToSchema>::name),
        errors: &[
            E::InvalidRequest,
            E::InvalidJson,
            E::PoolNotFound,
            E::SandboxExists,
            E::VersionMismatch,
            E::PayloadTooLarge,
            E::SandboxFailed,
            E::ShuttingDown,
        ],
    },
    Route {
        method: Method::Post,
        path: "/v1/sandboxes/{id}/thaw",
        operation_id: "thawSandbox",
        tag: "sandboxes",
        summary: "thaw a sandbox and keep it thawed (`ember-runtime` before an `exec` or `kill` of an adopted container)",
        query: Query::None,
        body: Body::None,
        success: &[(200, "the sandbox is thawed; emberd no longer freezes it")],
        answer: Answer::Json(<Thawed as ToSchema>::name),
        errors: &[E::SandboxNotFound, E::SandboxFailed],
    },
    Route {
        method: Method::Post,
        path: "/v1/sandboxes/{id}/kill",
        operation_id: "killSandboxInvocation",
        tag: "sandboxes",
        summary: "end the invocation running in a sandbox",
        query: Query::None,
        body: Body::None,
        success: &[(200, "the invocation that was ended")],
        answer: Answer::Json(<Killed as ToSchema>::name),
        errors: &[E::SandboxNotFound, E::NotRunning],
    },
];
