//! The RabbitMQ receive loop every RabbitMQ flow shares: declares the flow's quorum queue
//! (bound to its exchange, with a dead-letter pair), consumes with a prefetch, applies each
//! message through the inbox and acknowledges only after the commit.
//!
//! A poison message is returned to the queue until it has been delivered
//! `delivery_limit` times (quorum queues count deliveries), then rejected into the
//! dead-letter queue: it never loops. A database outage holds the message and retries with
//! backoff instead of spending its attempts; on stop it goes back to the queue. A lost
//! connection reconnects with backoff, the consumer's health saying unable meanwhile. A
//! queue or exchange the broker refuses to declare (one of that name exists with other
//! arguments) ends the loop with that error: retrying could never help.

use domain::amqp::{broker_error, DeclareError, QueueTopology};
use domain::outbox::{ID_HEADER, REQUEST_ID_HEADER, TRACEPARENT_HEADER};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use sqlx::PgPool;
use tracing::Instrument;

use super::{apply_holding, Applied, ConsumerMetrics, Envelope, Handler, Reconnects};
use crate::stop::Stop;

/// How a RabbitMQ consumer consumes.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// The exchange, the queue and its dead-letter pair.
    pub topology: QueueTopology,
    /// The routing key the queue is bound with.
    pub routing_key: String,
    /// Unacknowledged messages in flight.
    pub prefetch: u16,
    /// Deliveries of a poison message before it is dead-lettered.
    pub delivery_limit: u32,
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

/// The message's `id` header (our event id), if it carries one.
fn text_header(delivery: &Delivery, name: &str) -> Option<String> {
    match delivery.properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(id) => Some(id.to_string()),
        AMQPValue::ShortString(id) => Some(id.as_str().to_owned()),
        _ => None,
    }
}

fn requeue() -> BasicNackOptions {
    BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    }
}

/// Applies one delivery and settles it with the broker. Database failures are retried
/// with backoff while the message is held; on stop it is returned to the queue.
async fn handle<H: Handler>(
    pool: &PgPool,
    handler: &H,
    delivery: &Delivery,
    metrics: &ConsumerMetrics,
    delivery_limit: u32,
    stop: &mut Stop,
) -> domain::Result<()> {
    let id = text_header(delivery, ID_HEADER);
    let traceparent = text_header(delivery, TRACEPARENT_HEADER);
    let request_id = text_header(delivery, REQUEST_ID_HEADER);
    let envelope = Envelope {
        body: &delivery.data,
        id_header: id.as_deref(),
        position: None,
        traceparent: traceparent.as_deref(),
        request_id: request_id.as_deref(),
    };
    async {
        let Some(outcome) = apply_holding(pool, handler, envelope, metrics, stop).await else {
            delivery.nack(requeue()).await.map_err(broker_error)?;
            return Ok(());
        };
        if let Applied::Poison(reason) = outcome {
            let attempt = previous_deliveries(delivery) + 1;
            if attempt >= i64::from(delivery_limit) {
                tracing::warn!(%reason, attempt, "poison message dead-lettered");
                metrics.dead_lettered();
                delivery
                    .reject(BasicRejectOptions { requeue: false })
                    .await
                    .map_err(broker_error)?;
            } else {
                tracing::warn!(%reason, attempt, "poison message returned to the queue");
                delivery.nack(requeue()).await.map_err(broker_error)?;
            }
            return Ok(());
        }
        delivery
            .ack(BasicAckOptions::default())
            .await
            .map_err(broker_error)?;
        Ok(())
    }
    .instrument(envelope.span(H::NAME))
    .await
}

/// Consumes until the stop is raised or the broker connection fails (returned as an error,
/// so the caller reconnects) or the broker refuses the topology (final). Says able on the
/// consumer's health once it consumes.
async fn consume<H: Handler>(
    pool: &PgPool,
    handler: &H,
    url: &str,
    settings: &ConsumerSettings,
    metrics: &ConsumerMetrics,
    stop: &mut Stop,
) -> Result<(), DeclareError> {
    let name = format!("hub-consume-{}", H::NAME);
    let (connection, channel) = domain::amqp::connect(url, &name).await?;
    channel
        .basic_qos(settings.prefetch, BasicQosOptions::default())
        .await
        .map_err(broker_error)?;
    settings
        .topology
        .declare_consumer_queue(&connection, &settings.routing_key, settings.delivery_limit)
        .await?;
    let mut deliveries = channel
        .basic_consume(
            settings.topology.queue.as_str().into(),
            name.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(broker_error)?;
    metrics.health.able();
    tracing::info!(consumer = H::NAME, queue = %settings.topology.queue, "consuming");
    loop {
        let next = tokio::select! {
            next = deliveries.next() => next,
            () = stop.wait() => return Ok(()),
        };
        match next {
            Some(Ok(delivery)) => {
                handle(
                    pool,
                    handler,
                    &delivery,
                    metrics,
                    settings.delivery_limit,
                    stop,
                )
                .await?
            }
            Some(Err(error)) => return Err(broker_error(error).into()),
            None => {
                return Err(
                    domain::Error::Broker("the broker cancelled the consumer".into()).into(),
                )
            }
        }
    }
}

/// The consumer's loop: consumes, and reconnects with backoff after broker failures,
/// until `stop` is raised. Between a failure and the next session that consumes,
/// `metrics.health` says unable (a caller serving `/healthz` also marks it unable before
/// the first). A refused topology is returned as the error, in one line naming the queue
/// or exchange, what differs and the fix ([`domain::amqp::TopologyConflict`]).
pub async fn run_consumer<H: Handler>(
    pool: PgPool,
    handler: H,
    url: String,
    settings: ConsumerSettings,
    metrics: ConsumerMetrics,
    mut stop: Stop,
) -> anyhow::Result<()> {
    let mut reconnects = Reconnects::default();
    while !stop.requested() {
        let started = std::time::Instant::now();
        match consume(&pool, &handler, &url, &settings, &metrics, &mut stop).await {
            Ok(()) => {}
            Err(DeclareError::Refused(conflict)) => {
                metrics.health.unable(&conflict);
                metrics.health.error(&conflict);
                return Err(conflict.into());
            }
            Err(DeclareError::Failed(error)) => {
                metrics.health.unable(&error);
                reconnects
                    .after_failure(H::NAME, started, &error, &metrics.health, &mut stop)
                    .await;
            }
        }
    }
    tracing::info!(consumer = H::NAME, "consumer stopped");
    Ok(())
}
