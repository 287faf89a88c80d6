//! The `graphql-transport-ws` protocol's error cases on `/graphql/ws`, with a real
//! WebSocket client: each violation closes the socket with the spec's code. And a
//! subscriber that goes away releases what it held, even when nothing is published.

use crate::common;

use std::time::{Duration, Instant};

use common::TestGateway;
use futures_util::{SinkExt, StreamExt};
use gateway::config::GatewayConfig;
use serde_json::json;
use sqlx::PgPool;
use testkit::ws::{close_code, open, send_json, WebSocket};
use testkit::{wait_until_within, GraphqlWs, Protocol};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

async fn connect(gateway: &TestGateway) -> WebSocket {
    open(&gateway.base, Protocol::TransportWs).await
}

async fn send(socket: &mut WebSocket, message: serde_json::Value) {
    send_json(socket, &message).await;
}

/// A `graphql-transport-ws` connection whose init the server acknowledged with exactly
/// `{"type":"connection_ack"}`.
async fn acknowledged(gateway: &TestGateway) -> WebSocket {
    let client = GraphqlWs::connect(&gateway.base, Protocol::TransportWs).await;
    assert_eq!(client.ack, json!({"type": "connection_ack"}));
    client.socket
}

const SUBSCRIBE: &str = "subscription { customersIngested { recordsProcessed } }";

#[sqlx::test(migrations = "../migrations")]
async fn subscribing_before_init_closes_with_4401(pool: PgPool) {
    let gateway = TestGateway::start(pool).await;
    let mut socket = connect(&gateway).await;
    send(
        &mut socket,
        json!({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIBE}}),
    )
    .await;
    assert_eq!(close_code(&mut socket).await, 4401);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_legacy_client_gets_an_error_message_for_an_operation_refused_before_it_runs(
    pool: PgPool,
) {
    let gateway = TestGateway::start(pool).await;
    let mut client = GraphqlWs::connect(&gateway.base, Protocol::LegacyWs).await;
    client
        .subscribe("bad", "subscription { nope }", json!({}))
        .await;
    let refusal = client
        .next(Duration::from_secs(5))
        .await
        .expect("an answer");
    assert_eq!(refusal["type"], "error", "{refusal}");
    assert_eq!(refusal["id"], "bad");
    assert!(
        refusal["payload"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nope"),
        "{refusal}"
    );
    // No `complete` follows, and the connection goes on serving.
    client
        .subscribe("good", "query { __typename }", json!({}))
        .await;
    let next = client.next(Duration::from_secs(5)).await.expect("a result");
    assert_eq!(next["id"], "good", "{next}");
    assert_eq!(next["type"], "data", "{next}");
    assert_eq!(next["payload"]["data"]["__typename"], "Query", "{next}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_duplicate_operation_id_closes_with_4409(pool: PgPool) {
    let gateway = TestGateway::start(pool).await;
    let mut socket = acknowledged(&gateway).await;
    let subscribe = json!({"id": "same", "type": "subscribe", "payload": {"query": SUBSCRIBE}});
    send(&mut socket, subscribe.clone()).await;
    send(&mut socket, subscribe).await;
    assert_eq!(close_code(&mut socket).await, 4409);
}

#[sqlx::test(migrations = "../migrations")]
async fn malformed_messages_close_with_4400(pool: PgPool) {
    let gateway = TestGateway::start(pool).await;
    for bad in [
        "{not json",
        r#"{"no":"type"}"#,
        r#"{"type":"launch_missiles"}"#,
    ] {
        let mut socket = acknowledged(&gateway).await;
        socket.send(Message::text(bad)).await.unwrap();
        assert_eq!(close_code(&mut socket).await, 4400, "{bad}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_second_connection_init_closes_with_4429(pool: PgPool) {
    let gateway = TestGateway::start(pool).await;
    let mut socket = acknowledged(&gateway).await;
    send(&mut socket, json!({"type": "connection_init"})).await;
    assert_eq!(close_code(&mut socket).await, 4429);
}

#[sqlx::test(migrations = "../migrations")]
async fn no_connection_init_in_time_closes_with_4408(pool: PgPool) {
    let mut config = GatewayConfig::defaults();
    config.http.ws_init_timeout_secs = 1;
    let gateway = TestGateway::start_with(pool, config).await;
    let mut socket = connect(&gateway).await;
    let started = Instant::now();
    assert_eq!(close_code(&mut socket).await, 4408);
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[sqlx::test(migrations = "../migrations")]
async fn an_id_can_be_reused_after_its_operation_completes(pool: PgPool) {
    let gateway = TestGateway::start(pool).await;
    let mut socket = acknowledged(&gateway).await;
    let subscribe = json!({"id": "x", "type": "subscribe", "payload": {"query": SUBSCRIBE}});
    send(&mut socket, subscribe.clone()).await;
    send(&mut socket, json!({"id": "x", "type": "complete"})).await;
    send(&mut socket, subscribe).await;
    send(&mut socket, json!({"type": "ping"})).await;
    loop {
        let reply = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("an answer")
            .expect("the socket is open")
            .unwrap();
        match reply.into_text().unwrap().as_str() {
            r#"{"type":"pong"}"# => break,
            r#"{"type":"complete","id":"x"}"# => continue,
            other => panic!("unexpected {other}"),
        }
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_subscriber_that_disconnects_releases_its_feed_even_when_quiet(pool: PgPool) {
    let gateway = TestGateway::start(pool).await;
    let live = gateway.state.live.clone();
    let baseline = live.subscriber_count();
    let mut socket = acknowledged(&gateway).await;
    for (id, query) in [
        ("a", SUBSCRIBE),
        ("b", "subscription { customerChanged { eventType } }"),
        ("c", "subscription { orderCreated { id } }"),
    ] {
        send(
            &mut socket,
            json!({"id": id, "type": "subscribe", "payload": {"query": query}}),
        )
        .await;
    }
    let wait_for = |expected: usize| {
        let live = live.clone();
        async move {
            let what = format!("{expected} subscribers remain");
            wait_until_within(&what, Duration::from_secs(5), || {
                let count = live.subscriber_count();
                async move { count == expected }
            })
            .await;
        }
    };
    wait_for(baseline + 3).await;
    socket
        .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .await
        .unwrap();
    wait_for(baseline).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn graphql_upgrades_on_its_own_path_and_the_server_pings_on_both_protocols(pool: PgPool) {
    let url = testkit::db::database_url(&pool).await;
    let gateway = testkit::spawn_gateway(&url, &[("WS_PING_INTERVAL_SECS", "1")]).await;
    for (protocol, ping) in [(Protocol::TransportWs, "ping"), (Protocol::LegacyWs, "ka")] {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        // `/graphql` itself, as most clients (and GraphiQL) expect.
        let address = format!("ws{}/graphql", gateway.base().strip_prefix("http").unwrap());
        let mut request = address.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocol.name().parse().unwrap());
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        send(
            &mut socket,
            json!({"type": "connection_init", "payload": {}}),
        )
        .await;
        let ack = testkit::ws::next_json(&mut socket, Duration::from_secs(5))
            .await
            .expect("an ack");
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        let next = testkit::ws::next_json(&mut socket, Duration::from_secs(5))
            .await
            .expect("a ping within 5 s");
        assert_eq!(next["type"], ping, "{}: {next}", protocol.name());
    }
    // Without an upgrade, `/graphql` is GraphiQL's page.
    let page = testkit::http::get_text(&gateway.url("/graphql")).await;
    assert!(page.contains("GraphiQL"), "{page}");
}
