//! `customerChanged`: the gateway's own subscription to the CRM's ZeroMQ feed, delivered to
//! WebSocket subscribers (both subprotocols), surviving the feed going away and back.

use crate::common;

use std::time::Duration;

use axum::body::Bytes;
use common::TestGateway;
use gateway::config::GatewayConfig;
use serde_json::{json, Value};
use sqlx::PgPool;
use testkit::{free_port, GraphqlWs, Protocol};
use zeromq::{Socket, SocketSend, ZmqMessage};

async fn publisher(endpoint: &str) -> zeromq::PubSocket {
    let mut socket = zeromq::PubSocket::new();
    socket.bind(endpoint).await.unwrap();
    socket
}

fn event(event_type: &str, data: Value, seq: u64) -> ZmqMessage {
    let body = json!({"eventType": event_type, "data": data, "seq": seq}).to_string();
    ZmqMessage::try_from(vec![Bytes::from_static(b"dataChanges"), Bytes::from(body)]).unwrap()
}

async fn subscribe(gateway: &TestGateway, protocol: Protocol, source: &str) -> GraphqlWs {
    let mut socket = GraphqlWs::connect(&gateway.base, protocol).await;
    let query = format!(
        "subscription {{ customerChanged(source: {source}) {{ eventType customer {{ id source externalId firstName lastName emails }} }} }}"
    );
    socket.subscribe("c", &query, json!({})).await;
    socket
}

/// Publishes `message()` until the subscriber gets an event (subscriptions start
/// asynchronously and ZeroMQ drops what is sent before a subscriber is connected).
async fn publish_until_received(
    feed: &mut zeromq::PubSocket,
    socket: &mut GraphqlWs,
    message: impl Fn() -> ZmqMessage,
) -> Value {
    for _ in 0..60 {
        feed.send(message()).await.unwrap();
        if let Some(received) = socket.next(Duration::from_millis(250)).await {
            return received;
        }
    }
    panic!("no customerChanged event arrived");
}

/// A feed publisher bound on a free port and a gateway following it: the endpoint, the
/// publisher and the gateway.
async fn gateway_on_feed(pool: PgPool) -> (String, zeromq::PubSocket, TestGateway) {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let feed = publisher(&endpoint).await;
    let mut config = GatewayConfig::defaults();
    config.brokers.crm.crm_zmq_url = endpoint.clone();
    (endpoint, feed, TestGateway::start_with(pool, config).await)
}

#[sqlx::test(migrations = "../migrations")]
async fn crm_changes_reach_subscribers_over_both_protocols(pool: PgPool) {
    let (_, mut feed, gateway) = gateway_on_feed(pool).await;
    for protocol in Protocol::BOTH {
        let kind = protocol.data_type();
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
        socket.drain(Duration::from_millis(200)).await;
        feed.send(event("DELETE", json!({"id": 42}), 8))
            .await
            .unwrap();
        let deleted = socket.next(Duration::from_secs(5)).await.unwrap();
        let change = &deleted["payload"]["data"]["customerChanged"];
        assert_eq!(change["eventType"], "DELETE");
        assert_eq!(change["customer"]["externalId"], "42");
        assert_eq!(change["customer"]["firstName"], Value::Null);
        assert_eq!(change["customer"]["emails"], json!([]));
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_source_filter_keeps_other_sources_changes_out(pool: PgPool) {
    let (_, mut feed, gateway) = gateway_on_feed(pool).await;
    let mut accounts_only = subscribe(&gateway, Protocol::TransportWs, "ACCOUNTS").await;
    let mut crm = subscribe(&gateway, Protocol::TransportWs, "CRM").await;
    let create = || {
        event(
            "CREATE",
            json!({"id": 9, "firstName": "A", "lastName": "B", "email": ["a@b.c"]}),
            1,
        )
    };
    publish_until_received(&mut feed, &mut crm, create).await;
    assert!(accounts_only
        .next(Duration::from_millis(500))
        .await
        .is_none());
}

#[sqlx::test(migrations = "../migrations")]
async fn the_gateway_follows_the_feed_when_it_goes_away_and_comes_back(pool: PgPool) {
    let (endpoint, mut feed, gateway) = gateway_on_feed(pool).await;
    let mut socket = subscribe(&gateway, Protocol::TransportWs, "CRM").await;
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
    socket.drain(Duration::from_millis(100)).await;

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
