//! `make bench`: the purchases pipeline on this machine (PostgreSQL, the Kafka-protocol
//! broker Tansu and the real `gateway` binary on loopback; the relay and the load
//! generator in this process, sharing the two cores).
//!
//! 1. Relay-to-Kafka throughput with `acks=all` delivery reports, batch size 100 (goal: at
//!    least 5,000 events/s, the RabbitMQ relay's target).
//! 2. `POST /buy` requests per second at 64 connections, beside `POST /api/v1/orders`
//!    measured in the same run (goal: at least the order-creation rate).
//! 3. Post-to-visible latency: from sending `POST /buy` to the purchase showing in a
//!    `purchases` query, and to its `purchaseMade` event reaching a subscriber through the
//!    relay (a `workers relay` process) and Kafka (goal: p99 under 100 ms for each).

mod common;

use std::time::{Duration, Instant};

use domain::kafka::KafkaArgs;
use prometheus_client::registry::Registry;
use serde_json::json;
use sqlx::PgPool;
use workers::relay::{KafkaPublisher, KafkaSettings, Relay, RelayMetrics, RelaySettings};

const RELAY_TARGET: f64 = 5_000.0;
const VISIBLE_P99_LIMIT_MS: f64 = 100.0;
const CONNECTIONS: usize = 64;
const LOAD_DURATION: Duration = Duration::from_secs(10);
const LATENCY_SAMPLES: usize = 300;
const RELAYED_EVENTS: i64 = 20_000;

/// Appends `count` purchase events for `topic` straight into the outbox (setup).
async fn fill_outbox(pool: &PgPool, topic: &str, count: i64) {
    sqlx::query(
        "INSERT INTO outbox_events (event_id, broker, destination, message_key, headers,
                                    aggregate_type, aggregate_id, event_type, payload)
         SELECT id, 'kafka', $2, 'user' || (n % 50),
                jsonb_build_object('id', id::text, 'content-type', 'application/json',
                                   'type', 'purchase.made'),
                'Purchase', n::text, 'purchase.made',
                json_build_object('username', 'user' || (n % 50), 'userid', (n % 50)::text,
                                  'price', '19.99', 'timestamp', '2026-11-23T00:00:00.000Z')
         FROM (SELECT n, gen_random_uuid() AS id FROM generate_series(1, $1) AS n) AS e",
    )
    .bind(count)
    .bind(topic)
    .execute(pool)
    .await
    .unwrap();
}

async fn bench_relay(pool: &PgPool) -> bool {
    let topic = testkit::unique("bench_purchases");
    fill_outbox(pool, &topic, RELAYED_EVENTS).await;
    let kafka = KafkaArgs {
        kafka_brokers: "127.0.0.1:9092".into(),
        kafka_username: None,
        kafka_password: None,
    };
    let settings = KafkaSettings {
        kafka,
        topics: vec![topic],
    };
    let relay_settings = RelaySettings {
        batch_size: 100,
        max_attempts: 10,
    };
    let metrics = RelayMetrics::register(&mut Registry::default());
    let mut relay =
        Relay::<KafkaPublisher>::connect(pool.clone(), &settings, relay_settings, metrics)
            .await
            .expect("Kafka must run on 127.0.0.1:9092 (make services)");
    let started = Instant::now();
    let published = relay.process_all().await.unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let rate = published as f64 / elapsed;
    let ok = published as i64 == RELAYED_EVENTS && rate >= RELAY_TARGET;
    println!(
        "relay to Kafka, batch size 100, acks=all: {published} events in {elapsed:.2} s = {rate:.0} events/s \
         (goal >= {RELAY_TARGET:.0}) -> {}",
        common::verdict(ok)
    );
    ok
}

async fn bench_posts(base: &str) -> bool {
    let buy_url = format!("{base}/buy");
    let buys = common::http_load(CONNECTIONS, LOAD_DURATION, 200, move |client, worker| {
        let body = json!({"username": format!("user{}", worker % 50), "userid": "005",
                          "price": "1195.30", "timestamp": "2024-05-31T15:54:32.204Z"});
        client.post(&buy_url).json(&body)
    })
    .await;
    let order_url = format!("{base}/api/v1/orders");
    let orders = common::http_load(CONNECTIONS, LOAD_DURATION, 201, move |client, worker| {
        let body = json!({"customer_id": worker % 10 + 1, "product_name": "Widget", "quantity": 1, "price": 9.99});
        client.post(&order_url).json(&body)
    })
    .await;
    let ratio = buys.requests_per_second / orders.requests_per_second;
    let ok = ratio >= 1.0 && buys.errors == 0;
    println!(
        "POST /buy, {CONNECTIONS} connections: {:.0} req/s (p50 {:.1} ms, p99 {:.1} ms, errors {}); \
         POST /api/v1/orders in the same run: {:.0} req/s; ratio {ratio:.2} (goal >= 1.00) -> {}",
        buys.requests_per_second,
        buys.p50_ms,
        buys.p99_ms,
        buys.errors,
        orders.requests_per_second,
        common::verdict(ok)
    );
    ok
}

async fn bench_visibility(base: &str) -> bool {
    let client = reqwest::Client::new();
    let query = "query($u: String!) { purchases(username: $u, first: 0) { totalCount } }";
    let mut latencies = Vec::with_capacity(LATENCY_SAMPLES);
    for sample in 0..LATENCY_SAMPLES {
        let username = format!("visible{sample}");
        let started = Instant::now();
        let response = client
            .post(format!("{base}/buy"))
            .json(
                &json!({"username": username, "userid": "1", "price": "1.00",
                          "timestamp": "2024-05-31T15:54:32.204Z"}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        loop {
            let body: serde_json::Value = client
                .post(format!("{base}/graphql"))
                .json(&json!({"query": query, "variables": {"u": username}}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if body["data"]["purchases"]["totalCount"] == 1 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never visible: {body}"
            );
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let p99 = common::percentile_ms(&latencies, 0.99);
    let ok = p99 < VISIBLE_P99_LIMIT_MS;
    println!(
        "POST /buy -> visible in the purchases query, {LATENCY_SAMPLES} purchases: p50 {:.1} ms, \
         p99 {p99:.1} ms (limit {VISIBLE_P99_LIMIT_MS:.0} ms) -> {}",
        common::percentile_ms(&latencies, 0.50),
        common::verdict(ok)
    );
    ok
}

async fn bench_subscription(base: &str, database_url: &str, topic: &str) -> bool {
    let relay = testkit::spawn_workers(database_url, &["relay", "--kafka-topic", topic]).await;
    let mut client = testkit::GraphqlWs::connect(base, testkit::Protocol::TransportWs).await;
    let subscribe = "subscription { purchaseMade(username: \"live\") { price } }";
    client.subscribe("p", subscribe, json!({})).await;
    let http = reqwest::Client::new();
    let buy = |price: String| {
        let (http, url) = (http.clone(), format!("{base}/buy"));
        async move {
            let body = json!({"username": "live", "userid": "1", "price": price,
                              "timestamp": "2024-05-31T15:54:32.204Z"});
            let response = http.post(url).json(&body).send().await.unwrap();
            assert_eq!(response.status(), 200);
        }
    };
    // The subscription follows from the end once its reader is assigned: warm up until the
    // first event arrives.
    let mut warm = false;
    for _ in 0..50 {
        buy("0.01".into()).await;
        if client.next(Duration::from_millis(500)).await.is_some() {
            warm = true;
            break;
        }
    }
    assert!(warm, "no purchaseMade event within 25 s");
    client.drain(Duration::from_millis(500)).await;
    let mut latencies = Vec::with_capacity(LATENCY_SAMPLES);
    for sample in 0..LATENCY_SAMPLES {
        let price = format!("{}.{:02}", sample / 100 + 1, sample % 100);
        let started = Instant::now();
        buy(price.clone()).await;
        let event = client
            .next(Duration::from_secs(10))
            .await
            .expect("the purchaseMade event");
        assert_eq!(
            event["payload"]["data"]["purchaseMade"]["price"], price,
            "{event}"
        );
        latencies.push(started.elapsed());
    }
    drop(relay);
    latencies.sort();
    let p99 = common::percentile_ms(&latencies, 0.99);
    let ok = p99 < VISIBLE_P99_LIMIT_MS;
    println!(
        "POST /buy -> purchaseMade event (outbox, relay, Kafka, gateway), {LATENCY_SAMPLES} purchases: \
         p50 {:.1} ms, p99 {p99:.1} ms (limit {VISIBLE_P99_LIMIT_MS:.0} ms) -> {}",
        common::percentile_ms(&latencies, 0.50),
        common::verdict(ok)
    );
    ok
}

#[tokio::main]
async fn main() {
    let database = testkit::fresh_database("hub_bench_purchases", 32).await;
    println!("purchases pipeline benchmarks");
    let mut ok = bench_relay(&database.pool).await;
    let topic = testkit::unique("bench_purchase_made");
    let gateway = testkit::spawn_gateway(
        &database.url,
        &[
            ("DATABASE_MAX_CONNECTIONS", "32"),
            ("RUST_LOG", "warn"),
            ("KAFKA_TOPIC", &topic),
        ],
    )
    .await;
    ok &= bench_posts(&gateway.base()).await;
    ok &= bench_visibility(&gateway.base()).await;
    // Only the subscription's own purchases are relayed there, not the load's.
    sqlx::query("UPDATE outbox_events SET status = 'processed'")
        .execute(&database.pool)
        .await
        .unwrap();
    ok &= bench_subscription(&gateway.base(), &database.url, &topic).await;
    if !ok {
        eprintln!("some figures missed their goal");
    }
}
