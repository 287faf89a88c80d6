//! The original customer management server and purchases API (see README, Compatibility
//! notes: Purchases): `GET /` (the route map), `POST /buy`, `GET /getAllUserBuys/{username}`
//! and `GET /buyList/{username}`. (`GET /healthz`, its health check, is the gateway's own and
//! answers the same `Success`.) A purchase is durable (its row and its outbox event for
//! Kafka, one transaction) before `POST /buy` answers 200; the relay publishes it.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use domain::orders::format_timestamp;
use domain::purchases::{format_price, NewPurchase, Purchase, MAX_USERNAME};
use serde::Serialize;
use serde_json::Value;

use crate::errors::{ApiError, ErrorKind};
use crate::AppState;

/// The routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(route_map))
        .route("/buy", post(buy))
        .route("/getAllUserBuys/{username}", get(all_user_buys))
        .route("/buyList/{username}", get(buy_list))
}

/// Most purchases one list answer holds (the original had no bound at all).
const MAX_LISTED: i64 = 10_000;

/// An error in the purchases routes' shape: `{"status": "Error", "message", "field"?}`.
struct PurchasesError {
    status: StatusCode,
    field: Option<&'static str>,
    message: String,
}

impl From<domain::Error> for PurchasesError {
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

impl From<ApiError> for PurchasesError {
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

#[derive(Serialize)]
struct ErrorBody {
    status: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'static str>,
}

impl IntoResponse for PurchasesError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            status: "Error",
            message: self.message,
            field: self.field,
        };
        (self.status, Json(body)).into_response()
    }
}

/// The original's route map, in its key order.
#[derive(Serialize)]
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

async fn route_map() -> Json<RouteMap> {
    Json(RouteMap {
        root: "Get API Info",
        healthz: "Health check",
        get_all_user_buys: "Get Purchases for given customer",
        buy: "POST Purchases and send to Kafka",
    })
}

/// `{"status": "Ok!", ...}` bodies, in the original's key order.
#[derive(Serialize)]
struct Sent {
    status: &'static str,
    message: &'static str,
}

#[derive(Serialize)]
struct UserBuys {
    username: String,
    purchases: Vec<PurchaseBody>,
}

#[derive(Serialize)]
struct BuyList {
    status: &'static str,
    purchases: Vec<PurchaseBody>,
}

async fn buy(State(state): State<AppState>, body: Bytes) -> Result<Response, PurchasesError> {
    let value: Value = serde_json::from_slice(&body).map_err(|error| PurchasesError {
        status: StatusCode::BAD_REQUEST,
        field: Some("body"),
        message: format!("the body must be JSON: {error}"),
    })?;
    let purchase = NewPurchase::from_json(&value)?;
    let traceparent = domain::telemetry::current_traceparent();
    domain::purchases::record(
        &state.pool,
        &state.purchases_destination(),
        &purchase,
        Some(&traceparent),
    )
    .await?;
    Ok(Json(Sent {
        status: "Ok!",
        message: "Message successfully sent to Kafka!",
    })
    .into_response())
}

/// A purchase as the purchases API listed it.
#[derive(Serialize)]
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
) -> Result<Vec<PurchaseBody>, PurchasesError> {
    let length = username.chars().count();
    if length == 0 || length > MAX_USERNAME || username.chars().any(char::is_control) {
        return Err(PurchasesError {
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

async fn all_user_buys(
    State(state): State<AppState>,
    Path(username): Path<String>,
) -> Result<Json<UserBuys>, PurchasesError> {
    let purchases = purchases_of(&state, &username).await?;
    Ok(Json(UserBuys {
        username,
        purchases,
    }))
}

async fn buy_list(
    State(state): State<AppState>,
    Path(username): Path<String>,
) -> Result<Json<BuyList>, PurchasesError> {
    let purchases = purchases_of(&state, &username).await?;
    Ok(Json(BuyList {
        status: "Ok!",
        purchases,
    }))
}
