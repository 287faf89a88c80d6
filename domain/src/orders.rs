//! Orders of the shop (see README, Compatibility notes: Orders): validation, creation with
//! idempotency keys and the transactional outbox row, queries, and the `order.created` wire
//! format shared by the consumer and the gateway's live feed.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use sqlx::{PgExecutor, PgPool};

use crate::customers::CustomerSource;
use uuid::Uuid;

use crate::outbox::{self, Destination, NewEvent};
use crate::telemetry::Origin;
use crate::{Error, Result};

/// Longest product name accepted.
pub const MAX_PRODUCT_NAME: usize = 255;
/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
/// The `aggregate_type` of order events in the outbox.
pub const AGGREGATE_TYPE: &str = "Order";
/// The event type, also the RabbitMQ routing key.
pub const ORDER_CREATED: &str = "order.created";

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    /// Placed, not yet worked on (the default).
    Pending,
    /// Being prepared.
    Processing,
    /// Delivered.
    Completed,
    /// Called off.
    Cancelled,
}

impl OrderStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [Self; 4] = [
        Self::Pending,
        Self::Processing,
        Self::Completed,
        Self::Cancelled,
    ];

    /// The wire and database form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderStatus {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
            .ok_or_else(|| {
                format!("status must be one of pending, processing, completed, cancelled; got {value:?}")
            })
    }
}

/// A stored order.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    /// Order id.
    pub id: i64,
    /// The shop customer's id (`1`..).
    pub customer_id: i64,
    /// What was ordered (names need not be unique).
    pub product_name: String,
    /// How many.
    pub quantity: i32,
    /// Unit price, exact to the cent.
    pub price: Decimal,
    /// Where it stands.
    pub status: OrderStatus,
    /// When it was placed.
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: i64,
    customer_id: i64,
    product_name: String,
    quantity: i32,
    price: Decimal,
    status: String,
    created_at: DateTime<Utc>,
}

impl TryFrom<OrderRow> for Order {
    type Error = sqlx::Error;

    fn try_from(row: OrderRow) -> Result<Self, Self::Error> {
        let mut price = row.price;
        price.rescale(2);
        Ok(Self {
            id: row.id,
            customer_id: row.customer_id,
            product_name: row.product_name,
            quantity: row.quantity,
            price,
            status: row
                .status
                .parse()
                .map_err(|error: String| sqlx::Error::Decode(error.into()))?,
            created_at: row.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct KeyedOrderRow {
    #[sqlx(flatten)]
    order: OrderRow,
    request_fingerprint: Option<String>,
}

const ORDER_COLUMNS: &str = "id, customer_id, product_name, quantity, price, status, created_at";

fn into_orders(rows: Vec<OrderRow>) -> Result<Vec<Order>> {
    Ok(rows
        .into_iter()
        .map(Order::try_from)
        .collect::<Result<_, _>>()?)
}

/// An order request that passed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewOrder {
    customer_id: i64,
    product_name: String,
    quantity: i32,
    price: Decimal,
    status: &'static str,
}

fn invalid(field: &'static str, message: impl Into<String>) -> Error {
    Error::InvalidInput {
        field,
        message: message.into(),
    }
}

/// Prices are below this (10 digits before the point, as the column holds).
pub(crate) const MAX_PRICE_EXCLUSIVE: i64 = 10_000_000_000;

/// What a price over the bound is told.
pub const PRICE_BOUND_MESSAGE: &str = "price must be below 10,000,000,000";

impl NewOrder {
    /// Validates an order request: a positive customer id, a product name of 1 to 255
    /// characters, a quantity that is an integer >= 0, a price >= 0 (rounded to cents, at
    /// most 10 digits before the point).
    pub fn new(
        customer_id: i64,
        product_name: &str,
        quantity: i64,
        price: Decimal,
        status: OrderStatus,
    ) -> Result<Self> {
        if customer_id < 1 {
            return Err(invalid(
                "customer_id",
                "customer_id must be a positive integer",
            ));
        }
        let product_name = product_name.trim();
        if product_name.is_empty() {
            return Err(invalid("product_name", "product_name is required"));
        }
        if product_name.chars().count() > MAX_PRODUCT_NAME {
            return Err(invalid(
                "product_name",
                format!("product_name must be at most {MAX_PRODUCT_NAME} characters"),
            ));
        }
        let quantity = i32::try_from(quantity)
            .ok()
            .filter(|quantity| *quantity >= 0)
            .ok_or_else(|| invalid("quantity", "quantity must be an integer >= 0"))?;
        if price.is_sign_negative() && !price.is_zero() {
            return Err(invalid("price", "price must be a number >= 0"));
        }
        let mut price = price.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
        if price >= Decimal::from(MAX_PRICE_EXCLUSIVE) {
            return Err(invalid("price", PRICE_BOUND_MESSAGE));
        }
        // Two decimals always, so `25.5` and `"25.50"` are the same request (fingerprint).
        price.rescale(2);
        Ok(Self {
            customer_id,
            product_name: product_name.to_owned(),
            quantity,
            price,
            status: status.as_str(),
        })
    }

    /// The shop customer the order is for.
    pub fn customer_id(&self) -> i64 {
        self.customer_id
    }

    /// The normalized request, to tell a replay from a reuse of an idempotency key.
    fn fingerprint(&self) -> String {
        serde_json::to_string(self).expect("a plain struct serializes")
    }
}

/// The outcome of placing an order.
#[derive(Debug, Clone, PartialEq)]
pub enum Placed {
    /// A new order (and its `order.created` event) was stored.
    Created(Order),
    /// The idempotency key was used before with the same request: the first order.
    Replayed(Order),
}

impl Placed {
    /// The order, new or replayed.
    pub fn order(&self) -> &Order {
        match self {
            Self::Created(order) | Self::Replayed(order) => order,
        }
    }
}

/// The `order.created` message body, in the original order service's field order (see
/// README, Compatibility notes: Orders).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCreatedMessage {
    /// The order id.
    pub order_id: i64,
    /// The shop customer's id.
    pub customer_id: i64,
    /// What was ordered.
    pub product_name: String,
    /// How many.
    pub quantity: i32,
    /// Unit price as a JSON number.
    pub price: f64,
    /// The order's status when created.
    pub status: String,
    /// The event's id (a UUID, also the message's `id` header), as a string.
    pub event_id: String,
    /// When the order was placed: ISO 8601, milliseconds, UTC `Z`.
    pub occurred_at: String,
}

impl OrderCreatedMessage {
    fn new(order: &Order, event_id: Uuid) -> Self {
        Self {
            order_id: order.id,
            customer_id: order.customer_id,
            product_name: order.product_name.clone(),
            quantity: order.quantity,
            price: order.price.to_f64().unwrap_or_default(),
            status: order.status.as_str().to_owned(),
            event_id: event_id.to_string(),
            occurred_at: format_timestamp(order.created_at),
        }
    }
}

/// ISO 8601 with milliseconds and `Z`, as the original Rails services wrote times.
pub fn format_timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The order stored under `idempotency_key`, if any.
async fn keyed_order(
    transaction: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    idempotency_key: Option<&str>,
) -> Result<Option<KeyedOrderRow>> {
    let Some(key) = idempotency_key else {
        return Ok(None);
    };
    Ok(sqlx::query_as(&format!(
        "SELECT {ORDER_COLUMNS}, request_fingerprint FROM orders WHERE idempotency_key = $1"
    ))
    .bind(key)
    .fetch_optional(&mut **transaction)
    .await?)
}

/// A key used before: the first order when the request is the same, else a refusal.
fn replay_or_refuse(
    first: KeyedOrderRow,
    fingerprint: &str,
    idempotency_key: Option<&str>,
) -> Result<Placed> {
    if first.request_fingerprint.as_deref() != Some(fingerprint) {
        return Err(Error::IdempotencyKeyReused(
            idempotency_key.unwrap_or_default().to_owned(),
        ));
    }
    Ok(Placed::Replayed(first.order.try_into()?))
}

/// Places an order: checks the customer, stores the order and its outbox event (bound for
/// `destination`, routing key `order.created`) in one transaction. With an idempotency key, a replay with the same request returns the first
/// order (and writes nothing); a reuse with a different request is refused. Concurrent
/// requests with the same key create exactly one order (the unique index decides).
pub async fn place(
    pool: &PgPool,
    destination: &Destination,
    new: &NewOrder,
    idempotency_key: Option<&str>,
    origin: Option<&Origin>,
) -> Result<Placed> {
    if let Some(key) = idempotency_key {
        if key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY {
            return Err(invalid(
                "Idempotency-Key",
                format!("the idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY} characters"),
            ));
        }
    }
    let fingerprint = new.fingerprint();
    let mut transaction = pool.begin().await?;
    let customer_exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM customers WHERE source = $1 AND external_id = $2)",
    )
    .bind(CustomerSource::Shop.as_str())
    .bind(new.customer_id.to_string())
    .fetch_one(&mut *transaction)
    .await?;
    if !customer_exists {
        // A key used before decides, whatever customer the body names; only this path
        // reads the key first (a known customer's request finds it at the insert).
        if let Some(first) = keyed_order(&mut transaction, idempotency_key).await? {
            transaction.rollback().await?;
            return replay_or_refuse(first, &fingerprint, idempotency_key);
        }
        return Err(Error::CustomerNotFound(new.customer_id.to_string()));
    }
    let inserted: Option<OrderRow> = sqlx::query_as(&format!(
        "INSERT INTO orders (customer_id, product_name, quantity, price, status, idempotency_key,
                             request_fingerprint)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (idempotency_key) DO NOTHING
         RETURNING {ORDER_COLUMNS}"
    ))
    .bind(new.customer_id)
    .bind(&new.product_name)
    .bind(new.quantity)
    .bind(new.price)
    .bind(new.status)
    .bind(idempotency_key)
    .bind(&fingerprint)
    .fetch_optional(&mut *transaction)
    .await?;
    let Some(row) = inserted else {
        // The key exists (committed by an earlier or concurrent request): replay or refuse.
        let first = keyed_order(&mut transaction, idempotency_key)
            .await?
            .ok_or_else(|| {
                Error::InvalidRecord("an idempotency key conflict without its order".into())
            })?;
        transaction.rollback().await?;
        return replay_or_refuse(first, &fingerprint, idempotency_key);
    };
    let order: Order = row.try_into()?;
    let event_id = outbox::new_event_id();
    let body = serde_json::to_string(&OrderCreatedMessage::new(&order, event_id))
        .map_err(|error| Error::InvalidRecord(error.to_string()))?;
    outbox::append(
        &mut transaction,
        &NewEvent {
            event_id,
            destination,
            aggregate_type: AGGREGATE_TYPE,
            aggregate_id: &order.id.to_string(),
            event_type: ORDER_CREATED,
            message_key: ORDER_CREATED,
            body: &body,
            origin,
        },
    )
    .await?;
    transaction.commit().await?;
    Ok(Placed::Created(order))
}

/// One order.
pub async fn find(db: impl PgExecutor<'_>, id: i64) -> Result<Option<Order>> {
    let row: Option<OrderRow> =
        sqlx::query_as(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"))
            .bind(id)
            .fetch_optional(db)
            .await?;
    Ok(row.map(Order::try_from).transpose()?)
}

/// The orders with these ids that exist (any order), in one statement.
pub async fn find_many(db: impl PgExecutor<'_>, ids: &[i64]) -> Result<Vec<Order>> {
    let rows: Vec<OrderRow> = sqlx::query_as(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(Order::try_from)
        .collect::<std::result::Result<_, _>>()?)
}

/// Up to `limit` orders newest first, strictly older than `before_id`, optionally of one
/// customer: keyset pagination.
pub async fn page(
    db: impl PgExecutor<'_>,
    customer_id: Option<i64>,
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<Order>> {
    let rows: Vec<OrderRow> = sqlx::query_as(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders
         WHERE ($1::bigint IS NULL OR customer_id = $1) AND ($2::bigint IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3"
    ))
    .bind(customer_id)
    .bind(before_id)
    .bind(limit)
    .fetch_all(db)
    .await?;
    into_orders(rows)
}

/// As [`page`], each order with its shop customer (`None` when none is stored), read in
/// the same statement.
pub async fn page_with_customers(
    db: impl PgExecutor<'_>,
    customer_id: Option<i64>,
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<(Order, Option<crate::customers::Customer>)>> {
    use sqlx::FromRow;
    let order_columns: Vec<String> = ORDER_COLUMNS
        .split(", ")
        .map(|column| format!("o.{column}"))
        .collect();
    let rows = sqlx::query(&format!(
        "SELECT {}, {} FROM orders o
         LEFT JOIN customers c ON c.source = 'SHOP' AND c.external_id = o.customer_id::text
         WHERE ($1::bigint IS NULL OR o.customer_id = $1) AND ($2::bigint IS NULL OR o.id < $2)
         ORDER BY o.id DESC LIMIT $3",
        order_columns.join(", "),
        crate::customers::columns_as("c", CUSTOMER_PREFIX)
    ))
    .bind(customer_id)
    .bind(before_id)
    .bind(limit)
    .fetch_all(db)
    .await?;
    let customer_columns_from = order_columns.len();
    rows.iter()
        .map(|row| {
            let order = Order::try_from(OrderRow::from_row(row)?)?;
            let customer = crate::customers::read_from(row, customer_columns_from)?;
            Ok((order, customer))
        })
        .collect()
}

/// How the customer columns are named beside an order's.
const CUSTOMER_PREFIX: &str = "customer_";

/// How many orders there are, optionally of one customer.
pub async fn count(pool: &PgPool, customer_id: Option<i64>) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM orders WHERE ($1::bigint IS NULL OR customer_id = $1)",
    )
    .bind(customer_id)
    .fetch_one(pool)
    .await?)
}

/// The newest `per_customer` orders of each of `customer_ids`, in one query (for batched
/// loading of `Customer.orders`).
pub async fn newest_for_customers(
    db: impl PgExecutor<'_>,
    customer_ids: &[i64],
    per_customer: i64,
) -> Result<Vec<Order>> {
    let rows: Vec<OrderRow> = sqlx::query_as(&format!(
        "SELECT newest.* FROM unnest($1::bigint[]) AS wanted(customer_id)
         CROSS JOIN LATERAL (
             SELECT {ORDER_COLUMNS} FROM orders o
             WHERE o.customer_id = wanted.customer_id
             ORDER BY o.id DESC LIMIT $2
         ) AS newest"
    ))
    .bind(customer_ids)
    .bind(per_customer)
    .fetch_all(db)
    .await?;
    into_orders(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(quantity: i64, price: &str) -> Result<NewOrder> {
        NewOrder::new(
            1,
            "Widget",
            quantity,
            price.parse().unwrap(),
            OrderStatus::Pending,
        )
    }

    #[test]
    fn validation_names_the_field() {
        let field = |result: Result<NewOrder>| match result {
            Err(Error::InvalidInput { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(order(-1, "1")), "quantity");
        assert_eq!(field(order(i64::from(i32::MAX) + 1, "1")), "quantity");
        assert_eq!(field(order(1, "-0.01")), "price");
        assert_eq!(field(order(1, "10000000000")), "price");
        assert_eq!(
            field(NewOrder::new(0, "x", 1, Decimal::ONE, OrderStatus::Pending)),
            "customer_id"
        );
        assert_eq!(
            field(NewOrder::new(
                1,
                "  ",
                1,
                Decimal::ONE,
                OrderStatus::Pending
            )),
            "product_name"
        );
    }

    #[test]
    fn prices_round_to_cents_and_zero_is_fine() {
        assert_eq!(order(0, "0").unwrap().price, Decimal::ZERO);
        assert_eq!(order(1, "1.005").unwrap().price.to_string(), "1.01");
    }

    #[test]
    fn statuses_parse_and_refuse_unknown_values() {
        for status in OrderStatus::ALL {
            assert_eq!(status.as_str().parse::<OrderStatus>().unwrap(), status);
        }
        assert!("shipped".parse::<OrderStatus>().is_err());
    }

    #[test]
    fn timestamps_have_milliseconds_and_z() {
        let time = DateTime::parse_from_rfc3339("2024-05-31T15:54:32.204567Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(format_timestamp(time), "2024-05-31T15:54:32.204Z");
    }
}
