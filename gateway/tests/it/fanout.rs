//! Subscription fan-out: subscribers of the same operation share one execution (one
//! receiver on the live feed however many subscribe), every one of them gets every event,
//! and a subscriber that falls behind its queue is told how many results it missed.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use async_graphql::{Data, Executor, Request};
use common::TestGateway;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use gateway::fanout::{
    FeedItem, RunningSubscriptions, SharedFeed, SharedSubscriptions, MISSED_EVENTS_EXTENSION,
    SUBSCRIBERS_PER_WRITER,
};
use serde_json::json;
use sqlx::PgPool;
use testkit::{wait_until_within, GraphqlWs, Protocol};

const INGESTED: &str = "subscription { customersIngested { recordsProcessed } }";

/// Announces an accounts ingest of `records` records, as a committed ingest does.
async fn announce_ingest(pool: &PgPool, records: u64) {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(domain::accounts::INGESTED_CHANNEL)
        .bind(records.to_string())
        .execute(pool)
        .await
        .unwrap();
}

async fn wait_for_feed_receivers(gateway: &TestGateway, expected: usize) {
    let live = gateway.state.live.clone();
    wait_until_within(
        &format!("{expected} receivers on the live feeds"),
        Duration::from_secs(5),
        || {
            let count = live.subscriber_count();
            async move { count == expected }
        },
    )
    .await;
}

/// An executor sharing the gateway's subscriptions with `queue` results per subscriber,
/// and an anonymous caller's session.
fn anonymous_executor(gateway: &TestGateway, queue: usize) -> (SharedSubscriptions, Arc<Data>) {
    let schema =
        gateway::graphql::build_schema(gateway.state.clone(), gateway.state.metrics.clone());
    let executor = SharedSubscriptions::new(schema, queue, RunningSubscriptions::default());
    let mut session = Data::default();
    session.insert(gateway.state.auth.anonymous());
    (executor, Arc::new(session))
}

/// A server socket, as the gateway's listener accepts it, and a WebSocket client at its
/// other end (past the handshake); `kernel_buffer`: small kernel buffers on both ends
/// (accepted sockets take the listener's).
async fn loopback_connection(
    kernel_buffer: Option<u32>,
) -> (
    gateway::socket::Socket,
    tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) {
    let listening = tokio::net::TcpSocket::new_v4().unwrap();
    let connecting = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(bytes) = kernel_buffer {
        listening.set_send_buffer_size(bytes).unwrap();
        connecting.set_recv_buffer_size(bytes).unwrap();
    }
    listening.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = listening.listen(1).unwrap();
    let client = connecting
        .connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let client = tokio_tungstenite::WebSocketStream::from_raw_socket(
        client,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    (gateway::socket::Socket::new(server), client)
}

/// `recordsProcessed` of a `customersIngested` response.
fn records_of(response: async_graphql::Response) -> u64 {
    let data = response.data.into_json().unwrap();
    data["customersIngested"]["recordsProcessed"]
        .as_u64()
        .unwrap()
}

/// Announces an ingest of `records` and waits until `fast`, a subscriber keeping up, has it.
async fn announce_to(
    pool: &PgPool,
    fast: &mut (impl futures_util::Stream<Item = async_graphql::Response> + Unpin),
    records: u64,
) {
    announce_ingest(pool, records).await;
    let response = tokio::time::timeout(Duration::from_secs(5), fast.next())
        .await
        .expect("an event within 5 s")
        .expect("the stream goes on");
    assert_eq!(records_of(response), records);
}

/// A fed subscriber of `customersIngested` and one keeping up (an async-graphql stream),
/// sharing one execution with `queue` results per subscriber, once the live feed has it.
async fn fed_and_keeping_up(
    gateway: &TestGateway,
    queue: usize,
) -> (SharedFeed, BoxStream<'static, async_graphql::Response>) {
    let baseline = gateway.state.live.subscriber_count();
    let (executor, session) = anonymous_executor(gateway, queue);
    let feed = executor
        .feed(Request::new(INGESTED), session.clone())
        .expect("a live subscription is shared");
    let keeping_up = executor.execute_stream(Request::new(INGESTED), Some(session));
    wait_for_feed_receivers(gateway, baseline + 1).await;
    (feed, keeping_up)
}

/// The value of an unlabelled metric in the gateway's `/metrics`.
async fn metric(gateway: &TestGateway, name: &str) -> i64 {
    let text = gateway.fetch("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[sqlx::test(migrations = "../migrations")]
async fn subscribers_of_one_operation_share_one_execution_and_each_gets_every_event(pool: PgPool) {
    let gateway = TestGateway::start(pool.clone()).await;
    let baseline = gateway.state.live.subscriber_count();
    let mut same = Vec::new();
    for _ in 0..3 {
        let mut client = GraphqlWs::connect(&gateway.base, Protocol::TransportWs).await;
        client.subscribe("1", INGESTED, json!({})).await;
        same.push(client);
    }
    let mut other = GraphqlWs::connect(&gateway.base, Protocol::LegacyWs).await;
    other
        .subscribe(
            "1",
            "subscription { customersIngested { source recordsProcessed } }",
            json!({}),
        )
        .await;
    // Three subscribers of one operation and one of another: two executions.
    wait_for_feed_receivers(&gateway, baseline + 2).await;
    assert_eq!(metric(&gateway, "graphql_subscription_executions").await, 2);
    assert_eq!(metric(&gateway, "graphql_subscribers").await, 4);

    for records in [7, 8] {
        announce_ingest(&pool, records).await;
        for client in same.iter_mut().chain([&mut other]) {
            let message = client.next(Duration::from_secs(5)).await.expect("an event");
            assert_eq!(message["type"], client.protocol.data_type(), "{message}");
            assert_eq!(
                message["payload"]["data"]["customersIngested"]["recordsProcessed"], records,
                "{message}"
            );
            assert!(message["payload"].get("extensions").is_none(), "{message}");
        }
    }

    // One leaving keeps the shared execution for the others; all leaving ends it.
    drop(same.pop());
    announce_ingest(&pool, 9).await;
    for client in &mut same {
        let message = client.next(Duration::from_secs(5)).await.expect("an event");
        assert_eq!(
            message["payload"]["data"]["customersIngested"]["recordsProcessed"],
            9
        );
    }
    drop(same);
    drop(other);
    wait_for_feed_receivers(&gateway, baseline).await;
    assert_eq!(metric(&gateway, "graphql_subscription_executions").await, 0);
    assert_eq!(metric(&gateway, "graphql_subscribers").await, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_subscriber_behind_its_queue_skips_the_oldest_and_is_told_how_many(pool: PgPool) {
    let gateway = TestGateway::start(pool.clone()).await;
    let baseline = gateway.state.live.subscriber_count();
    let queue = 2;
    let (executor, session) = anonymous_executor(&gateway, queue);
    let mut fast = executor.execute_stream(Request::new(INGESTED), Some(session.clone()));
    let mut slow = executor.execute_stream(Request::new(INGESTED), Some(session));
    wait_for_feed_receivers(&gateway, baseline + 1).await;

    // The fast subscriber takes each of five events as it comes; the slow one takes none.
    for records in 1..=5u64 {
        announce_ingest(&pool, records).await;
        let response = tokio::time::timeout(Duration::from_secs(5), fast.next())
            .await
            .expect("an event within 5 s")
            .expect("the stream goes on");
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        assert!(response.extensions.is_empty(), "{:?}", response.extensions);
        let data = response.data.into_json().unwrap();
        assert_eq!(data["customersIngested"]["recordsProcessed"], records);
    }

    // Its queue held the last two: the first of them says three were missed.
    let mut received = Vec::new();
    for _ in 0..queue {
        let response = tokio::time::timeout(Duration::from_secs(5), slow.next())
            .await
            .expect("a queued event")
            .expect("the stream goes on");
        let missed = response
            .extensions
            .get(MISSED_EVENTS_EXTENSION)
            .map(|missed| missed.clone().into_json().unwrap());
        let data = response.data.into_json().unwrap();
        received.push((
            data["customersIngested"]["recordsProcessed"].clone(),
            missed,
        ));
    }
    assert_eq!(
        received,
        [(json!(4), Some(json!(3))), (json!(5), None)],
        "(recordsProcessed, missedEvents) of the slow subscriber's results"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_transport_ws_subscriber_gets_the_shared_json_as_async_graphql_writes_it(pool: PgPool) {
    let gateway = TestGateway::start(pool.clone()).await;
    let baseline = gateway.state.live.subscriber_count();
    let mut clients = Vec::new();
    for id in ["first", "quoted \"id\""] {
        let mut client = GraphqlWs::connect(&gateway.base, Protocol::TransportWs).await;
        client.subscribe(id, INGESTED, json!({})).await;
        clients.push((id, client));
    }
    wait_for_feed_receivers(&gateway, baseline + 1).await;
    announce_ingest(&pool, 7).await;
    for (id, client) in &mut clients {
        let message = tokio::time::timeout(Duration::from_secs(5), client.socket.next())
            .await
            .expect("an event within 5 s")
            .expect("the socket is open")
            .unwrap();
        let quoted = serde_json::to_string(id).unwrap();
        assert_eq!(
            message.into_text().unwrap().as_str(),
            format!(
                r#"{{"type":"next","id":{quoted},"payload":{{"data":{{"customersIngested":{{"recordsProcessed":7}}}}}}}}"#
            ),
        );
    }
    // Completing one answers `complete` and leaves the other subscribed.
    let (id, first) = &mut clients[0];
    first.send(&json!({"id": id, "type": "complete"})).await;
    let complete = first.next(Duration::from_secs(5)).await.expect("an answer");
    assert_eq!(complete, json!({"type": "complete", "id": "first"}));
    announce_ingest(&pool, 8).await;
    let (_, second) = &mut clients[1];
    let message = second.next(Duration::from_secs(5)).await.expect("an event");
    assert_eq!(
        message["payload"]["data"]["customersIngested"]["recordsProcessed"],
        8
    );
    assert_eq!(clients[0].1.next(Duration::from_millis(300)).await, None);
}

#[sqlx::test(migrations = "../migrations")]
async fn transport_ws_subscribers_of_a_refused_operation_each_get_an_error_and_stay_connected(
    pool: PgPool,
) {
    let gateway = TestGateway::start(pool).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = GraphqlWs::connect(&gateway.base, Protocol::TransportWs).await;
        client
            .subscribe(
                "bad",
                "subscription { customersIngested { nope } }",
                json!({}),
            )
            .await;
        clients.push(client);
    }
    for client in &mut clients {
        let refusal = client
            .next(Duration::from_secs(5))
            .await
            .expect("an answer");
        assert_eq!(refusal["type"], "error", "{refusal}");
        assert_eq!(refusal["id"], "bad", "{refusal}");
        assert!(
            refusal["payload"][0]["message"]
                .as_str()
                .is_some_and(|message| message.contains("nope")),
            "{refusal}"
        );
        // No `complete` after an `error`, and the connection goes on.
        client.send(&json!({"type": "ping"})).await;
        let pong = client.next(Duration::from_secs(5)).await.expect("a pong");
        assert_eq!(pong, json!({"type": "pong"}));
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_fed_subscriber_behind_its_queue_gets_its_own_json_saying_how_many_it_missed(
    pool: PgPool,
) {
    let gateway = TestGateway::start(pool.clone()).await;
    let queue = 2;
    let (mut feed, mut fast) = fed_and_keeping_up(&gateway, queue).await;
    // A subscriber keeping up sees each of five events arrive; the fed one reads none yet.
    for records in 1..=5u64 {
        announce_to(&pool, &mut fast, records).await;
    }
    let mut received = Vec::new();
    while received.len() < queue {
        let item = tokio::time::timeout(
            Duration::from_secs(5),
            std::future::poll_fn(|cx| feed.poll_next(cx)),
        )
        .await
        .expect("a result within 5 s");
        let FeedItem::Result { shared, missed } = item else {
            panic!("a result, not the end");
        };
        let json: serde_json::Value = serde_json::from_str(&shared.json_for(missed)).unwrap();
        received.push((
            json["data"]["customersIngested"]["recordsProcessed"].clone(),
            json["extensions"][MISSED_EVENTS_EXTENSION].clone(),
        ));
    }
    assert_eq!(
        received,
        [(json!(4), json!(3)), (json!(5), serde_json::Value::Null)],
        "(recordsProcessed, missedEvents) of the slow subscriber's results"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_directly_written_subscriber_whose_socket_stops_taking_results_is_told_how_many_it_missed(
    pool: PgPool,
) {
    let gateway = TestGateway::start(pool.clone()).await;
    let (mut slow, mut fast) = fed_and_keeping_up(&gateway, 2).await;
    // A connection with small kernel buffers, whose client reads nothing for now.
    let (server, mut client) = loopback_connection(Some(4096)).await;
    slow.write_directly(server.writer(), r#""slow""#.to_owned());
    // What the connection's task does: write out what the socket did not take at once.
    let backlog = server.writer();
    tokio::spawn(async move { backlog.write_backlog().await });

    // The subscriber keeping up gets every event while the slow one's socket fills.
    let events = 400u64;
    for records in 1..=events {
        announce_to(&pool, &mut fast, records).await;
    }
    // The slow one reads what was written for it, then one more event.
    let mut received: Vec<(u64, u64)> = Vec::new();
    let mut read = |message: serde_json::Value| {
        assert_eq!(message["type"], "next", "{message}");
        assert_eq!(message["id"], "slow", "{message}");
        let payload = &message["payload"];
        received.push((
            payload["data"]["customersIngested"]["recordsProcessed"]
                .as_u64()
                .unwrap(),
            payload["extensions"][MISSED_EVENTS_EXTENSION]
                .as_u64()
                .unwrap_or(0),
        ));
    };
    while let Some(message) = testkit::ws::next_json(&mut client, Duration::from_millis(500)).await
    {
        read(message);
    }
    announce_ingest(&pool, events + 1).await;
    let last = testkit::ws::next_json(&mut client, Duration::from_secs(5))
        .await
        .expect("the next event once the client reads again");
    read(last);

    assert!(
        received.len() < events as usize,
        "the slow subscriber skipped results: it got {} of {events}",
        received.len()
    );
    assert_eq!(
        received.last().map(|(records, _)| *records),
        Some(events + 1)
    );
    let mut previous = 0;
    for (records, missed) in &received {
        assert_eq!(
            *missed,
            records - previous - 1,
            "the result after {previous} says how many it missed: {received:?}"
        );
        previous = *records;
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn results_queued_for_a_subscriber_before_it_is_written_directly_reach_it_once_each(
    pool: PgPool,
) {
    let gateway = TestGateway::start(pool.clone()).await;
    let (mut feed, mut fast) = fed_and_keeping_up(&gateway, 16).await;
    // Its first result comes through the feed, as the connection writes it.
    announce_to(&pool, &mut fast, 1).await;
    let first = std::future::poll_fn(|cx| feed.poll_next(cx)).await;
    let FeedItem::Result { shared, .. } = first else {
        panic!("a result, not the end");
    };
    assert!(shared.json_for(0).contains(r#""recordsProcessed":1"#));
    // Two more come while that one is being written; then it is written to directly.
    announce_to(&pool, &mut fast, 2).await;
    announce_to(&pool, &mut fast, 3).await;
    let (server, mut client) = loopback_connection(None).await;
    feed.write_directly(server.writer(), r#""direct""#.to_owned());
    announce_to(&pool, &mut fast, 4).await;
    let mut received = Vec::new();
    while let Some(message) = testkit::ws::next_json(&mut client, Duration::from_millis(500)).await
    {
        received.push(message["payload"]["data"]["customersIngested"]["recordsProcessed"].clone());
    }
    assert_eq!(received, [json!(2), json!(3), json!(4)]);
}

/// From twice `SUBSCRIBERS_PER_WRITER` directly written subscribers on, threads of the
/// blocking pool write shares of each result's frames (on a machine of several CPUs):
/// every subscriber still gets every result once, in order.
#[sqlx::test(migrations = "../migrations")]
async fn subscribers_written_by_two_threads_each_get_every_result_once_in_order(pool: PgPool) {
    let gateway = TestGateway::start(pool.clone()).await;
    let baseline = gateway.state.live.subscriber_count();
    let (executor, session) = anonymous_executor(&gateway, 16);
    let subscribers = 2 * SUBSCRIBERS_PER_WRITER + 100;
    let mut feeds = Vec::with_capacity(subscribers);
    let mut clients = Vec::with_capacity(subscribers);
    for index in 0..subscribers {
        let mut feed = executor
            .feed(Request::new(INGESTED), session.clone())
            .expect("a live subscription is shared");
        let (server, client) = loopback_connection(None).await;
        feed.write_directly(server.writer(), format!("\"{index}\""));
        feeds.push((feed, server));
        clients.push(client);
    }
    let mut keeping_up = executor.execute_stream(Request::new(INGESTED), Some(session));
    wait_for_feed_receivers(&gateway, baseline + 1).await;

    let events = 10u64;
    for records in 1..=events {
        announce_to(&pool, &mut keeping_up, records).await;
    }
    // Each reads its results, then one more: a result written twice would come before it.
    announce_to(&pool, &mut keeping_up, events + 1).await;
    for (index, client) in clients.iter_mut().enumerate() {
        let mut received = Vec::new();
        while received.len() <= events as usize {
            let message = testkit::ws::next_json(client, Duration::from_secs(5))
                .await
                .unwrap_or_else(|| panic!("subscriber {index} got only {received:?}"));
            assert_eq!(message["id"], index.to_string(), "{message}");
            received.push(
                message["payload"]["data"]["customersIngested"]["recordsProcessed"]
                    .as_u64()
                    .unwrap(),
            );
        }
        assert_eq!(
            received,
            (1..=events + 1).collect::<Vec<_>>(),
            "subscriber {index}"
        );
    }
}
