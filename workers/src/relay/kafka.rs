//! The Kafka publisher: `acks=all`, each event to the topic its row names (created when
//! missing), keyed by its message key, with its headers (`id`, `content-type`, `type`,
//! `traceparent`, `x-request-id`) as record headers and its body as the value, byte for byte. A row is
//! marked only after its delivery report. Correctness comes from the outbox and the
//! consumers' inbox, not from the broker: the producer's idempotence is off (brokers such
//! as Tansu support it only in part). A fatal producer error fails the batch, so the loop
//! makes a new producer.

use std::collections::HashSet;
use std::time::Duration;

use domain::kafka::KafkaArgs;
use domain::outbox::{Broker, OutboxEvent};
use futures_util::future::join_all;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;

use super::Publisher;
use crate::kafka::{client_config, ensure_topics, kafka_error};

/// How long a message may wait for its delivery report before it counts as failed.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the Kafka publisher connects and which topics it makes sure exist.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Brokers and credentials.
    pub kafka: KafkaArgs,
    /// Topics to create at connect when missing (others are created on first use).
    pub topics: Vec<String>,
}

/// Publishes outbox events to Kafka.
pub struct KafkaPublisher {
    config: ClientConfig,
    producer: FutureProducer,
    known_topics: HashSet<String>,
}

impl Publisher for KafkaPublisher {
    type Settings = KafkaSettings;
    const BROKER: Broker = Broker::Kafka;
    const ADDRESS_VARIABLE: &'static str = "KAFKA_BROKERS";
    // Each delivery report comes within DELIVERY_TIMEOUT, failed or not.
    const PUBLISH_TIMEOUT: Duration = Duration::from_secs(DELIVERY_TIMEOUT.as_secs() + 10);

    async fn connect(settings: &KafkaSettings) -> domain::Result<Self> {
        let config = client_config(&settings.kafka);
        let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
        ensure_topics(&config, &topics).await?;
        let producer: FutureProducer = config
            .clone()
            .set("acks", "all")
            .set("enable.idempotence", "false")
            .set("linger.ms", "1")
            .set(
                "message.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            )
            .create()
            .map_err(kafka_error)?;
        Ok(Self {
            config,
            producer,
            known_topics: settings.topics.iter().cloned().collect(),
        })
    }

    async fn publish(&mut self, events: &[OutboxEvent]) -> domain::Result<Vec<Result<(), String>>> {
        let new_topics: Vec<&str> = events
            .iter()
            .map(|event| event.destination.as_str())
            .filter(|topic| !self.known_topics.contains(*topic))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        ensure_topics(&self.config, &new_topics).await?;
        self.known_topics
            .extend(new_topics.iter().map(|topic| (*topic).to_owned()));
        let deliveries = events.iter().map(|event| {
            let mut headers = OwnedHeaders::new_with_capacity(event.headers.len());
            for (name, value) in &event.headers {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value.as_bytes()),
                });
            }
            let mut record = FutureRecord::to(&event.destination)
                .payload(event.body.as_bytes())
                .headers(headers);
            if let Some(key) = &event.message_key {
                record = record.key(key.as_bytes());
            }
            self.producer.send(record, DELIVERY_TIMEOUT)
        });
        let results: Vec<Result<(), String>> = join_all(deliveries)
            .await
            .into_iter()
            .map(|delivery| delivery.map(|_| ()).map_err(|(error, _)| error.to_string()))
            .collect();
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            return Err(domain::Error::Broker(format!(
                "fatal producer error {code}: {reason}"
            )));
        }
        Ok(results)
    }
}
