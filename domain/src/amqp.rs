//! RabbitMQ: connection settings (`RABBITMQ_URL`, or the original services'
//! `RABBITMQ_HOST/PORT/USER/PASSWORD`), the consumer topology (exchange, quorum queue,
//! dead-letter pair) every process declares the same way, the orders names, and connecting.
//! A declaration the broker refuses because an exchange or queue of that name exists with
//! other arguments is a [`TopologyConflict`]: one line naming it, what differs and the fix.

use clap::Args;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
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
        declare_exchange(
            channel,
            &self.exchange,
            ExchangeKind::Topic,
            "a durable topic exchange",
        )
        .await
        .map_err(Error::from)
    }

    /// Declares the consumer's side on a channel of its own (a refused declaration closes
    /// its channel): the exchange, a durable quorum queue bound to `routing_key` with a
    /// dead-letter exchange and queue. The consumer dead-letters a poison message itself
    /// after `delivery_limit` attempts; the queue's own delivery limit sits
    /// [`CRASH_ALLOWANCE`] higher, because quorum queues also count deliveries lost to a
    /// consumer crash, and a good message must survive crashes. Safe to repeat with the
    /// same limit; an exchange or queue of the same name declared otherwise is a
    /// [`DeclareError::Refused`].
    pub async fn declare_consumer_queue(
        &self,
        connection: &Connection,
        routing_key: &str,
        delivery_limit: u32,
    ) -> Result<(), DeclareError> {
        let channel = connection.create_channel().await.map_err(broker_error)?;
        declare_exchange(
            &channel,
            &self.exchange,
            ExchangeKind::Topic,
            "a durable topic exchange",
        )
        .await?;
        declare_exchange(
            &channel,
            &self.dead_letter_exchange,
            ExchangeKind::Fanout,
            "a durable fanout exchange",
        )
        .await?;
        declare_queue(
            &channel,
            &self.dead_letter_queue,
            FieldTable::default(),
            "a durable classic queue",
        )
        .await?;
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
        let mut arguments = quorum_arguments();
        arguments.insert(
            short("x-delivery-limit"),
            AMQPValue::LongLongInt(i64::from(delivery_limit + CRASH_ALLOWANCE)),
        );
        arguments.insert(
            short("x-dead-letter-exchange"),
            AMQPValue::LongString(self.dead_letter_exchange.as_str().into()),
        );
        match declare_queue(&channel, &self.queue, arguments, QUORUM_QUEUE).await {
            Err(DeclareError::Refused(conflict)) => {
                let type_conflict = self.queue_type_conflict(connection).await;
                return Err(DeclareError::Refused(type_conflict.unwrap_or(conflict)));
            }
            declared => declared?,
        }
        channel
            .queue_bind(
                self.queue.as_str().into(),
                self.exchange.as_str().into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(broker_error)?;
        channel
            .close(200, "declared".into())
            .await
            .map_err(broker_error)?;
        Ok(())
    }

    /// The refusal of the consumer's queue as a queue type difference, when its type is
    /// what differs (a classic queue). The broker names only the first argument that
    /// differs, in an order of its own where the type comes late, after the dead-letter
    /// exchange; so this asks again with the type alone, on a channel of its own. The queue
    /// exists (the broker has just compared against it): the question creates nothing.
    async fn queue_type_conflict(&self, connection: &Connection) -> Option<TopologyConflict> {
        let channel = connection.create_channel().await.ok()?;
        match declare_queue(&channel, &self.queue, quorum_arguments(), QUORUM_QUEUE).await {
            Err(DeclareError::Refused(conflict)) if conflict.difference.contains(QUEUE_TYPE) => {
                Some(conflict)
            }
            _ => {
                let _ = channel.close(200, "asked".into()).await;
                None
            }
        }
    }
}

/// What the consumer's queue is declared as.
const QUORUM_QUEUE: &str = "a durable quorum queue";

/// The argument that makes a queue a quorum queue.
const QUEUE_TYPE: &str = "x-queue-type";

/// `x-queue-type: quorum`.
fn quorum_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(short(QUEUE_TYPE), AMQPValue::LongString("quorum".into()));
    arguments
}

/// Why declaring a consumer's topology failed.
#[derive(Debug, thiserror::Error)]
pub enum DeclareError {
    /// The broker refused a declaration: final, an operator must act.
    #[error(transparent)]
    Refused(TopologyConflict),
    /// The broker failed or the connection broke: try again.
    #[error(transparent)]
    Failed(#[from] Error),
}

impl From<DeclareError> for Error {
    fn from(error: DeclareError) -> Self {
        match error {
            DeclareError::Refused(conflict) => Error::TopologyRefused(conflict.to_string()),
            DeclareError::Failed(error) => error,
        }
    }
}

/// A declaration RabbitMQ refused with 406 PRECONDITION_FAILED: the exchange or queue
/// exists already, declared otherwise (a classic queue where ours is a quorum queue, such
/// as the one the original order service left under our default queue name; another
/// delivery limit or dead-letter exchange; another exchange type). Retrying cannot help.
/// It reads as one line naming the object, what differs and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyConflict {
    /// `queue` or `exchange`.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// What we declare it as, e.g. `a durable quorum queue`.
    pub declared_as: &'static str,
    /// What differs, in the broker's words (its reply text without the code).
    pub difference: String,
}

impl fmt::Display for TopologyConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            kind,
            name,
            declared_as,
            difference,
        } = self;
        // A queue declared without a type (as the original order service's was) is classic.
        let untyped = difference.contains(QUEUE_TYPE) && difference.ends_with("current is none");
        let note = if untyped {
            " (none: a classic queue)"
        } else {
            ""
        };
        write!(
            f,
            "RabbitMQ refused {kind} '{name}', which we declare as {declared_as}: {difference}{note}. "
        )?;
        if *kind == "queue" {
            write!(
                f,
                "Fix: stop whatever consumes the old queue, let it drain, delete it \
                 (`rabbitmqctl delete_queue {name}`) and start again; or set ORDERS_QUEUE \
                 (--queue) to a new name, in the relay too, and delete the old queue once drained"
            )
        } else {
            write!(
                f,
                "Fix: delete it once nothing publishes to it \
                 (`rabbitmqadmin delete exchange name={name}`) and start again; or set \
                 ORDERS_EXCHANGE (--exchange) to a new name, in every process"
            )
        }
    }
}

impl std::error::Error for TopologyConflict {}

/// Maps a failed declaration of `kind` `name`: a 406 reply is a [`TopologyConflict`].
fn declare_error(
    error: lapin::Error,
    kind: &'static str,
    name: &str,
    declared_as: &'static str,
) -> DeclareError {
    if let lapin::ErrorKind::ProtocolError(reply) = error.kind() {
        if *reply.kind() == AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) {
            let text = reply.get_message().as_str();
            return DeclareError::Refused(TopologyConflict {
                kind,
                name: name.to_owned(),
                declared_as,
                difference: text
                    .strip_prefix("PRECONDITION_FAILED - ")
                    .unwrap_or(text)
                    .to_owned(),
            });
        }
    }
    DeclareError::Failed(broker_error(error))
}

/// Declares a durable exchange.
async fn declare_exchange(
    channel: &Channel,
    name: &str,
    kind: ExchangeKind,
    declared_as: &'static str,
) -> Result<(), DeclareError> {
    channel
        .exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|error| declare_error(error, "exchange", name, declared_as))
}

/// Declares a durable queue with these arguments.
async fn declare_queue(
    channel: &Channel,
    name: &str,
    arguments: FieldTable,
    declared_as: &'static str,
) -> Result<(), DeclareError> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(name.into(), durable, arguments)
        .await
        .map(drop)
        .map_err(|error| declare_error(error, "queue", name, declared_as))
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

/// The heartbeat asked for when `RABBITMQ_URL` names none (`?heartbeat=N`), in seconds: a
/// broker that goes silent on an open connection is noticed within two of them.
pub const HEARTBEAT_SECS: u16 = 10;

/// `url` with [`HEARTBEAT_SECS`] as its heartbeat unless it asks for one itself.
fn with_heartbeat(url: &str) -> String {
    if url.contains("heartbeat=") {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}heartbeat={HEARTBEAT_SECS}")
}

/// Opens a connection and one channel. A broker that accepts the TCP connection but never
/// answers is an error naming `RABBITMQ_URL` within [`CONNECT_TIMEOUT`], never a hang; one
/// that goes silent later is a lost connection within two heartbeats ([`HEARTBEAT_SECS`]).
pub async fn connect(url: &str, connection_name: &str) -> Result<(Connection, Channel)> {
    let properties = ConnectionProperties::default().with_connection_name(connection_name.into());
    let url = with_heartbeat(url);
    let open = async {
        let connection = Connection::connect(&url, properties)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_is_asked_for_unless_the_url_names_one() {
        assert_eq!(
            with_heartbeat("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=10"
        );
        assert_eq!(
            with_heartbeat("amqp://h/%2f?frame_max=8192"),
            "amqp://h/%2f?frame_max=8192&heartbeat=10"
        );
        assert_eq!(
            with_heartbeat("amqp://h/%2f?heartbeat=30"),
            "amqp://h/%2f?heartbeat=30"
        );
    }
}
