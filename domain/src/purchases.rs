//! Purchases of the shop's customer management system (see README, Compatibility notes:
//! Purchases): validation of what the original's clients send, recording a purchase with
//! its outbox event for Kafka in one transaction, storing purchases other producers put on
//! the topic (exactly once, by what identifies their message), queries, and the Kafka
//! message value, which is exactly the original's four fields.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgExecutor, PgPool};

use crate::orders::format_timestamp;
use crate::outbox::{self, Destination, NewEvent};
use crate::telemetry::Origin;
use crate::{Error, Result};

/// The `aggregate_type` of purchase events in the outbox.
pub const AGGREGATE_TYPE: &str = "Purchase";
/// The event type of a new purchase.
pub const PURCHASE_MADE: &str = "purchase.made";
/// Longest username accepted.
pub const MAX_USERNAME: usize = 64;
/// Longest user id accepted.
pub const MAX_USERID: usize = 64;

/// A stored purchase.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Purchase {
    /// Row id (the `_id` of the REST bodies, the cursor of connections).
    pub id: i64,
    /// Who bought.
    pub username: String,
    /// The buyer's user id, as the client sent it (`"005"`).
    pub userid: String,
    /// What it cost, exact to the cent.
    pub price: Decimal,
    /// When it was bought.
    pub purchased_at: DateTime<Utc>,
}

/// A purchase to record, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPurchase {
    username: String,
    userid: String,
    price: Decimal,
    purchased_at: DateTime<Utc>,
}

fn invalid(field: &'static str, message: impl Into<String>) -> Error {
    Error::InvalidInput {
        field,
        message: message.into(),
    }
}

/// Checks a text field: 1 to `max` characters, no control characters.
fn checked_text(field: &'static str, text: &str, max: usize) -> Result<String> {
    let length = text.chars().count();
    if length == 0 || length > max {
        return Err(invalid(
            field,
            format!("{field} must be 1 to {max} characters, got {length}"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(text.to_owned())
}

/// A field of a JSON body: a string, or where `numbers` allows, a number as written.
fn json_text(fields: &Map<String, Value>, field: &'static str, numbers: bool) -> Result<String> {
    match fields.get(field) {
        None | Some(Value::Null) => Err(invalid(field, format!("{field} is required"))),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Number(number)) if numbers => Ok(number.to_string()),
        Some(_) if numbers => Err(invalid(
            field,
            format!("{field} must be a string or a number"),
        )),
        Some(_) => Err(invalid(field, format!("{field} must be a string"))),
    }
}

impl NewPurchase {
    /// A purchase: the username and user id 1 to 64 characters without control
    /// characters, the price non-negative with at most 2 decimal places. The error names
    /// the first bad field.
    pub fn new(
        username: &str,
        userid: &str,
        price: Decimal,
        purchased_at: DateTime<Utc>,
    ) -> Result<Self> {
        if price.is_sign_negative() || price.scale() > 2 {
            return Err(invalid(
                "price",
                format!("price must be a non-negative amount with at most 2 decimal places, got {price}"),
            ));
        }
        if price >= Decimal::from(crate::orders::MAX_PRICE_EXCLUSIVE) {
            return Err(invalid("price", crate::orders::PRICE_BOUND_MESSAGE));
        }
        Ok(Self {
            username: checked_text("username", username, MAX_USERNAME)?,
            userid: checked_text("userid", userid, MAX_USERID)?,
            price,
            purchased_at,
        })
    }

    /// Reads a purchase as the original's clients send it: `username`, `userid`, `price`
    /// and `timestamp`, all strings, or `userid` and `price` as numbers; the timestamp is
    /// RFC 3339. Other fields are ignored, as the original ignored them.
    pub fn from_json(value: &Value) -> Result<Self> {
        let Some(fields) = value.as_object() else {
            return Err(invalid("body", "the body must be a JSON object"));
        };
        let username = json_text(fields, "username", false)?;
        let userid = json_text(fields, "userid", true)?;
        let price_text = json_text(fields, "price", true)?;
        let price = price_text.parse::<Decimal>().map_err(|_| {
            invalid(
                "price",
                format!("price must be a non-negative amount with at most 2 decimal places, got {price_text:?}"),
            )
        })?;
        let timestamp = json_text(fields, "timestamp", false)?;
        let purchased_at = DateTime::parse_from_rfc3339(&timestamp)
            .map_err(|_| {
                invalid(
                    "timestamp",
                    format!(
                        "timestamp must be RFC 3339 (2024-05-31T15:54:32.204Z), got {timestamp:?}"
                    ),
                )
            })?
            .with_timezone(&Utc);
        Self::new(&username, &userid, price, purchased_at)
    }

    /// Who buys.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The buyer's user id.
    pub fn userid(&self) -> &str {
        &self.userid
    }

    /// What it costs.
    pub fn price(&self) -> Decimal {
        self.price
    }

    /// When it was bought.
    pub fn purchased_at(&self) -> DateTime<Utc> {
        self.purchased_at
    }
}

/// The Kafka message value: exactly the original's four fields, in its order, all strings
/// (the price with two decimals, the time in UTC with milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseMessage {
    /// Who bought.
    pub username: String,
    /// The buyer's user id.
    pub userid: String,
    /// What it cost, `"1195.30"`.
    pub price: String,
    /// When, `"2024-05-31T15:54:32.204Z"`.
    pub timestamp: String,
}

/// A price as the original wrote it: two decimals.
pub fn format_price(price: Decimal) -> String {
    let mut price = price;
    price.rescale(2);
    price.to_string()
}

impl From<&NewPurchase> for PurchaseMessage {
    fn from(purchase: &NewPurchase) -> Self {
        Self {
            username: purchase.username.clone(),
            userid: purchase.userid.clone(),
            price: format_price(purchase.price),
            timestamp: format_timestamp(purchase.purchased_at),
        }
    }
}

const PURCHASE_COLUMNS: &str = "id, username, userid, price, purchased_at";

/// Stores a purchase unless one with `source_key` exists; the stored purchase, or `None`
/// when it was there already.
async fn insert(
    connection: &mut PgConnection,
    purchase: &NewPurchase,
    source_key: &str,
) -> Result<Option<Purchase>, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO purchases (username, userid, price, purchased_at, source_key)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (source_key) DO NOTHING
         RETURNING {PURCHASE_COLUMNS}"
    ))
    .bind(&purchase.username)
    .bind(&purchase.userid)
    .bind(purchase.price)
    .bind(purchase.purchased_at)
    .bind(source_key)
    .fetch_optional(&mut *connection)
    .await
}

/// Records a purchase and its `purchase.made` event (for `destination`, keyed by username,
/// so one user's purchases stay in order) in one transaction.
pub async fn record(
    pool: &PgPool,
    destination: &Destination,
    purchase: &NewPurchase,
    origin: Option<&Origin>,
) -> Result<Purchase> {
    let event_id = outbox::new_event_id();
    let body = serde_json::to_string(&PurchaseMessage::from(purchase))
        .map_err(|error| Error::InvalidRecord(error.to_string()))?;
    let mut transaction = pool.begin().await?;
    let stored = insert(&mut transaction, purchase, &event_id.to_string())
        .await?
        .ok_or_else(|| Error::InvalidRecord(format!("event id {event_id} used twice")))?;
    outbox::append(
        &mut transaction,
        &NewEvent {
            event_id,
            destination,
            aggregate_type: AGGREGATE_TYPE,
            aggregate_id: &stored.id.to_string(),
            event_type: PURCHASE_MADE,
            message_key: &purchase.username,
            body: &body,
            origin,
        },
    )
    .await?;
    transaction.commit().await?;
    Ok(stored)
}

/// Stores a purchase read from the topic inside the caller's transaction, once per
/// `source_key`: whether it was new (a purchase recorded by `POST /buy` comes back from the
/// topic with its own event id and is not stored twice).
pub async fn store_consumed(
    connection: &mut PgConnection,
    purchase: &NewPurchase,
    source_key: &str,
) -> Result<bool, sqlx::Error> {
    Ok(insert(connection, purchase, source_key).await?.is_some())
}

/// A user's purchases in the order they were stored, after row `after_id`, at most
/// `limit`.
pub async fn for_user(
    pool: &PgPool,
    username: &str,
    after_id: Option<i64>,
    limit: i64,
) -> Result<Vec<Purchase>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {PURCHASE_COLUMNS} FROM purchases
         WHERE username = $1 AND id > $2
         ORDER BY id
         LIMIT $3"
    ))
    .bind(username)
    .bind(after_id.unwrap_or(0))
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// One purchase.
pub async fn find(pool: &PgPool, id: i64) -> Result<Option<Purchase>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {PURCHASE_COLUMNS} FROM purchases WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// The purchases with these ids that exist (any order), in one statement.
pub async fn find_many(db: impl PgExecutor<'_>, ids: &[i64]) -> Result<Vec<Purchase>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {PURCHASE_COLUMNS} FROM purchases WHERE id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(db)
    .await?)
}

/// How many purchases a user has.
pub async fn count_for_user(pool: &PgPool, username: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM purchases WHERE username = $1")
            .bind(username)
            .fetch_one(pool)
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_originals_body_and_numbers_are_accepted_and_sent_as_its_four_strings() {
        let strings = json!({"username": "john", "userid": "005", "price": "1195.30",
                             "timestamp": "2024-05-31T15:54:32.204Z"});
        let numbers = json!({"username": "john", "userid": 5, "price": 1195.3,
                             "timestamp": "2024-05-31T17:54:32.204+02:00", "extra": true});
        let message = PurchaseMessage::from(&NewPurchase::from_json(&strings).unwrap());
        assert_eq!(
            serde_json::to_string(&message).unwrap(),
            r#"{"username":"john","userid":"005","price":"1195.30","timestamp":"2024-05-31T15:54:32.204Z"}"#
        );
        let message = PurchaseMessage::from(&NewPurchase::from_json(&numbers).unwrap());
        assert_eq!(
            (message.userid.as_str(), message.price.as_str()),
            ("5", "1195.30")
        );
        assert_eq!(message.timestamp, "2024-05-31T15:54:32.204Z");
    }

    #[test]
    fn each_bad_field_is_named() {
        let good = json!({"username": "john", "userid": "005", "price": "1.00",
                          "timestamp": "2024-05-31T15:54:32.204Z"});
        let cases = [
            ("username", json!("")),
            ("username", json!("x".repeat(65))),
            ("username", json!("nul\u{0}byte")),
            ("username", json!(7)),
            ("userid", json!(null)),
            ("userid", json!([1])),
            ("price", json!("-1")),
            ("price", json!("1.001")),
            ("price", json!("ten")),
            ("price", json!(true)),
            ("timestamp", json!("yesterday")),
            ("timestamp", json!("2024-05-31 15:54:32")),
        ];
        for (field, value) in cases {
            let mut body = good.clone();
            body[field] = value.clone();
            match NewPurchase::from_json(&body) {
                Err(Error::InvalidInput { field: named, .. }) => {
                    assert_eq!(named, field, "{value}")
                }
                other => panic!("{field} = {value}: {other:?}"),
            }
        }
        assert!(matches!(
            NewPurchase::from_json(&json!([good])),
            Err(Error::InvalidInput { field: "body", .. })
        ));
    }
}
