//! The REST routes' OpenAPI document and its page: `GET /openapi.json` (OpenAPI 3.1, made
//! once at start from the handlers' own `#[utoipa::path]` descriptions, as the router
//! registers them, so the two cannot disagree) and `GET /docs` (Swagger UI from the npm
//! registry's `swagger-ui-dist`, built by `make graphiql` next to GraphiQL's bundle and
//! served by the gateway itself, so it works offline).
//!
//! The answers the gateway's edge may give any route (401 and 403 from the authorization,
//! 413 from the body limit, 422 or 400 for NUL text, 429 from the rate limit, 504 from the
//! timeout, 404 for a NUL in a path) are added here to every operation, in the error shape
//! of the system that owns its path ([`ErrorShape`]), as [`crate::edge::json_errors`]
//! writes them.

use std::borrow::Cow;
use std::path::PathBuf;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder};
use utoipa::openapi::security::{SecurityRequirement, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{ContentBuilder, InfoBuilder, OpenApi, Ref, RefOr, ResponseBuilder};
use utoipa::ToSchema;

use crate::edge::ErrorShape;
use crate::graphiql::{all_built, serve_built_file, BuiltFile};

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";
/// Where its page is served.
pub const DOCS_PATH: &str = "/docs";

/// Swagger UI's files, copied from `swagger-ui-dist` by `make graphiql`.
const SWAGGER_UI: [BuiltFile; 2] = [
    BuiltFile {
        name: "swagger-ui.js",
        content_type: "text/javascript; charset=utf-8",
    },
    BuiltFile {
        name: "swagger-ui.css",
        content_type: "text/css; charset=utf-8",
    },
];

/// The systems whose routes the document describes, as its tags.
const TAGS: [(&str, &str); 5] = [
    ("accounts", "The accounts pipeline service (FastAPI): `{\"detail\"}` errors"),
    ("crm", "The CRM apps' search API: `{\"error\", \"detail\"}` errors"),
    ("orders", "The order service and customer service: `{\"error\", \"message\"}` errors"),
    ("purchases", "The customer management server and purchases API: `{\"status\": \"Error\", \"message\"}` errors"),
    ("operations", "The gateway's probes and metrics"),
];

/// The error answers the edge may give every route: status, and what it means.
const EDGE_ANSWERS: [(StatusCode, &str); 5] = [
    (StatusCode::UNAUTHORIZED, "Credentials are wrong, or the route needs a role and none was given (AUTH_API_KEYS_FILE, AUTH_JWT_*); a `WWW-Authenticate: Bearer` header says so"),
    (StatusCode::FORBIDDEN, "The caller is known but lacks the route's role"),
    (StatusCode::PAYLOAD_TOO_LARGE, "The body is larger than BODY_LIMIT_BYTES"),
    (StatusCode::TOO_MANY_REQUESTS, "Over RATE_LIMIT_PER_SECOND for this caller; `Retry-After` says when to try again"),
    (StatusCode::GATEWAY_TIMEOUT, "The request did not finish within REQUEST_TIMEOUT_SECS"),
];

/// The document for `routes` (the paths and schemas the handlers described), completed
/// with what the edge adds.
pub fn document(mut api: OpenApi) -> OpenApi {
    api.info = InfoBuilder::new()
        .title("Customer data hub: REST routes")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "The routes of the five absorbed systems, answering as their originals did (each \
             in its own error shape), and the gateway's probes. GraphQL is on `/graphql` \
             (its schema: `schema.graphql`, or GraphiQL on `GET /graphql`).",
        ))
        .build();
    api.tags = Some(
        TAGS.iter()
            .map(|(name, description)| {
                TagBuilder::new()
                    .name(*name)
                    .description(Some(*description))
                    .build()
            })
            .collect(),
    );
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "apiKey",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new(
            crate::auth::API_KEY_HEADER,
        ))),
    );
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .build(),
        ),
    );
    // Anonymous callers have the roles AUTH_ANONYMOUS_ROLES gives them: credentials are
    // optional.
    api.security = Some(vec![
        SecurityRequirement::default(),
        SecurityRequirement::new("apiKey", Vec::<String>::new()),
        SecurityRequirement::new("bearer", Vec::<String>::new()),
    ]);
    for (path, item) in api.paths.paths.iter_mut() {
        let shape = ErrorShape::of(path);
        let Some((schema, body)) = error_schema(shape) else {
            continue;
        };
        components
            .schemas
            .entry(schema.to_string())
            .or_insert_with(body);
        let mut answers: Vec<(StatusCode, &str)> = EDGE_ANSWERS.to_vec();
        answers.push((
            shape.bad_input_status(),
            "The query string or the JSON body holds a NUL character (`\\u0000`)",
        ));
        if path.contains('{') {
            answers.push((
                StatusCode::NOT_FOUND,
                "A path parameter holds a NUL character (`%00`)",
            ));
        }
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            add_answers(operation, &schema, &answers);
        }
    }
    api
}

/// An error body's component: its name, and how to make its schema.
type ErrorComponent = (Cow<'static, str>, fn() -> RefOr<Schema>);

/// The error body of `shape`; GraphQL's is not a REST route's.
fn error_schema(shape: ErrorShape) -> Option<ErrorComponent> {
    fn of<T: ToSchema>() -> ErrorComponent {
        (T::name(), T::schema)
    }
    match shape {
        ErrorShape::Accounts => Some(of::<crate::rest::accounts::AccountsError>()),
        ErrorShape::CrmSearch => Some(of::<crate::rest::crm::CrmSearchError>()),
        ErrorShape::Orders => Some(of::<crate::rest::orders::OrderServiceError>()),
        ErrorShape::Purchases => Some(of::<crate::rest::purchases::PurchasesError>()),
        ErrorShape::Graphql => None,
    }
}

/// Adds each answer the operation does not describe already.
fn add_answers(operation: &mut Operation, schema: &str, answers: &[(StatusCode, &str)]) {
    for (status, description) in answers {
        operation
            .responses
            .responses
            .entry(status.as_str().to_owned())
            .or_insert_with(|| {
                RefOr::T(
                    ResponseBuilder::new()
                        .description(*description)
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name(schema)))
                                .build(),
                        )
                        .build(),
                )
            });
    }
}

/// The document, serialized once, and where Swagger UI's files are.
#[derive(Clone)]
pub struct Docs {
    json: Bytes,
    /// The directory `make graphiql` writes the bundles to (`GRAPHIQL_ASSETS_DIR`).
    pub assets_dir: PathBuf,
}

impl Docs {
    /// Serves `api` (already completed by [`document`]).
    pub fn new(api: &OpenApi, assets_dir: PathBuf) -> Self {
        let json = api
            .to_pretty_json()
            .expect("an OpenAPI document always serializes");
        Self {
            json: Bytes::from(json),
            assets_dir,
        }
    }

    /// `GET /openapi.json`.
    pub async fn openapi(State(docs): State<Docs>) -> Response {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            docs.json,
        )
            .into_response()
    }

    /// `GET /docs`: Swagger UI over the document, or how to build it.
    pub async fn page(State(docs): State<Docs>) -> Html<String> {
        if !all_built(&docs.assets_dir, &SWAGGER_UI) {
            return Html(format!(
                "<!doctype html><meta charset=utf-8><title>Customer data hub: REST routes</title>\
                 <h1>The API docs page is not built</h1>\
                 <p>Swagger UI is not in <code>{}</code> (<code>GRAPHIQL_ASSETS_DIR</code>). \
                 Build it from the repository with <code>make graphiql</code> (npm ci, from \
                 the npm registry). The document itself is always at \
                 <a href=\"{OPENAPI_PATH}\"><code>{OPENAPI_PATH}</code></a>.</p>",
                crate::graphiql::html_escape(&docs.assets_dir.display().to_string()),
            ));
        }
        // validatorUrl: null keeps Swagger UI from asking validator.swagger.io (offline).
        Html(format!(
            "<!doctype html><html lang=en><head><meta charset=utf-8>\
             <meta name=viewport content=\"width=device-width, initial-scale=1\">\
             <title>Customer data hub: REST routes</title><link rel=icon href=\"data:,\">\
             <link rel=stylesheet href=\"{DOCS_PATH}/swagger-ui.css\"></head>\
             <body><div id=docs>Loading the API docs...</div>\
             <script src=\"{DOCS_PATH}/swagger-ui.js\"></script>\
             <script>window.ui = SwaggerUIBundle({{url: \"{OPENAPI_PATH}\", dom_id: \"#docs\", \
             deepLinking: true, validatorUrl: null}});</script></body></html>"
        ))
    }

    /// `GET /docs/{name}`: one of Swagger UI's files; 404 for anything else.
    pub async fn asset(State(docs): State<Docs>, UrlPath(name): UrlPath<String>) -> Response {
        serve_built_file(&docs.assets_dir, &SWAGGER_UI, &name).await
    }
}
