//! The original customer management server and purchases API (see README, Compatibility
//! notes: Purchases): `GET /` (the route map), `POST /buy`, `GET /getAllUserBuys/{username}`
//! and `GET /buyList/{username}`. (`GET /healthz`, its health check, is the gateway's own and
//! answers the same `Success`.) A purchase is durable (its row and its outbox event for
//! Kafka, one transaction) before `POST /buy` answers 200; the relay publishes it.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use domain::orders::format_timestamp;
use domain::purchases::{format_price, NewPurchase, Purchase, MAX_USERNAME};
use domain::telemetry::Origin;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::errors::{ApiError, ErrorKind};
use crate::AppState;

/// The routes with their OpenAPI descriptions, to merge into the gateway's router.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(route_map))
        .routes(routes!(buy))
        .routes(routes!(all_user_buys))
        .routes(routes!(buy_list))
}

/// Most purchases one list answer holds (the original had no bound at all).
const MAX_LISTED: i64 = 10_000;

/// An error in the purchases routes' shape ([`PurchasesError`]).
struct PurchasesFailure {
    status: StatusCode,
    field: Option<&'static str>,
    message: String,
}

impl From<domain::Error> for PurchasesFailure {
    fn from(error: domain::Error) -> Self {
        if let domain::Error::InvalidInput { field, message } = error {
            return Self {
                status: StatusCode::BAD_REQUEST,
                field: Some(field),
                message,
            };
        }
        ApiError::from(error).into()
    }
}

impl From<ApiError> for PurchasesFailure {
    fn from(error: ApiError) -> Self {
        let status = match error.kind {
            ErrorKind::BadUserInput | ErrorKind::InvalidId => StatusCode::BAD_REQUEST,
            ErrorKind::Upstream => StatusCode::SERVICE_UNAVAILABLE,
            kind => kind.status(),
        };
        Self {
            status,
            field: None,
            message: error.message,
        }
    }
}

/// Every error of the purchases routes: `{"status": "Error", "message", "field"?}`.
#[derive(Serialize, ToSchema)]
pub struct PurchasesError {
    /// Always `Error`.
    status: &'static str,
    message: String,
    /// The field that was wrong (`username`, `userid`, `price`, `timestamp`, `body`).
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'static str>,
}

impl IntoResponse for PurchasesFailure {
    fn into_response(self) -> Response {
        let body = PurchasesError {
            status: "Error",
            message: self.message,
            field: self.field,
        };
        (self.status, Json(body)).into_response()
    }
}

/// An error answer in the purchases routes' shape ([`PurchasesError`]), naming no field.
pub(crate) fn failure(status: StatusCode, message: &str) -> Response {
    PurchasesFailure {
        status,
        field: None,
        message: message.to_owned(),
    }
    .into_response()
}

/// The original's route map, in its key order.
#[derive(Serialize, ToSchema)]
struct RouteMap {
    #[serde(rename = "/")]
    root: &'static str,
    #[serde(rename = "/healthz")]
    healthz: &'static str,
    #[serde(rename = "/getAllUserBuys")]
    get_all_user_buys: &'static str,
    #[serde(rename = "/buy")]
    buy: &'static str,
}

/// The original's map of its routes.
#[utoipa::path(get, path = "/", tag = "purchases",
    responses((status = 200, description = "Each route and what it does", body = RouteMap)))]
async fn route_map() -> Json<RouteMap> {
    Json(RouteMap {
        root: "Get API Info",
        healthz: "Health check",
        get_all_user_buys: "Get Purchases for given customer",
        buy: "POST Purchases and send to Kafka",
    })
}

/// `{"status": "Ok!", ...}` bodies, in the original's key order.
#[derive(Serialize, ToSchema)]
struct Sent {
    status: &'static str,
    message: &'static str,
}

#[derive(Serialize, ToSchema)]
struct UserBuys {
    username: String,
    purchases: Vec<PurchaseBody>,
}

#[derive(Serialize, ToSchema)]
struct BuyList {
    status: &'static str,
    purchases: Vec<PurchaseBody>,
}

/// What `POST /buy` reads; other fields are ignored, as the original ignored them. The
/// handler reads the body itself to name each wrong field.
#[derive(ToSchema)]
#[allow(dead_code)] // a description for the document
struct NewPurchaseBody {
    #[schema(min_length = 1, max_length = 64, example = "john")]
    username: String,
    /// A string, or a number (kept as written).
    #[schema(min_length = 1, max_length = 64, example = "005")]
    userid: String,
    /// A non-negative amount with at most 2 decimal places (`"1195.30"`), or a number.
    #[schema(pattern = r"^[0-9]{1,10}(\.[0-9]{1,2})?$", example = "1195.30")]
    price: String,
    /// RFC 3339 (`2024-05-31T15:54:32.204Z`).
    #[schema(format = DateTime, example = "2024-05-31T15:54:32.204Z")]
    timestamp: String,
}

/// Records a purchase (and its event for Kafka, one transaction) before answering.
#[utoipa::path(post, path = "/buy", tag = "purchases",
    request_body(content = NewPurchaseBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Recorded; the relay publishes it", body = Sent),
        (status = 400, description = "The body is no JSON object or a field is wrong (`field` names it)", body = PurchasesError),
        (status = 503, description = "The database is unavailable", body = PurchasesError),
    ))]
async fn buy(
    State(state): State<AppState>,
    Extension(origin): Extension<Origin>,
    body: Bytes,
) -> Result<Response, PurchasesFailure> {
    let value: Value = serde_json::from_slice(&body).map_err(|error| PurchasesFailure {
        status: StatusCode::BAD_REQUEST,
        field: Some("body"),
        message: format!("the body must be JSON: {error}"),
    })?;
    let purchase = NewPurchase::from_json(&value)?;
    domain::purchases::record(
        &state.pool,
        &state.purchases_destination(),
        &purchase,
        Some(&origin),
    )
    .await?;
    Ok(Json(Sent {
        status: "Ok!",
        message: "Message successfully sent to Kafka!",
    })
    .into_response())
}

/// A purchase as the purchases API listed it.
#[derive(Serialize, ToSchema)]
struct PurchaseBody {
    #[serde(rename = "_id")]
    id: String,
    username: String,
    userid: String,
    price: String,
    timestamp: String,
}

impl From<Purchase> for PurchaseBody {
    fn from(purchase: Purchase) -> Self {
        Self {
            id: purchase.id.to_string(),
            username: purchase.username,
            userid: purchase.userid,
            price: format_price(purchase.price),
            timestamp: format_timestamp(purchase.purchased_at),
        }
    }
}

/// A user's purchases, oldest first.
async fn purchases_of(
    state: &AppState,
    username: &str,
) -> Result<Vec<PurchaseBody>, PurchasesFailure> {
    let length = username.chars().count();
    if length == 0 || length > MAX_USERNAME || username.chars().any(char::is_control) {
        return Err(PurchasesFailure {
            status: StatusCode::BAD_REQUEST,
            field: Some("username"),
            message: format!(
                "username must be 1 to {MAX_USERNAME} characters without control characters"
            ),
        });
    }
    let purchases = domain::purchases::for_user(&state.pool, username, None, MAX_LISTED).await?;
    Ok(purchases.into_iter().map(PurchaseBody::from).collect())
}

/// A user's purchases, oldest first (at most 10,000).
#[utoipa::path(get, path = "/getAllUserBuys/{username}", tag = "purchases",
    params(("username" = String, Path, description = "Who bought: 1 to 64 characters, no control characters")),
    responses(
        (status = 200, description = "The purchases", body = UserBuys),
        (status = 400, description = "The username is empty, too long or holds control characters", body = PurchasesError),
        (status = 503, description = "The database is unavailable", body = PurchasesError),
    ))]
async fn all_user_buys(
    State(state): State<AppState>,
    Path(username): Path<String>,
) -> Result<Json<UserBuys>, PurchasesFailure> {
    let purchases = purchases_of(&state, &username).await?;
    Ok(Json(UserBuys {
        username,
        purchases,
    }))
}

/// A user's purchases, oldest first (at most 10,000), in the purchases API's shape.
#[utoipa::path(get, path = "/buyList/{username}", tag = "purchases",
    params(("username" = String, Path, description = "Who bought: 1 to 64 characters, no control characters")),
    responses(
        (status = 200, description = "The purchases", body = BuyList),
        (status = 400, description = "The username is empty, too long or holds control characters", body = PurchasesError),
        (status = 503, description = "The database is unavailable", body = PurchasesError),
    ))]
async fn buy_list(
    State(state): State<AppState>,
    Path(username): Path<String>,
) -> Result<Json<BuyList>, PurchasesFailure> {
    let purchases = purchases_of(&state, &username).await?;
    Ok(Json(BuyList {
        status: "Ok!",
        purchases,
    }))
}
