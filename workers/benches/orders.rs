//! `make bench`: the orders pipeline on this machine (PostgreSQL, RabbitMQ and the real
//! `gateway` binary on loopback; the relay and the consumer in this process, sharing the
//! two cores).
//!
//! 1. Relay throughput with publisher confirms, batch sizes 1 and 100 (target: at least
//!    5,000 events/s with batching).
//! 2. `POST /api/v1/orders` requests per second at 64 connections.
//! 3. Order-to-`orders_count` latency, p50/p99, with the relay and the consumer running.

mod common;

use std::time::{Duration, Instant};

use domain::amqp::QueueTopology;
use prometheus_client::registry::Registry;
use serde_json::json;
use sqlx::PgPool;
use testkit::rabbit::RABBITMQ_URL;
use workers::consume::{run_consumer, ConsumerMetrics, ConsumerSettings, OrdersHandler};
use workers::health::Health;
use workers::relay::{
    run_relay, ConsumerQueue, RabbitPublisher, RabbitSettings, Relay, RelayMetrics, RelaySettings,
};
use workers::stop::Stop;

const RELAY_TARGET: f64 = 5_000.0;
const CONNECTIONS: usize = 64;
const LOAD_DURATION: Duration = Duration::from_secs(10);
const LATENCY_SAMPLES: usize = 300;

/// Appends `count` order.created events for `exchange` straight into the outbox (setup,
/// not measured).
async fn fill_outbox(pool: &PgPool, exchange: &str, count: i64) {
    sqlx::query(
        "INSERT INTO outbox_events (event_id, broker, destination, message_key, headers,
                                    aggregate_type, aggregate_id, event_type, payload)
         SELECT id, 'rabbitmq', $2, 'order.created',
                jsonb_build_object('id', id::text, 'content-type', 'application/json',
                                   'type', 'order.created'),
                'Order', n::text, 'order.created',
                json_build_object('order_id', n, 'customer_id', n % 10 + 1, 'product_name', 'Widget',
                                  'quantity', 1, 'price', 19.99, 'status', 'pending',
                                  'event_id', id::text, 'occurred_at', '2026-11-21T00:00:00.000Z')
         FROM (SELECT n, gen_random_uuid() AS id FROM generate_series(1, $1) AS n) AS e",
    )
    .bind(count)
    .bind(exchange)
    .execute(pool)
    .await
    .unwrap();
}

/// The relay's RabbitMQ settings: it declares the bench consumer's queue, as in production.
fn publisher(topology: &QueueTopology) -> RabbitSettings {
    RabbitSettings {
        url: RABBITMQ_URL.into(),
        consumer_queues: vec![ConsumerQueue {
            topology: topology.clone(),
            routing_key: "order.created".into(),
            delivery_limit: 5,
        }],
    }
}

fn settings(batch_size: u32) -> RelaySettings {
    RelaySettings {
        batch_size,
        max_attempts: 10,
    }
}

async fn bench_relay(pool: &PgPool, topology: &QueueTopology, batch_size: u32, events: i64) -> f64 {
    sqlx::query("TRUNCATE outbox_events")
        .execute(pool)
        .await
        .unwrap();
    fill_outbox(pool, &topology.exchange, events).await;
    let mut relay = Relay::<RabbitPublisher>::connect(
        pool.clone(),
        &publisher(topology),
        settings(batch_size),
        RelayMetrics::register(&mut Registry::default()),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let published = relay.process_all().await.unwrap();
    let rate = published as f64 / started.elapsed().as_secs_f64();
    assert_eq!(published as i64, events);
    let target = if batch_size > 1 {
        format!(
            "target >= {RELAY_TARGET:.0} -> {}",
            common::verdict(rate >= RELAY_TARGET)
        )
    } else {
        "no target: one confirm round trip per event".into()
    };
    println!("relay, batch size {batch_size:>3}: {events} events in {:.2} s = {rate:.0} events/s ({target})", started.elapsed().as_secs_f64());
    rate
}

async fn purge(topology: &QueueTopology) {
    let (_connection, channel) = testkit::rabbit::channel().await;
    testkit::rabbit::purge(&channel, &topology.queue).await;
}

async fn bench_post_orders(base: &str) {
    let url = format!("{base}/api/v1/orders");
    let report = common::http_load(CONNECTIONS, LOAD_DURATION, 201, move |client, worker| {
        let body = json!({"customer_id": worker % 10 + 1, "product_name": "Widget", "quantity": 1, "price": 9.99});
        client.post(&url).json(&body)
    })
    .await;
    println!(
        "POST /api/v1/orders, {CONNECTIONS} connections: {:.0} req/s (each a transaction with its outbox row), \
         p50 {:.1} ms, p99 {:.1} ms, errors {}",
        report.requests_per_second, report.p50_ms, report.p99_ms, report.errors
    );
}

async fn orders_count(pool: &PgPool, customer: i64) -> i64 {
    sqlx::query_scalar(
        "SELECT orders_count FROM customers WHERE source = 'SHOP' AND external_id = $1",
    )
    .bind(customer.to_string())
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn bench_latency(pool: &PgPool, topology: &QueueTopology, base: &str) {
    let relay = {
        let (pool, publisher) = (pool.clone(), publisher(topology));
        tokio::spawn(async move {
            let metrics = RelayMetrics::register(&mut Registry::default());
            run_relay::<RabbitPublisher>(
                pool,
                publisher,
                settings(100),
                metrics,
                Health::default(),
                Duration::from_secs(1),
                Stop::never(),
            )
            .await
        })
    };
    let consumer = tokio::spawn(run_consumer(
        pool.clone(),
        OrdersHandler,
        RABBITMQ_URL.into(),
        ConsumerSettings {
            topology: topology.clone(),
            routing_key: "order.created".into(),
            prefetch: 32,
            delivery_limit: 5,
        },
        ConsumerMetrics::default(),
        Stop::never(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = reqwest::Client::new();
    let mut latencies = Vec::with_capacity(LATENCY_SAMPLES);
    for sample in 0..LATENCY_SAMPLES {
        let customer = (sample % 10 + 1) as i64;
        let before = orders_count(pool, customer).await;
        let started = Instant::now();
        let response = client
            .post(format!("{base}/api/v1/orders"))
            .json(&json!({"customer_id": customer, "product_name": "Widget", "quantity": 1, "price": 9.99}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        while orders_count(pool, customer).await == before {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "orders_count did not move"
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    println!(
        "order -> orders_count (POST, outbox, relay, RabbitMQ, consumer, commit), {LATENCY_SAMPLES} orders: \
         p50 {:.1} ms, p99 {:.1} ms",
        common::percentile_ms(&latencies, 0.50),
        common::percentile_ms(&latencies, 0.99)
    );
    relay.abort();
    consumer.abort();
}

#[tokio::main]
async fn main() {
    let database = testkit::fresh_database("hub_bench_orders", 80).await;
    let pool = database.pool.clone();
    let topology = QueueTopology::named(
        &testkit::unique("bench_orders"),
        &testkit::unique("bench_orders_queue"),
    );
    println!("orders pipeline benchmarks");
    bench_relay(&pool, &topology, 1, 2_000).await;
    purge(&topology).await;
    let batched = bench_relay(&pool, &topology, 100, 20_000).await;
    purge(&topology).await;
    sqlx::query("TRUNCATE outbox_events")
        .execute(&pool)
        .await
        .unwrap();
    let gateway = testkit::spawn_gateway(
        &database.url,
        &[
            ("ORDERS_EXCHANGE", &topology.exchange),
            ("DATABASE_MAX_CONNECTIONS", "32"),
            ("RUST_LOG", "warn"),
        ],
    )
    .await;
    bench_post_orders(&gateway.base()).await;
    sqlx::query("UPDATE outbox_events SET status = 'processed'")
        .execute(&pool)
        .await
        .unwrap();
    bench_latency(&pool, &topology, &gateway.base()).await;
    drop(gateway);
    testkit::rabbit::remove(
        &[&topology.queue, &topology.dead_letter_queue],
        &[&topology.exchange, &topology.dead_letter_exchange],
    )
    .await;
    if batched < RELAY_TARGET {
        eprintln!("the relay missed its target");
    }
}
