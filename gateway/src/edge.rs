//! The gateway's edge: what every request meets before a handler runs, and the shape of
//! every error answer after. Four middlewares, applied once in [`crate::app`]:
//! - [`cut_request_id`]: an `x-request-id` longer than [`MAX_REQUEST_ID`] characters is cut
//!   before it is echoed or logged (one that is not printable ASCII is replaced);
//! - [`request_span`]: the request's span, with its request id and trace id (so every log
//!   line names them), and its [`Origin`] in its extensions (so the events it writes do);
//! - [`refuse_nul_text`]: a NUL character, which no text column accepts, in a path (404),
//!   a query string or a JSON body (422; 400 on the purchases routes, whose validation
//!   answers 400) is the client's error, answered before any handler
//!   or database sees it (GraphQL arguments and variables are checked by
//!   [`crate::graphql::limits`]);
//! - [`json_errors`]: every 4xx and 5xx answer has a JSON body, in the shape of the system
//!   that owns the route ([`ErrorShape`]), whatever produced it (an unknown route, a wrong
//!   method, a body over the limit, a timeout, an extractor's plain-text rejection).

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use domain::telemetry::Origin;
use serde_json::Value;
use tracing::Instrument;

use crate::config::HttpConfig;
use crate::errors::graphql_error_response;
use crate::REQUEST_ID_HEADER;

/// Longest `x-request-id` kept, in characters.
pub const MAX_REQUEST_ID: usize = 128;

/// Longest error text kept from a plain-text error body.
const MAX_ERROR_TEXT: usize = 1024;

/// Cuts a long `x-request-id`, and drops one that is not printable ASCII (the gateway then
/// makes its own).
pub async fn cut_request_id(mut request: Request, next: Next) -> Response {
    if let Some(value) = request.headers().get(REQUEST_ID_HEADER) {
        let kept = value
            .to_str()
            .ok()
            .filter(|text| !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_graphic()))
            .map(|text| &text[..text.len().min(MAX_REQUEST_ID)])
            .and_then(|text| HeaderValue::from_str(text).ok());
        match kept {
            Some(kept) => request.headers_mut().insert(REQUEST_ID_HEADER, kept),
            None => request.headers_mut().remove(REQUEST_ID_HEADER),
        };
    }
    next.run(request).await
}

/// Runs the request in its `http` span (method, matched route, request id, trace id), so
/// every log line written while it runs names the request and its trace, and gives it its
/// [`Origin`] (the span's trace context, a fresh one when no traces are exported, and its
/// request id) in its extensions, for the handlers that write events: the outbox carries it
/// on to the relay and the consumer.
pub async fn request_span(mut request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let span = tracing::info_span!(
        "http",
        method = %request.method(),
        route,
        request_id = request_id.as_deref().unwrap_or_default(),
        trace_id = tracing::field::Empty,
    );
    let origin = Origin::of_span(&span, request_id);
    span.record("trace_id", origin.trace_id());
    request.extensions_mut().insert(origin);
    next.run(request).instrument(span).await
}

/// Whether percent-encoded text holds an encoded NUL (`%00`).
fn encodes_nul(text: &str) -> bool {
    text.as_bytes().windows(3).any(|window| window == b"%00")
}

/// Whether a JSON value holds a string (or key) with a NUL character.
fn json_holds_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(json_holds_nul),
        Value::Object(fields) => fields
            .iter()
            .any(|(key, value)| key.contains('\0') || json_holds_nul(value)),
        _ => false,
    }
}

/// Refuses NUL characters in the path (404: no route has such a name), the query string
/// and JSON bodies (422). Bodies are parsed only when they say `\u0000` somewhere, to tell
/// an escaped backslash from a NUL; the body limit still applies (this runs inside it).
pub async fn refuse_nul_text(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if encodes_nul(&path) {
        return error_answer(&path, StatusCode::NOT_FOUND, "Not Found");
    }
    let bad_input = ErrorShape::of(&path).bad_input_status();
    if request.uri().query().is_some_and(encodes_nul) {
        return error_answer(
            &path,
            bad_input,
            "the query string must not contain a NUL character (%00)",
        );
    }
    // Whatever the declared content type: the order routes read their body as JSON
    // without asking for one.
    if path == crate::GRAPHQL_PATH {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = match to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return error_answer(
                &path,
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is larger than BODY_LIMIT_BYTES allows, or could not be read",
            )
        }
    };
    let mentions_nul = bytes.windows(6).any(|window| window == b"\\u0000");
    if mentions_nul
        && serde_json::from_slice::<Value>(&bytes).is_ok_and(|value| json_holds_nul(&value))
    {
        return error_answer(
            &path,
            bad_input,
            "text must not contain a NUL character (\\u0000)",
        );
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The error body shapes of the systems whose routes the gateway serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    /// `{"errors": [{"message", "extensions": {"code"}}]}`: `/graphql`.
    Graphql,
    /// `{"detail": "<message>"}`: the accounts pipeline service (FastAPI), `/api/...`
    /// outside `/api/v1`.
    Accounts,
    /// `{"status": "Error", "message"}`: the purchases server (`/`, `/buy`,
    /// `/getAllUserBuys`, `/buyList`).
    Purchases,
    /// `{"error": "<reason>", "detail"}`: the CRM apps' search API (`/search`).
    CrmSearch,
    /// `{"error": "<code>", "message"}`: the order service, and every other route.
    Orders,
}

impl ErrorShape {
    /// The status the owning system gives input it refuses: 400 for the purchases server
    /// (as its own validation answers), 422 elsewhere.
    pub fn bad_input_status(self) -> StatusCode {
        match self {
            Self::Purchases => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// The shape of the system that owns `path`.
    pub fn of(path: &str) -> Self {
        let first = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        match first {
            "graphql" => Self::Graphql,
            "api" if !path.starts_with("/api/v1/") && path != "/api/v1" => Self::Accounts,
            "" | "buy" | "getAllUserBuys" | "buyList" => Self::Purchases,
            "search" => Self::CrmSearch,
            _ => Self::Orders,
        }
    }
}

/// Codes by status: GraphQL's `extensions.code`, and the order service's `error`.
fn codes(status: StatusCode) -> (&'static str, &'static str) {
    match status {
        StatusCode::BAD_REQUEST => ("BAD_REQUEST", "bad_request"),
        StatusCode::UNAUTHORIZED => ("UNAUTHORIZED", "unauthorized"),
        StatusCode::FORBIDDEN => ("FORBIDDEN", "forbidden"),
        StatusCode::NOT_FOUND => ("NOT_FOUND", "not_found"),
        StatusCode::METHOD_NOT_ALLOWED => ("METHOD_NOT_ALLOWED", "method_not_allowed"),
        StatusCode::PAYLOAD_TOO_LARGE => ("BODY_LIMIT_EXCEEDED", "body_too_large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("UNSUPPORTED_MEDIA_TYPE", "unsupported_media_type"),
        StatusCode::UNPROCESSABLE_ENTITY => ("BAD_USER_INPUT", "validation_failed"),
        StatusCode::TOO_MANY_REQUESTS => ("RATE_LIMITED", "rate_limited"),
        StatusCode::SERVICE_UNAVAILABLE => ("SERVICE_UNAVAILABLE", "service_unavailable"),
        StatusCode::GATEWAY_TIMEOUT => ("TIMEOUT", "timeout"),
        status if status.is_client_error() => ("BAD_REQUEST", "bad_request"),
        _ => ("INTERNAL_SERVER_ERROR", "internal_error"),
    }
}

/// An error answer in the shape of the system that owns `path`.
pub fn error_answer(path: &str, status: StatusCode, message: &str) -> Response {
    let (graphql_code, rest_code) = codes(status);
    match ErrorShape::of(path) {
        ErrorShape::Graphql => graphql_error_response(status, graphql_code, message),
        ErrorShape::Accounts => crate::rest::accounts::failure(status, message),
        ErrorShape::Purchases => crate::rest::purchases::failure(status, message),
        ErrorShape::CrmSearch => crate::rest::crm::failure(
            status,
            status.canonical_reason().unwrap_or("Error"),
            message,
        ),
        ErrorShape::Orders => crate::rest::orders::failure(status, rest_code, message),
    }
}

/// What a bodiless or plain-text error says: its own text when it has one (an extractor's
/// rejection names what was wrong), else what the limit or status means.
fn error_message(status: StatusCode, text: &str, http: &HttpConfig) -> String {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => format!(
            "the request body is larger than BODY_LIMIT_BYTES ({} bytes)",
            http.body_limit_bytes
        ),
        StatusCode::GATEWAY_TIMEOUT => format!(
            "the request did not finish within REQUEST_TIMEOUT_SECS ({} s)",
            http.request_timeout_secs
        ),
        _ if !text.trim().is_empty() => {
            let text = text.trim();
            let end = (0..=text.len().min(MAX_ERROR_TEXT))
                .rev()
                .find(|index| text.is_char_boundary(*index))
                .unwrap_or(0);
            text[..end].to_owned()
        }
        _ => status.canonical_reason().unwrap_or("Error").to_owned(),
    }
}

/// Gives every 4xx and 5xx answer that is not JSON a JSON body in the route owner's shape;
/// headers such as `Allow` and `Retry-After` are kept.
pub async fn json_errors(
    State(http): State<Arc<HttpConfig>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.contains("json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = to_bytes(body, MAX_ERROR_TEXT * 4)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    let answer = error_answer(&path, status, &error_message(status, &text, &http));
    let (answer_parts, answer_body) = answer.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        answer_parts.headers[header::CONTENT_TYPE].clone(),
    );
    Response::from_parts(parts, answer_body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_answered_in_their_owners_error_shape() {
        assert_eq!(ErrorShape::of("/graphql"), ErrorShape::Graphql);
        assert_eq!(ErrorShape::of("/graphql/ws"), ErrorShape::Graphql);
        assert_eq!(ErrorShape::of("/api/customers/7"), ErrorShape::Accounts);
        assert_eq!(ErrorShape::of("/api/nope"), ErrorShape::Accounts);
        assert_eq!(ErrorShape::of("/api/v1/orders"), ErrorShape::Orders);
        assert_eq!(ErrorShape::of("/customers/1"), ErrorShape::Orders);
        assert_eq!(ErrorShape::of("/buy"), ErrorShape::Purchases);
        assert_eq!(ErrorShape::of("/search"), ErrorShape::CrmSearch);
        assert_eq!(ErrorShape::of("/buyList/ann"), ErrorShape::Purchases);
        assert_eq!(ErrorShape::of("/"), ErrorShape::Purchases);
        assert_eq!(ErrorShape::of("/nope"), ErrorShape::Orders);
    }

    #[test]
    fn encoded_and_escaped_nul_characters_are_found() {
        assert!(encodes_nul("/buyList/a%00b"));
        assert!(!encodes_nul("/buyList/a%200"));
        assert!(json_holds_nul(&serde_json::json!({"a": [1, "x\u{0}"]})));
        assert!(!json_holds_nul(
            &serde_json::from_str::<Value>(r#"{"a": "\\u0000"}"#).unwrap()
        ));
    }
}
