//! `workers consume orders`: applies `order.created` events to the shop customers'
//! `orders_count`, exactly once in effect.
//!
//! Each message is applied in one transaction that records its `event_id` (unique) and
//! increments the count, and is acknowledged only after the commit: a redelivered
//! duplicate is acknowledged with no second increment. Missing fields or an unknown
//! customer: acknowledged, skipped, counted. A poison message (not JSON, wrong types) is
//! returned to the quorum queue, whose delivery limit sends it to the dead-letter queue
//! after `--delivery-limit` attempts; it never loops. A database outage holds the message
//! and retries with backoff instead of spending its attempts.

use std::net::SocketAddr;

use clap::{Args, Subcommand};
use domain::amqp::{broker_error, OrdersTopology, OrdersTopologyArgs, RabbitArgs};
use domain::config::DatabaseArgs;
use domain::customers::CustomerSource;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::Value;
use sqlx::PgPool;

use crate::stop::Stop;

/// What `workers consume` can consume.
#[derive(Debug, Clone, Subcommand)]
pub enum ConsumeCommand {
    /// `order.created` events from RabbitMQ into `orders_count`.
    Orders(ConsumeOrdersArgs),
}

/// Options of `workers consume orders`.
#[derive(Debug, Clone, Args)]
pub struct ConsumeOrdersArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub rabbit: RabbitArgs,
    /// Unacknowledged messages the broker may send ahead.
    #[arg(long, env = "CONSUMER_PREFETCH", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,
    #[command(flatten)]
    pub topology: OrdersTopologyArgs,
    /// Address of the admin server (`/metrics`, `/healthz`).
    #[arg(long, env = "CONSUMER_ADMIN_ADDR", default_value = "127.0.0.1:9102")]
    pub admin_addr: SocketAddr,
}

/// What applying one message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Recorded and counted.
    Applied,
    /// Its `event_id` was applied before: nothing changed.
    Duplicate,
    /// Acknowledged without effect, for this reason.
    Skipped(&'static str),
    /// Can never be applied (not JSON, wrong types): dead-letter it.
    Poison(String),
}

/// Applies one `order.created` body. `Err` is a database failure: try again later.
pub async fn apply_event(pool: &PgPool, body: &[u8]) -> Result<Applied, sqlx::Error> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(error) => return Ok(Applied::Poison(format!("not JSON: {error}"))),
    };
    let Some(fields) = value.as_object() else {
        return Ok(Applied::Poison("not a JSON object".into()));
    };
    let event_id = match fields.get("event_id") {
        None | Some(Value::Null) => return Ok(Applied::Skipped("missing event_id")),
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        Some(Value::Number(id)) if id.is_u64() => id.to_string(),
        Some(other) => {
            return Ok(Applied::Poison(format!(
                "event_id has the wrong type: {other}"
            )))
        }
    };
    let customer_id = match fields.get("customer_id") {
        None | Some(Value::Null) => return Ok(Applied::Skipped("missing customer_id")),
        Some(Value::Number(id)) if id.is_i64() => id.to_string(),
        // The original (Rails) looked customers up by id and accepted "5" as well as 5.
        Some(Value::String(id)) if id.parse::<i64>().is_ok() => id.clone(),
        Some(other) => {
            return Ok(Applied::Poison(format!(
                "customer_id has the wrong type: {other}"
            )))
        }
    };
    let mut transaction = pool.begin().await?;
    let first_time = sqlx::query(
        "INSERT INTO processed_order_events (event_id) VALUES ($1) ON CONFLICT DO NOTHING",
    )
    .bind(&event_id)
    .execute(&mut *transaction)
    .await?
    .rows_affected()
        == 1;
    if !first_time {
        return Ok(Applied::Duplicate);
    }
    let counted = sqlx::query(
        "UPDATE customers SET orders_count = orders_count + 1, updated_at = now()
         WHERE source = $1 AND external_id = $2",
    )
    .bind(CustomerSource::Shop.as_str())
    .bind(&customer_id)
    .execute(&mut *transaction)
    .await?
    .rows_affected()
        == 1;
    if !counted {
        return Ok(Applied::Skipped("unknown customer"));
    }
    transaction.commit().await?;
    Ok(Applied::Applied)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
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
}

impl ConsumerMetrics {
    /// Registers the consumer's metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "consumer_events_applied",
            "Events applied (orders_count incremented)",
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
            "Poison messages sent to the dead-letter queue",
            metrics.dead_lettered.clone(),
        );
        registry.register(
            "consumer_database_retries",
            "Applies retried because the database failed",
            metrics.database_retries.clone(),
        );
        metrics
    }
}

/// How many times the broker delivered this message before (quorum queues count).
fn previous_deliveries(delivery: &Delivery) -> i64 {
    let Some(headers) = delivery.properties.headers() else {
        return 0;
    };
    match headers.inner().get("x-delivery-count") {
        Some(AMQPValue::LongLongInt(count)) => *count,
        Some(AMQPValue::LongInt(count)) => i64::from(*count),
        Some(AMQPValue::LongUInt(count)) => i64::from(*count),
        Some(AMQPValue::ShortInt(count)) => i64::from(*count),
        _ => 0,
    }
}

/// Applies one delivery and settles it with the broker. Database failures are retried
/// with backoff while the message is held; on stop it is returned to the queue.
async fn handle(
    pool: &PgPool,
    delivery: &Delivery,
    metrics: &ConsumerMetrics,
    delivery_limit: u32,
    stop: &mut Stop,
) -> domain::Result<()> {
    let mut failures = 0;
    let outcome = loop {
        match apply_event(pool, &delivery.data).await {
            Ok(outcome) => break outcome,
            Err(error) => {
                failures += 1;
                metrics.database_retries.inc();
                let delay = domain::backoff::reconnect(failures);
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "cannot apply the event; holding it");
                if !stop.sleep(delay).await {
                    let requeue = BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    };
                    delivery.nack(requeue).await.map_err(broker_error)?;
                    return Ok(());
                }
            }
        }
    };
    match outcome {
        Applied::Applied => {
            metrics.applied.inc();
        }
        Applied::Duplicate => {
            metrics.duplicates.inc();
        }
        Applied::Skipped(reason) => {
            tracing::info!(reason, "event skipped");
            metrics
                .skipped
                .get_or_create(&ReasonLabels {
                    reason: reason.into(),
                })
                .inc();
        }
        Applied::Poison(reason) => {
            metrics.poison.inc();
            let attempt = previous_deliveries(delivery) + 1;
            if attempt >= i64::from(delivery_limit) {
                tracing::warn!(%reason, attempt, "poison message dead-lettered");
                metrics.dead_lettered.inc();
                delivery
                    .reject(BasicRejectOptions { requeue: false })
                    .await
                    .map_err(broker_error)?;
            } else {
                tracing::warn!(%reason, attempt, "poison message returned to the queue");
                let requeue = BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                };
                delivery.nack(requeue).await.map_err(broker_error)?;
            }
            return Ok(());
        }
    }
    delivery
        .ack(BasicAckOptions::default())
        .await
        .map_err(broker_error)?;
    Ok(())
}

/// Consumes until the stop is raised or the broker connection fails (returned as an error,
/// so the caller reconnects).
pub async fn consume_orders(
    pool: &PgPool,
    url: &str,
    topology: &OrdersTopology,
    prefetch: u16,
    delivery_limit: u32,
    metrics: &ConsumerMetrics,
    stop: &mut Stop,
) -> domain::Result<()> {
    let (_connection, channel) = domain::amqp::connect(url, "hub-consume-orders").await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(broker_error)?;
    topology
        .declare_consumer_queue(&channel, domain::orders::ORDER_CREATED, delivery_limit)
        .await?;
    let mut deliveries = channel
        .basic_consume(
            topology.queue.as_str().into(),
            "hub-consume-orders".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(broker_error)?;
    tracing::info!(queue = %topology.queue, "consuming order.created events");
    loop {
        let next = tokio::select! {
            next = deliveries.next() => next,
            () = stop.wait() => return Ok(()),
        };
        match next {
            Some(Ok(delivery)) => handle(pool, &delivery, metrics, delivery_limit, stop).await?,
            Some(Err(error)) => return Err(broker_error(error)),
            None => {
                return Err(domain::Error::Broker(
                    "the broker cancelled the consumer".into(),
                ))
            }
        }
    }
}

/// How a consumer consumes.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// The exchange, the queue and its dead-letter pair.
    pub topology: OrdersTopology,
    /// Unacknowledged messages in flight.
    pub prefetch: u16,
    /// Deliveries of a poison message before it is dead-lettered.
    pub delivery_limit: u32,
}

/// Runs `workers consume orders` until SIGTERM or ctrl-c.
pub async fn run(command: ConsumeCommand) -> anyhow::Result<()> {
    let ConsumeCommand::Orders(args) = command;
    let pool = domain::db::connect_and_migrate(&args.database.database_url, 4).await?;
    let mut registry = Registry::default();
    let metrics = ConsumerMetrics::register(&mut registry);
    crate::admin::spawn(args.admin_addr, registry).await?;
    let settings = ConsumerSettings {
        topology: args.topology.topology(),
        prefetch: args.prefetch,
        delivery_limit: args.topology.delivery_limit,
    };
    run_consumer(
        pool,
        args.rabbit.url(),
        settings,
        metrics,
        Stop::on_signal(),
    )
    .await
}

/// The consumer's loop: consumes, and reconnects with backoff after broker failures,
/// until `stop` is raised.
pub async fn run_consumer(
    pool: PgPool,
    url: String,
    settings: ConsumerSettings,
    metrics: ConsumerMetrics,
    mut stop: Stop,
) -> anyhow::Result<()> {
    let mut failures = 0;
    while !stop.requested() {
        let started = std::time::Instant::now();
        let outcome = consume_orders(
            &pool,
            &url,
            &settings.topology,
            settings.prefetch,
            settings.delivery_limit,
            &metrics,
            &mut stop,
        )
        .await;
        if let Err(error) = outcome {
            failures = domain::backoff::failures_after(failures, started.elapsed());
            let delay = domain::backoff::reconnect(failures);
            tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "broker connection lost");
            stop.sleep(delay).await;
        }
    }
    tracing::info!("consumer stopped");
    Ok(())
}
