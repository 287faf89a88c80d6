//! The resumable `purchaseMade` subscription against the local Kafka-protocol broker (Tansu
//! on 127.0.0.1:9092, started by `make test`): live purchases with cursors, a filter by
//! user, and a reconnect with `after:` on another gateway instance that gets exactly what it
//! missed, then the live ones. Each test uses its own topic.

use crate::common;

use std::time::Duration;

use common::TestGateway;
use gateway::config::GatewayConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use sqlx::PgPool;
use testkit::{GraphqlWs, Protocol};

const BROKERS: &str = "127.0.0.1:9092";
const SUBSCRIBE: &str = "subscription($u: String, $after: String) {
    purchaseMade(username: $u, after: $after) { cursor username userid price timestamp } }";

fn kafka() -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", BROKERS);
    config
}

async fn create_topic(topic: &str) {
    let admin: AdminClient<DefaultClientContext> = kafka().create().unwrap();
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, 3, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("Kafka must run on 127.0.0.1:9092 (make services)");
    for result in results {
        result.unwrap();
    }
}

/// Puts a purchase on the topic as the relay does (keyed by username).
async fn publish(producer: &FutureProducer, topic: &str, username: &str, price: &str) {
    let value = json!({"username": username, "userid": "7", "price": price,
                       "timestamp": "2024-05-31T15:54:32.204Z"})
    .to_string();
    producer
        .send(
            FutureRecord::to(topic).key(username).payload(&value),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(error, _)| error)
        .unwrap();
}

async fn gateway_on(pool: PgPool, topic: &str) -> TestGateway {
    let mut config = GatewayConfig::defaults();
    config.brokers.purchases.kafka_topic = topic.to_owned();
    TestGateway::start_with(pool, config).await
}

/// The next `purchaseMade` event's payload (panics after 20 s).
async fn next_purchase(client: &mut GraphqlWs) -> Value {
    let message = client
        .next(Duration::from_secs(20))
        .await
        .expect("a purchaseMade event within 20 s");
    assert_eq!(message["type"], "next", "{message}");
    message["payload"]["data"]["purchaseMade"].clone()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_reconnect_with_after_gets_what_it_missed_then_live_ones(pool: PgPool) {
    let topic = testkit::unique("purchase_made");
    create_topic(&topic).await;
    let producer: FutureProducer = kafka().create().unwrap();
    let first_gateway = gateway_on(pool.clone(), &topic).await;
    let mut client = GraphqlWs::connect(&first_gateway.base, Protocol::TransportWs).await;
    client.subscribe("p", SUBSCRIBE, json!({"u": "ada"})).await;
    // The subscription starts at the end of the topic once its reader is assigned: publish
    // until the first purchase arrives.
    let mut first = None;
    for attempt in 0..40 {
        publish(&producer, &topic, "ada", &format!("0.{attempt:02}")).await;
        if let Some(message) = client.next(Duration::from_millis(500)).await {
            assert_eq!(message["type"], "next", "{message}");
            first = Some(message["payload"]["data"]["purchaseMade"].clone());
            break;
        }
    }
    let first = first.expect("no purchaseMade event arrived");
    assert_eq!(first["username"], "ada");
    client.drain(Duration::from_millis(500)).await;

    publish(&producer, &topic, "bob", "9.99").await;
    for price in ["1.00", "2.00"] {
        publish(&producer, &topic, "ada", price).await;
    }
    let one = next_purchase(&mut client).await;
    assert_eq!(
        one["price"], "1.00",
        "bob's purchase must be filtered out: {one}"
    );
    assert_eq!(one["userid"], "7");
    assert_eq!(one["timestamp"], "2024-05-31T15:54:32.204+00:00");
    let cursor = one["cursor"].clone();
    assert_ne!(cursor, first["cursor"]);
    assert_eq!(next_purchase(&mut client).await["price"], "2.00");
    drop(client);
    drop(first_gateway);

    // While nobody listens, more purchases; then a reconnect to another gateway.
    for price in ["3.00", "4.00"] {
        publish(&producer, &topic, "ada", price).await;
    }
    let second_gateway = gateway_on(pool, &topic).await;
    let mut client = GraphqlWs::connect(&second_gateway.base, Protocol::TransportWs).await;
    client
        .subscribe("p", SUBSCRIBE, json!({"u": "ada", "after": cursor}))
        .await;
    for expected in ["2.00", "3.00", "4.00"] {
        assert_eq!(next_purchase(&mut client).await["price"], expected);
    }
    // The same resume, later, replays the same purchases: it is not joined to the first.
    let mut later = GraphqlWs::connect(&second_gateway.base, Protocol::LegacyWs).await;
    later
        .subscribe("p", SUBSCRIBE, json!({"u": "ada", "after": cursor}))
        .await;
    for expected in ["2.00", "3.00", "4.00"] {
        let message = later.next(Duration::from_secs(20)).await.expect("a replay");
        assert_eq!(
            message["payload"]["data"]["purchaseMade"]["price"],
            expected
        );
    }
    publish(&producer, &topic, "ada", "5.00").await;
    assert_eq!(next_purchase(&mut client).await["price"], "5.00");
    let message = later
        .next(Duration::from_secs(20))
        .await
        .expect("a live one");
    assert_eq!(message["payload"]["data"]["purchaseMade"]["price"], "5.00");
    for client in [&mut client, &mut later] {
        assert!(
            client.next(Duration::from_millis(500)).await.is_none(),
            "nothing twice"
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_malformed_cursor_is_bad_user_input(pool: PgPool) {
    let topic = testkit::unique("purchase_made");
    let gateway = gateway_on(pool, &topic).await;
    let mut client = GraphqlWs::connect(&gateway.base, Protocol::TransportWs).await;
    client
        .subscribe("p", SUBSCRIBE, json!({"after": "not-a-cursor"}))
        .await;
    let message = client.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        message["payload"]["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{message}"
    );
}
