//! The purchases pipeline under fire. 5,000 purchases are posted concurrently through the
//! real gateway while the relay and the purchases consumer are each SIGKILLed and
//! restarted, and 20 poison messages are put on the topic by a foreign producer. When all
//! is quiet: exactly 5,000 purchases, every event published and consumed exactly once in
//! effect, and the 20 poison messages, each from its own position, in the dead-letter
//! topic. (The broker itself is not restarted here: Tansu's memory storage would lose its
//! log, and its PostgreSQL storage needs a schema the crate does not ship.)

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::PgPool;
use workers::kafka::header;

use crate::kafka_support::{produce, read};

const PURCHASES: usize = 5_000;
const CONCURRENCY: usize = 16;
const POISON: usize = 20;

async fn quiet_state(pool: &PgPool) -> (i64, i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM purchases),
                (SELECT count(DISTINCT source_key) FROM purchases),
                (SELECT count(*) FROM outbox_events WHERE status <> 'processed'),
                (SELECT count(*) FROM processed_events
                 WHERE consumer = 'purchases' AND event_key NOT LIKE 'dead:%')",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn no_purchase_is_lost_or_stored_twice_through_crashes_and_poison(pool: PgPool) {
    let database_url = testkit::database_url(&pool).await;
    let topic = testkit::unique("reliability_purchases");
    let group = testkit::unique("reliability_group");
    let gateway = testkit::spawn_gateway(&database_url, &[("KAFKA_TOPIC", &topic)]).await;
    let relay_args = [
        "relay",
        "--kafka-topic",
        &topic,
        "--batch-size",
        "50",
        "--poll-interval-ms",
        "200",
    ];
    let mut relay = testkit::spawn_workers(&database_url, &relay_args).await;
    let consumer_args = [
        "consume",
        "purchases",
        "--kafka-topic",
        &topic,
        "--group-id",
        &group,
    ];
    let mut consumer = testkit::spawn_workers(&database_url, &consumer_args).await;

    let client = reqwest::Client::new();
    let url = gateway.url("/buy");
    let load = testkit::load::spread(
        PURCHASES,
        CONCURRENCY,
        Duration::from_millis(20),
        move |n| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let body = json!({"username": format!("user{}", n % 97), "userid": n,
                              "price": format!("{}.{:02}", n % 500, n % 100),
                              "timestamp": "2024-05-31T15:54:32.204Z"});
                match client.post(&url).json(&body).send().await {
                    Ok(response) if response.status() == 200 => Ok(()),
                    Ok(response) => Err(response.status().to_string()),
                    Err(error) => Err(error.to_string()),
                }
            }
        },
    );

    for step in 0..5 {
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        match step {
            0 | 3 => relay.crash_and_restart().await,
            1 | 4 => consumer.crash_and_restart().await,
            _ => {
                for n in 0..POISON {
                    let value = if n % 2 == 0 {
                        format!("not json {n}")
                    } else {
                        format!(r#"{{"username": "poison{n}"}}"#)
                    };
                    produce(&topic, "key1", value.as_bytes(), None).await;
                }
            }
        }
    }
    let failures = load.failures().await;
    assert!(
        failures.is_empty(),
        "{} requests failed, e.g. {:?}",
        failures.len(),
        failures.first()
    );

    let expected = PURCHASES as i64;
    let started = Instant::now();
    let state = loop {
        let state = quiet_state(&pool).await;
        if state == (expected, expected, 0, expected) {
            break state;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not quiet after 120 s: (purchases, distinct, unpublished, consumed) = {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // Stay quiet a moment longer: a late redelivery must change nothing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(quiet_state(&pool).await, state);

    // Each poison message is there once, identified by its position (only a crash between
    // writing a dead letter and recording it could write it twice).
    let dead = read(&format!("{topic}.dlq"), POISON);
    let positions: HashSet<(String, String)> = dead
        .iter()
        .map(|message| {
            (
                header(message, "__hub.errors.partition").unwrap(),
                header(message, "__hub.errors.offset").unwrap(),
            )
        })
        .collect();
    println!(
        "purchases reliability: {PURCHASES} posted, {} stored, {} consumed once, {} dead letters \
         from {} poison messages",
        state.0,
        state.3,
        dead.len(),
        positions.len()
    );
    assert_eq!(positions.len(), POISON);
    drop((relay, consumer, gateway));
}
