//! `customerChanged`: the gateway's own subscription to the CRM's ZeroMQ feed, delivered to
//! WebSocket subscribers (both subprotocols), surviving the feed going away and back.

mod common;

use std::time::Duration;

use axum::body::Bytes;
use common::TestGateway;
use futures_util::{SinkExt, StreamExt};
use gateway::config::GatewayConfig;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use zeromq::{Socket, SocketSend, ZmqMessage};

type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn publisher(endpoint: &str) -> zeromq::PubSocket {
    let mut socket = zeromq::PubSocket::new();
    socket.bind(endpoint).await.unwrap();
    socket
}

fn event(event_type: &str, data: Value, seq: u64) -> ZmqMessage {
    let body = json!({"eventType": event_type, "data": data, "seq": seq}).to_string();
    ZmqMessage::try_from(vec![Bytes::from_static(b"dataChanges"), Bytes::from(body)]).unwrap()
}

async fn next_json(socket: &mut WebSocket, wait: Duration) -> Option<Value> {
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

async fn subscribe(gateway: &TestGateway, protocol: &str, source: &str) -> WebSocket {
    let mut request = format!("{}/graphql/ws", gateway.base.replace("http", "ws"))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", protocol.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket
        .send(Message::text(
            json!({"type": "connection_init"}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut socket, Duration::from_secs(5))
            .await
            .unwrap()["type"],
        "connection_ack"
    );
    let kind = if protocol == "graphql-ws" {
        "start"
    } else {
        "subscribe"
    };
    let query = format!(
        "subscription {{ customerChanged(source: {source}) {{ eventType customer {{ id source externalId firstName lastName emails }} }} }}"
    );
    socket
        .send(Message::text(
            json!({"id": "c", "type": kind, "payload": {"query": query}}).to_string(),
        ))
        .await
        .unwrap();
    socket
}

/// Publishes `message()` until the subscriber gets an event (subscriptions start
/// asynchronously and ZeroMQ drops what is sent before a subscriber is connected).
async fn publish_until_received(
    feed: &mut zeromq::PubSocket,
    socket: &mut WebSocket,
    message: impl Fn() -> ZmqMessage,
) -> Value {
    for _ in 0..60 {
        feed.send(message()).await.unwrap();
        if let Some(received) = next_json(socket, Duration::from_millis(250)).await {
            return received;
        }
    }
    panic!("no customerChanged event arrived");
}

async fn gateway_on_feed(pool: PgPool, endpoint: &str) -> TestGateway {
    let mut config = GatewayConfig::defaults();
    config.crm_zmq_url = endpoint.to_owned();
    TestGateway::start_with(pool, config).await
}

#[sqlx::test(migrations = "../migrations")]
async fn crm_changes_reach_subscribers_over_both_protocols(pool: PgPool) {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let mut feed = publisher(&endpoint).await;
    let gateway = gateway_on_feed(pool, &endpoint).await;
    for (protocol, kind) in [("graphql-transport-ws", "next"), ("graphql-ws", "data")] {
        let mut socket = subscribe(&gateway, protocol, "CRM").await;
        let update = || {
            event(
                "UPDATE",
                json!({"id": 42, "firstName": "Jon", "lastName": "Smith", "email": ["jon.smith@example.com"]}),
                7,
            )
        };
        let received = publish_until_received(&mut feed, &mut socket, update).await;
        assert_eq!(received["type"], kind, "{received}");
        let change = &received["payload"]["data"]["customerChanged"];
        assert_eq!(change["eventType"], "UPDATE");
        assert_eq!(change["customer"]["source"], "CRM");
        assert_eq!(change["customer"]["externalId"], "42");
        assert_eq!(change["customer"]["firstName"], "Jon");
        assert_eq!(
            change["customer"]["emails"],
            json!(["jon.smith@example.com"])
        );

        // Drain the repeats, then a DELETE carries only the id.
        while next_json(&mut socket, Duration::from_millis(200))
            .await
            .is_some()
        {}
        feed.send(event("DELETE", json!({"id": 42}), 8))
            .await
            .unwrap();
        let deleted = next_json(&mut socket, Duration::from_secs(5))
            .await
            .unwrap();
        let change = &deleted["payload"]["data"]["customerChanged"];
        assert_eq!(change["eventType"], "DELETE");
        assert_eq!(change["customer"]["externalId"], "42");
        assert_eq!(change["customer"]["firstName"], Value::Null);
        assert_eq!(change["customer"]["emails"], json!([]));
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_source_filter_keeps_other_sources_changes_out(pool: PgPool) {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let mut feed = publisher(&endpoint).await;
    let gateway = gateway_on_feed(pool, &endpoint).await;
    let mut accounts_only = subscribe(&gateway, "graphql-transport-ws", "ACCOUNTS").await;
    let mut crm = subscribe(&gateway, "graphql-transport-ws", "CRM").await;
    let create = || {
        event(
            "CREATE",
            json!({"id": 9, "firstName": "A", "lastName": "B", "email": ["a@b.c"]}),
            1,
        )
    };
    publish_until_received(&mut feed, &mut crm, create).await;
    assert!(next_json(&mut accounts_only, Duration::from_millis(500))
        .await
        .is_none());
}

#[sqlx::test(migrations = "../migrations")]
async fn the_gateway_follows_the_feed_when_it_goes_away_and_comes_back(pool: PgPool) {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let mut feed = publisher(&endpoint).await;
    let gateway = gateway_on_feed(pool, &endpoint).await;
    let mut socket = subscribe(&gateway, "graphql-transport-ws", "CRM").await;
    let first = || {
        event(
            "CREATE",
            json!({"id": 1, "firstName": "A", "lastName": null, "email": ["a@x.y"]}),
            1,
        )
    };
    publish_until_received(&mut feed, &mut socket, first).await;
    drop(feed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    while next_json(&mut socket, Duration::from_millis(100))
        .await
        .is_some()
    {}

    let mut feed = publisher(&endpoint).await;
    let second = || {
        event(
            "UPDATE",
            json!({"id": 1, "firstName": "Back", "lastName": null, "email": ["a@x.y"]}),
            2,
        )
    };
    let received = publish_until_received(&mut feed, &mut socket, second).await;
    assert_eq!(
        received["payload"]["data"]["customerChanged"]["customer"]["firstName"],
        "Back"
    );
}
