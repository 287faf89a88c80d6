//! The orders pipeline under fire. 2,000 orders are created concurrently (REST and GraphQL
//! mixed, some replaying idempotency keys) while two relays run side by side, the relay and
//! the consumer are each SIGKILLed and restarted several times, and RabbitMQ force-closes
//! every connection once. When all is quiet: every order's event was published, no outbox
//! row is stuck, and the sum of `orders_count` equals the number of distinct orders.

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::PgPool;

const ORDERS: usize = 2_000;
const CONCURRENCY: usize = 16;
/// Orders whose request reuses an idempotency key from this many (same body each time).
const REPLAYED_KEYS: usize = 100;

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Worker {
    args: Vec<String>,
    database_url: String,
    child: Child,
}

impl Worker {
    fn start(args: &[&str], database_url: &str) -> Self {
        let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        let child = Self::spawn(&args, database_url);
        Self {
            args,
            database_url: database_url.to_owned(),
            child,
        }
    }

    fn spawn(args: &[String], database_url: &str) -> Child {
        let mut args = args.to_vec();
        args.extend(["--admin-addr".into(), format!("127.0.0.1:{}", free_port())]);
        Command::new(env!("CARGO_BIN_EXE_workers"))
            .args(&args)
            .env("DATABASE_URL", database_url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// SIGKILL, then start again.
    fn crash_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.child = Self::spawn(&self.args, &self.database_url);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
        use base64::Engine;
        let customer_id = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("Customer:SHOP:{customer}"));
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
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let database_url = format!("postgres://postgres@127.0.0.1:5432/{database}");
    let suffix = format!(
        "{}.{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ 0x5eed
    );
    let exchange = format!("test.reliability.orders.{suffix}");
    let queue = format!("test.reliability.queue.{suffix}");

    let mut config = gateway::config::GatewayConfig::defaults();
    config.orders_exchange = exchange.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = gateway::app(gateway::AppState::new(pool.clone(), config));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

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
    let mut relay_a = Worker::start(&relay_args, &database_url);
    let mut relay_b = Worker::start(&relay_args, &database_url);
    let mut consumer = Worker::start(
        &[
            "consume",
            "orders",
            "--exchange",
            &exchange,
            "--queue",
            &queue,
        ],
        &database_url,
    );

    // Load: ORDERS requests from CONCURRENCY tasks, paced over about eight seconds.
    let client = reqwest::Client::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (client, base, next) = (client.clone(), base.clone(), next.clone());
        load.spawn(async move {
            let mut failures = Vec::new();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n >= ORDERS {
                    return failures;
                }
                if let Err(error) = create_order(&client, &base, n).await {
                    failures.push(error);
                }
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        });
    }

    // Chaos while the load runs.
    for step in 0..7 {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        match step {
            0 | 4 => relay_a.crash_and_restart(),
            1 | 5 => consumer.crash_and_restart(),
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
            3 => relay_b.crash_and_restart(),
            _ => consumer.crash_and_restart(),
        }
    }
    let mut failures = Vec::new();
    while let Some(task) = load.join_next().await {
        failures.extend(task.unwrap());
    }
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
    drop((relay_a, relay_b, consumer));

    let (_connection, channel) =
        domain::amqp::connect("amqp://guest:guest@127.0.0.1:5672/%2f", "hub-tests")
            .await
            .unwrap();
    for name in [queue.clone(), format!("{queue}.dlq")] {
        let _ = channel
            .queue_delete(name.as_str().into(), Default::default())
            .await;
    }
    for name in [exchange.clone(), format!("{exchange}.dlx")] {
        let _ = channel
            .exchange_delete(name.as_str().into(), Default::default())
            .await;
    }
}
