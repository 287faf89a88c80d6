//! The GraphQL HTTP endpoint, `POST /graphql`: the one place per-request GraphQL policy
//! goes. Every query and mutation sent over HTTP passes through [`execute`], which reads the
//! request (a single operation or a batch), attaches the per-request data resolvers may read
//! ([`RequestContext`]), and runs the schema. Authentication, persisted queries and
//! per-client limits belong here, before the schema runs, so that no resolver has to know
//! about them. Subscriptions are served by [`crate::subscriptions`], GraphiQL by `GET
//! /graphql`.

use async_graphql::http::{create_multipart_mixed_stream, is_accept_multipart_mixed};
use async_graphql_axum::rejection::GraphQLRejection;
use async_graphql_axum::{GraphQLBatchRequest, GraphQLResponse};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::HubSchema;
use crate::REQUEST_ID_HEADER;

/// How long a `multipart/mixed` response may stay silent before a heartbeat part is sent.
const MULTIPART_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(30);

/// What the gateway knows about the HTTP request behind a GraphQL operation; resolvers read
/// it with `ctx.data::<RequestContext>()`. Every operation of a batch gets a copy.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The request's `x-request-id`: the caller's, or the one the gateway generated.
    pub request_id: Option<String>,
}

impl RequestContext {
    fn from_headers(headers: &HeaderMap) -> Self {
        Self {
            request_id: headers
                .get(REQUEST_ID_HEADER)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned),
        }
    }
}

/// Runs the operation or batch of operations in a `POST /graphql`. Bodies are JSON (one
/// request or an array of them) or a multipart upload; a body that is not a GraphQL request
/// is answered 400. A client that accepts `multipart/mixed; boundary="graphql";
/// subscriptionSpec="1.0"` (subscriptions over HTTP) gets one operation's results as a
/// multipart stream; batches are refused there with 400, as async-graphql does.
pub async fn execute(
    State(schema): State<HubSchema>,
    headers: HeaderMap,
    request: GraphQLBatchRequest,
) -> Response {
    let batch = request
        .into_inner()
        .data(RequestContext::from_headers(&headers));
    let accepts_multipart_mixed = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(is_accept_multipart_mixed);
    if !accepts_multipart_mixed {
        return GraphQLResponse(schema.execute_batch(batch).await).into_response();
    }
    let request = match batch.into_single() {
        Ok(request) => request,
        Err(error) => return GraphQLRejection(error).into_response(),
    };
    let stream = create_multipart_mixed_stream(schema.execute_stream(request), MULTIPART_HEARTBEAT)
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

    /// `POST /graphql` over the schema without runtime data: enough for `__typename`.
    async fn send(body: &str, accept: Option<&str>) -> (StatusCode, String, String) {
        let router = Router::new()
            .route("/graphql", post(execute))
            .with_state(crate::graphql::schema_builder().finish());
        let mut request = Request::post("/graphql").header("content-type", "application/json");
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
    async fn a_body_that_is_not_a_graphql_request_is_400() {
        let (status, _, _) = send("nonsense", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
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
