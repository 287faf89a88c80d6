//! `workers relay`: publishes outbox events to RabbitMQ with publisher confirms.
//!
//! Each batch claims due rows with `FOR UPDATE SKIP LOCKED` in a transaction held until the
//! rows are marked, publishes them all (mandatory, persistent, `message_id` = event id,
//! W3C `traceparent` header), then waits for every confirm: a confirmed row is marked
//! processed; a nack, an unroutable return or a malformed payload costs the row an attempt
//! (exponential backoff, `failed` after `--max-attempts`). A lost connection rolls the
//! batch back untouched (no attempt spent) and the relay reconnects with backoff. Any
//! number of relays can run side by side. New events wake the relay through `NOTIFY`.
//!
//! The relay declares the consumer's durable queue as well as the exchange: an event
//! published before the consumer ever ran would otherwise reach only whatever queue
//! happened to be bound (a gateway's live queue), be confirmed, and never be counted.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Args;
use domain::amqp::{broker_error, OrdersTopology, OrdersTopologyArgs, RabbitArgs};
use domain::config::DatabaseArgs;
use domain::orders::OrderCreatedMessage;
use domain::outbox::{self, OutboxEvent};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use sqlx::postgres::PgListener;
use sqlx::PgPool;

use crate::stop::Stop;

/// Options of `workers relay`.
#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub rabbit: RabbitArgs,
    /// Events claimed and published per batch (confirms are awaited per batch).
    #[arg(long, env = "RELAY_BATCH_SIZE", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// Attempts before an event becomes `failed` (dead).
    #[arg(long, env = "RELAY_MAX_ATTEMPTS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub max_attempts: u32,
    /// Longest wait between looks at the outbox when no notification arrives, in ms.
    #[arg(long, env = "RELAY_POLL_INTERVAL_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub poll_interval_ms: u64,
    #[command(flatten)]
    pub topology: OrdersTopologyArgs,
    /// Address of the admin server (`/metrics`, `/healthz`).
    #[arg(long, env = "RELAY_ADMIN_ADDR", default_value = "127.0.0.1:9101")]
    pub admin_addr: SocketAddr,
    /// Put every failed (dead) event back to pending, then exit.
    #[arg(long)]
    pub retry_failed: bool,
}

/// The relay's metrics.
#[derive(Debug, Clone)]
pub struct RelayMetrics {
    published: Counter,
    attempts_failed: Counter,
    dead: Counter,
    reconnects: Counter,
    batch_duration: Histogram,
}

impl RelayMetrics {
    /// Registers the relay's metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            published: Counter::default(),
            attempts_failed: Counter::default(),
            dead: Counter::default(),
            reconnects: Counter::default(),
            batch_duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
        };
        registry.register(
            "relay_events_published",
            "Events published and confirmed",
            metrics.published.clone(),
        );
        registry.register(
            "relay_attempts_failed",
            "Publish attempts that failed (nack, unroutable, malformed)",
            metrics.attempts_failed.clone(),
        );
        registry.register(
            "relay_events_dead",
            "Events that ran out of attempts",
            metrics.dead.clone(),
        );
        registry.register(
            "relay_broker_reconnects",
            "Broker connections re-established",
            metrics.reconnects.clone(),
        );
        registry.register(
            "relay_batch_duration_seconds",
            "Time to claim, publish, confirm and mark one batch",
            metrics.batch_duration.clone(),
        );
        metrics
    }
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Rows claimed.
    pub claimed: usize,
    /// Rows published and confirmed.
    pub published: usize,
    /// Rows whose attempt failed (including those now dead).
    pub failed: usize,
    /// Rows that ran out of attempts in this batch.
    pub dead: u64,
}

/// Publishing settings.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Exchange to publish to, and the consumer's queue.
    pub topology: OrdersTopology,
    /// Declare the consumer's queue with this delivery limit (`None`: the exchange only).
    pub declare_consumer_queue: Option<u32>,
    /// Rows per batch.
    pub batch_size: u32,
    /// Attempts before a row is dead.
    pub max_attempts: u32,
}

/// A relay bound to one broker connection.
pub struct Relay {
    pool: PgPool,
    _connection: Connection,
    channel: Channel,
    settings: RelaySettings,
    metrics: RelayMetrics,
}

impl Relay {
    /// Connects, turns on publisher confirms and declares the exchange.
    pub async fn connect(
        pool: PgPool,
        url: &str,
        settings: RelaySettings,
        metrics: RelayMetrics,
    ) -> domain::Result<Self> {
        let (connection, channel) = domain::amqp::connect(url, "hub-relay").await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(broker_error)?;
        match settings.declare_consumer_queue {
            Some(delivery_limit) => {
                settings
                    .topology
                    .declare_consumer_queue(&channel, domain::orders::ORDER_CREATED, delivery_limit)
                    .await?
            }
            None => settings.topology.declare_exchange(&channel).await?,
        }
        Ok(Self {
            pool,
            _connection: connection,
            channel,
            settings,
            metrics,
        })
    }

    /// Claims, publishes, confirms and marks one batch. A broker error rolls the batch back
    /// untouched and is returned, so the caller reconnects.
    pub async fn process_next_batch(&self) -> domain::Result<BatchOutcome> {
        let started = Instant::now();
        let mut transaction = self.pool.begin().await?;
        let events =
            outbox::claim_due(&mut transaction, i64::from(self.settings.batch_size)).await?;
        if events.is_empty() {
            transaction.commit().await?;
            return Ok(BatchOutcome::default());
        }
        let mut failures: Vec<(i64, String)> = Vec::new();
        let mut pending_confirms = Vec::with_capacity(events.len());
        for event in &events {
            let body = match encode_body(event) {
                Ok(body) => body,
                Err(problem) => {
                    failures.push((event.id, problem));
                    continue;
                }
            };
            let confirm = self
                .channel
                .basic_publish(
                    self.settings.topology.exchange.as_str().into(),
                    event.event_type.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &body,
                    properties(event),
                )
                .await
                .map_err(broker_error)?;
            pending_confirms.push((event.id, confirm));
        }
        let mut published = Vec::with_capacity(pending_confirms.len());
        for (id, confirm) in pending_confirms {
            let confirmation = confirm.await.map_err(broker_error)?;
            if confirmation.is_nack() {
                failures.push((id, "the broker refused the message (nack)".into()));
                continue;
            }
            match confirmation.take_message() {
                None => published.push(id),
                Some(returned) => failures.push((
                    id,
                    format!(
                        "unroutable: {} {} (no queue is bound for routing key {:?})",
                        returned.reply_code, returned.reply_text, returned.delivery.routing_key
                    ),
                )),
            }
        }
        outbox::mark_processed(&mut transaction, &published).await?;
        let max_attempts = i32::try_from(self.settings.max_attempts).unwrap_or(i32::MAX);
        let dead = outbox::record_failures(&mut transaction, &failures, max_attempts).await?;
        transaction.commit().await?;
        self.metrics.published.inc_by(published.len() as u64);
        self.metrics.attempts_failed.inc_by(failures.len() as u64);
        self.metrics.dead.inc_by(dead);
        self.metrics
            .batch_duration
            .observe(started.elapsed().as_secs_f64());
        for (id, error) in &failures {
            tracing::warn!(event_id = id, %error, "publish attempt failed");
        }
        Ok(BatchOutcome {
            claimed: events.len(),
            published: published.len(),
            failed: failures.len(),
            dead,
        })
    }
}

/// The message body: `order.created` events in the contract's exact shape and key order
/// (the stored JSONB does not keep key order); other events as stored.
fn encode_body(event: &OutboxEvent) -> Result<Vec<u8>, String> {
    let encoded = if event.event_type == domain::orders::ORDER_CREATED {
        serde_json::from_value::<OrderCreatedMessage>(event.payload.clone())
            .and_then(|message| serde_json::to_vec(&message))
    } else {
        serde_json::to_vec(&event.payload)
    };
    encoded.map_err(|error| format!("malformed payload: {error}"))
}

fn properties(event: &OutboxEvent) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(traceparent) = &event.traceparent {
        headers.insert(
            "traceparent".into(),
            AMQPValue::LongString(LongString::from(traceparent.as_str())),
        );
    }
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(event.id.to_string().into())
        .with_type(event.event_type.as_str().into())
        .with_headers(headers)
}

/// Runs the relay until SIGTERM or ctrl-c (the batch in flight finishes first).
pub async fn run(args: RelayArgs) -> anyhow::Result<()> {
    let pool = domain::db::connect_and_migrate(&args.database.database_url, 4).await?;
    if args.retry_failed {
        let count = outbox::retry_failed(&pool).await?;
        println!("{count} failed events put back to pending");
        return Ok(());
    }
    let mut registry = Registry::default();
    let metrics = RelayMetrics::register(&mut registry);
    crate::admin::spawn(args.admin_addr, registry).await?;
    let settings = RelaySettings {
        topology: args.topology.topology(),
        declare_consumer_queue: Some(args.topology.delivery_limit),
        batch_size: args.batch_size,
        max_attempts: args.max_attempts,
    };
    let poll_interval = Duration::from_millis(args.poll_interval_ms);
    run_relay(
        pool,
        &args.rabbit.url(),
        settings,
        metrics,
        poll_interval,
        Stop::on_signal(),
    )
    .await
}

/// The relay's loop: drains due events batch after batch, sleeps until an event is
/// appended (or `poll_interval` passes), reconnects after broker failures, and returns
/// once `stop` is raised (the batch in flight finishes first).
pub async fn run_relay(
    pool: PgPool,
    url: &str,
    settings: RelaySettings,
    metrics: RelayMetrics,
    poll_interval: Duration,
    mut stop: Stop,
) -> anyhow::Result<()> {
    let mut wakeups = PgListener::connect_with(&pool).await?;
    wakeups.listen(outbox::APPENDED_CHANNEL).await?;
    let mut connect_failures = 0;
    while !stop.requested() {
        let relay = match Relay::connect(pool.clone(), url, settings.clone(), metrics.clone()).await
        {
            Ok(relay) => {
                if connect_failures > 0 {
                    metrics.reconnects.inc();
                }
                connect_failures = 0;
                tracing::info!(exchange = %settings.topology.exchange, "relay connected to the broker");
                relay
            }
            Err(error) => {
                connect_failures += 1;
                let delay = domain::backoff::reconnect(connect_failures);
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "cannot connect to the broker or declare the topology");
                stop.sleep(delay).await;
                continue;
            }
        };
        let mut database_failures = 0;
        while !stop.requested() {
            match relay.process_next_batch().await {
                Ok(outcome) => {
                    database_failures = 0;
                    if outcome.claimed < settings.batch_size as usize {
                        wait_for_events(&mut wakeups, poll_interval, &mut stop).await;
                    }
                }
                Err(domain::Error::Broker(error)) => {
                    connect_failures = 1;
                    tracing::warn!(%error, "broker connection lost; the batch was rolled back");
                    break;
                }
                Err(error) => {
                    database_failures += 1;
                    let delay = domain::backoff::reconnect(database_failures);
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "relay batch failed");
                    stop.sleep(delay).await;
                }
            }
        }
    }
    tracing::info!("relay stopped");
    Ok(())
}

/// Waits for an append notification, the poll interval, or the stop, whichever is first.
async fn wait_for_events(wakeups: &mut PgListener, poll_interval: Duration, stop: &mut Stop) {
    tokio::select! {
        notification = tokio::time::timeout(poll_interval, wakeups.recv()) => {
            if let Ok(Err(error)) = notification {
                tracing::debug!(%error, "outbox notifications interrupted");
                stop.sleep(poll_interval).await;
            }
        }
        () = stop.wait() => {}
    }
}
