//! Building the document's operations, responses and schemas from the
//! route table and the wire types.

use super::*;

impl Route {
    pub(super) fn http_method(&self) -> HttpMethod {
        match self.method {
            Method::Get => HttpMethod::Get,
            Method::Put => HttpMethod::Put,
            Method::Post => HttpMethod::Post,
            Method::Delete => HttpMethod::Delete,
        }
    }

    /// The error codes of this route, `unauthorized` included.
    pub fn error_codes(&self) -> impl Iterator<Item = ErrorCode> + '_ {
        self.errors
            .iter()
            .copied()
            .chain(std::iter::once(E::Unauthorized))
    }

    pub(super) fn operation(&self, status: StatusOf) -> Operation {
        let mut op = Operation::builder()
            .operation_id(Some(self.operation_id))
            .summary(Some(self.summary))
            .tag(self.tag)
            .parameters(Some(self.parameters()));
        if let Some(body) = self.request_body() {
            op = op.request_body(Some(body));
        }
        let mut responses = Responses::new();
        for (status, description) in self.success {
            responses.responses.insert(
                status.to_string(),
                self.success_response(description).into(),
            );
        }
        let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
        for code in self.error_codes() {
            by_status.entry(status(code)).or_default().push(code);
        }
        for (status, codes) in by_status {
            responses
                .responses
                .insert(status.to_string(), error_response(&codes).into());
        }
        op.responses(responses).build()
    }

    fn parameters(&self) -> Vec<Parameter> {
        let mut params: Vec<Parameter> = self
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                Parameter::builder()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .description(Some(match name {
                        "name" => "function name: 1-64 of A-Z a-z 0-9 - _, starting with a letter or digit",
                        "runtime" => "language runtime: python3 or node",
                        "id" if self.path.starts_with("/v1/sessions") => {
                            "session id (POST /v1/functions/{name}/sessions)"
                        }
                        "id" => "sandbox id (GET /v1/sandboxes)",
                        _ => "",
                    }))
                    .schema(Some(String::schema()))
                    .build()
            })
            .collect();
        params.extend(match self.query {
            Query::None => vec![],
            Query::Deploy => DeployOptions::into_params(|| Some(ParameterIn::Query)),
            Query::Pool => PoolQuery::into_params(|| Some(ParameterIn::Query)),
            Query::Records => RecordQuery::into_params(|| Some(ParameterIn::Query)),
            Query::Sessions => SessionQuery::into_params(|| Some(ParameterIn::Query)),
            Query::FunctionRecords => RecordQuery::into_params(|| Some(ParameterIn::Query))
                .into_iter()
                .filter(|p| p.name != "function")
                .collect(),
        });
        params
    }

    fn request_body(&self) -> Option<RequestBody> {
        let json = |name: Cow<'static, str>| Content::new(Some(Ref::from_schema_name(name)));
        Some(
            match self.body {
                Body::None => return None,
                Body::Json(name) => RequestBody::builder()
                    .required(Some(Required::True))
                    .content("application/json", json(name())),
                Body::Event => RequestBody::builder()
                    .description(Some(
                        "the event: any JSON value, passed to the handler (an empty body means {})",
                    ))
                    .required(Some(Required::False))
                    .content("application/json", Content::new(Some(any_value()))),
                Body::Deploy => {
                    let tar_gz = ObjectBuilder::new()
                        .schema_type(Type::String)
                        .content_media_type("application/gzip")
                        .description(Some(
                            "a gzip-compressed tar of the function directory, files at the \
                         archive's root; the settings in the query string",
                        ))
                        .build();
                    let mut body = RequestBody::builder()
                        .required(Some(Required::True))
                        .description(Some(
                            "a tar.gz of the code with the settings in the query, or a JSON \
                         body with `code` and the settings (and no query)",
                        ));
                    for ctype in DEPLOY_ARCHIVE_TYPES {
                        body = body.content(*ctype, Content::new(Some(tar_gz.clone())));
                    }
                    body.content(
                        "application/json",
                        json(<DeployRequest as ToSchema>::name()),
                    )
                }
            }
            .build(),
        )
    }

    fn success_response(&self, description: &str) -> Response {
        let content = match self.answer {
            Answer::Json(name) => (
                "application/json",
                Content::new(Some(Ref::from_schema_name(name()))),
            ),
            Answer::OpenApi => (
                "application/json",
                Content::new(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Object)
                        .description(Some("an OpenAPI 3.1 document"))
                        .build(),
                )),
            ),
            Answer::Metrics => (
                "text/plain",
                Content::new(Some(ObjectBuilder::new().schema_type(Type::String).build())),
            ),
        };
        Response::builder()
            .description(description)
            .content(content.0, content.1)
            .build()
    }
}

/// The content types a deploy takes a tar.gz in.
pub const DEPLOY_ARCHIVE_TYPES: &[&str] = &[
    "application/gzip",
    "application/x-gzip",
    "application/x-tar+gzip",
    "application/octet-stream",
];

/// An error response of one status: an [`ErrorBody`], its codes named in
/// the description and in `x-error-codes`.
fn error_response(codes: &[ErrorCode]) -> Response {
    let description = codes
        .iter()
        .map(|c| format!("* `{c}`: {}", c.meaning()))
        .collect::<Vec<_>>()
        .join("\n");
    let names: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
    let mut response = Response::builder();
    if codes.contains(&ErrorCode::Overloaded) {
        // A refusal says when to come back.
        let seconds = utoipa::openapi::header::HeaderBuilder::new()
            .schema(Object::with_type(utoipa::openapi::schema::Type::Integer))
            .description(Some(
                "whole seconds to wait before retrying (at least 1; docs/api.md says how it is computed)",
            ))
            .build();
        response = response.header("Retry-After", seconds);
    }
    response
        .description(description)
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name(ErrorBody::name()))),
        )
        .extensions(Some(
            ExtensionsBuilder::new()
                .add("x-error-codes", serde_json::json!(names))
                .build(),
        ))
        .build()
}

fn any_value() -> Schema {
    Schema::Object(Object::with_type(
        utoipa::openapi::schema::SchemaType::AnyValue,
    ))
}

/// Every schema of the document: the types routes name and those they
/// contain.
pub(super) fn schemas() -> BTreeMap<String, RefOr<Schema>> {
    let mut all: Vec<(String, RefOr<Schema>)> = Vec::new();
    fn add<T: ToSchema>(all: &mut Vec<(String, RefOr<Schema>)>) {
        all.push((T::name().into_owned(), T::schema()));
        T::schemas(all);
    }
    add::<Health>(&mut all);
    add::<DeployRequest>(&mut all);
    add::<TestRequest>(&mut all);
    add::<FunctionRecord>(&mut all);
    add::<FunctionInfo>(&mut all);
    add::<FunctionList>(&mut all);
    add::<Deleted>(&mut all);
    add::<Report>(&mut all);
    add::<ErrorBody>(&mut all);
    add::<InvocationList>(&mut all);
    add::<PoolList>(&mut all);
    add::<PoolStatus>(&mut all);
    add::<PoolSize>(&mut all);
    add::<SandboxList>(&mut all);
    add::<AdoptRequest>(&mut all);
    add::<Adopted>(&mut all);
    add::<Killed>(&mut all);
    add::<Thawed>(&mut all);
    add::<SessionInfo>(&mut all);
    add::<SessionList>(&mut all);
    all.into_iter().collect()
}

impl PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        let description = ErrorCode::ALL
            .iter()
            .map(|c| format!("* `{c}`: {}", c.meaning()))
            .collect::<Vec<_>>()
            .join("\n");
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
            .description(Some(format!(
                "The stable `error.code` of an error answer (each operation lists its codes by status):\n{description}"
            )))
            .into()
    }
}

impl ToSchema for ErrorCode {}

/// Where a deploy's (or a test's) code comes from: exactly one of `path`,
/// `archive` and `git`.
#[derive(utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum DeployCode {
    /// A host directory, copied into the store (on the Unix socket only:
    /// over HTTP, `403 host_path_forbidden`).
    Path {
        /// An absolute path.
        path: String,
    },
    /// The code uploaded.
    Archive {
        /// A tar.gz of the code, base64.
        archive: String,
    },
    /// A git repository emberd clones as uid 65534 (on the Unix socket
    /// only: over HTTP, `403 host_path_forbidden`).
    Git { git: crate::function::GitCode },
}

/// The JSON body of a deploy (`Content-Type: application/json`): `code`
/// plus the settings of [`DeployOptions`]; unknown keys are refused.
pub struct DeployRequest;

impl PartialSchema for DeployRequest {
    fn schema() -> RefOr<Schema> {
        Schema::Object(with_options(
            "A deploy's JSON body: `code` (required) and the deploy settings (the query \
             parameters of a tar.gz deploy); unknown keys are refused.",
        ))
        .into()
    }
}

impl ToSchema for DeployRequest {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((DeployCode::name().into_owned(), DeployCode::schema()));
        // What it refers to (`GitCode`).
        DeployCode::schemas(schemas);
    }
}

/// The body of `POST /v1/test`: a deploy's JSON body plus `name` and
/// `event`.
pub struct TestRequest;

impl PartialSchema for TestRequest {
    fn schema() -> RefOr<Schema> {
        let mut object = with_options(
            "`POST /v1/test`: a deploy's JSON body (`code` required, the settings optional) \
             plus `name` (default `test`) and `event` (any JSON, default `{}`).",
        );
        object.properties.insert(
            "name".into(),
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("the function's name while it runs (default `test`)"))
                .into(),
        );
        let mut event = Object::with_type(utoipa::openapi::schema::SchemaType::AnyValue);
        event.description = Some("the event, any JSON (default `{}`)".into());
        object
            .properties
            .insert("event".into(), Schema::Object(event).into());
        RefOr::T(Schema::Object(object))
    }
}

impl ToSchema for TestRequest {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((DeployCode::name().into_owned(), DeployCode::schema()));
        // What it refers to (`GitCode`).
        DeployCode::schemas(schemas);
    }
}

/// [`DeployOptions`]' schema (all its properties optional, no others
/// allowed) with a required `code`.
fn with_options(description: &str) -> Object {
    let mut object = match DeployOptions::schema() {
        RefOr::T(Schema::Object(o)) => o,
        _ => Object::new(),
    };
    object.description = Some(description.into());
    object.properties.insert(
        "code".into(),
        Ref::from_schema_name(DeployCode::name()).into(),
    );
    object.required.push("code".into());
    object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
    object
}
