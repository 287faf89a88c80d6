//! RabbitMQ: connection settings (`RABBITMQ_URL`, or the original services'
//! `RABBITMQ_HOST/PORT/USER/PASSWORD`), the consumer topology (exchange, quorum queue,
//! dead-letter pair) every process declares the same way, the orders names, and connecting.

use clap::Args;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use std::fmt;

use crate::{Error, Result};

/// Where RabbitMQ is. `RABBITMQ_URL` wins; otherwise the URL is built from the parts, as
/// the original services configured it.
#[derive(Clone, Args)]
pub struct RabbitArgs {
    /// Full AMQP URL, e.g. `amqp://user:password@host:5672/%2f`. Overrides the parts below.
    #[arg(long, env = "RABBITMQ_URL")]
    pub rabbitmq_url: Option<String>,
    /// Broker host (used when `RABBITMQ_URL` is unset).
    #[arg(long, env = "RABBITMQ_HOST", default_value = "127.0.0.1")]
    pub rabbitmq_host: String,
    /// Broker port (used when `RABBITMQ_URL` is unset).
    #[arg(long, env = "RABBITMQ_PORT", default_value_t = 5672)]
    pub rabbitmq_port: u16,
    /// User (used when `RABBITMQ_URL` is unset).
    #[arg(long, env = "RABBITMQ_USER", default_value = "guest")]
    pub rabbitmq_user: String,
    /// Password (used when `RABBITMQ_URL` is unset).
    #[arg(
        long,
        env = "RABBITMQ_PASSWORD",
        default_value = "guest",
        hide_default_value = true
    )]
    pub rabbitmq_password: String,
}

impl fmt::Debug for RabbitArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitArgs")
            .field("host", &self.rabbitmq_host)
            .field("port", &self.rabbitmq_port)
            .field("user", &self.rabbitmq_user)
            .finish_non_exhaustive()
    }
}

impl RabbitArgs {
    /// The AMQP URL, credentials included: give it to the client, never to a log.
    pub fn url(&self) -> String {
        self.rabbitmq_url.clone().unwrap_or_else(|| {
            format!(
                "amqp://{}:{}@{}:{}/%2f",
                self.rabbitmq_user, self.rabbitmq_password, self.rabbitmq_host, self.rabbitmq_port
            )
        })
    }
}

/// The orders exchange, declared once for every process: the relay publishes to it, the
/// consumer's queue and each gateway's live queue are bound to it.
#[derive(Debug, Clone, Args)]
pub struct OrdersExchangeArgs {
    /// Exchange order events are published to (durable topic exchange).
    #[arg(
        long = "orders-exchange",
        alias = "exchange",
        env = "ORDERS_EXCHANGE",
        default_value = "orders.v1"
    )]
    pub orders_exchange: String,
}

/// The orders consumer's topology as configured: the same flags and variables for the
/// relay and the consumer, so both declare the consumer's queue identically.
#[derive(Debug, Clone, Args)]
pub struct OrdersTopologyArgs {
    #[command(flatten)]
    pub exchange: OrdersExchangeArgs,
    /// Durable quorum queue of the `order.created` consumer (its dead letters go to
    /// `<name>.dlq`).
    #[arg(
        long,
        env = "ORDERS_QUEUE",
        default_value = "customer_service.order.created"
    )]
    pub queue: String,
    /// Deliveries of a poison message before it is dead-lettered.
    #[arg(long, env = "CONSUMER_DELIVERY_LIMIT", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub delivery_limit: u32,
}

impl OrdersTopologyArgs {
    /// The names as a topology.
    pub fn topology(&self) -> QueueTopology {
        QueueTopology::named(&self.exchange.orders_exchange, &self.queue)
    }
}

/// Deliveries a message may lose to consumer crashes before the broker itself gives up
/// on it (see [`QueueTopology::declare_consumer_queue`]).
pub const CRASH_ALLOWANCE: u32 = 20;

/// A consumer's RabbitMQ topology: the exchange it reads from, its queue and the queue's
/// dead-letter pair. Tests use their own names so they can run side by side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueTopology {
    /// Durable topic exchange the relay publishes to.
    pub exchange: String,
    /// The consumer's durable quorum queue.
    pub queue: String,
    /// Exchange that receives the consumer's dead letters.
    pub dead_letter_exchange: String,
    /// Where poison messages end up.
    pub dead_letter_queue: String,
}

impl QueueTopology {
    /// A topology with these exchange and queue names (dead letters get `.dlx`/`.dlq`).
    pub fn named(exchange: &str, queue: &str) -> Self {
        Self {
            exchange: exchange.to_owned(),
            queue: queue.to_owned(),
            dead_letter_exchange: format!("{exchange}.dlx"),
            dead_letter_queue: format!("{queue}.dlq"),
        }
    }

    /// Declares the exchange (durable, topic). Safe to repeat.
    pub async fn declare_exchange(&self, channel: &Channel) -> Result<()> {
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(broker_error)
    }

    /// Declares the consumer's side: the exchange, a durable quorum queue bound to
    /// `routing_key` with a dead-letter exchange and queue. The consumer dead-letters a
    /// poison message itself after `delivery_limit` attempts; the queue's own delivery
    /// limit sits [`CRASH_ALLOWANCE`] higher, because quorum queues also count deliveries
    /// lost to a consumer crash, and a good message must survive crashes. Safe to repeat
    /// with the same limit.
    pub async fn declare_consumer_queue(
        &self,
        channel: &Channel,
        routing_key: &str,
        delivery_limit: u32,
    ) -> Result<()> {
        self.declare_exchange(channel).await?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.dead_letter_exchange.as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(broker_error)?;
        channel
            .queue_declare(
                self.dead_letter_queue.as_str().into(),
                durable,
                FieldTable::default(),
            )
            .await
            .map_err(broker_error)?;
        channel
            .queue_bind(
                self.dead_letter_queue.as_str().into(),
                self.dead_letter_exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(broker_error)?;
        let mut arguments = FieldTable::default();
        arguments.insert(
            short("x-queue-type"),
            AMQPValue::LongString("quorum".into()),
        );
        arguments.insert(
            short("x-delivery-limit"),
            AMQPValue::LongLongInt(i64::from(delivery_limit + CRASH_ALLOWANCE)),
        );
        arguments.insert(
            short("x-dead-letter-exchange"),
            AMQPValue::LongString(self.dead_letter_exchange.as_str().into()),
        );
        channel
            .queue_declare(self.queue.as_str().into(), durable, arguments)
            .await
            .map_err(broker_error)?;
        channel
            .queue_bind(
                self.queue.as_str().into(),
                self.exchange.as_str().into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(broker_error)
    }
}

fn short(text: &str) -> ShortString {
    text.into()
}

/// Wraps a client error.
pub fn broker_error(error: lapin::Error) -> Error {
    Error::Broker(error.to_string())
}

/// How long RabbitMQ has to accept a connection and open a channel.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens a connection and one channel. A broker that accepts the TCP connection but never
/// answers is an error naming `RABBITMQ_URL` within [`CONNECT_TIMEOUT`], never a hang.
pub async fn connect(url: &str, connection_name: &str) -> Result<(Connection, Channel)> {
    let properties = ConnectionProperties::default().with_connection_name(connection_name.into());
    let open = async {
        let connection = Connection::connect(url, properties)
            .await
            .map_err(broker_error)?;
        let channel = connection.create_channel().await.map_err(broker_error)?;
        Ok((connection, channel))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, open)
        .await
        .unwrap_or(Err(Error::NoAnswer {
            variable: "RABBITMQ_URL",
            seconds: CONNECT_TIMEOUT.as_secs(),
        }))
}
