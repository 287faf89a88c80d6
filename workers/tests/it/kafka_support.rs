//! Kafka for the workers' tests: the local broker's settings, producing as a foreign
//! producer would, and reading a topic from the start. (The test kit stays free of rdkafka;
//! these use the workers' own client.)

use std::time::Duration;

use domain::kafka::KafkaArgs;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use testkit::unique;
use workers::kafka::{client_config, NEW_TOPIC_PARTITIONS};

/// The local broker (Tansu on 127.0.0.1:9092, started by `make test`).
pub fn kafka() -> KafkaArgs {
    KafkaArgs {
        kafka_brokers: "127.0.0.1:9092".into(),
        kafka_username: None,
        kafka_password: None,
    }
}

/// Produces a message as a foreign producer would (no headers unless given).
pub async fn produce(topic: &str, key: &str, value: &[u8], headers: Option<OwnedHeaders>) {
    let producer: FutureProducer = client_config(&kafka()).create().unwrap();
    let mut record = FutureRecord::to(topic).key(key).payload(value);
    if let Some(headers) = headers {
        record = record.headers(headers);
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(error, _)| error)
        .unwrap();
}

/// Reads every partition of `topic` from the start: at least `count` messages, then all
/// that follow until the topic is quiet for half a second.
pub fn read(topic: &str, count: usize) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = client_config(&kafka())
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut partitions = TopicPartitionList::new();
    for partition in 0..NEW_TOPIC_PARTITIONS {
        partitions
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&partitions).unwrap();
    let started = std::time::Instant::now();
    let mut messages = Vec::new();
    while messages.len() < count {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "only {} of {count} messages on {topic}",
            messages.len()
        );
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            messages.push(message.unwrap().detach());
        }
    }
    // Then whatever else is there, until the topic stays quiet for a moment.
    while let Some(message) = consumer.poll(Duration::from_millis(500)) {
        messages.push(message.unwrap().detach());
    }
    messages
}
