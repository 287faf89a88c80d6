//! The transactional outbox, the same for every broker: events written in the same
//! transaction as the change they announce, then claimed, published and marked by relays.
//!
//! A row says where it goes and how: the broker ([`Broker`]), the destination on it
//! (RabbitMQ exchange or Kafka topic), the message key (routing key or partition key), the
//! headers the message carries (at least `id`, `content-type`, `type`, and `traceparent`
//! and `x-request-id` when a request wrote it) and the body, stored as text and sent byte for byte. Every
//! event has a UUID v7 ([`new_event_id`]), carried as the `id` header, so consumers can
//! tell our events from a foreign publisher's small integer ids.
//!
//! Claims use `FOR UPDATE SKIP LOCKED` inside a transaction the relay holds until the rows
//! are marked, so two relays never hold the same row, and a relay that dies mid-batch
//! releases its rows to the next (at-least-once). Failed publishes back off exponentially
//! with jitter; after the last allowed attempt a row becomes `failed` (dead) with its
//! error, until put back.

use std::fmt;

use serde_json::{Map, Value};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::telemetry::Origin;
use crate::{Error, Result};

/// `NOTIFY` channel raised when an event is appended, so relays wake at once.
pub const APPENDED_CHANNEL: &str = "hub_outbox_appended";
/// Longest stored error message.
const MAX_ERROR_LENGTH: usize = 2_000;

/// Header carrying our event id (Debezium's convention for Kafka; also AMQP `message_id`).
pub const ID_HEADER: &str = "id";
/// Header carrying the body's media type.
pub const CONTENT_TYPE_HEADER: &str = "content-type";
/// Header carrying the event type.
pub const TYPE_HEADER: &str = "type";
/// Header carrying the W3C trace context of the write.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// Header carrying the id of the request that wrote the event.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// A fresh event id: a UUID v7, ordered by time.
pub fn new_event_id() -> Uuid {
    Uuid::now_v7()
}

/// The brokers the outbox can send to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Broker {
    /// RabbitMQ: the destination is an exchange, the key a routing key.
    RabbitMq,
    /// Kafka: the destination is a topic, the key the partition key.
    Kafka,
}

impl Broker {
    /// The name stored in `outbox_events.broker` and shown in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RabbitMq => "rabbitmq",
            Self::Kafka => "kafka",
        }
    }
}

impl fmt::Display for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an event goes: a broker and an exchange or topic on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    /// The broker.
    pub broker: Broker,
    /// The RabbitMQ exchange or Kafka topic.
    pub name: String,
}

impl Destination {
    /// An exchange on RabbitMQ.
    pub fn rabbitmq(exchange: &str) -> Self {
        Self {
            broker: Broker::RabbitMq,
            name: exchange.to_owned(),
        }
    }

    /// A topic on Kafka.
    pub fn kafka(topic: &str) -> Self {
        Self {
            broker: Broker::Kafka,
            name: topic.to_owned(),
        }
    }
}

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    /// Its id, from [`new_event_id`] (drawn first so the body can carry it).
    pub event_id: Uuid,
    /// Where it goes.
    pub destination: &'a Destination,
    /// `Order`...: the kind of thing that changed.
    pub aggregate_type: &'a str,
    /// The id of the thing that changed.
    pub aggregate_id: &'a str,
    /// `order.created`...
    pub event_type: &'a str,
    /// RabbitMQ routing key or Kafka partition key.
    pub message_key: &'a str,
    /// The body, sent byte for byte: JSON (its key order is kept).
    pub body: &'a str,
    /// The request that wrote the event (its trace context and id), when one did.
    pub origin: Option<&'a Origin>,
}

/// An event claimed for publishing.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// Row id: the claim order.
    pub id: i64,
    /// The event's id (also in the `id` header).
    pub event_id: Uuid,
    /// The exchange or topic (the broker is the claimant's).
    pub destination: String,
    /// `order.created`...
    pub event_type: String,
    /// Routing key or partition key.
    pub message_key: Option<String>,
    /// Headers to send, all strings.
    pub headers: Vec<(String, String)>,
    /// The body, byte for byte.
    pub body: String,
    /// Attempts made before this one.
    pub attempts: i32,
}

impl OutboxEvent {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Appends an event inside the caller's transaction and wakes the relays (on commit).
pub async fn append(connection: &mut PgConnection, event: &NewEvent<'_>) -> Result<()> {
    serde_json::from_str::<serde::de::IgnoredAny>(event.body)
        .map_err(|error| Error::InvalidRecord(format!("an outbox body must be JSON: {error}")))?;
    let mut headers = Map::new();
    headers.insert(ID_HEADER.into(), event.event_id.to_string().into());
    headers.insert(CONTENT_TYPE_HEADER.into(), "application/json".into());
    headers.insert(TYPE_HEADER.into(), event.event_type.into());
    if let Some(origin) = event.origin {
        headers.insert(
            TRACEPARENT_HEADER.into(),
            origin.traceparent.as_str().into(),
        );
        if let Some(request_id) = &origin.request_id {
            headers.insert(REQUEST_ID_HEADER.into(), request_id.as_str().into());
        }
    }
    sqlx::query(
        "INSERT INTO outbox_events (event_id, broker, destination, message_key, headers,
                                    aggregate_type, aggregate_id, event_type, payload)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::json)",
    )
    .bind(event.event_id)
    .bind(event.destination.broker.as_str())
    .bind(&event.destination.name)
    .bind(event.message_key)
    .bind(Value::Object(headers))
    .bind(event.aggregate_type)
    .bind(event.aggregate_id)
    .bind(event.event_type)
    .bind(event.body)
    .execute(&mut *connection)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(APPENDED_CHANNEL)
        .bind(event.destination.broker.as_str())
        .execute(&mut *connection)
        .await?;
    Ok(())
}

type ClaimedRow = (
    i64,
    Uuid,
    String,
    String,
    Option<String>,
    Value,
    String,
    i32,
);

/// Locks up to `limit` due events bound for `broker` (oldest first) for the caller's
/// transaction, skipping rows another relay holds.
pub async fn claim_due(
    connection: &mut PgConnection,
    broker: Broker,
    limit: i64,
) -> Result<Vec<OutboxEvent>> {
    let rows: Vec<ClaimedRow> = sqlx::query_as(
        "SELECT id, event_id, destination, event_type, message_key, headers, payload::text,
                attempts
         FROM outbox_events
         WHERE broker = $1 AND status = 'pending' AND next_attempt_at <= now()
         ORDER BY id
         LIMIT $2
         FOR UPDATE SKIP LOCKED",
    )
    .bind(broker.as_str())
    .bind(limit)
    .fetch_all(&mut *connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, event_id, destination, event_type, message_key, headers, body, attempts)| {
                OutboxEvent {
                    id,
                    event_id,
                    destination,
                    event_type,
                    message_key,
                    headers: string_headers(headers),
                    body,
                    attempts,
                }
            },
        )
        .collect())
}

/// The headers as strings (the column holds an object; non-string values are sent as JSON).
fn string_headers(headers: Value) -> Vec<(String, String)> {
    let Value::Object(headers) = headers else {
        return Vec::new();
    };
    headers
        .into_iter()
        .map(|(name, value)| match value {
            Value::String(text) => (name, text),
            other => (name, other.to_string()),
        })
        .collect()
}

/// Marks events as published (the broker confirmed them).
pub async fn mark_processed(connection: &mut PgConnection, ids: &[i64]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE outbox_events
         SET status = 'processed', processed_at = now(), updated_at = now(), error_message = NULL
         WHERE id = ANY($1)",
    )
    .bind(ids)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Records one failed attempt per event: the next attempt waits 0.5 s x 2^attempts (at
/// most 5 minutes) with +-50% jitter; once `max_attempts` are spent the row is `failed`.
/// Returns the rows that became `failed`.
pub async fn record_failures(
    connection: &mut PgConnection,
    failures: &[(i64, String)],
    max_attempts: i32,
) -> Result<Vec<i64>> {
    if failures.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = failures.iter().map(|(id, _)| *id).collect();
    let errors: Vec<String> = failures
        .iter()
        .map(|(_, error)| error.chars().take(MAX_ERROR_LENGTH).collect())
        .collect();
    let dead: Vec<i64> = sqlx::query_scalar(
        "WITH failed AS (
             UPDATE outbox_events AS e
             SET attempts = e.attempts + 1,
                 status = CASE WHEN e.attempts + 1 >= $3 THEN 'failed' ELSE 'pending' END,
                 next_attempt_at = now() + make_interval(
                     secs => least(300, 0.5 * power(2, e.attempts)) * (0.5 + random())),
                 error_message = f.error,
                 updated_at = now()
             FROM unnest($1::bigint[], $2::text[]) AS f(id, error)
             WHERE e.id = f.id
             RETURNING e.id, e.status
         )
         SELECT id FROM failed WHERE status = 'failed'",
    )
    .bind(&ids)
    .bind(&errors)
    .bind(max_attempts)
    .fetch_all(&mut *connection)
    .await?;
    Ok(dead)
}

/// Puts every `failed` event back to `pending` with a fresh attempt budget. Returns how
/// many.
pub async fn retry_failed(pool: &PgPool) -> Result<u64> {
    let result = sqlx::query(
        "UPDATE outbox_events
         SET status = 'pending', attempts = 0, next_attempt_at = now(), updated_at = now()
         WHERE status = 'failed'",
    )
    .execute(pool)
    .await?;
    if result.rows_affected() > 0 {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(APPENDED_CHANNEL)
            .execute(pool)
            .await?;
    }
    Ok(result.rows_affected())
}

/// How many events are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    /// Waiting to be published (including those backing off).
    pub pending: i64,
    /// Published and confirmed.
    pub processed: i64,
    /// Out of attempts.
    pub failed: i64,
}

/// Counts events by state.
pub async fn counts(pool: &PgPool) -> Result<OutboxCounts> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM outbox_events GROUP BY status")
            .fetch_all(pool)
            .await?;
    let mut counts = OutboxCounts::default();
    for (status, count) in rows {
        match status.as_str() {
            "pending" | "processing" => counts.pending += count,
            "processed" => counts.processed = count,
            "failed" => counts.failed = count,
            _ => {}
        }
    }
    Ok(counts)
}

/// The backlog of one destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Backlog {
    /// Where the events go.
    pub destination: Destination,
    /// Events not yet published (including those backing off).
    pub pending: i64,
    /// Age of the oldest of them, in seconds.
    pub oldest_pending_seconds: f64,
}

/// The pending events of every destination bound for `broker` that has any.
pub async fn backlog(pool: &PgPool, broker: Broker) -> Result<Vec<Backlog>> {
    let rows: Vec<(String, i64, f64)> = sqlx::query_as(
        "SELECT destination, count(*),
                extract(epoch FROM now() - min(created_at))::float8
         FROM outbox_events
         WHERE broker = $1 AND status = 'pending'
         GROUP BY destination",
    )
    .bind(broker.as_str())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, pending, oldest_pending_seconds)| Backlog {
            destination: Destination { broker, name },
            pending,
            oldest_pending_seconds,
        })
        .collect())
}

/// How many events bound for `broker` were given up on (`failed`, dead).
pub async fn dead_count(pool: &PgPool, broker: Broker) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM outbox_events WHERE broker = $1 AND status = 'failed'",
    )
    .bind(broker.as_str())
    .fetch_one(pool)
    .await?)
}
