//! The OpenAPI 3.1 document of emberd's API, as `GET /v1/openapi.json`
//! serves it, so that a client in any language can be generated from it
//! (as Firecracker publishes `firecracker.yaml` and Docker its Engine API).
//!
//! The schemas are derived from this crate's wire types (`utoipa`'s
//! `ToSchema`, which follows their serde attributes), so they cannot drift
//! from what emberd sends. What the types cannot say, which route takes and
//! answers which of them, is the table [`ROUTES`]; the error codes each
//! route may answer are listed there too, and grouped by status in the
//! document.
//!
//! Statuses: which HTTP status an [`ErrorCode`] gets is the server's
//! business (`ember-server`'s `error.rs`); it hands its mapping in, so
//! the document says what emberd answers and this crate decides none.
//!
//! ```
//! let status = |_code: ember_api::ErrorCode| 500;
//! let doc = ember_api::openapi::document(status);
//! assert!(doc["paths"]["/v1/functions/{name}/invoke"]["post"].is_object());
//! assert!(doc["components"]["schemas"]["Report"].is_object());
//! ```

mod build;
mod routes;

pub use build::DEPLOY_ARCHIVE_TYPES;
pub use routes::{Answer, Body, Method, Query, Route, ROUTES};

/// The HTTP status of an error code, as the server maps it.
pub type StatusOf = fn(ErrorCode) -> u16;

use crate::error::{ErrorBody, ErrorCode};
use crate::function::{Deleted, DeployOptions, FunctionInfo, FunctionList, FunctionRecord};
use crate::health::Health;
use crate::invocation::Report;
use crate::pool::{
    AdoptRequest, Adopted, Killed, PoolList, PoolQuery, PoolSize, PoolStatus, SandboxList, Thawed,
};
use crate::records::{InvocationList, RecordQuery};
use crate::session::{SessionInfo, SessionList, SessionQuery};
use std::borrow::Cow;
use std::collections::BTreeMap;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::path::{HttpMethod, Operation, Parameter, ParameterIn, Paths};
use utoipa::openapi::request_body::RequestBody;
use utoipa::openapi::schema::{
    AdditionalProperties, Components, Object, ObjectBuilder, Schema, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    Content, Info, OpenApi, OpenApiBuilder, Ref, RefOr, Required, Response, Responses, Server, Tag,
};
use utoipa::{IntoParams, PartialSchema, ToSchema};
use ErrorCode as E;

/// The document `GET /v1/openapi.json` serves.
pub fn document(status: StatusOf) -> serde_json::Value {
    // Serializing plain data (maps, strings, numbers) cannot fail.
    serde_json::to_value(openapi(status)).unwrap_or_default()
}

/// The document as `utoipa`'s model.
pub fn openapi(status: StatusOf) -> OpenApi {
    let mut paths = Paths::new();
    for route in ROUTES {
        paths.add_path_operation(
            route.path,
            vec![route.http_method()],
            route.operation(status),
        );
    }
    let mut components = Components::new();
    components.schemas = build::schemas();
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    let tags = [
        "daemon",
        "functions",
        "invocations",
        "sessions",
        "pools",
        "sandboxes",
    ]
    .into_iter()
    .map(Tag::new);
    OpenApiBuilder::new()
        .info(
            Info::builder()
                .title("emberd API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(DESCRIPTION))
                .build(),
        )
        .servers(Some([Server::builder()
            .url("http://ember")
            .description(Some(
                "emberd's Unix socket (/run/ember/ember.sock; the host is ignored), or \
                 `emberd --http 127.0.0.1:PORT` with a bearer token",
            ))
            .build()]))
        .paths(paths)
        .components(Some(components))
        // No credentials on the Unix socket; the bearer token over HTTP.
        .security(Some([
            SecurityRequirement::default(),
            SecurityRequirement::new("bearer", Vec::<String>::new()),
        ]))
        .tags(Some(tags))
        .build()
}

const DESCRIPTION: &str = "HTTP/1.1 with JSON bodies on emberd's Unix socket (docs/api.md). \
Every error answer is an `ErrorBody` (`{\"error\": {\"code\", \"message\"}}`) whose `code` is one \
of `ErrorCode`; each operation lists the codes it may answer per status (`x-error-codes`). Any \
other path answers `404 not_found`, a known path with another method `405 method_not_allowed`. \
Over HTTP (`emberd --http`) every request needs `Authorization: Bearer <token>` or gets \
`401 unauthorized`.";

/// Codes no route lists because they answer for no route: an unknown path
/// or a known path's other methods.
pub const ROUTING_ERRORS: &[ErrorCode] = &[E::NotFound, E::MethodNotAllowed];
