//! `workers consume <flow>`: broker events into PostgreSQL, exactly once in effect.
//!
//! - `mod.rs` (here): the subcommands, the [`Handler`] a flow implements, and the inbox
//!   apply every flow shares ([`apply_message`]).
//! - `rabbitmq.rs`: the RabbitMQ receive loop (connect, prefetch, decode, apply, ack after
//!   commit, dead-letter after N attempts, reconnect with backoff).
//! - `kafka.rs`: the Kafka receive loop (consumer group, offsets stored after the commit,
//!   poison messages to `<topic>.dlq`, lag).
//! - `orders.rs`: the `order.created` handler (`orders_count`).
//! - `purchases.rs`: the purchases handler (the `purchases` table).
//!
//! Every message is applied in one transaction that also records it in the inbox ledger
//! `processed_events(consumer, event_key)`; a redelivered duplicate changes nothing. The
//! key is our event id (the `id` header, a UUID) when the message has one; a message from
//! a foreign publisher has none, so its handler names what identifies it
//! ([`Handler::foreign_key`]), or failing that its position in the log (Kafka), in a
//! namespace of its own: a foreign id "1" and ours can never be taken for each other.

mod kafka;
mod orders;
mod purchases;
mod rabbitmq;

use std::future::Future;

use clap::Subcommand;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::health::Health;

pub use kafka::{run_kafka_consumer, KafkaConsumerSettings};
pub use orders::{ConsumeOrdersArgs, OrdersHandler};
pub use purchases::{ConsumePurchasesArgs, PurchasesHandler};
pub use rabbitmq::{run_consumer, ConsumerSettings};

/// What `workers consume` can consume.
#[derive(Debug, Clone, Subcommand)]
pub enum ConsumeCommand {
    /// `order.created` events from RabbitMQ into `orders_count`.
    Orders(ConsumeOrdersArgs),
    /// Purchases from Kafka into the `purchases` table (consumer group).
    Purchases(ConsumePurchasesArgs),
}

/// Runs `workers consume <flow>` until SIGTERM or ctrl-c.
pub async fn run(command: ConsumeCommand) -> anyhow::Result<()> {
    match command {
        ConsumeCommand::Orders(args) => orders::run(args).await,
        ConsumeCommand::Purchases(args) => purchases::run(args).await,
    }
}

/// What a handler makes of a message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<E> {
    /// An event to apply.
    Event(E),
    /// Acknowledge without effect, for this reason.
    Skip(&'static str),
    /// Can never be applied (not JSON, wrong types): dead-letter it.
    Poison(String),
}

/// What applying an event did to the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Changed what it should.
    Applied,
    /// Nothing to change, for this reason (rolled back, not recorded).
    Skipped(&'static str),
}

/// One flow of events into PostgreSQL: how to read a message and what it does.
pub trait Handler: Send + Sync {
    /// A decoded event.
    type Event: Send + Sync;
    /// The consumer's name in the inbox ledger, logs and connection names.
    const NAME: &'static str;

    /// Reads a message body.
    fn decode(&self, body: &[u8]) -> Decoded<Self::Event>;

    /// What identifies an event that came without our `id` header (a foreign publisher)
    /// from its body, prefixed so it cannot equal one of our UUIDs (`event_id:17`); `None`
    /// when the body has nothing (a Kafka message is then identified by its position).
    fn foreign_key(&self, event: &Self::Event) -> Option<String>;

    /// Applies the event inside the inbox transaction; `key` is what identifies it (see
    /// [`apply_message`]).
    fn apply(
        &self,
        transaction: &mut PgConnection,
        event: &Self::Event,
        key: &str,
    ) -> impl Future<Output = Result<Effect, sqlx::Error>> + Send;
}

/// What handling one message came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Recorded and applied.
    Applied,
    /// Its key was applied before: nothing changed.
    Duplicate,
    /// Acknowledged without effect, for this reason.
    Skipped(&'static str),
    /// Can never be applied: dead-letter it.
    Poison(String),
}

/// A message as any broker delivered it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Envelope<'a> {
    /// The body.
    pub body: &'a [u8],
    /// Its `id` header (our event id), if any.
    pub id_header: Option<&'a str>,
    /// Where the broker keeps it, when that identifies it for good (Kafka:
    /// `kafka:<topic>/<partition>/<offset>`).
    pub position: Option<&'a str>,
    /// Its W3C `traceparent` header: applying it joins the trace of the request that
    /// caused it.
    pub traceparent: Option<&'a str>,
    /// Its `x-request-id` header: the request that caused it.
    pub request_id: Option<&'a str>,
}

impl Envelope<'_> {
    /// The span handling this message runs in, for consumer `consumer`: it names the event,
    /// the request that caused it and that request's trace (so every log line about the
    /// message does), and continues that trace.
    pub fn span(&self, consumer: &'static str) -> tracing::Span {
        let span = tracing::info_span!(
            "consume",
            consumer,
            event_id = self.id_header.unwrap_or_default(),
            request_id = self.request_id.unwrap_or_default(),
            trace_id = tracing::field::Empty,
        );
        if let Some(traceparent) = self.traceparent {
            domain::telemetry::continue_trace(&span, traceparent);
        }
        span
    }
}

/// Applies one message through the inbox: decodes it, records its key for `H::NAME` and
/// applies it in one transaction. The key is our event id when the `id` header holds a
/// UUID, else what the body identifies it by ([`Handler::foreign_key`]), else its
/// position. `Err` is a database failure: try again later. The caller runs it in the
/// message's span ([`Envelope::span`]).
pub async fn apply_message<H: Handler>(
    pool: &PgPool,
    handler: &H,
    envelope: Envelope<'_>,
) -> Result<Applied, sqlx::Error> {
    let event = match handler.decode(envelope.body) {
        Decoded::Event(event) => event,
        Decoded::Skip(reason) => return Ok(Applied::Skipped(reason)),
        Decoded::Poison(reason) => return Ok(Applied::Poison(reason)),
    };
    let ours = envelope
        .id_header
        .and_then(|id| Uuid::parse_str(id).ok())
        .map(|id| id.to_string());
    let Some(key) = ours
        .or_else(|| handler.foreign_key(&event))
        .or_else(|| envelope.position.map(str::to_owned))
    else {
        return Ok(Applied::Skipped("nothing identifies the message"));
    };
    let mut transaction = pool.begin().await?;
    if !insert_key(&mut *transaction, H::NAME, &key).await? {
        return Ok(Applied::Duplicate);
    }
    match handler.apply(&mut transaction, &event, &key).await? {
        Effect::Applied => {
            transaction.commit().await?;
            Ok(Applied::Applied)
        }
        Effect::Skipped(reason) => Ok(Applied::Skipped(reason)),
    }
}

/// Applies one message through the inbox, holding it while the database fails (retries
/// with backoff, counted); `None` when the stop came first.
pub(crate) async fn apply_holding<H: Handler>(
    pool: &PgPool,
    handler: &H,
    envelope: Envelope<'_>,
    metrics: &ConsumerMetrics,
    stop: &mut crate::stop::Stop,
) -> Option<Applied> {
    let mut failures = 0;
    loop {
        match apply_message(pool, handler, envelope).await {
            Ok(outcome) => {
                metrics.record(&outcome);
                return Some(outcome);
            }
            Err(error) => {
                failures += 1;
                metrics.database_retries.inc();
                metrics.health.error(&error);
                let delay = domain::backoff::reconnect(failures);
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "cannot apply the event; holding it");
                if !stop.sleep(delay).await {
                    return None;
                }
            }
        }
    }
}

/// The backoff between a receive loop's sessions (a session that ran a while starts the
/// count over), shared by every broker's loop.
#[derive(Debug, Default)]
pub(crate) struct Reconnects {
    failures: u32,
}

impl Reconnects {
    /// Logs a failed session (begun at `started`) and waits before the next, or until the
    /// stop.
    pub(crate) async fn after_failure(
        &mut self,
        consumer: &str,
        started: std::time::Instant,
        error: &domain::Error,
        health: &Health,
        stop: &mut crate::stop::Stop,
    ) {
        health.error(error);
        self.failures = domain::backoff::failures_after(self.failures, started.elapsed());
        let delay = domain::backoff::reconnect(self.failures);
        tracing::warn!(consumer, %error, retry_in_ms = delay.as_millis() as u64, "consumer session failed; reconnecting");
        stop.sleep(delay).await;
    }
}

/// Whether `consumer`'s inbox holds `key`.
pub(crate) async fn inbox_has(pool: &PgPool, consumer: &str, key: &str) -> domain::Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM processed_events WHERE consumer = $1 AND event_key = $2)",
    )
    .bind(consumer)
    .bind(key)
    .fetch_one(pool)
    .await?)
}

/// Records `key` in `consumer`'s inbox; false when it was there already.
async fn insert_key<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    consumer: &str,
    key: &str,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO processed_events (consumer, event_key) VALUES ($1, $2)
         ON CONFLICT DO NOTHING",
    )
    .bind(consumer)
    .bind(key)
    .execute(executor)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Records `key` in `consumer`'s inbox, outside any apply (dead letters).
pub(crate) async fn record_in_inbox(
    pool: &PgPool,
    consumer: &str,
    key: &str,
) -> domain::Result<()> {
    insert_key(pool, consumer, key).await?;
    Ok(())
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: String,
}

/// The consumer's metrics.
#[derive(Debug, Clone, Default)]
pub struct ConsumerMetrics {
    applied: Counter,
    duplicates: Counter,
    skipped: Family<ReasonLabels, Counter>,
    poison: Counter,
    dead_lettered: Counter,
    database_retries: Counter,
    lag: Family<PartitionLabels, Gauge>,
    offset_gaps: Counter,
    /// What the consumer's heartbeat reports (`syncStatus`).
    pub health: Health,
}

impl ConsumerMetrics {
    /// Registers the consumer's metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "consumer_events_applied",
            "Events applied",
            metrics.applied.clone(),
        );
        registry.register(
            "consumer_duplicates",
            "Redelivered events acknowledged without effect",
            metrics.duplicates.clone(),
        );
        registry.register(
            "consumer_skipped",
            "Events acknowledged and skipped, by reason",
            metrics.skipped.clone(),
        );
        registry.register(
            "consumer_poison",
            "Deliveries of messages that can never be applied",
            metrics.poison.clone(),
        );
        registry.register(
            "consumer_dead_lettered",
            "Poison messages sent to the dead-letter queue or topic",
            metrics.dead_lettered.clone(),
        );
        registry.register(
            "consumer_database_retries",
            "Applies retried because the database failed",
            metrics.database_retries.clone(),
        );
        registry.register(
            "consumer_lag",
            "Messages not yet consumed, by topic and partition (Kafka)",
            metrics.lag.clone(),
        );
        registry.register(
            "consumer_offset_gaps",
            "Offset jumps that persisted after reading again (Kafka)",
            metrics.offset_gaps.clone(),
        );
        metrics
    }

    /// Counts a message sent to the dead-letter queue or topic.
    fn dead_lettered(&self) {
        self.dead_lettered.inc();
        self.health.dead_lettered();
    }

    /// Counts what handling a message came to (poison is counted where it is settled).
    fn record(&self, outcome: &Applied) {
        if !matches!(outcome, Applied::Poison(_)) {
            self.health.success();
        }
        match outcome {
            Applied::Applied => {
                tracing::debug!("event applied");
                self.applied.inc()
            }
            Applied::Duplicate => {
                tracing::debug!("event already applied; skipped");
                self.duplicates.inc()
            }
            Applied::Skipped(reason) => {
                tracing::info!(reason, "event skipped");
                self.skipped
                    .get_or_create(&ReasonLabels {
                        reason: (*reason).into(),
                    })
                    .inc()
            }
            Applied::Poison(_) => self.poison.inc(),
        };
    }
}
