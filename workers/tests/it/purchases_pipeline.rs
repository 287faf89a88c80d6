//! The purchases pipeline against a real Kafka-protocol broker (Tansu on 127.0.0.1:9092,
//! started by `make test`) and PostgreSQL: the relay's Kafka publisher (value, key,
//! headers, marked only after delivery) and the purchases consumer (our messages and a
//! foreign producer's stored once, replays absorbed, poison to the dead-letter topic).
//! Each test uses its own topics and consumer group.

use domain::outbox::Destination;
use domain::purchases::NewPurchase;
use prometheus_client::registry::Registry;
use rdkafka::message::{Header, Message, OwnedHeaders};
use serde_json::json;
use sqlx::PgPool;
use testkit::{unique, wait_until};
use workers::consume::{
    run_kafka_consumer, ConsumerMetrics, KafkaConsumerSettings, PurchasesHandler,
};
use workers::kafka::header;

use crate::kafka_support::{kafka, produce, read};
use workers::relay::{KafkaPublisher, KafkaSettings, Relay, RelayMetrics, RelaySettings};
use workers::stop::Stop;

async fn record(pool: &PgPool, topic: &str, username: &str, price: &str) {
    let purchase = NewPurchase::from_json(&json!({
        "username": username, "userid": "005", "price": price,
        "timestamp": "2024-05-31T15:54:32.204Z"
    }))
    .unwrap();
    domain::purchases::record(
        pool,
        &Destination::kafka(topic),
        &purchase,
        Some(&crate::orders_pipeline::sample_origin()),
    )
    .await
    .unwrap();
}

async fn relay_everything(pool: &PgPool, topic: &str) -> usize {
    let settings = KafkaSettings {
        kafka: kafka(),
        topics: vec![topic.to_owned()],
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
    relay.process_all().await.unwrap()
}

async fn purchases(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM purchases")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn the_relay_publishes_purchases_keyed_by_username_with_their_headers(pool: PgPool) {
    let topic = unique("purchases");
    record(&pool, &topic, "alice", "1195.30").await;
    record(&pool, &topic, "bob", "5").await;
    record(&pool, &topic, "alice", "0.99").await;
    assert_eq!(relay_everything(&pool, &topic).await, 3);
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox_events WHERE status <> 'processed'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(pending, 0);
    let expected: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT event_id::text, message_key, payload::text FROM outbox_events ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut messages = read(&topic, 3);
    messages.sort_by_key(|message| header(message, "id"));
    let mut expected = expected;
    expected.sort();
    for (message, (event_id, key, body)) in messages.iter().zip(&expected) {
        assert_eq!(header(message, "id").as_deref(), Some(event_id.as_str()));
        assert_eq!(message.key(), Some(key.as_bytes()));
        assert_eq!(message.payload(), Some(body.as_bytes()));
        assert_eq!(
            header(message, "content-type").as_deref(),
            Some("application/json")
        );
        assert!(header(message, "traceparent")
            .unwrap()
            .starts_with("00-0af7651916cd43dd"));
    }
    let original = br#"{"username":"alice","userid":"005","price":"1195.30","timestamp":"2024-05-31T15:54:32.204Z"}"#;
    assert!(
        messages
            .iter()
            .any(|message| message.payload() == Some(original.as_slice())),
        "the value is the original's four fields, byte for byte"
    );
    // One user's purchases share a partition, so they stay in order.
    let alice: Vec<i32> = messages
        .iter()
        .filter(|message| message.key() == Some(b"alice".as_slice()))
        .map(|message| message.partition())
        .collect();
    assert_eq!(alice.len(), 2);
    assert_eq!(alice[0], alice[1]);
}

/// A text dump of the consumer's metrics.
fn metrics_text(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

fn counter(text: &str, name: &str) -> u64 {
    testkit::http::metric(text, name).unwrap_or(0.0) as u64
}

#[sqlx::test(migrations = "../migrations")]
async fn the_consumer_stores_every_purchase_once_and_dead_letters_poison(pool: PgPool) {
    let topic = unique("purchases");
    // Ours: stored by POST /buy, then relayed with their `id` header.
    record(&pool, &topic, "alice", "10.00").await;
    record(&pool, &topic, "bob", "20.00").await;
    assert_eq!(relay_everything(&pool, &topic).await, 2);
    // A foreign producer, as the original sends: key `key1`, no headers.
    let foreign = br#"{"username":"carol","userid":"009","price":"5.50","timestamp":"2024-05-31T15:54:32.204Z"}"#;
    for _ in 0..3 {
        produce(&topic, "key1", foreign, None).await;
    }
    produce(&topic, "key1", b"{not json", None).await;
    let traced = OwnedHeaders::new().insert(Header {
        key: "traceparent",
        value: Some("00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".as_bytes()),
    });
    produce(
        &topic,
        "key1",
        br#"{"username":"dave","userid":"1"}"#,
        Some(traced),
    )
    .await;
    produce(&topic, "key1", foreign, None).await;

    let run = |group: String, registry: &mut Registry| {
        let settings = KafkaConsumerSettings {
            kafka: kafka(),
            topic: topic.clone(),
            group_id: group,
            session_timeout_ms: 6_000,
        };
        let metrics = ConsumerMetrics::register(registry);
        let (stop, stopper) = Stop::manual();
        let task = tokio::spawn(run_kafka_consumer(
            pool.clone(),
            PurchasesHandler,
            settings,
            metrics,
            stopper,
        ));
        (stop, task)
    };
    let mut first_metrics = Registry::default();
    let (stop, task) = run(unique("group"), &mut first_metrics);
    wait_until("2 of ours and 4 foreign purchases are stored", || async {
        purchases(&pool).await == 6
    })
    .await;
    let dead = read(&format!("{topic}.dlq"), 2);
    let mut reasons: Vec<String> = dead
        .iter()
        .map(|message| header(message, "__hub.errors.reason").unwrap())
        .collect();
    reasons.sort();
    assert!(reasons[0].contains("not JSON"), "{reasons:?}");
    assert!(reasons[1].contains("price is required"), "{reasons:?}");
    for message in &dead {
        assert_eq!(
            header(message, "__hub.errors.topic").as_deref(),
            Some(topic.as_str())
        );
        assert_eq!(
            header(message, "__hub.errors.consumer").as_deref(),
            Some("purchases")
        );
        assert!(header(message, "__hub.errors.offset")
            .unwrap()
            .parse::<i64>()
            .is_ok());
        assert_eq!(message.key(), Some(b"key1".as_slice()));
    }
    let traced_dead = dead
        .iter()
        .find(|message| {
            message.payload() == Some(br#"{"username":"dave","userid":"1"}"#.as_slice())
        })
        .expect("the message lacking fields is dead-lettered as it was");
    assert!(
        header(traced_dead, "traceparent").is_some(),
        "original headers are kept"
    );
    wait_until("the first consumer counts what it did", || async {
        let text = metrics_text(&first_metrics);
        counter(&text, "consumer_events_applied_total") == 6
            && counter(&text, "consumer_dead_lettered_total") == 2
    })
    .await;
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();

    // Another group reads the whole topic again: every purchase is recognised.
    let mut second_metrics = Registry::default();
    let (stop, task) = run(unique("group"), &mut second_metrics);
    wait_until("the replay is absorbed", || async {
        counter(&metrics_text(&second_metrics), "consumer_duplicates_total") == 6
    })
    .await;
    assert_eq!(purchases(&pool).await, 6);
    let carol: i64 = sqlx::query_scalar("SELECT count(*) FROM purchases WHERE username = 'carol'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(carol, 4, "four foreign messages, four purchases");
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn a_kafka_that_accepts_and_never_answers_is_named_and_sigterm_stops_the_relay_cleanly(
    pool: PgPool,
) {
    let (port, silent) = testkit::net::silent_listener().await;
    let database_url = testkit::database_url(&pool).await;
    let relay = testkit::workers_launch(&database_url, &["relay"])
        .env("KAFKA_BROKERS", format!("127.0.0.1:{port}"))
        .start()
        .await;
    testkit::wait_until_within(
        "the relay names the Kafka that does not answer",
        std::time::Duration::from_secs(30),
        || async {
            relay
                .stderr()
                .contains("KAFKA_BROKERS: no answer within 10 s")
        },
    )
    .await;
    // The relay retries with backoff; SIGTERM ends it within the grace period, cleanly
    // (the deadline's exit code is 124).
    relay.stop_cleanly().await;
    silent.abort();
}
