//! The original order service and customer service (see README, Compatibility notes: Orders):
//! `/api/v1/orders` (list, one, create with `Idempotency-Key`) and the internal
//! `GET /customers/{id}` guarded by `X-Internal-Api-Key` (or the `customer-service` role). Errors are
//! `{"error": "<code>", "message": "<text>"}` with the original codes.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use domain::customers::{CustomerKey, CustomerSource};
use domain::orders::{format_timestamp, NewOrder, Order, OrderStatus, Placed};
use domain::telemetry::Origin;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Identity, Role};
use crate::errors::{ApiError, ErrorKind};
use crate::AppState;

/// The routes with their OpenAPI descriptions, to merge into the gateway's router.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_orders, create_order))
        .routes(routes!(get_order))
        .routes(routes!(get_customer))
}

/// Errors in the order service's shape ([`OrderServiceError`]).
struct OrderServiceFailure(ApiError);

impl<E: Into<ApiError>> From<E> for OrderServiceFailure {
    fn from(error: E) -> Self {
        Self(error.into())
    }
}

/// Every error of the order and customer service routes (and of routes no system owns).
#[derive(Serialize, ToSchema)]
pub struct OrderServiceError {
    /// `validation_failed`, `not_found`, `customer_not_found`, `idempotency_key_reused`,
    /// `unauthorized`, `forbidden`, `rate_limited`, `body_too_large`, `timeout`,
    /// `service_unavailable`...
    error: &'static str,
    message: String,
}

impl IntoResponse for OrderServiceFailure {
    fn into_response(self) -> Response {
        let error = match self.0.kind {
            ErrorKind::BadUserInput | ErrorKind::InvalidId | ErrorKind::CursorExpired => {
                "validation_failed"
            }
            ErrorKind::NotFound => "not_found",
            ErrorKind::CustomerNotFound => "customer_not_found",
            ErrorKind::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Upstream | ErrorKind::Unavailable => "service_unavailable",
            ErrorKind::Internal => "internal_error",
        };
        let status = match self.0.kind {
            ErrorKind::Upstream => StatusCode::SERVICE_UNAVAILABLE,
            kind => kind.status(),
        };
        failure(status, error, &self.0.message)
    }
}

/// An error answer in the order service's shape ([`OrderServiceError`]).
pub(crate) fn failure(status: StatusCode, error: &'static str, message: &str) -> Response {
    let body = OrderServiceError {
        error,
        message: message.to_owned(),
    };
    (status, Json(body)).into_response()
}

fn validation(message: impl Into<String>) -> OrderServiceFailure {
    OrderServiceFailure(ApiError::new(ErrorKind::BadUserInput, message))
}

/// An order as the order service printed it.
#[derive(Serialize, ToSchema)]
#[schema(as = ShopOrder)]
struct OrderBody {
    id: i64,
    customer_id: i64,
    product_name: String,
    quantity: i32,
    price: f64,
    #[schema(value_type = OrderStatusName)]
    status: &'static str,
    created_at: String,
}

impl From<Order> for OrderBody {
    fn from(order: Order) -> Self {
        Self {
            id: order.id,
            customer_id: order.customer_id,
            product_name: order.product_name,
            quantity: order.quantity,
            price: order.price.to_f64().unwrap_or_default(),
            status: order.status.as_str(),
            created_at: format_timestamp(order.created_at),
        }
    }
}

/// Orders in one `GET /api/v1/orders` answer when `limit` is not given.
const DEFAULT_LIST_LIMIT: i64 = 100;
/// Largest `limit` accepted.
const MAX_LIST_LIMIT: i64 = 1_000;

/// An optional integer query parameter within `range`.
fn query_integer(
    value: Option<&str>,
    name: &str,
    range: std::ops::RangeInclusive<i64>,
) -> Result<Option<i64>, OrderServiceFailure> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|number| range.contains(number))
            .map(Some)
            .ok_or_else(|| {
                validation(format!(
                    "{name} must be an integer from {} to {}",
                    range.start(),
                    range.end()
                ))
            }),
    }
}

/// Orders newest first, the original's bare array, a page at a time: `limit` (default 100,
/// at most 1,000) and `before` (an order id: the orders older than it). When more remain,
/// a `Link: <...>; rel="next"` header gives the next page's address.
#[utoipa::path(get, path = "/api/v1/orders", tag = "orders",
    params(
        ("customer_id" = Option<i64>, Query, description = "Only this shop customer's orders"),
        ("limit" = Option<i64>, Query, description = "Orders a page (default 100)", minimum = 1, maximum = 1000),
        ("before" = Option<i64>, Query, description = "An order id: only older orders", minimum = 1),
    ),
    responses(
        (status = 200, description = "Orders, newest first", body = [OrderBody],
            headers(("Link" = String, description = "`</api/v1/orders?...&before=<id>>; rel=\"next\"` when more remain"))),
        (status = 422, description = "A parameter is no integer or out of bounds (`validation_failed`)", body = OrderServiceError),
        (status = 503, description = "The database is unavailable", body = OrderServiceError),
    ))]
async fn list_orders(
    State(state): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, OrderServiceFailure> {
    let param = |name: &str| super::last_param(&params, name);
    let customer_id = query_integer(param("customer_id"), "customer_id", i64::MIN..=i64::MAX)
        .map_err(|_| validation("customer_id must be an integer"))?;
    let limit =
        query_integer(param("limit"), "limit", 1..=MAX_LIST_LIMIT)?.unwrap_or(DEFAULT_LIST_LIMIT);
    let before = query_integer(param("before"), "before", 1..=i64::MAX)?;
    let mut orders = domain::orders::page(&state.pool, customer_id, before, limit + 1).await?;
    let more = orders.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    orders.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next = more.then(|| orders.last().map(|order| order.id)).flatten();
    let mut response =
        Json(orders.into_iter().map(OrderBody::from).collect::<Vec<_>>()).into_response();
    if let Some(oldest) = next {
        let customer = customer_id
            .map(|id| format!("customer_id={id}&"))
            .unwrap_or_default();
        let link =
            format!("</api/v1/orders?{customer}limit={limit}&before={oldest}>; rel=\"next\"");
        if let Ok(value) = axum::http::HeaderValue::from_str(&link) {
            response
                .headers_mut()
                .insert(axum::http::header::LINK, value);
        }
    }
    Ok(response)
}

/// One order.
#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The order", body = OrderBody),
        (status = 404, description = "No such order (`not_found`)", body = OrderServiceError),
        (status = 503, description = "The database is unavailable", body = OrderServiceError),
    ))]
async fn get_order(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<OrderBody>, OrderServiceFailure> {
    let not_found = || {
        OrderServiceFailure(ApiError::new(
            ErrorKind::NotFound,
            format!("order {id} not found"),
        ))
    };
    let order_id: i64 = id.parse().map_err(|_| not_found())?;
    let order = domain::orders::find(&state.pool, order_id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(order.into()))
}

/// Reads an integer field that may also arrive as a numeric string (as Rails accepted).
fn integer_field(
    fields: &Map<String, Value>,
    name: &'static str,
    rule: &str,
) -> Result<i64, OrderServiceFailure> {
    let problem = || validation(format!("{name} {rule}"));
    match fields.get(name) {
        None | Some(Value::Null) => Err(validation(format!("{name} is required"))),
        Some(Value::Number(number)) => number.as_i64().ok_or_else(problem),
        Some(Value::String(text)) => text.trim().parse().map_err(|_| problem()),
        Some(_) => Err(problem()),
    }
}

/// Reads `price`: a JSON number or numeric string, kept exact (no float rounding).
fn price_field(fields: &Map<String, Value>) -> Result<Decimal, OrderServiceFailure> {
    let problem = || validation("price must be a number >= 0");
    let text = match fields.get("price") {
        None | Some(Value::Null) => return Err(validation("price is required")),
        Some(Value::Number(number)) => number.to_string(),
        Some(Value::String(text)) => text.trim().to_owned(),
        Some(_) => return Err(problem()),
    };
    text.parse::<Decimal>()
        .or_else(|_| Decimal::from_scientific(&text))
        .map_err(|_| match text.parse::<f64>() {
            // A number, only too large for an exact decimal (`1e30`): say the real bound.
            Ok(number) if number.is_finite() && number >= 0.0 => {
                validation(domain::orders::PRICE_BOUND_MESSAGE)
            }
            _ => problem(),
        })
}

/// Validates a create request at the edge; every failure names its field.
fn new_order_from_body(body: &[u8]) -> Result<NewOrder, OrderServiceFailure> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| validation("the request body must be a JSON object"))?;
    let Value::Object(fields) = value else {
        return Err(validation("the request body must be a JSON object"));
    };
    let customer_id = integer_field(&fields, "customer_id", "must be an integer")?;
    let product_name = match fields.get("product_name") {
        None | Some(Value::Null) => return Err(validation("product_name is required")),
        Some(Value::String(name)) => name.clone(),
        Some(_) => return Err(validation("product_name must be a string")),
    };
    let quantity = integer_field(&fields, "quantity", "must be an integer >= 0")?;
    let price = price_field(&fields)?;
    let status = match fields.get("status") {
        None | Some(Value::Null) => OrderStatus::Pending,
        Some(Value::String(status)) => status.parse().map_err(validation)?,
        Some(_) => return Err(validation("status must be a string")),
    };
    Ok(NewOrder::new(
        customer_id,
        &product_name,
        quantity,
        price,
        status,
    )?)
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, OrderServiceFailure> {
    headers
        .get("idempotency-key")
        .map(|value| {
            value
                .to_str()
                .map_err(|_| validation("Idempotency-Key must be visible ASCII"))
        })
        .transpose()
}

/// What `POST /api/v1/orders` reads. Integers and the price may also come as numeric strings,
/// as the original accepted; the handler reads the body itself to name each wrong field.
#[derive(ToSchema)]
#[allow(dead_code)] // a description for the document; the handler parses the JSON itself
struct NewOrderBody {
    /// A shop customer's id.
    #[schema(minimum = 1)]
    customer_id: i64,
    #[schema(min_length = 1, max_length = 255)]
    product_name: String,
    #[schema(minimum = 0, maximum = 2147483647)]
    quantity: i64,
    /// Kept exact to the cent (rounded half away from zero).
    #[schema(minimum = 0)]
    price: f64,
    /// `pending` when not given.
    status: Option<OrderStatusName>,
}

/// The statuses an order may have.
#[derive(ToSchema)]
#[allow(dead_code)] // a description for the document
#[schema(rename_all = "lowercase")]
enum OrderStatusName {
    Pending,
    Processing,
    Completed,
    Cancelled,
}

/// Places an order (and its `order.created` event, in the same transaction). The same
/// `Idempotency-Key` with the same order answers the first order again (200).
#[utoipa::path(post, path = "/api/v1/orders", tag = "orders",
    request_body(content = NewOrderBody, content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header, max_length = 255,
        description = "Makes a retried request place one order; visible ASCII")),
    responses(
        (status = 201, description = "The order, placed", body = OrderBody),
        (status = 200, description = "The order this Idempotency-Key placed before", body = OrderBody),
        (status = 404, description = "No shop customer has that id (`customer_not_found`)", body = OrderServiceError),
        (status = 422, description = "A field is missing or wrong (`validation_failed`), or the key was used for another order (`idempotency_key_reused`)", body = OrderServiceError),
        (status = 503, description = "The database is unavailable", body = OrderServiceError),
    ))]
async fn create_order(
    State(state): State<AppState>,
    Extension(origin): Extension<Origin>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OrderServiceFailure> {
    let new = new_order_from_body(&body)?;
    let key = idempotency_key(&headers)?;
    Ok(
        match domain::orders::place(
            &state.pool,
            &state.orders_destination(),
            &new,
            key,
            Some(&origin),
        )
        .await?
        {
            Placed::Created(order) => {
                (StatusCode::CREATED, Json(OrderBody::from(order))).into_response()
            }
            Placed::Replayed(order) => {
                (StatusCode::OK, Json(OrderBody::from(order))).into_response()
            }
        },
    )
}

/// A shop customer as the customer service printed it.
#[derive(Serialize, ToSchema)]
#[schema(as = ShopCustomer)]
struct ShopCustomerBody {
    id: i64,
    name: String,
    address: Option<String>,
    orders_count: i64,
    /// Always set for shop customers (`customers_created_at_known`).
    created_at: Option<String>,
    updated_at: String,
}

/// The original's `X-Internal-Api-Key`, or a known caller with the `customer-service`
/// role (anonymous roles never open this route).
fn may_read_shop_customers(
    state: &AppState,
    identity: Option<&Identity>,
    headers: &HeaderMap,
) -> Result<(), OrderServiceFailure> {
    let unauthorized =
        |message: &str| OrderServiceFailure(ApiError::new(ErrorKind::Unauthorized, message));
    if identity
        .and_then(Identity::principal)
        .is_some_and(|principal| principal.roles.contains(Role::CustomerService))
    {
        return Ok(());
    }
    let Some(expected) = &state.config.security.internal_api_key else {
        return Err(unauthorized(
            "internal API key is not configured; this route refuses every request \
             without the customer-service role",
        ));
    };
    let given = headers
        .get("x-internal-api-key")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    match expected.matches(given) {
        true => Ok(()),
        false => Err(unauthorized("missing or invalid X-Internal-Api-Key")),
    }
}

/// A shop customer with its order count, for internal callers: the `X-Internal-Api-Key`
/// header (`INTERNAL_API_KEY`) or the `customer-service` role.
#[utoipa::path(get, path = "/customers/{id}", tag = "orders",
    params(
        ("id" = String, Path, description = "The shop customer's id"),
        ("X-Internal-Api-Key" = Option<String>, Header, description = "The internal API key"),
    ),
    responses(
        (status = 200, description = "The customer", body = ShopCustomerBody),
        (status = 401, description = "Missing or invalid X-Internal-Api-Key (`unauthorized`)", body = OrderServiceError),
        (status = 404, description = "No such customer (`not_found`)", body = OrderServiceError),
        (status = 503, description = "The database is unavailable", body = OrderServiceError),
    ))]
async fn get_customer(
    State(state): State<AppState>,
    identity: Option<Extension<Identity>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ShopCustomerBody>, OrderServiceFailure> {
    may_read_shop_customers(
        &state,
        identity.as_ref().map(|Extension(identity)| identity),
        &headers,
    )?;
    let not_found = || {
        OrderServiceFailure(ApiError::new(
            ErrorKind::NotFound,
            format!("customer {id} not found"),
        ))
    };
    let shop_id: i64 = id.parse().map_err(|_| not_found())?;
    let key = CustomerKey {
        source: CustomerSource::Shop,
        external_id: shop_id.to_string(),
    };
    let customer = domain::customers::find(&state.pool, &key)
        .await?
        .ok_or_else(not_found)?;
    let name = [
        customer.first_name.as_deref(),
        customer.last_name.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ");
    Ok(Json(ShopCustomerBody {
        id: shop_id,
        name,
        address: customer.address,
        orders_count: customer.orders_count,
        created_at: customer.created_at.map(format_timestamp),
        updated_at: format_timestamp(customer.updated_at),
    }))
}
