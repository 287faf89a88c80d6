//! Errors mapped once: every failure is classified into an [`ErrorKind`], which fixes its
//! HTTP status (REST) and its `extensions.code` (GraphQL). Internal details are logged here
//! and never sent to clients.

use async_graphql::ErrorExtensions;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// The classes of failure a client can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong (argument out of range, malformed cursor).
    BadUserInput,
    /// A global id that this API did not issue.
    InvalidId,
    /// The thing asked for does not exist.
    NotFound,
    /// The customer an operation names does not exist.
    CustomerNotFound,
    /// An idempotency key replayed with a different request.
    IdempotencyKeyReused,
    /// A resume cursor older than what the source still keeps.
    CursorExpired,
    /// Missing or wrong credentials.
    Unauthorized,
    /// An upstream system failed or sent bad data.
    Upstream,
    /// A dependency (the database) is unreachable; retrying later may work.
    Unavailable,
    /// A bug or an unexpected failure on our side.
    Internal,
}

impl ErrorKind {
    /// The HTTP status for REST answers.
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadUserInput | Self::InvalidId => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound | Self::CustomerNotFound => StatusCode::NOT_FOUND,
            Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::CursorExpired => StatusCode::GONE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Upstream => StatusCode::BAD_GATEWAY,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The GraphQL `extensions.code`.
    pub fn code(self) -> &'static str {
        match self {
            Self::BadUserInput => "BAD_USER_INPUT",
            Self::InvalidId => "INVALID_ID",
            Self::NotFound => "NOT_FOUND",
            Self::CustomerNotFound => "CUSTOMER_NOT_FOUND",
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::CursorExpired => "CURSOR_EXPIRED",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Upstream => "UPSTREAM_ERROR",
            Self::Unavailable => "SERVICE_UNAVAILABLE",
            Self::Internal => "INTERNAL_SERVER_ERROR",
        }
    }
}

/// A classified error with the message a client may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Its class.
    pub kind: ErrorKind,
    /// Safe to show to the client.
    pub message: String,
}

impl ApiError {
    /// An error of `kind` with a client-facing message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl From<domain::Error> for ApiError {
    fn from(error: domain::Error) -> Self {
        use domain::Error;
        match &error {
            Error::Upstream(_) | Error::InvalidRecord(_) => {
                ApiError::new(ErrorKind::Upstream, error.to_string())
            }
            Error::InvalidInput { message, .. } => {
                ApiError::new(ErrorKind::BadUserInput, message.clone())
            }
            Error::CustomerNotFound(_) => {
                ApiError::new(ErrorKind::CustomerNotFound, error.to_string())
            }
            Error::IdempotencyKeyReused(_) => {
                ApiError::new(ErrorKind::IdempotencyKeyReused, error.to_string())
            }
            Error::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed,
            ) => {
                tracing::warn!(%error, "database unavailable");
                ApiError::new(
                    ErrorKind::Unavailable,
                    "the database is unavailable, try again later",
                )
            }
            Error::Database(sqlx::Error::Database(database))
                if database.code().as_deref() == Some(domain::db::QUERY_CANCELED) =>
            {
                tracing::warn!(%error, "a statement ran past DATABASE_STATEMENT_TIMEOUT_SECS");
                ApiError::new(
                    ErrorKind::Unavailable,
                    "the database did not answer in time (DATABASE_STATEMENT_TIMEOUT_SECS), try again later",
                )
            }
            Error::Search(_) => {
                tracing::warn!(%error, "search engine unavailable");
                ApiError::new(
                    ErrorKind::Unavailable,
                    "search is unavailable, try again later",
                )
            }
            Error::NoAnswer { .. } => {
                tracing::warn!(%error, "a dependency did not answer");
                ApiError::new(
                    ErrorKind::Unavailable,
                    "a dependency did not answer, try again later",
                )
            }
            Error::Broker(_) | Error::TopologyRefused(_) => {
                tracing::warn!(%error, "broker unavailable");
                ApiError::new(
                    ErrorKind::Unavailable,
                    "the message broker is unavailable, try again later",
                )
            }
            // Text PostgreSQL cannot store (a NUL character) that slipped past the edge.
            Error::Database(sqlx::Error::Database(database))
                if database.code().as_deref() == Some(UNTRANSLATABLE_CHARACTER) =>
            {
                ApiError::new(
                    ErrorKind::BadUserInput,
                    "text must not contain a NUL character (\\u0000)",
                )
            }
            Error::Database(_) | Error::Migration(_) | Error::Telemetry(_) => {
                tracing::error!(%error, "internal error");
                ApiError::new(ErrorKind::Internal, "internal error")
            }
        }
    }
}

/// PostgreSQL's SQLSTATE for text it cannot store in the database encoding (a NUL byte).
const UNTRANSLATABLE_CHARACTER: &str = "22021";

/// A GraphQL error answer made outside the schema (the body is not a request, the content
/// type is refused, the gateway's own limits): `{"errors": [{"message", "extensions":
/// {"code"}}]}`, as JSON.
pub fn graphql_error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({
            "errors": [{"message": message, "extensions": {"code": code}}]
        })),
    )
        .into_response()
}

impl From<ApiError> for async_graphql::Error {
    fn from(error: ApiError) -> Self {
        async_graphql::Error::new(error.message)
            .extend_with(|_, extensions| extensions.set("code", error.kind.code()))
    }
}

/// Lets resolvers use `?` on domain results.
pub trait IntoGraphql<T> {
    /// Classifies the error and turns it into a GraphQL error with a code.
    fn graphql(self) -> async_graphql::Result<T>;
}

impl<T> IntoGraphql<T> for Result<T, domain::Error> {
    fn graphql(self) -> async_graphql::Result<T> {
        self.map_err(|error| ApiError::from(error).into())
    }
}
