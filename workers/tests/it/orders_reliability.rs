//! The orders pipeline under fire. 2,000 orders are created concurrently (REST and GraphQL
//! mixed, some replaying idempotency keys) while two relays run side by side, the relay and
//! the consumer are each SIGKILLed and restarted several times, and RabbitMQ force-closes
//! every connection once. When all is quiet: every order's event was published, no outbox
//! row is stuck, and the sum of `orders_count` equals the number of distinct orders.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::PgPool;

const ORDERS: usize = 2_000;
const CONCURRENCY: usize = 16;
/// Orders whose request reuses an idempotency key from this many (same body each time).
const REPLAYED_KEYS: usize = 100;

async fn create_order(client: &reqwest::Client, base: &str, n: usize) -> Result<Value, String> {
    let customer = n % 10 + 1;
    let key = n
        .is_multiple_of(10)
        .then(|| format!("replayed-{}", (n / 10) % REPLAYED_KEYS));
    // A replayed key always comes with the same body.
    let (quantity, price) = if key.is_some() {
        (1, 10)
    } else {
        (n % 7, n % 50)
    };
    let response = if n.is_multiple_of(2) {
        let mut request = client.post(format!("{base}/api/v1/orders")).json(&json!({
            "customer_id": customer, "product_name": "Widget", "quantity": quantity, "price": price
        }));
        if let Some(key) = &key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await
    } else {
        let customer_id = testkit::customer_id("SHOP", &customer.to_string());
        client
            .post(format!("{base}/graphql"))
            .json(&json!({
                "query": "mutation($i: CreateOrderInput!, $k: String) { createOrder(input: $i, idempotencyKey: $k) { id } }",
                "variables": {"i": {"customerId": customer_id, "productName": "Widget", "quantity": quantity,
                                    "price": price.to_string()}, "k": key}
            }))
            .send()
            .await
    };
    let response = response.map_err(|error| error.to_string())?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|error| error.to_string())?;
    if !status.is_success() || body.get("errors").is_some() {
        return Err(format!("{status}: {body}"));
    }
    Ok(body)
}

async fn quiet_state(pool: &PgPool) -> (i64, i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM orders),
                (SELECT count(*) FROM outbox_events WHERE status = 'processed'),
                (SELECT count(*) FROM outbox_events WHERE status <> 'processed'),
                (SELECT COALESCE(sum(orders_count), 0)::bigint FROM customers WHERE source = 'SHOP')",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn no_order_is_lost_or_counted_twice_through_crashes_and_broker_disconnects(pool: PgPool) {
    let database_url = testkit::database_url(&pool).await;
    let exchange = testkit::unique("reliability_orders");
    let queue = testkit::unique("reliability_queue");
    let gateway = testkit::spawn_gateway(&database_url, &[("ORDERS_EXCHANGE", &exchange)]).await;
    let base = gateway.base();

    let relay_args = [
        "relay",
        "--exchange",
        &exchange,
        "--queue",
        &queue,
        "--batch-size",
        "50",
        "--poll-interval-ms",
        "200",
    ];
    let mut relay_a = testkit::spawn_workers(&database_url, &relay_args).await;
    let mut relay_b = testkit::spawn_workers(&database_url, &relay_args).await;
    let consumer_args = [
        "consume",
        "orders",
        "--exchange",
        &exchange,
        "--queue",
        &queue,
    ];
    let mut consumer = testkit::spawn_workers(&database_url, &consumer_args).await;

    // Load: ORDERS requests from CONCURRENCY tasks, paced over about eight seconds.
    let client = reqwest::Client::new();
    let load = testkit::load::spread(ORDERS, CONCURRENCY, Duration::from_millis(60), move |n| {
        let (client, base) = (client.clone(), base.clone());
        async move { create_order(&client, &base, n).await.map(|_| ()) }
    });

    // Chaos while the load runs.
    for step in 0..7 {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        match step {
            0 | 4 => relay_a.crash_and_restart().await,
            1 | 5 => consumer.crash_and_restart().await,
            2 => {
                let status = tokio::task::spawn_blocking(|| {
                    Command::new("rabbitmqctl")
                        .args(["close_all_connections", "reliability test"])
                        .stdout(Stdio::null())
                        .status()
                })
                .await
                .unwrap()
                .expect("rabbitmqctl runs");
                assert!(status.success(), "rabbitmqctl close_all_connections failed");
            }
            3 => relay_b.crash_and_restart().await,
            _ => consumer.crash_and_restart().await,
        }
    }
    let failures = load.failures().await;
    assert!(
        failures.is_empty(),
        "{} requests failed, e.g. {:?}",
        failures.len(),
        failures.first()
    );

    let started = Instant::now();
    let (orders, published, stuck, counted) = loop {
        let state = quiet_state(&pool).await;
        let (orders, published, stuck, counted) = state;
        if published == orders && stuck == 0 && counted == orders {
            break state;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "not quiet after 90 s: orders {orders}, published {published}, not yet published {stuck}, counted {counted}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // Stay quiet a moment longer: a late duplicate must not add to the count.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        quiet_state(&pool).await,
        (orders, published, stuck, counted)
    );
    let expected_distinct = (ORDERS - ORDERS / 10 + REPLAYED_KEYS) as i64;
    println!(
        "reliability: {ORDERS} requests, {orders} distinct orders (expected {expected_distinct}), \
         {published} events published, {stuck} stuck, sum(orders_count) = {counted}"
    );
    assert_eq!(orders, expected_distinct);
    drop((relay_a, relay_b, consumer, gateway));
    let dead_letters = (format!("{queue}.dlq"), format!("{exchange}.dlx"));
    testkit::rabbit::remove(&[&queue, &dead_letters.0], &[&exchange, &dead_letters.1]).await;
}
