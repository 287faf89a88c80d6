//! The orders pipeline against real RabbitMQ and PostgreSQL: the relay's publishing
//! (shape, confirms, backoff, dead rows, two relays at once) and the consumer's
//! exactly-once apply and dead-lettering. Each test uses its own exchange and queues.

use std::collections::HashSet;
use std::time::Duration;

use domain::amqp::QueueTopology;
use domain::orders::{NewOrder, OrderStatus};
use domain::outbox::Destination;
use lapin::types::AMQPValue;
use lapin::Channel;
use prometheus_client::registry::Registry;
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::PgPool;
use testkit::rabbit::{channel, drain, message_count, RABBITMQ_URL};
use testkit::{unique, wait_until};
use workers::consume::{
    apply_message, run_consumer, Applied, ConsumerMetrics, ConsumerSettings, Envelope,
    OrdersHandler,
};
use workers::relay::{RabbitPublisher, RabbitSettings, Relay, RelayMetrics, RelaySettings};
use workers::stop::Stop;

/// Places `count` orders whose events go to `exchange`.
async fn place_orders(pool: &PgPool, exchange: &str, count: usize) -> Vec<i64> {
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
            &Destination::rabbitmq(exchange),
            &new,
            None,
            Some(&sample_origin()),
        )
        .await
        .unwrap();
        ids.push(placed.order().id);
    }
    ids
}

/// What a traced request with id `req-sample` writes into an event's headers.
pub(crate) fn sample_origin() -> domain::telemetry::Origin {
    domain::telemetry::Origin {
        traceparent: testkit::otlp::SAMPLE_TRACEPARENT.into(),
        request_id: Some("req-sample".into()),
    }
}

/// A RabbitMQ relay that declares no consumer queue.
async fn relay(pool: &PgPool, batch_size: u32, max_attempts: u32) -> Relay<RabbitPublisher> {
    let publisher = RabbitSettings {
        url: RABBITMQ_URL.into(),
        consumer_queues: Vec::new(),
    };
    let settings = RelaySettings {
        batch_size,
        max_attempts,
    };
    let metrics = RelayMetrics::register(&mut Registry::default());
    Relay::connect(pool.clone(), &publisher, settings, metrics)
        .await
        .unwrap()
}

/// Applies one body as the orders consumer does; `id` is the message's `id` header.
async fn apply(pool: &PgPool, body: &[u8], id: Option<&str>) -> Applied {
    let envelope = Envelope {
        body,
        id_header: id,
        position: None,
        traceparent: None,
        request_id: None,
    };
    apply_message(pool, &OrdersHandler, envelope).await.unwrap()
}

/// Declares `topology`'s queue (bound to `order.created`) and runs the orders consumer on
/// it until the returned task is aborted.
async fn start_consumer(
    pool: &PgPool,
    topology: &QueueTopology,
    prefetch: u16,
    delivery_limit: u32,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let (connection, _channel) = channel().await;
    topology
        .declare_consumer_queue(&connection, "order.created", delivery_limit)
        .await
        .unwrap();
    let settings = ConsumerSettings {
        topology: topology.clone(),
        routing_key: "order.created".into(),
        prefetch,
        delivery_limit,
    };
    tokio::spawn(run_consumer(
        pool.clone(),
        OrdersHandler,
        RABBITMQ_URL.into(),
        settings,
        ConsumerMetrics::default(),
        Stop::never(),
    ))
}

/// A queue bound to `exchange` (declared here) that sees what the relay publishes.
async fn observer_queue(channel: &Channel, exchange: &str) -> String {
    QueueTopology::named(exchange, "")
        .declare_exchange(channel)
        .await
        .unwrap();
    testkit::rabbit::observe(channel, exchange, "order.created").await
}

/// Deletes a test's durable queues and exchanges from the broker.
pub(crate) async fn remove(topology: &QueueTopology) {
    testkit::rabbit::remove(
        &[&topology.queue, &topology.dead_letter_queue],
        &[&topology.exchange, &topology.dead_letter_exchange],
    )
    .await;
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
    let ids = place_orders(&pool, &exchange, 3).await;
    let mut relay = relay(&pool, 100, 10).await;
    let outcome = relay.process_next_batch().await.unwrap();
    assert_eq!(
        (outcome.claimed, outcome.published, outcome.failed),
        (3, 3, 0)
    );
    assert_eq!(outbox_statuses(&pool).await, vec![("processed".into(), 3)]);
    assert_eq!(relay.process_next_batch().await.unwrap().claimed, 0);

    let messages = drain(&channel, &queue).await;
    assert_eq!(messages.len(), 3);
    let event_ids: Vec<String> =
        sqlx::query_scalar("SELECT event_id::text FROM outbox_events ORDER BY id")
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
        assert_eq!(value["event_id"], *event_id);
        let properties = &message.delivery.properties;
        assert_eq!(
            properties.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(*properties.delivery_mode(), Some(2));
        assert_eq!(
            properties.message_id().as_ref().map(|s| s.to_string()),
            Some(event_id.clone())
        );
        let headers = properties.headers().as_ref().unwrap();
        assert!(
            matches!(headers.inner().get("id"), Some(AMQPValue::LongString(id)) if id.to_string() == *event_id),
            "{headers:?}"
        );
        assert!(
            matches!(headers.inner().get("traceparent"), Some(AMQPValue::LongString(t)) if t.to_string().starts_with("00-0af7651916cd43dd")),
            "{headers:?}"
        );
        assert!(
            matches!(headers.inner().get("x-request-id"), Some(AMQPValue::LongString(id)) if id.to_string() == "req-sample"),
            "{headers:?}"
        );
        assert_eq!(message.delivery.routing_key.as_str(), "order.created");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn unroutable_events_back_off_then_die_and_can_be_retried(pool: PgPool) {
    // No queue is bound to this exchange: every publish comes back unroutable.
    let exchange = unique("nowhere");
    place_orders(&pool, &exchange, 2).await;
    let mut relay = relay(&pool, 100, 2).await;
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
    place_orders(&pool, &exchange, 600).await;
    let mut relays = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let mut relay = relay(&pool, 25, 10).await;
        relays.spawn(async move { relay.process_all().await.unwrap() });
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

#[sqlx::test(migrations = "../migrations")]
async fn the_relay_process_reports_published_events_and_backlog_per_destination(pool: PgPool) {
    let (_connection, channel) = channel().await;
    let routed = unique("metrics_routed");
    let observer = observer_queue(&channel, &routed).await;
    // No queue is bound to this one: its events come back unroutable and wait.
    let nowhere = unique("metrics_nowhere");
    place_orders(&pool, &routed, 3).await;
    place_orders(&pool, &nowhere, 2).await;
    let (orders_exchange, orders_queue) = (unique("metrics_orders"), unique("metrics_queue"));
    let database_url = testkit::database_url(&pool).await;
    let relay_args = [
        "relay",
        "--exchange",
        &orders_exchange,
        "--queue",
        &orders_queue,
    ];
    let relay = testkit::spawn_workers(&database_url, &relay_args).await;
    let series = |name: &str, destination: &str| {
        format!("{name}{{broker=\"rabbitmq\",destination=\"{destination}\"}}")
    };
    let expected = [
        format!("{} 3", series("relay_events_published_total", &routed)),
        format!("{} 2", series("relay_backlog", &nowhere)),
        series("relay_attempts_failed_total", &nowhere),
        series("relay_oldest_pending_seconds", &nowhere),
    ];
    let metrics_url = relay.url("/metrics");
    wait_until("both destinations show in the relay's metrics", || async {
        let text = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        expected.iter().all(|line| text.contains(line.as_str()))
    })
    .await;
    assert_eq!(drain(&channel, &observer).await.len(), 3);
    drop(relay);
    testkit::rabbit::remove(
        &[&orders_queue, &format!("{orders_queue}.dlq")],
        &[
            &orders_exchange,
            &format!("{orders_exchange}.dlx"),
            &routed,
            &nowhere,
        ],
    )
    .await;
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
    assert_eq!(apply(&pool, event, None).await, Applied::Applied);
    assert_eq!(apply(&pool, event, None).await, Applied::Duplicate);
    assert_eq!(orders_count(&pool, "4").await, 1);
    let string_id = br#"{"event_id": "78", "customer_id": "4"}"#;
    assert_eq!(apply(&pool, string_id, None).await, Applied::Applied);
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
        assert_eq!(apply(&pool, body, None).await, Applied::Skipped(reason));
    }
    for poison in [
        &b"not json"[..],
        b"[1,2]",
        br#"{"event_id": "81", "customer_id": [4]}"#,
        br#"{"event_id": true, "customer_id": 4}"#,
    ] {
        assert!(
            matches!(apply(&pool, poison, None).await, Applied::Poison(_)),
            "{}",
            String::from_utf8_lossy(poison)
        );
    }
    assert_eq!(orders_count(&pool, "4").await, 2);
    // A skipped unknown customer leaves no trace: nothing was recorded as processed.
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM processed_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(recorded, 2);
}

#[sqlx::test(migrations = "../migrations")]
async fn our_events_and_a_foreign_publishers_never_share_an_id(pool: PgPool) {
    // The original order service numbers its events 1, 2, 3... and sends no `id` header.
    let foreign = br#"{"event_id": "1", "customer_id": 5}"#;
    assert_eq!(apply(&pool, foreign, None).await, Applied::Applied);
    assert_eq!(apply(&pool, foreign, None).await, Applied::Duplicate);
    // One of ours whose body says "1" too (an event written before ids became UUIDs):
    // its `id` header identifies it, so it is applied, once.
    let ours = domain::outbox::new_event_id().to_string();
    assert_eq!(apply(&pool, foreign, Some(&ours)).await, Applied::Applied);
    assert_eq!(apply(&pool, foreign, Some(&ours)).await, Applied::Duplicate);
    // A header that is not one of our UUIDs is a foreign message like any other.
    assert_eq!(apply(&pool, foreign, Some("1")).await, Applied::Duplicate);
    assert_eq!(orders_count(&pool, "5").await, 2);
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT event_key FROM processed_events WHERE consumer = 'orders' ORDER BY event_key",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut expected = vec!["event_id:1".to_owned(), ours];
    expected.sort();
    assert_eq!(keys, expected);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_foreign_event_1_and_our_first_event_are_both_counted_through_the_broker(pool: PgPool) {
    let topology = QueueTopology::named(&unique("foreign"), &unique("queue"));
    let consumer = start_consumer(&pool, &topology, 8, 5).await;
    // The original order service's first event, as its relay sent it: no headers.
    let foreign = br#"{"order_id": 1, "customer_id": 3, "product_name": "Lamp", "quantity": 1,
                       "price": 25.5, "status": "pending", "event_id": "1",
                       "occurred_at": "2024-01-01T00:00:00.000Z"}"#;
    let (_connection, channel) = channel().await;
    testkit::rabbit::publish(&channel, &topology.exchange, "order.created", foreign).await;
    wait_until("the foreign event is counted", || async {
        orders_count(&pool, "3").await == 1
    })
    .await;
    // Our first event: outbox row 1, which used to be event "1" as well.
    place_orders(&pool, &topology.exchange, 3).await;
    let first_row: i64 = sqlx::query_scalar("SELECT min(id) FROM outbox_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(first_row, 1);
    let mut relay = relay(&pool, 100, 10).await;
    assert_eq!(relay.process_next_batch().await.unwrap().published, 3);
    wait_until("our events are counted too", || async {
        orders_count(&pool, "1").await == 1
            && orders_count(&pool, "2").await == 1
            && orders_count(&pool, "3").await == 2
    })
    .await;
    consumer.abort();
    remove(&topology).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn poison_messages_are_dead_lettered_after_the_delivery_limit_and_block_nothing(
    pool: PgPool,
) {
    let topology = QueueTopology::named(&unique("consume"), &unique("queue"));
    let consumer = start_consumer(&pool, &topology, 8, 3).await;
    let (_connection, channel) = channel().await;
    for body in [
        &b"{this is not json"[..],
        br#"{"event_id": "e-1", "customer_id": 6}"#,
        br#"{"event_id": "e-1", "customer_id": 6}"#,
    ] {
        testkit::rabbit::publish(&channel, &topology.exchange, "order.created", body).await;
    }
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
    remove(&topology).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn relay_and_consumer_together_count_every_order_once(pool: PgPool) {
    let topology = QueueTopology::named(&unique("e2e"), &unique("queue"));
    let (connection, channel) = channel().await;
    topology
        .declare_consumer_queue(&connection, "order.created", 5)
        .await
        .unwrap();
    place_orders(&pool, &topology.exchange, 50).await;
    let mut relay = relay(&pool, 20, 10).await;
    relay.process_all().await.unwrap();
    // Publish the same events again: a relay crash between confirm and commit looks so.
    sqlx::query("UPDATE outbox_events SET status = 'pending'")
        .execute(&pool)
        .await
        .unwrap();
    relay.process_all().await.unwrap();
    let consumer = start_consumer(&pool, &topology, 32, 5).await;
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
    remove(&topology).await;
}

mod live {
    use super::*;
    use serde_json::json;
    use testkit::{GraphqlWs, Protocol};

    #[sqlx::test(migrations = "../migrations")]
    async fn order_created_streams_orders_relayed_through_rabbitmq_filtered_by_customer(
        pool: PgPool,
    ) {
        let exchange = unique("live");
        let database_url = testkit::database_url(&pool).await;
        let gateway =
            testkit::spawn_gateway(&database_url, &[("ORDERS_EXCHANGE", &exchange)]).await;
        let mut client = GraphqlWs::connect(&gateway.base(), Protocol::TransportWs).await;
        let query = "subscription($c: ID) { orderCreated(customerId: $c) {
                       productName quantity price status customer { externalId ordersCount } } }";
        client
            .subscribe("o", query, json!({"c": testkit::customer_id("SHOP", "1")}))
            .await;

        let mut relay = relay(&pool, 100, 10).await;
        // The gateway binds its queue asynchronously: keep ordering until one arrives.
        for attempt in 0..40 {
            for (customer, product) in [(2, "not for us"), (1, "Lamp")] {
                let order = json!({"customer_id": customer, "product_name": product, "quantity": attempt, "price": 5});
                let (status, _) =
                    testkit::http::post_json(&gateway.url("/api/v1/orders"), &order).await;
                assert_eq!(status, 201);
            }
            relay.process_next_batch().await.unwrap();
            if let Some(event) = client.next(Duration::from_millis(250)).await {
                assert_eq!(event["type"], "next", "{event}");
                let order = &event["payload"]["data"]["orderCreated"];
                assert_eq!(
                    order["productName"], "Lamp",
                    "another customer's order leaked: {event}"
                );
                assert_eq!(order["customer"]["externalId"], "1");
                assert_eq!(order["price"], "5.00");
                assert_eq!(order["status"], "PENDING");
                testkit::rabbit::remove(&[], &[&exchange]).await;
                return;
            }
        }
        panic!("no orderCreated event arrived");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_broker_that_accepts_and_never_answers_is_named_and_sigterm_still_stops_the_relay(
    pool: PgPool,
) {
    let (port, silent) = testkit::net::silent_listener().await;
    let database_url = testkit::database_url(&pool).await;
    let relay = testkit::workers_launch(&database_url, &["relay"])
        .env(
            "RABBITMQ_URL",
            format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        )
        .start()
        .await;
    testkit::wait_until_within(
        "the relay names the broker that does not answer",
        domain::amqp::CONNECT_TIMEOUT + Duration::from_secs(10),
        || async {
            relay
                .stderr()
                .contains("RABBITMQ_URL: no answer within 10 s")
        },
    )
    .await;
    // And its health says it cannot relay, and why.
    let healthz = reqwest::get(relay.url("/healthz")).await.unwrap();
    assert_eq!(healthz.status().as_u16(), 503);
    let body: Value = healthz.json().await.unwrap();
    assert!(
        body["reason"].as_str().unwrap().contains("RABBITMQ_URL"),
        "{body}"
    );
    let output = relay.stop().await;
    assert!(
        output.status.code().is_some(),
        "killed: {:?}",
        output.status
    );
    silent.abort();
}

/// Starts `workers <command>` over `exchange` and `queue`, its RabbitMQ reached through
/// `proxy`, logging at info.
async fn through_proxy(
    proxy: &testkit::net::FreezableProxy,
    database_url: &str,
    command: &[&str],
    exchange: &str,
    queue: &str,
) -> testkit::Process {
    testkit::workers_launch(database_url, command)
        .args(["--exchange", exchange, "--queue", queue])
        .env(
            "RABBITMQ_URL",
            format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port),
        )
        .env("RUST_LOG", "info")
        .start()
        .await
}

#[sqlx::test(migrations = "../migrations")]
async fn a_broker_that_goes_silent_mid_connection_is_a_lost_connection_not_a_hang(pool: PgPool) {
    let proxy = testkit::net::FreezableProxy::start("127.0.0.1:5672").await;
    let database_url = testkit::database_url(&pool).await;
    let (exchange, queue) = (unique("silent_orders"), unique("silent_queue"));
    let relay = through_proxy(&proxy, &database_url, &["relay"], &exchange, &queue).await;
    // Both brokers' relays say so; RabbitMQ's goes through the proxy.
    wait_until("the relay connects through the proxy", || async {
        relay
            .stderr()
            .matches("relay connected to the broker")
            .count()
            == 2
    })
    .await;
    proxy.freeze();
    place_orders(&pool, &exchange, 1).await;
    testkit::wait_until_within(
        "the relay gives the silent publish up",
        Duration::from_secs(30),
        || async {
            relay
                .stderr()
                .contains("RABBITMQ_URL: no answer to a publish within 10 s")
        },
    )
    .await;
    relay.stop_cleanly().await;
    // Nothing was marked: the order's event is still pending.
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox_events WHERE processed_at IS NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(pending, 1);
    remove(&QueueTopology::named(&exchange, &queue)).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_consumer_whose_broker_goes_silent_notices_it_and_says_unhealthy(pool: PgPool) {
    let proxy = testkit::net::FreezableProxy::start("127.0.0.1:5672").await;
    let database_url = testkit::database_url(&pool).await;
    let (exchange, queue) = (unique("silent_consumer"), unique("silent_consumer_queue"));
    let consumer = through_proxy(
        &proxy,
        &database_url,
        &["consume", "orders"],
        &exchange,
        &queue,
    )
    .await;
    proxy.freeze();
    // Heartbeats stop arriving: the connection counts as lost within two heartbeats (10 s
    // each unless RABBITMQ_URL says otherwise; RabbitMQ's own default is 60 s).
    let healthz = consumer.url("/healthz");
    testkit::wait_until_within(
        "the consumer says it cannot consume",
        Duration::from_secs(60),
        || async {
            reqwest::get(&healthz)
                .await
                .is_ok_and(|response| response.status().as_u16() == 503)
        },
    )
    .await;
    consumer.stop_cleanly().await;
    remove(&QueueTopology::named(&exchange, &queue)).await;
}

mod refused_topology {
    use super::*;
    use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    use lapin::ExchangeKind;

    /// Declares `queue` as the original order service did: durable, classic, no arguments.
    async fn declare_classic_queue(channel: &Channel, queue: &str) {
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
    }

    /// Runs `workers <command>` over `topology` until it gives up (the defect was retrying
    /// for ever): it must exit 1 with exactly one line naming the queue, returned.
    async fn refusal(database_url: &str, command: &[&str], topology: &QueueTopology) -> String {
        let admin = format!("127.0.0.1:{}", testkit::free_port());
        let process = testkit::Launch::binary("workers")
            .args(command.iter().copied())
            .args(["--exchange", &topology.exchange, "--queue", &topology.queue])
            .args(["--admin-addr", &admin])
            .env("DATABASE_URL", database_url)
            .start()
            .await;
        testkit::wait_until_within("it gives up", Duration::from_secs(20), || async {
            process
                .stderr()
                .lines()
                .any(|line| line.starts_with("error: "))
        })
        .await;
        let output = process.wait().await;
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(!stderr.contains("reconnecting"), "{stderr}");
        let naming: Vec<&str> = stderr
            .lines()
            .filter(|line| line.contains(&topology.queue))
            .collect();
        assert_eq!(naming.len(), 1, "{stderr}");
        naming[0].to_owned()
    }

    #[sqlx::test(migrations = "../migrations")]
    async fn a_classic_queue_of_our_name_stops_the_consumer_and_the_relay_with_one_line_naming_it_and_the_fix(
        pool: PgPool,
    ) {
        let topology = QueueTopology::named(&unique("refused"), &unique("classic"));
        let (_connection, channel) = channel().await;
        declare_classic_queue(&channel, &topology.queue).await;
        let database_url = testkit::database_url(&pool).await;
        let delete = format!("rabbitmqctl delete_queue {}", topology.queue);
        let consumer = refusal(&database_url, &["consume", "orders"], &topology).await;
        for needle in [
            "x-queue-type",
            "quorum",
            "classic",
            delete.as_str(),
            "ORDERS_QUEUE",
        ] {
            assert!(consumer.contains(needle), "no {needle:?} in: {consumer}");
        }
        // The relay declares the same queue: it stops the same way, with the same line.
        let relay = refusal(&database_url, &["relay"], &topology).await;
        assert!(relay.contains(delete.as_str()), "{relay}");
        // Their queue is left as it was.
        assert_eq!(message_count(&channel, &topology.queue).await, 0);
        remove(&topology).await;
    }

    #[sqlx::test(migrations = "../migrations")]
    async fn a_queue_or_exchange_declared_otherwise_is_refused_at_once_naming_what_differs(
        pool: PgPool,
    ) {
        let (connection, channel) = channel().await;
        // A quorum queue of ours, declared with another delivery limit.
        let limit = QueueTopology::named(&unique("refused"), &unique("limit"));
        limit
            .declare_consumer_queue(&connection, "order.created", 5)
            .await
            .unwrap();
        // The orders exchange, declared as a direct exchange by someone else.
        let exchange = QueueTopology::named(&unique("direct"), &unique("queue"));
        channel
            .exchange_declare(
                exchange.exchange.as_str().into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let cases = [
            (&limit, 7, "queue", "x-delivery-limit", "ORDERS_QUEUE"),
            (&exchange, 5, "exchange", "type", "ORDERS_EXCHANGE"),
        ];
        for (topology, delivery_limit, kind, differs, variable) in cases {
            let settings = ConsumerSettings {
                topology: topology.clone(),
                routing_key: "order.created".into(),
                prefetch: 8,
                delivery_limit,
            };
            let metrics = ConsumerMetrics::default();
            let run = run_consumer(
                pool.clone(),
                OrdersHandler,
                RABBITMQ_URL.into(),
                settings,
                metrics,
                Stop::never(),
            );
            let error = tokio::time::timeout(Duration::from_secs(10), run)
                .await
                .expect("refused at once, not retried")
                .expect_err("the declaration conflicts")
                .to_string();
            let name = match kind {
                "queue" => &topology.queue,
                _ => &topology.exchange,
            };
            let named = format!("RabbitMQ refused {kind} '{name}'");
            for needle in [named.as_str(), differs, variable] {
                assert!(error.contains(needle), "no {needle:?} in: {error}");
            }
            assert_eq!(error.lines().count(), 1, "{error}");
        }
        remove(&limit).await;
        remove(&exchange).await;
    }
}

mod health {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use testkit::Process;

    /// A TCP proxy to the local broker that closes every connection at once until
    /// `forwarding` is set: a broker that is down, then back. Its port and its task.
    async fn broker_proxy(forwarding: Arc<AtomicBool>) -> (u16, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !forwarding.load(Ordering::SeqCst) {
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut broker) = tokio::net::TcpStream::connect("127.0.0.1:5672").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                    }
                });
            }
        });
        (port, task)
    }

    /// `/healthz`: status and body.
    async fn healthz(process: &Process) -> (u16, String) {
        let response = reqwest::get(process.url("/healthz")).await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    #[sqlx::test(migrations = "../migrations")]
    async fn the_consumers_healthz_is_unavailable_while_the_broker_is_unreachable_and_ok_once_it_consumes(
        pool: PgPool,
    ) {
        let forwarding = Arc::new(AtomicBool::new(false));
        let (port, proxy) = broker_proxy(forwarding.clone()).await;
        let topology = QueueTopology::named(&unique("health"), &unique("queue"));
        let database_url = testkit::database_url(&pool).await;
        let args = [
            "consume",
            "orders",
            "--exchange",
            &topology.exchange,
            "--queue",
            &topology.queue,
        ];
        let consumer = testkit::workers_launch(&database_url, &args)
            .env(
                "RABBITMQ_URL",
                format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
            )
            .ready_path("/metrics")
            .start()
            .await;
        let (status, body) = healthz(&consumer).await;
        assert_eq!(status, 503, "{body}");
        wait_until("a connection attempt failed", || async {
            let (status, body) = healthz(&consumer).await;
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!((status, &body["status"]), (503, &json!("unavailable")));
            body["reason"].as_str().unwrap().contains("broker error")
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(healthz(&consumer).await.0, 503);

        forwarding.store(true, Ordering::SeqCst);
        wait_until("the consumer consumes and says ok", || async {
            healthz(&consumer).await == (200, "ok".to_owned())
        })
        .await;
        let (_connection, channel) = channel().await;
        assert_eq!(message_count(&channel, &topology.queue).await, 0);
        let output = consumer.stop().await;
        assert!(output.status.success(), "{output:?}");
        proxy.abort();
        remove(&topology).await;
    }
}
