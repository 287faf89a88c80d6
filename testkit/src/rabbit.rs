//! RabbitMQ for tests and benches, on the local broker (`amqp://guest:guest@127.0.0.1:5672/%2f`):
//! a channel, publishing raw bodies, an observer queue on an exchange, counting, draining,
//! purging, and best-effort removal of what a test declared. Names come from
//! [`crate::unique`], so tests running at once never share a queue or an exchange.

use lapin::message::BasicGetMessage;
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

/// The local broker.
pub const RABBITMQ_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A connection to the local broker and a channel on it (keep the connection alive as long
/// as the channel is used).
pub async fn channel() -> (Connection, Channel) {
    let properties = ConnectionProperties::default().with_connection_name("hub-tests".into());
    let connection = Connection::connect(RABBITMQ_URL, properties)
        .await
        .unwrap_or_else(|error| {
            panic!("RabbitMQ must run on 127.0.0.1:5672 (make services): {error}")
        });
    let channel = connection
        .create_channel()
        .await
        .expect("a channel on RabbitMQ");
    (connection, channel)
}

/// Publishes `body` to `exchange` with `routing_key` and default properties, and waits for
/// the broker's answer (its confirm, when the channel is in confirm mode).
pub async fn publish(channel: &Channel, exchange: &str, routing_key: &str, body: &[u8]) {
    channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default(),
        )
        .await
        .expect("basic.publish")
        .await
        .expect("the broker's confirm");
}

/// Declares an exclusive queue (deleted with the connection) bound to `exchange` with
/// `routing_key`, to see what is published there; the exchange must exist. Its name.
pub async fn observe(channel: &Channel, exchange: &str, routing_key: &str) -> String {
    let queue = crate::unique("observer");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare the observer queue");
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.into(),
            routing_key.into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind the observer queue");
    queue
}

/// How many messages are ready in `queue` (which must exist).
pub async fn message_count(channel: &Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|error| panic!("queue {queue}: {error}"))
        .message_count()
}

/// Takes every message ready in `queue` (acknowledged as taken), in order.
pub async fn drain(channel: &Channel, queue: &str) -> Vec<BasicGetMessage> {
    let mut messages = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap_or_else(|error| panic!("basic.get on {queue}: {error}"))
    {
        messages.push(message);
    }
    messages
}

/// Empties `queue`; how many messages it dropped.
pub async fn purge(channel: &Channel, queue: &str) -> u32 {
    channel
        .queue_purge(queue.into(), Default::default())
        .await
        .unwrap_or_else(|error| panic!("purge {queue}: {error}"))
}

/// Deletes `queues` then `exchanges`, ignoring failures: cleanup after a test, whose
/// result must not depend on it. Uses a connection of its own.
pub async fn remove(queues: &[&str], exchanges: &[&str]) {
    // A failed delete closes its channel, so each gets a channel of its own.
    let (connection, _) = channel().await;
    for queue in queues {
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .queue_delete((*queue).into(), Default::default())
                .await;
        }
    }
    for exchange in exchanges {
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .exchange_delete((*exchange).into(), Default::default())
                .await;
        }
    }
    let _ = connection.close(200, "bye".into()).await;
}
