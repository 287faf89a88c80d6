//! The RabbitMQ publisher: publisher confirms, `mandatory` (an unroutable message is a
//! failed attempt, not a silent drop), persistent messages. Each event goes to the exchange
//! its row names (declared durable `topic` on first use) with its message key as routing
//! key; its headers become AMQP properties (`id` -> `message_id`, `content-type`, `type`)
//! and are also sent as message headers.
//!
//! The publisher declares its consumers' durable queues as well as their exchanges: an
//! event published before a consumer ever ran would otherwise reach only whatever queue
//! happened to be bound (a gateway's live queue), be confirmed, and never be applied.

use std::collections::HashSet;
use std::time::Duration;

use domain::amqp::{broker_error, QueueTopology};
use domain::outbox::{Broker, OutboxEvent, CONTENT_TYPE_HEADER, TYPE_HEADER};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection};

use super::Publisher;

/// A consumer's queue the relay declares before publishing.
#[derive(Debug, Clone)]
pub struct ConsumerQueue {
    /// Its exchange, queue and dead-letter pair.
    pub topology: QueueTopology,
    /// The routing key it is bound with.
    pub routing_key: String,
    /// Its delivery limit (must match the consumer's, or the declaration conflicts).
    pub delivery_limit: u32,
}

/// Where and what the RabbitMQ publisher connects and declares.
#[derive(Clone)]
pub struct RabbitSettings {
    /// AMQP URL, credentials included (never logged).
    pub url: String,
    /// Consumers' queues to declare on connect.
    pub consumer_queues: Vec<ConsumerQueue>,
}

/// Publishes outbox events to RabbitMQ over one confirmed channel.
pub struct RabbitPublisher {
    _connection: Connection,
    channel: Channel,
    declared_exchanges: HashSet<String>,
}

impl Publisher for RabbitPublisher {
    type Settings = RabbitSettings;
    const BROKER: Broker = Broker::RabbitMq;
    const ADDRESS_VARIABLE: &'static str = "RABBITMQ_URL";
    // Confirms come back in milliseconds from a broker that works.
    const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

    async fn connect(settings: &RabbitSettings) -> domain::Result<Self> {
        let (connection, channel) = domain::amqp::connect(&settings.url, "hub-relay").await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(broker_error)?;
        let mut declared_exchanges = HashSet::new();
        for queue in &settings.consumer_queues {
            queue
                .topology
                .declare_consumer_queue(&connection, &queue.routing_key, queue.delivery_limit)
                .await?;
            declared_exchanges.insert(queue.topology.exchange.clone());
        }
        Ok(Self {
            _connection: connection,
            channel,
            declared_exchanges,
        })
    }

    async fn publish(&mut self, events: &[OutboxEvent]) -> domain::Result<Vec<Result<(), String>>> {
        let mut confirms = Vec::with_capacity(events.len());
        for event in events {
            if !self.declared_exchanges.contains(&event.destination) {
                QueueTopology::named(&event.destination, "")
                    .declare_exchange(&self.channel)
                    .await?;
                self.declared_exchanges.insert(event.destination.clone());
            }
            let routing_key = event.message_key.as_deref().unwrap_or(&event.event_type);
            let confirm = self
                .channel
                .basic_publish(
                    event.destination.as_str().into(),
                    routing_key.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    event.body.as_bytes(),
                    properties(event),
                )
                .await
                .map_err(broker_error)?;
            confirms.push(confirm);
        }
        let mut results = Vec::with_capacity(events.len());
        for confirm in confirms {
            let confirmation = confirm.await.map_err(broker_error)?;
            if confirmation.is_nack() {
                results.push(Err("the broker refused the message (nack)".into()));
                continue;
            }
            results.push(match confirmation.take_message() {
                None => Ok(()),
                Some(returned) => Err(format!(
                    "unroutable: {} {} (no queue is bound for routing key {:?})",
                    returned.reply_code, returned.reply_text, returned.delivery.routing_key
                )),
            });
        }
        Ok(results)
    }
}

/// The AMQP properties of an event: persistent, its headers as properties and as headers.
fn properties(event: &OutboxEvent) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (name, value) in &event.headers {
        headers.insert(
            name.as_str().into(),
            AMQPValue::LongString(LongString::from(value.as_str())),
        );
    }
    let mut properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(event.event_id.to_string().into())
        .with_type(
            event
                .header(TYPE_HEADER)
                .unwrap_or(&event.event_type)
                .into(),
        )
        .with_headers(headers);
    if let Some(content_type) = event.header(CONTENT_TYPE_HEADER) {
        properties = properties.with_content_type(content_type.into());
    }
    properties
}
