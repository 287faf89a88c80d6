//! `make bench`: subscriptions at scale, through the release gateway binary on loopback.
//!
//! 10,000 `graphql-transport-ws` clients (this process, all on 127.0.0.1) subscribe to
//! `orderCreated`; this process publishes 10 `order.created` events a second to the
//! gateway's RabbitMQ exchange for 20 s. Printed, each with its limit: every event to every
//! subscriber, p99 event-to-client latency (from the publish to the client reading it)
//! under 100 ms, the gateway's memory per subscriber under 50 KB, and the memory it gives
//! back once they have all left. `BENCH_SUBSCRIBERS` sets another count,
//! `BENCH_CLIENT_THREADS` how many threads the clients run on (1).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::measure::{cpu_seconds, percentile_ms, verdict};

use serde_json::json;

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

/// When each event was published, by its index: nanoseconds after the bench's start, 0
/// until it is published.
type Published = Arc<Vec<AtomicU64>>;

/// A whole WebSocket frame (RFC 6455, 5.2): `payload` with opcode `opcode`, masked with
/// `mask` as a client's frames must be, unmasked as a server's are.
fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let masked = if mask.is_some() { 0x80 } else { 0 };
    let mut frame = Vec::with_capacity(payload.len() + 8);
    frame.push(0x80 | opcode);
    match u16::try_from(payload.len()) {
        Ok(short) if short < 126 => frame.push(masked | short as u8),
        Ok(medium) => {
            frame.push(masked | 126);
            frame.extend_from_slice(&medium.to_be_bytes());
        }
        Err(_) => panic!("bench messages are small"),
    }
    match mask {
        Some(key) => {
            frame.extend_from_slice(&key);
            frame.extend(
                payload
                    .iter()
                    .zip(key.iter().cycle())
                    .map(|(byte, key)| byte ^ key),
            );
        }
        None => frame.extend_from_slice(payload),
    }
    frame
}

/// One lean `graphql-transport-ws` client on a raw socket: the upgrade and its two messages
/// written by hand, then each server frame read only as far as its header and the event
/// index. tokio-tungstenite (UTF-8 checks, a message per frame, a sink and a stream) cost
/// the 10,000 clients more CPU than the gateway spent delivering to them, on the same two
/// cores; the figure under test is the gateway's.
mod client {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// The masking key of every client frame (any key is valid; the server unmasks).
    const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x81];
    const TEXT: u8 = 0x1;
    const CLOSE: u8 = 0x8;

    pub struct Client {
        socket: TcpStream,
        buffer: Vec<u8>,
        /// Where the unread bytes of `buffer` start and end.
        start: usize,
        end: usize,
    }

    /// One server frame: its opcode and payload.
    pub struct Frame<'a> {
        pub opcode: u8,
        pub payload: &'a [u8],
    }

    impl Client {
        /// Upgrades a connection to `/graphql/ws` on `port` with the `graphql-transport-ws`
        /// subprotocol; panics unless the gateway answers 101.
        pub async fn connect(port: u16) -> Client {
            let mut socket = TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("the gateway accepts the connection");
            socket.set_nodelay(true).unwrap();
            let upgrade = format!(
                "GET /graphql/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
            );
            socket.write_all(upgrade.as_bytes()).await.unwrap();
            let mut client = Client {
                socket,
                buffer: vec![0; 2048],
                start: 0,
                end: 0,
            };
            let head_end = loop {
                let unread = &client.buffer[..client.end];
                if let Some(at) = unread.windows(4).position(|window| window == b"\r\n\r\n") {
                    break at + 4;
                }
                assert!(client.fill().await, "the gateway closed during the upgrade");
            };
            let head = String::from_utf8_lossy(&client.buffer[..head_end]).into_owned();
            assert!(head.starts_with("HTTP/1.1 101"), "no upgrade: {head}");
            client.start = head_end;
            client
        }

        /// Sends one masked text frame.
        pub async fn send_text(&mut self, text: &str) {
            self.send(TEXT, text.as_bytes()).await;
        }

        /// Sends a normal close (1000), best effort.
        pub async fn close(mut self) {
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                self.send(CLOSE, &1000u16.to_be_bytes()),
            )
            .await;
        }

        async fn send(&mut self, opcode: u8, payload: &[u8]) {
            let frame = super::frame(opcode, payload, Some(MASK));
            let _ = self.socket.write_all(&frame).await;
        }

        /// The next server frame; `None` once the socket closed.
        pub async fn next_frame(&mut self) -> Option<Frame<'_>> {
            loop {
                if let Some((opcode, payload_start, payload_end)) = self.parse() {
                    self.start = payload_end;
                    return Some(Frame {
                        opcode,
                        payload: &self.buffer[payload_start..payload_end],
                    });
                }
                if !self.fill().await {
                    return None;
                }
            }
        }

        /// The opcode and payload bounds of a whole frame at `start`, if one is buffered.
        fn parse(&self) -> Option<(u8, usize, usize)> {
            let unread = &self.buffer[self.start..self.end];
            let (&first, &second) = (unread.first()?, unread.get(1)?);
            assert_eq!(second & 0x80, 0, "server frames are never masked");
            let (header, length) = match second & 0x7f {
                126 => (
                    4,
                    u16::from_be_bytes(unread.get(2..4)?.try_into().ok()?) as usize,
                ),
                127 => (
                    10,
                    u64::from_be_bytes(unread.get(2..10)?.try_into().ok()?) as usize,
                ),
                short => (2, short as usize),
            };
            if unread.len() < header + length {
                return None;
            }
            let payload_start = self.start + header;
            Some((first & 0x0f, payload_start, payload_start + length))
        }

        /// Reads more bytes, first moving what is unread to the front (and growing the buffer
        /// for a frame larger than it). `false` once the socket closed.
        async fn fill(&mut self) -> bool {
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == self.buffer.len() {
                self.buffer.resize(self.buffer.len() * 2, 0);
            }
            match self.socket.read(&mut self.buffer[self.end..]).await {
                Ok(read) if read > 0 => {
                    self.end += read;
                    true
                }
                _ => false,
            }
        }
    }
}

/// One subscriber: connects, subscribes, then records how long each event took to reach
/// it until the socket closes or `stop` fires. Returns each event's index and latency.
async fn subscriber(
    port: u16,
    epoch: Instant,
    published: Published,
    ready: tokio::sync::mpsc::Sender<()>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<(usize, Duration)> {
    let mut socket = client::Client::connect(port).await;
    socket
        .send_text(r#"{"type":"connection_init","payload":{}}"#)
        .await;
    loop {
        let frame = socket.next_frame().await.expect("a connection_ack");
        if frame
            .payload
            .windows(14)
            .any(|window| window == b"connection_ack")
        {
            break;
        }
    }
    let subscribe = json!({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}});
    socket.send_text(&subscribe.to_string()).await;
    let _ = ready.send(()).await;
    let mut latencies = Vec::with_capacity((EVENTS_PER_SECOND * EVENT_SECONDS) as usize);
    loop {
        tokio::select! {
            frame = socket.next_frame() => match frame {
                Some(frame) if frame.opcode == 0x1 => {
                    let received = epoch.elapsed().as_nanos() as u64;
                    let Some(index) = event_index(frame.payload) else { continue };
                    let sent = published.get(index).map_or(0, |at| at.load(Ordering::Acquire));
                    if sent > 0 {
                        latencies.push((index, Duration::from_nanos(received.saturating_sub(sent))));
                    }
                }
                Some(_) => {}
                None => break,
            },
            _ = stop.changed() => break,
        }
    }
    socket.close().await;
    latencies
}

/// The event index in a `next` message: its order's product is `bench-<index>`.
fn event_index(payload: &[u8]) -> Option<usize> {
    let start = payload.windows(6).position(|window| window == b"bench-")? + 6;
    let digits = &payload[start..];
    let length = digits
        .iter()
        .take_while(|byte| byte.is_ascii_digit())
        .count();
    std::str::from_utf8(&digits[..length]).ok()?.parse().ok()
}

/// The runtime the clients run on, apart from the publisher: `BENCH_CLIENT_THREADS` threads (1).
fn start_client_runtime() -> tokio::runtime::Runtime {
    let threads = std::env::var("BENCH_CLIENT_THREADS")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(1);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("bench-client")
        .enable_all()
        .build()
        .expect("the clients' runtime starts")
}

/// Subscribers connected to one server, and when each event was published to them.
struct Subscribers {
    clients: tokio::task::JoinSet<Vec<(usize, Duration)>>,
    stop: tokio::sync::watch::Sender<bool>,
    epoch: Instant,
    published: Published,
    events: usize,
}

/// What the subscribers received.
struct Latencies {
    subscribers: usize,
    events: usize,
    /// Every delivery's latency, sorted.
    delivered: Vec<Duration>,
    /// Subscribers that received every event.
    complete: usize,
    /// Per event, when its first and its last subscriber had it.
    first_and_last: Vec<(Duration, Duration)>,
}

impl Subscribers {
    /// Connects `count` subscribers to `port`, at most `CONNECT_AT_ONCE` connecting at a time,
    /// and waits until each has subscribed.
    async fn connect(
        port: u16,
        count: usize,
        events: usize,
        runtime: &tokio::runtime::Runtime,
    ) -> Subscribers {
        let epoch = Instant::now();
        let published: Published = Arc::new((0..=events).map(|_| AtomicU64::new(0)).collect());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (ready, mut readies) = tokio::sync::mpsc::channel(count.max(1));
        let connecting = Instant::now();
        let mut clients = tokio::task::JoinSet::new();
        let mut connected = 0;
        for _ in 0..count {
            clients.spawn_on(
                subscriber(
                    port,
                    epoch,
                    published.clone(),
                    ready.clone(),
                    stopped.clone(),
                ),
                runtime.handle(),
            );
            if clients.len() - connected >= CONNECT_AT_ONCE {
                readies.recv().await;
                connected += 1;
            }
        }
        while connected < count {
            tokio::time::timeout(Duration::from_secs(60), readies.recv())
                .await
                .expect("every subscriber connected within 60 s");
            connected += 1;
        }
        println!(
            "  {count} subscribers connected in {:.1} s",
            connecting.elapsed().as_secs_f64()
        );
        Subscribers {
            clients,
            stop,
            epoch,
            published,
            events,
        }
    }

    /// Publishes each event through `publish` (given its index), `EVENTS_PER_SECOND` a
    /// second, noting when.
    async fn publish_events<F: std::future::Future<Output = ()>>(
        &mut self,
        mut publish: impl FnMut(usize) -> F,
    ) {
        let mut ticks = tokio::time::interval(Duration::from_millis(1_000 / EVENTS_PER_SECOND));
        for index in 0..self.events {
            ticks.tick().await;
            self.published[index].store(self.epoch.elapsed().as_nanos() as u64, Ordering::Release);
            publish(index).await;
        }
    }

    /// Stops the subscribers and gathers what they received.
    async fn finish(mut self) -> Latencies {
        self.stop.send(true).unwrap();
        let mut latencies = Latencies {
            subscribers: self.clients.len(),
            events: self.events,
            delivered: Vec::new(),
            complete: 0,
            first_and_last: vec![(Duration::MAX, Duration::ZERO); self.events],
        };
        while let Some(received) = self.clients.join_next().await {
            let received = received.expect("a subscriber task");
            if received.len() == self.events {
                latencies.complete += 1;
            }
            for (index, latency) in received {
                let (first, last) = &mut latencies.first_and_last[index];
                *first = (*first).min(latency);
                *last = (*last).max(latency);
                latencies.delivered.push(latency);
            }
        }
        latencies.delivered.sort();
        latencies
    }
}

impl Latencies {
    /// Prints how many were delivered and how fast; `judged`: each with its verdict.
    fn print(&self, judged: bool) {
        let judge = |ok: bool| {
            if judged {
                format!(" -> {}", verdict(ok))
            } else {
                String::new()
            }
        };
        let (subscribers, events) = (self.subscribers, self.events);
        let expected = subscribers * events;
        println!(
            "  delivered {} of {expected} events ({} of {subscribers} subscribers got all {events}){}",
            self.delivered.len(),
            self.complete,
            judge(self.delivered.len() == expected)
        );
        let p99 = percentile_ms(&self.delivered, 0.99);
        println!(
            "  event to client: p50 {:.1} ms, p99 {p99:.1} ms, max {:.1} ms (limit p99 < {P99_LIMIT_MS} ms){}",
            percentile_ms(&self.delivered, 0.50),
            percentile_ms(&self.delivered, 1.0),
            judge(p99 < P99_LIMIT_MS)
        );
        // Where an event's latency comes from: reaching its first subscriber (the broker hop
        // and the one resolution), then reaching all the others (the fan-out).
        let mut to_first: Vec<Duration> = self
            .first_and_last
            .iter()
            .map(|(first, _)| *first)
            .collect();
        let mut spread: Vec<Duration> = self
            .first_and_last
            .iter()
            .map(|(first, last)| last.saturating_sub(*first))
            .collect();
        to_first.sort();
        spread.sort();
        println!(
            "  per event, median: {:.1} ms to its first subscriber, then {:.1} ms until its last",
            percentile_ms(&to_first, 0.5),
            percentile_ms(&spread, 0.5)
        );
    }
}

/// The bare server giving the floor, a process of its own (this bench run again with
/// `BENCH_FLOOR_SERVER` set): it answers each upgrade and acknowledges at once, then writes
/// each event's `next` frame (its index read from stdin) to every socket in turn, from one
/// thread.
mod floor {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::process::{Child, ChildStdin, Command, Stdio};
    use std::sync::{Arc, Mutex};

    const ASKED: &str = "BENCH_FLOOR_SERVER";

    /// The running floor server; stopped on drop.
    pub struct Server {
        pub port: u16,
        child: Child,
        events: Mutex<ChildStdin>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// An unmasked (server) text frame holding `text`.
    fn text_frame(text: &str) -> Vec<u8> {
        super::frame(0x1, text.as_bytes(), None)
    }

    /// Reads the upgrade request, answers 101 and `connection_ack`.
    fn upgrade(socket: &mut TcpStream) -> std::io::Result<()> {
        let mut head = Vec::new();
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|window| window == b"\r\n\r\n") {
            let read = socket.read(&mut chunk)?;
            if read == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            head.extend_from_slice(&chunk[..read]);
        }
        socket.set_nodelay(true)?;
        socket.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n",
        )?;
        socket.write_all(&text_frame(r#"{"type":"connection_ack"}"#))
    }

    /// When this process was started as the floor server: serves until stdin closes, then
    /// exits.
    pub fn serve_if_asked() {
        if std::env::var_os(ASKED).is_none() {
            return;
        }
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        println!("{}", listener.local_addr().unwrap().port());
        let sockets: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let accepted = sockets.clone();
        std::thread::spawn(move || {
            for socket in listener.incoming() {
                let Ok(mut socket) = socket else { continue };
                if upgrade(&mut socket).is_ok() {
                    accepted.lock().unwrap().push(socket);
                }
            }
        });
        for line in std::io::stdin().lock().lines() {
            let Ok(index) = line.unwrap_or_default().trim().parse::<usize>() else {
                break;
            };
            let frame = text_frame(&format!(
                r#"{{"type":"next","id":"1","payload":{{"data":{{"orderCreated":{{"id":"{index}","productName":"bench-{index}","quantity":2,"price":"19.99","status":"PENDING","createdAt":"2026-12-03T00:00:00+00:00"}}}}}}}}"#
            ));
            for socket in sockets.lock().unwrap().iter_mut() {
                let _ = socket.write_all(&frame);
            }
        }
        std::process::exit(0);
    }

    impl Server {
        /// Starts the floor server and learns its port.
        pub fn start() -> Server {
            let mut child = Command::new(std::env::current_exe().expect("this bench's path"))
                .env(ASKED, "1")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("the floor server starts");
            let mut port = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut port)
                .unwrap();
            let events = Mutex::new(child.stdin.take().unwrap());
            Server {
                port: port.trim().parse().expect("the floor server's port"),
                child,
                events,
            }
        }

        /// Has the server send event `index` to every socket.
        pub async fn publish(&self, index: usize) {
            writeln!(self.events.lock().unwrap(), "{index}").expect("the floor server runs");
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    floor::serve_if_asked();
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
    // The gateway's own settings given to the bench (`GATEWAY_HTTP_THREADS=2`, say) pass on.
    let passed_on: Vec<(String, String)> = std::env::vars()
        .filter(|(name, _)| name.starts_with("GATEWAY_") && name != "GATEWAY_ADDR")
        .collect();
    let mut settings = vec![
        ("RUST_LOG", "warn"),
        ("ORDERS_EXCHANGE", exchange.as_str()),
        ("WS_MAX_CONNECTIONS_PER_CLIENT", connections.as_str()),
    ];
    settings.extend(
        passed_on
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
    );
    let gateway = testkit::spawn_gateway(&database.url, &settings).await;
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

    let port = gateway.port().unwrap();
    let client_runtime = start_client_runtime();
    let mut run = Subscribers::connect(port, subscribers, events, &client_runtime).await;
    // The warm-up event (index `events`, not counted) shows the subscriptions are live.
    publish(order_ids[events]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let subscribed_kib = resident_kib(pid);

    let events_started = Instant::now();
    let cpu_before = (cpu_seconds(pid), cpu_seconds(std::process::id()));
    run.publish_events(|index| publish(order_ids[index])).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events_took = events_started.elapsed().as_secs_f64();
    let cpu_spent = (
        cpu_seconds(pid) - cpu_before.0,
        cpu_seconds(std::process::id()) - cpu_before.1,
    );
    let peak_kib = resident_kib(pid).max(subscribed_kib);
    let latencies = run.finish().await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let left_kib = resident_kib(pid);
    latencies.print(true);

    // Where the two cores went while the events flowed: the gateway's share is what one
    // delivered message costs it; the clients (this process) share the same cores.
    let delivered = latencies.delivered.len().max(1) as f64;
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
    client_runtime.shutdown_background();

    // The floor under those figures: the same clients, fed by a bare server that writes one
    // prepared frame to every socket from a single thread, without GraphQL, RabbitMQ or tasks.
    let client_runtime = start_client_runtime();
    let floor = floor::Server::start();
    let mut run = Subscribers::connect(floor.port, subscribers, events, &client_runtime).await;
    run.publish_events(|index| floor.publish(index)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("  The machine's floor: a bare server writing the same frames to as many sockets");
    run.finish().await.print(false);
    client_runtime.shutdown_background();
}
