//! The orders pipeline against real RabbitMQ and PostgreSQL: the relay's publishing
//! (shape, confirms, backoff, dead rows, two relays at once) and the consumer's
//! exactly-once apply and dead-lettering. Each test uses its own exchange and queues.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use domain::amqp::{broker_error, OrdersTopology};
use domain::orders::{NewOrder, OrderStatus};
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use prometheus_client::registry::Registry;
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::PgPool;
use workers::consume::{apply_event, run_consumer, Applied, ConsumerMetrics, ConsumerSettings};
use workers::relay::{Relay, RelayMetrics, RelaySettings};
use workers::stop::Stop;

const RABBITMQ_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test.{prefix}.{}.{nanos}", std::process::id())
}

async fn channel() -> (lapin::Connection, Channel) {
    domain::amqp::connect(RABBITMQ_URL, "hub-tests")
        .await
        .expect("RabbitMQ must run on 127.0.0.1:5672 (make services)")
}

async fn place_orders(pool: &PgPool, count: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for n in 0..count {
        let new = NewOrder::new(
            (n % 10 + 1) as i64,
            "Widget",
            1,
            Decimal::new(1999, 2),
            OrderStatus::Pending,
        )
        .unwrap();
        let placed = domain::orders::place(
            pool,
            &new,
            None,
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        )
        .await
        .unwrap();
        ids.push(placed.order().id);
    }
    ids
}

fn settings(exchange: &str, batch_size: u32, max_attempts: u32) -> RelaySettings {
    RelaySettings {
        topology: OrdersTopology::named(exchange, ""),
        declare_consumer_queue: None,
        batch_size,
        max_attempts,
    }
}

async fn relay(pool: &PgPool, settings: RelaySettings) -> Relay {
    Relay::connect(
        pool.clone(),
        RABBITMQ_URL,
        settings,
        RelayMetrics::register(&mut Registry::default()),
    )
    .await
    .unwrap()
}

/// Declares a plain queue bound to the exchange, to observe what the relay publishes.
async fn observer_queue(channel: &Channel, exchange: &str) -> String {
    OrdersTopology::named(exchange, "")
        .declare_exchange(channel)
        .await
        .unwrap();
    let queue = unique("observer");
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
        .unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.into(),
            "order.created".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    queue
}

/// Deletes a test's durable queues and exchanges from the broker.
async fn remove(channel: &Channel, topology: &OrdersTopology) {
    for queue in [&topology.queue, &topology.dead_letter_queue] {
        channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await
            .unwrap();
    }
    for exchange in [&topology.exchange, &topology.dead_letter_exchange] {
        channel
            .exchange_delete(exchange.as_str().into(), Default::default())
            .await
            .unwrap();
    }
}

async fn drain(channel: &Channel, queue: &str) -> Vec<lapin::message::BasicGetMessage> {
    let mut messages = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .map_err(broker_error)
        .unwrap()
    {
        messages.push(message);
    }
    messages
}

async fn outbox_statuses(pool: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT status, count(*) FROM outbox_events GROUP BY status ORDER BY status")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn relay_publishes_the_contract_message_and_marks_rows_only_after_confirm(pool: PgPool) {
    let (_connection, channel) = channel().await;
    let exchange = unique("orders");
    let queue = observer_queue(&channel, &exchange).await;
    let ids = place_orders(&pool, 3).await;
    let relay = relay(&pool, settings(&exchange, 100, 10)).await;
    let outcome = relay.process_next_batch().await.unwrap();
    assert_eq!(
        (outcome.claimed, outcome.published, outcome.failed),
        (3, 3, 0)
    );
    assert_eq!(outbox_statuses(&pool).await, vec![("processed".into(), 3)]);
    assert_eq!(relay.process_next_batch().await.unwrap().claimed, 0);

    let messages = drain(&channel, &queue).await;
    assert_eq!(messages.len(), 3);
    let event_ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM outbox_events ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    for ((message, order_id), event_id) in messages.iter().zip(&ids).zip(&event_ids) {
        let body = std::str::from_utf8(&message.delivery.data).unwrap();
        let value: Value = serde_json::from_str(body).unwrap();
        // Exactly the contract's fields, in its order: re-serializing the typed message
        // gives back the same bytes (an extra or reordered field would differ).
        let typed: domain::orders::OrderCreatedMessage = serde_json::from_str(body).unwrap();
        assert_eq!(serde_json::to_string(&typed).unwrap(), body);
        assert!(
            body.starts_with(&format!("{{\"order_id\":{order_id},")),
            "{body}"
        );
        assert_eq!(value["price"], 19.99);
        assert_eq!(value["status"], "pending");
        assert_eq!(value["event_id"], event_id.to_string());
        let properties = &message.delivery.properties;
        assert_eq!(
            properties.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(*properties.delivery_mode(), Some(2));
        assert_eq!(
            properties.message_id().as_ref().map(|s| s.to_string()),
            Some(event_id.to_string())
        );
        let headers = properties.headers().as_ref().unwrap();
        assert!(
            matches!(headers.inner().get("traceparent"), Some(AMQPValue::LongString(t)) if t.to_string().starts_with("00-0af7651916cd43dd")),
            "{headers:?}"
        );
        assert_eq!(message.delivery.routing_key.as_str(), "order.created");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn unroutable_events_back_off_then_die_and_can_be_retried(pool: PgPool) {
    // No queue is bound to this exchange: every publish comes back unroutable.
    let exchange = unique("nowhere");
    place_orders(&pool, 2).await;
    let relay = relay(&pool, settings(&exchange, 100, 2)).await;
    let outcome = relay.process_next_batch().await.unwrap();
    assert_eq!((outcome.published, outcome.failed, outcome.dead), (0, 2, 0));
    let (attempts, waits, error): (i32, bool, String) = sqlx::query_as(
        "SELECT attempts, next_attempt_at > now(), error_message FROM outbox_events ORDER BY id LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(attempts, 1);
    assert!(waits, "a failed row must wait before its next attempt");
    assert!(error.contains("unroutable"), "{error}");
    assert_eq!(
        relay.process_next_batch().await.unwrap().claimed,
        0,
        "backing off rows are not due"
    );

    sqlx::query("UPDATE outbox_events SET next_attempt_at = now()")
        .execute(&pool)
        .await
        .unwrap();
    let outcome = relay.process_next_batch().await.unwrap();
    assert_eq!(outcome.dead, 2);
    assert_eq!(outbox_statuses(&pool).await, vec![("failed".into(), 2)]);

    assert_eq!(domain::outbox::retry_failed(&pool).await.unwrap(), 2);
    let (_connection, channel) = channel().await;
    let queue = observer_queue(&channel, &exchange).await;
    assert_eq!(relay.process_next_batch().await.unwrap().published, 2);
    assert_eq!(drain(&channel, &queue).await.len(), 2);
    assert_eq!(outbox_statuses(&pool).await, vec![("processed".into(), 2)]);
}

#[sqlx::test(migrations = "../migrations")]
async fn two_relays_side_by_side_publish_every_event_exactly_once(pool: PgPool) {
    let (_connection, channel) = channel().await;
    let exchange = unique("pair");
    let queue = observer_queue(&channel, &exchange).await;
    place_orders(&pool, 600).await;
    let mut relays = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let relay = relay(&pool, settings(&exchange, 25, 10)).await;
        relays.spawn(async move {
            let mut published = 0;
            loop {
                let outcome = relay.process_next_batch().await.unwrap();
                if outcome.claimed == 0 {
                    return published;
                }
                published += outcome.published;
            }
        });
    }
    let mut per_relay = Vec::new();
    while let Some(published) = relays.join_next().await {
        per_relay.push(published.unwrap());
    }
    assert_eq!(per_relay.iter().sum::<usize>(), 600, "{per_relay:?}");
    let messages = drain(&channel, &queue).await;
    let event_ids: HashSet<String> = messages
        .iter()
        .map(|m| serde_json::from_slice::<Value>(&m.delivery.data).unwrap()["event_id"].to_string())
        .collect();
    assert_eq!(messages.len(), 600, "published twice or lost");
    assert_eq!(event_ids.len(), 600);
    assert_eq!(
        outbox_statuses(&pool).await,
        vec![("processed".into(), 600)]
    );
}

async fn orders_count(pool: &PgPool, customer: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT orders_count FROM customers WHERE source = 'SHOP' AND external_id = $1",
    )
    .bind(customer)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn the_consumer_applies_each_event_once_and_sorts_out_bad_ones(pool: PgPool) {
    let event = br#"{"order_id": 1, "customer_id": 4, "product_name": "W", "quantity": 1, "price": 1.0,
                      "status": "pending", "event_id": "77", "occurred_at": "2024-01-01T00:00:00.000Z"}"#;
    assert_eq!(apply_event(&pool, event).await.unwrap(), Applied::Applied);
    assert_eq!(apply_event(&pool, event).await.unwrap(), Applied::Duplicate);
    assert_eq!(orders_count(&pool, "4").await, 1);
    let string_id = br#"{"event_id": "78", "customer_id": "4"}"#;
    assert_eq!(
        apply_event(&pool, string_id).await.unwrap(),
        Applied::Applied
    );
    assert_eq!(orders_count(&pool, "4").await, 2);

    let skipped = [
        (&br#"{"customer_id": 4}"#[..], "missing event_id"),
        (br#"{"event_id": "79"}"#, "missing customer_id"),
        (
            br#"{"event_id": "80", "customer_id": 999}"#,
            "unknown customer",
        ),
    ];
    for (body, reason) in skipped {
        assert_eq!(
            apply_event(&pool, body).await.unwrap(),
            Applied::Skipped(reason)
        );
    }
    for poison in [
        &b"not json"[..],
        b"[1,2]",
        br#"{"event_id": "81", "customer_id": [4]}"#,
        br#"{"event_id": true, "customer_id": 4}"#,
    ] {
        assert!(
            matches!(
                apply_event(&pool, poison).await.unwrap(),
                Applied::Poison(_)
            ),
            "{}",
            String::from_utf8_lossy(poison)
        );
    }
    assert_eq!(orders_count(&pool, "4").await, 2);
    // A skipped unknown customer leaves no trace: nothing was recorded as processed.
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM processed_order_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(recorded, 2);
}

async fn message_count(channel: &Channel, queue: &str) -> u32 {
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
        .unwrap()
        .message_count()
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn poison_messages_are_dead_lettered_after_the_delivery_limit_and_block_nothing(
    pool: PgPool,
) {
    let topology = OrdersTopology::named(&unique("consume"), &unique("queue"));
    let (_connection, channel) = channel().await;
    topology
        .declare_consumer_queue(&channel, "order.created", 3)
        .await
        .unwrap();
    let consumer = tokio::spawn(run_consumer(
        pool.clone(),
        RABBITMQ_URL.into(),
        ConsumerSettings {
            topology: topology.clone(),
            prefetch: 8,
            delivery_limit: 3,
        },
        ConsumerMetrics::default(),
        Stop::never(),
    ));
    let publish = |body: &'static [u8]| {
        let channel = channel.clone();
        let exchange = topology.exchange.clone();
        async move {
            channel
                .basic_publish(
                    exchange.as_str().into(),
                    "order.created".into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default(),
                )
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    publish(b"{this is not json").await;
    publish(br#"{"event_id": "e-1", "customer_id": 6}"#).await;
    publish(br#"{"event_id": "e-1", "customer_id": 6}"#).await;
    wait_until("the good event is applied", || async {
        orders_count(&pool, "6").await == 1
    })
    .await;
    wait_until("the poison message is dead-lettered", || async {
        message_count(&channel, &topology.dead_letter_queue).await == 1
    })
    .await;
    wait_until("the queue is empty", || async {
        message_count(&channel, &topology.queue).await == 0
    })
    .await;
    assert_eq!(
        orders_count(&pool, "6").await,
        1,
        "the duplicate was applied twice"
    );
    consumer.abort();
    let mut dead = drain(&channel, &topology.dead_letter_queue).await;
    assert_eq!(dead.pop().unwrap().delivery.data, b"{this is not json");
    remove(&channel, &topology).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn relay_and_consumer_together_count_every_order_once(pool: PgPool) {
    let topology = OrdersTopology::named(&unique("e2e"), &unique("queue"));
    let (_connection, channel) = channel().await;
    topology
        .declare_consumer_queue(&channel, "order.created", 5)
        .await
        .unwrap();
    place_orders(&pool, 50).await;
    let relay = relay(&pool, settings(&topology.exchange, 20, 10)).await;
    while relay.process_next_batch().await.unwrap().claimed > 0 {}
    // Publish the same events again: a relay crash between confirm and commit looks so.
    sqlx::query("UPDATE outbox_events SET status = 'pending'")
        .execute(&pool)
        .await
        .unwrap();
    while relay.process_next_batch().await.unwrap().claimed > 0 {}
    let consumer = tokio::spawn(run_consumer(
        pool.clone(),
        RABBITMQ_URL.into(),
        ConsumerSettings {
            topology: topology.clone(),
            prefetch: 32,
            delivery_limit: 5,
        },
        ConsumerMetrics::default(),
        Stop::never(),
    ));
    wait_until("all 100 deliveries are consumed", || async {
        message_count(&channel, &topology.queue).await == 0
    })
    .await;
    wait_until("the counts settle", || async {
        let total: i64 = sqlx::query_scalar(
            "SELECT sum(orders_count)::bigint FROM customers WHERE source = 'SHOP'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        total == 50
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let total: i64 =
        sqlx::query_scalar("SELECT sum(orders_count)::bigint FROM customers WHERE source = 'SHOP'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(total, 50);
    consumer.abort();
    remove(&channel, &topology).await;
}

mod live {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use serde_json::json;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    async fn next_text<S>(socket: &mut S, wait: Duration) -> Option<Value>
    where
        S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
            + Unpin,
    {
        loop {
            let message = tokio::time::timeout(wait, socket.next())
                .await
                .ok()??
                .unwrap();
            if let Message::Text(text) = message {
                return Some(serde_json::from_str(&text).unwrap());
            }
        }
    }

    #[sqlx::test(migrations = "../migrations")]
    async fn order_created_streams_orders_relayed_through_rabbitmq_filtered_by_customer(
        pool: PgPool,
    ) {
        let exchange = unique("live");
        let mut config = gateway::config::GatewayConfig::defaults();
        config.orders_exchange = exchange.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = gateway::app(gateway::AppState::new(pool.clone(), config));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let customer_one = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("Customer:SHOP:1")
        };
        let mut request = format!("ws://{address}/graphql/ws")
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            "graphql-transport-ws".parse().unwrap(),
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        socket
            .send(Message::text(
                json!({"type": "connection_init"}).to_string(),
            ))
            .await
            .unwrap();
        assert_eq!(
            next_text(&mut socket, Duration::from_secs(5))
                .await
                .unwrap()["type"],
            "connection_ack"
        );
        let query = "subscription($c: ID) { orderCreated(customerId: $c) {
                       productName quantity price status customer { externalId ordersCount } } }";
        socket
            .send(Message::text(
                json!({"id": "o", "type": "subscribe", "payload": {"query": query, "variables": {"c": customer_one}}})
                    .to_string(),
            ))
            .await
            .unwrap();

        let relay = relay(&pool, settings(&exchange, 100, 10)).await;
        let http = reqwest::Client::new();
        // The gateway binds its queue asynchronously: keep ordering until one arrives.
        for attempt in 0..40 {
            for (customer, product) in [(2, "not for us"), (1, "Lamp")] {
                let response = http
                    .post(format!("http://{address}/api/v1/orders"))
                    .json(&json!({"customer_id": customer, "product_name": product, "quantity": attempt, "price": 5}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201);
            }
            relay.process_next_batch().await.unwrap();
            if let Some(event) = next_text(&mut socket, Duration::from_millis(250)).await {
                assert_eq!(event["type"], "next", "{event}");
                let order = &event["payload"]["data"]["orderCreated"];
                assert_eq!(
                    order["productName"], "Lamp",
                    "another customer's order leaked: {event}"
                );
                assert_eq!(order["customer"]["externalId"], "1");
                assert_eq!(order["price"], "5.00");
                assert_eq!(order["status"], "PENDING");
                let (_connection, channel) = channel().await;
                let _ = channel
                    .exchange_delete(exchange.as_str().into(), Default::default())
                    .await;
                return;
            }
        }
        panic!("no orderCreated event arrived");
    }
}
