//! The transactional outbox: events written in the same transaction as the change they
//! announce, then claimed, published and marked by relays. Claims use
//! `FOR UPDATE SKIP LOCKED` inside a transaction the relay holds until the rows are marked,
//! so two relays never hold the same row, and a relay that dies mid-batch releases its rows
//! to the next (at-least-once). Failed publishes back off exponentially with jitter; after
//! the last allowed attempt a row becomes `failed` (dead) with its error, until put back.

use sqlx::{PgConnection, PgPool};

use crate::Result;

/// `NOTIFY` channel raised when an event is appended, so relays wake at once.
pub const APPENDED_CHANNEL: &str = "hub_outbox_appended";
/// Longest stored error message.
const MAX_ERROR_LENGTH: usize = 2_000;

/// An event claimed for publishing.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// Row id, also the event id consumers deduplicate on.
    pub id: i64,
    /// `order.created`...: the routing key.
    pub event_type: String,
    /// The message body.
    pub payload: serde_json::Value,
    /// Attempts made before this one.
    pub attempts: i32,
    /// W3C trace context of the request that wrote the event.
    pub traceparent: Option<String>,
}

/// Appends an event inside the caller's transaction. `payload` receives the event id
/// (known only once the row's id is drawn), so bodies can carry it.
pub async fn append(
    connection: &mut PgConnection,
    aggregate_type: &str,
    aggregate_id: &str,
    event_type: &str,
    payload: impl FnOnce(i64) -> serde_json::Result<serde_json::Value>,
    traceparent: Option<&str>,
) -> Result<i64> {
    let id: i64 =
        sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence('outbox_events', 'id'))")
            .fetch_one(&mut *connection)
            .await?;
    let payload = payload(id).map_err(|error| crate::Error::InvalidRecord(error.to_string()))?;
    sqlx::query(
        "INSERT INTO outbox_events (id, aggregate_type, aggregate_id, event_type, payload, traceparent)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(event_type)
    .bind(payload)
    .bind(traceparent)
    .execute(&mut *connection)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(APPENDED_CHANNEL)
        .execute(&mut *connection)
        .await?;
    Ok(id)
}

/// Locks up to `limit` due events (oldest first) for the caller's transaction, skipping
/// rows another relay holds.
pub async fn claim_due(connection: &mut PgConnection, limit: i64) -> Result<Vec<OutboxEvent>> {
    let rows: Vec<(i64, String, serde_json::Value, i32, Option<String>)> = sqlx::query_as(
        "SELECT id, event_type, payload, attempts, traceparent FROM outbox_events
         WHERE status = 'pending' AND next_attempt_at <= now()
         ORDER BY id
         LIMIT $1
         FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut *connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, event_type, payload, attempts, traceparent)| OutboxEvent {
                id,
                event_type,
                payload,
                attempts,
                traceparent,
            },
        )
        .collect())
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
/// Returns how many rows became `failed`.
pub async fn record_failures(
    connection: &mut PgConnection,
    failures: &[(i64, String)],
    max_attempts: i32,
) -> Result<u64> {
    if failures.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = failures.iter().map(|(id, _)| *id).collect();
    let errors: Vec<String> = failures
        .iter()
        .map(|(_, error)| error.chars().take(MAX_ERROR_LENGTH).collect())
        .collect();
    let dead: i64 = sqlx::query_scalar(
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
             RETURNING e.status
         )
         SELECT count(*) FROM failed WHERE status = 'failed'",
    )
    .bind(&ids)
    .bind(&errors)
    .bind(max_attempts)
    .fetch_one(&mut *connection)
    .await?;
    Ok(dead as u64)
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
