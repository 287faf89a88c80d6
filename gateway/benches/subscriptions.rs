//! `make bench`: subscriptions at scale, through the release gateway binary on loopback.
//!
//! 10,000 `graphql-transport-ws` clients (this process, all on 127.0.0.1) subscribe to
//! `orderCreated`; this process publishes 10 `order.created` events a second to the
//! gateway's RabbitMQ exchange for 20 s. Printed, each with its limit: every event to every
//! subscriber, p99 event-to-client latency (from the publish to the client reading it)
//! under 100 ms, the gateway's memory per subscriber under 50 KB, and the memory it gives
//! back once they have all left. `BENCH_SUBSCRIBERS` sets another count.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::measure::{cpu_seconds, percentile_ms, verdict};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const EVENTS_PER_SECOND: u64 = 10;
const EVENT_SECONDS: u64 = 20;
const P99_LIMIT_MS: f64 = 100.0;
const KB_PER_SUBSCRIBER_LIMIT: f64 = 50.0;
/// Share of the memory the subscribers took that must be given back once they left.
const RETURNED_LIMIT: f64 = 0.75;
const CONNECT_AT_ONCE: usize = 200;
const SUBSCRIPTION: &str =
    "subscription { orderCreated { id productName quantity price status createdAt } }";

/// The gateway's resident memory, in KiB.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status")
}

/// When each event was published, by its index (set just before it is published).
type Published = Arc<Mutex<Vec<Option<Instant>>>>;

/// One subscriber: connects, subscribes, then records how long each event took to reach
/// it until the socket closes or `stop` fires. Returns the latencies.
async fn subscriber(
    url: String,
    published: Published,
    ready: tokio::sync::mpsc::Sender<()>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<Duration> {
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the gateway accepts the connection");
    let init = json!({"type": "connection_init", "payload": {}}).to_string();
    socket.send(Message::Text(init.into())).await.unwrap();
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) if text.contains("connection_ack") => break,
            Some(Ok(_)) => {}
            other => panic!("no connection_ack: {other:?}"),
        }
    }
    let subscribe = json!({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}});
    socket
        .send(Message::Text(subscribe.to_string().into()))
        .await
        .unwrap();
    let _ = ready.send(()).await;
    let mut latencies = Vec::with_capacity((EVENTS_PER_SECOND * EVENT_SECONDS) as usize);
    loop {
        tokio::select! {
            message = socket.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let received = Instant::now();
                    let Some(index) = event_index(&text) else { continue };
                    let sent = published.lock().unwrap().get(index).copied().flatten();
                    if let Some(sent) = sent {
                        latencies.push(received - sent);
                    }
                }
                Some(Ok(_)) => {}
                _ => break,
            },
            _ = stop.changed() => break,
        }
    }
    let _ = socket.close(None).await;
    latencies
}

/// The event index in a `next` message: its order's product is `bench-<index>`.
fn event_index(text: &str) -> Option<usize> {
    let start = text.find("bench-")? + "bench-".len();
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[tokio::main]
async fn main() {
    let subscribers: usize = std::env::var("BENCH_SUBSCRIBERS")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(10_000);
    let events = (EVENTS_PER_SECOND * EVENT_SECONDS) as usize;
    println!(
        "Subscriptions: {subscribers} graphql-transport-ws subscribers of orderCreated, \
         {EVENTS_PER_SECOND} events/s for {EVENT_SECONDS} s"
    );
    let database = testkit::fresh_database("hub_bench_subscriptions", 8).await;
    let exchange = testkit::unique("bench-orders");
    let connections = (subscribers * 2).to_string();
    let gateway = testkit::spawn_gateway(
        &database.url,
        &[
            ("RUST_LOG", "warn"),
            ("ORDERS_EXCHANGE", &exchange),
            ("WS_MAX_CONNECTIONS_PER_CLIENT", &connections),
        ],
    )
    .await;
    let pid = gateway.pid().expect("the gateway runs");
    // One order per event, plus one to see the feed is connected.
    let mut order_ids = Vec::with_capacity(events + 1);
    for index in 0..=events {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO orders (customer_id, product_name, quantity, price, status) \
             VALUES (1, $1, 2, 19.99, 'pending') RETURNING id",
        )
        .bind(format!("bench-{index}"))
        .fetch_one(&database.pool)
        .await
        .unwrap();
        order_ids.push(id);
    }
    let (_connection, channel) = testkit::rabbit::channel().await;
    let publish = |order_id: i64| {
        let body = json!({
            "order_id": order_id, "customer_id": 1, "product_name": "bench", "quantity": 2,
            "price": 19.99, "status": "pending", "event_id": uuid::Uuid::new_v4().to_string(),
            "occurred_at": "2026-12-03T00:00:00.000Z",
        })
        .to_string();
        let channel = channel.clone();
        let exchange = exchange.clone();
        async move {
            testkit::rabbit::publish(&channel, &exchange, "order.created", body.as_bytes()).await
        }
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_kib = resident_kib(pid);

    let url = format!("ws://127.0.0.1:{}/graphql/ws", gateway.port().unwrap());
    let published: Published = Arc::new(Mutex::new(vec![None; events + 1]));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (ready, mut readies) = tokio::sync::mpsc::channel(subscribers.max(1));
    let connecting = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    let mut connected = 0;
    for _ in 0..subscribers {
        clients.spawn(subscriber(
            url.clone(),
            published.clone(),
            ready.clone(),
            stopped.clone(),
        ));
        if clients.len() - connected >= CONNECT_AT_ONCE {
            readies.recv().await;
            connected += 1;
        }
    }
    while connected < subscribers {
        tokio::time::timeout(Duration::from_secs(60), readies.recv())
            .await
            .expect("every subscriber connected within 60 s");
        connected += 1;
    }
    println!(
        "  {subscribers} subscribers connected in {:.1} s",
        connecting.elapsed().as_secs_f64()
    );
    // The warm-up event (index `events`, not counted) shows the subscriptions are live.
    publish(order_ids[events]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let subscribed_kib = resident_kib(pid);

    let events_started = Instant::now();
    let cpu_before = (cpu_seconds(pid), cpu_seconds(std::process::id()));
    let mut ticks = tokio::time::interval(Duration::from_millis(1_000 / EVENTS_PER_SECOND));
    for (index, order_id) in order_ids.iter().take(events).enumerate() {
        ticks.tick().await;
        published.lock().unwrap()[index] = Some(Instant::now());
        publish(*order_id).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events_took = events_started.elapsed().as_secs_f64();
    let cpu_spent = (
        cpu_seconds(pid) - cpu_before.0,
        cpu_seconds(std::process::id()) - cpu_before.1,
    );
    let peak_kib = resident_kib(pid).max(subscribed_kib);
    stop.send(true).unwrap();
    let mut latencies = Vec::with_capacity(subscribers * events);
    let mut complete = 0;
    while let Some(received) = clients.join_next().await {
        let received = received.expect("a subscriber task");
        if received.len() == events {
            complete += 1;
        }
        latencies.extend(received);
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
    let left_kib = resident_kib(pid);

    latencies.sort();
    let expected = subscribers * events;
    let all_delivered = latencies.len() == expected;
    println!(
        "  delivered {} of {expected} events ({complete} of {subscribers} subscribers got all {events}) -> {}",
        latencies.len(),
        verdict(all_delivered)
    );
    let p99 = percentile_ms(&latencies, 0.99);
    println!(
        "  event to client: p50 {:.1} ms, p99 {p99:.1} ms, max {:.1} ms (limit p99 < {P99_LIMIT_MS} ms) -> {}",
        percentile_ms(&latencies, 0.50),
        percentile_ms(&latencies, 1.0),
        verdict(p99 < P99_LIMIT_MS)
    );
    // Where the two cores went while the events flowed: the gateway's share is what one
    // delivered message costs it; the clients (this process) share the same cores.
    let delivered = latencies.len().max(1) as f64;
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "  CPU while the events flowed ({events_took:.1} s, {cores} cores): gateway {:.1} s \
         ({:.1} us per delivered message), the {subscribers} clients {:.1} s",
        cpu_spent.0,
        cpu_spent.0 * 1e6 / delivered,
        cpu_spent.1
    );
    let per_subscriber =
        peak_kib.saturating_sub(idle_kib) as f64 * 1.024 / subscribers.max(1) as f64;
    println!(
        "  gateway memory: idle {} MB, {} MB subscribed, peak {} MB: {per_subscriber:.1} KB per subscriber (limit {KB_PER_SUBSCRIBER_LIMIT} KB) -> {}",
        idle_kib / 1024,
        subscribed_kib / 1024,
        peak_kib / 1024,
        verdict(per_subscriber < KB_PER_SUBSCRIBER_LIMIT)
    );
    let taken = peak_kib.saturating_sub(idle_kib).max(1) as f64;
    let returned = peak_kib.saturating_sub(left_kib) as f64 / taken;
    println!(
        "  after they left: {} MB, {:.0}% of what they took given back (limit {:.0}%) -> {}",
        left_kib / 1024,
        returned * 100.0,
        RETURNED_LIMIT * 100.0,
        verdict(returned >= RETURNED_LIMIT)
    );
    drop(gateway);
}
