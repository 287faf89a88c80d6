//! The GraphQL HTTP endpoint, `POST /graphql`: the one place per-request GraphQL policy
//! goes. Every query and mutation sent over HTTP passes through [`execute`], which reads the
//! request (a single operation or a batch), attaches the per-request data resolvers may read
//! (the request's [`Origin`], see [`request_origin`], and the caller's [`Identity`], which
//! the authorization extension checks), and runs the schema. Per-request policy belongs
//! here or in the schema's extensions, before anything runs, so that no resolver has to
//! know about it. Subscriptions are served by [`crate::subscriptions`], GraphiQL by
//! `GET /graphql`.

use async_graphql::http::{create_multipart_mixed_stream, is_accept_multipart_mixed};
use async_graphql::{BatchRequest, BatchResponse};
use async_graphql_axum::GraphQLResponse;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::StreamExt;

use super::documents::RepeatedOperations;
use super::limits::{self, LimitExceeded, Limits};
use super::HubSchema;
use crate::auth::Identity;
use crate::errors::graphql_error_response;
use domain::telemetry::Origin;

/// How long a `multipart/mixed` response may stay silent before a heartbeat part is sent.
const MULTIPART_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(30);

/// What the GraphQL endpoint needs: the schema, and the limits a batch meets as a whole.
#[derive(Clone)]
pub struct GraphqlEndpoint {
    /// The schema operations run against.
    pub schema: HubSchema,
    /// The same limits the schema checks per document, applied to batches here.
    pub limits: Limits,
    /// The path a single request sent again takes around the schema's extensions.
    pub repeated: Option<RepeatedOperations>,
}

/// The request behind an operation (its trace context and `x-request-id`), for the events
/// a mutation writes; every operation of an HTTP batch gets a copy. Over WebSocket there is
/// no request: the operation's own span gives the trace context.
pub fn request_origin(ctx: &async_graphql::Context<'_>) -> Origin {
    ctx.data_opt::<Origin>()
        .cloned()
        .unwrap_or_else(|| Origin::current(None))
}

/// Whether a request's body is declared JSON (`application/json` or any `+json` type).
/// Anything else is refused: the content types a browser may send cross-site without a
/// preflight (`text/plain`, forms, multipart) never run an operation, which is the CSRF
/// protection the major gateways apply.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|essence| essence.trim().to_ascii_lowercase())
        .is_some_and(|essence| essence == "application/json" || essence.ends_with("+json"))
}

/// How many threads [`graphql_runtime`] starts with (`GATEWAY_GRAPHQL_THREADS`); set once,
/// before the first operation runs.
static GRAPHQL_THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Sets the number of threads GraphQL operations run on. Only the first call counts, and
/// only before the first operation runs.
pub fn size_graphql_runtime(threads: usize) {
    let _ = GRAPHQL_THREADS.set(threads.max(1));
}

/// The runtime queries and mutations run on, apart from the one that accepts connections
/// and serves `/healthz`, the REST routes and subscriptions: an operation that keeps its
/// threads busy (within the limits, the costliest take tens of milliseconds) then shares
/// the CPU with the rest through the operating system's scheduler instead of making every
/// other request wait for a runtime thread. One per process, sized by
/// [`size_graphql_runtime`] (else [`crate::config::default_graphql_threads`]).
fn graphql_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        let threads = *GRAPHQL_THREADS.get_or_init(crate::config::default_graphql_threads);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("graphql")
            .enable_all()
            .build()
            .expect("the GraphQL runtime starts (threads can be created)")
    })
}

/// How many worker threads run GraphQL operations (starting their runtime if need be).
pub fn graphql_runtime_threads() -> usize {
    graphql_runtime().metrics().num_workers()
}

/// Aborts the operation when its request is dropped (the client left, or the request
/// timed out), so it stops at its next await instead of running on for nobody.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `operation` on [`graphql_runtime`] and answers with its results.
async fn run_on_graphql_runtime(
    operation: impl std::future::Future<Output = BatchResponse> + Send + 'static,
) -> Response {
    use tracing::instrument::{Instrument, WithSubscriber};
    // The request's span and subscriber go along, so logs and traces (and the traceparent
    // an operation writes into the outbox) stay the request's.
    let operation = operation
        .instrument(tracing::Span::current())
        .with_current_subscriber();
    let mut task = AbortOnDrop(graphql_runtime().spawn(operation));
    match (&mut task.0).await {
        Ok(response) => GraphQLResponse(response).into_response(),
        Err(error) => {
            tracing::error!(%error, "a GraphQL operation panicked or was cancelled");
            graphql_error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_SERVER_ERROR",
                "internal error",
            )
        }
    }
}

/// Checks a batch as a whole: how many operations it holds, and their complexity together
/// (each document is parsed here once; the schema reuses the parsed document).
fn check_batch(batch: &mut BatchRequest, limits: &Limits) -> Result<(), LimitExceeded> {
    let BatchRequest::Batch(requests) = batch else {
        return Ok(());
    };
    let operations = u64::try_from(requests.len()).unwrap_or(u64::MAX);
    limits.apply(limits.check_batch(operations, 0))?;
    let complexity = requests
        .iter_mut()
        .filter_map(limits::request_cost)
        .fold(0u64, |total, cost| total.saturating_add(cost.complexity));
    limits.apply(limits.check_batch(operations, complexity))
}

/// Runs the operation or batch of operations in a `POST /graphql`. The body must be JSON
/// (one request or an array of them; other content types get 415, a body that is not a
/// GraphQL request 400, both as GraphQL errors). A batch over its size or complexity limit
/// is refused whole, before any of it runs. A client that accepts `multipart/mixed;
/// boundary="graphql"; subscriptionSpec="1.0"` (subscriptions over HTTP) gets one
/// operation's results as a multipart stream; batches are refused there with 400.
pub async fn execute(
    State(endpoint): State<GraphqlEndpoint>,
    identity: Option<Extension<Identity>>,
    origin: Option<Extension<Origin>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !is_json(&headers) {
        return graphql_error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "a GraphQL request is sent as JSON, with Content-Type: application/json",
        );
    }
    let mut batch: BatchRequest = match serde_json::from_slice(&body) {
        Ok(batch) => batch,
        Err(error) => {
            return graphql_error_response(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                &format!("the body is not a GraphQL request: {error}"),
            )
        }
    };
    if let Some(Extension(origin)) = origin {
        batch = batch.data(origin);
    }
    if let Some(Extension(identity)) = identity {
        batch = batch.data(identity);
    }
    if let Err(exceeded) = check_batch(&mut batch, &endpoint.limits) {
        return GraphQLResponse(
            async_graphql::Response::from_errors(vec![exceeded.to_server_error()]).into(),
        )
        .into_response();
    }
    let accepts_multipart_mixed = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(is_accept_multipart_mixed);
    if !accepts_multipart_mixed {
        let batch = match (batch, &endpoint.repeated) {
            (BatchRequest::Single(request), Some(repeated)) => match repeated.prepare(request) {
                Ok(repeated) => {
                    return run_on_graphql_runtime(async move { repeated.execute().await.into() })
                        .await
                }
                Err(request) => BatchRequest::Single(*request),
            },
            (batch, _) => batch,
        };
        let schema = endpoint.schema;
        return run_on_graphql_runtime(async move { schema.execute_batch(batch).await }).await;
    }
    let Ok(request) = batch.into_single() else {
        return graphql_error_response(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "a multipart/mixed response carries one operation, not a batch",
        );
    };
    let stream =
        create_multipart_mixed_stream(endpoint.schema.execute_stream(request), MULTIPART_HEARTBEAT)
            .map(Ok::<_, std::io::Error>);
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("multipart/mixed; boundary=graphql"),
    );
    response
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use axum::http::{Request, StatusCode};
    use axum::routing::post;
    use axum::Router;
    use serde_json::{json, Value};
    use tower::ServiceExt;

    use super::*;

    fn limits() -> Limits {
        crate::config::GatewayConfig::defaults().graphql.limits()
    }

    /// `POST /graphql` over the schema without runtime data: enough for `__typename`.
    async fn send(body: &str, accept: Option<&str>) -> (StatusCode, String, String) {
        send_as("application/json", body, accept).await
    }

    async fn send_as(
        content_type: &str,
        body: &str,
        accept: Option<&str>,
    ) -> (StatusCode, String, String) {
        let router = Router::new()
            .route("/graphql", post(execute))
            .with_state(GraphqlEndpoint {
                schema: crate::graphql::schema_builder().finish(),
                limits: limits(),
                repeated: None,
            });
        let mut request = Request::post("/graphql").header("content-type", content_type);
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let response = router
            .oneshot(request.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    fn first_error_code(body: &str) -> Value {
        let body: Value = serde_json::from_str(body).unwrap();
        body["errors"][0]["extensions"]["code"].clone()
    }

    #[tokio::test]
    async fn single_requests_and_batches_are_executed() {
        let (status, content_type, body) = send(r#"{"query": "{ __typename }"}"#, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/graphql-response+json");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body, json!({"data": {"__typename": "Query"}}));

        let batch = r#"[{"query": "{ __typename }"}, {"query": "{ nope }"}]"#;
        let (status, _, body) = send(batch, None).await;
        assert_eq!(status, StatusCode::OK);
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body[0], json!({"data": {"__typename": "Query"}}));
        assert!(body[1]["errors"].is_array(), "{body}");
    }

    #[tokio::test]
    async fn a_body_that_is_not_a_graphql_request_is_400_with_a_graphql_error() {
        let (status, content_type, body) = send("nonsense", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            content_type.starts_with("application/json"),
            "{content_type}"
        );
        assert_eq!(first_error_code(&body), json!("BAD_REQUEST"), "{body}");
        let (status, _, body) = send(r#"{"query": 1}"#, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(first_error_code(&body), json!("BAD_REQUEST"), "{body}");
    }

    #[tokio::test]
    async fn bodies_a_browser_may_send_cross_site_run_nothing() {
        let operation = r#"{"query": "mutation { retryFailedEvents }"}"#;
        for content_type in [
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            let (status, _, body) = send_as(content_type, operation, None).await;
            assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{content_type}");
            assert_eq!(first_error_code(&body), json!("UNSUPPORTED_MEDIA_TYPE"));
        }
        let (status, _, _) = send_as(
            "application/json; charset=utf-8",
            r#"{"query": "{ __typename }"}"#,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_batch_over_its_size_or_complexity_is_refused_whole() {
        let limits = limits();
        let one = r#"{"query": "{ __typename }"}"#;
        let size = usize::try_from(limits.max_batch).unwrap();
        let (status, _, body) = send(&format!("[{}]", vec![one; size].join(",")), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            serde_json::from_str::<Value>(&body)
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            size
        );

        let (_, _, body) = send(&format!("[{}]", vec![one; size + 1].join(",")), None).await;
        assert_eq!(
            first_error_code(&body),
            json!("BATCH_LIMIT_EXCEEDED"),
            "{body}"
        );

        // Each operation alone is within the complexity limit; together they are not.
        let fields = vec!["__typename"; 2_000].join(" ");
        let heavy = format!(r#"{{"query": "{{ {fields} }}"}}"#);
        let (_, _, body) = send(&format!("[{}]", [heavy.as_str(); 6].join(",")), None).await;
        assert_eq!(
            first_error_code(&body),
            json!("BATCH_COMPLEXITY_LIMIT_EXCEEDED"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn multipart_subscribers_get_a_multipart_stream_and_no_batches() {
        let accept = r#"multipart/mixed; boundary="graphql"; subscriptionSpec="1.0""#;
        let (status, content_type, body) =
            send(r#"{"query": "{ __typename }"}"#, Some(accept)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "multipart/mixed; boundary=graphql");
        assert!(
            body.contains(r#"{"data":{"__typename":"Query"}}"#),
            "{body}"
        );
        let (status, _, _) = send(r#"[{"query": "{ __typename }"}]"#, Some(accept)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}
