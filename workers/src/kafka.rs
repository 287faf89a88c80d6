//! What the Kafka publisher and the Kafka receive loop share: client configuration from
//! [`KafkaArgs`], creating missing topics through the admin API (brokers such as Tansu do
//! not create topics on first use), and reading message headers.

use std::time::Duration;

use domain::kafka::KafkaArgs;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

/// Partitions of a topic the hub creates (a topic that exists is left as it is).
pub const NEW_TOPIC_PARTITIONS: i32 = 3;
/// How long an admin request may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Wraps a client error.
pub fn kafka_error(error: KafkaError) -> domain::Error {
    domain::Error::Broker(error.to_string())
}

/// A client configuration for `args` (brokers, SASL PLAIN when a user is set).
pub fn client_config(args: &KafkaArgs) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in args.client_properties() {
        config.set(key, value);
    }
    config
}

/// Creates the topics that do not exist yet (3 partitions, replication factor 1); on a
/// production cluster create them beforehand with the settings you want.
pub async fn ensure_topics(config: &ClientConfig, topics: &[&str]) -> domain::Result<()> {
    if topics.is_empty() {
        return Ok(());
    }
    // A broker that accepts connections and never answers leaves the admin request waiting
    // on librdkafka's own timeouts, minutes: give up sooner, naming the variable.
    tokio::time::timeout(
        ADMIN_TIMEOUT + Duration::from_secs(2),
        create_missing_topics(config, topics),
    )
    .await
    .unwrap_or(Err(no_answer()))
}

/// Kafka did not answer an admin request within [`ADMIN_TIMEOUT`].
fn no_answer() -> domain::Error {
    domain::Error::NoAnswer {
        variable: "KAFKA_BROKERS",
        seconds: ADMIN_TIMEOUT.as_secs(),
    }
}

async fn create_missing_topics(config: &ClientConfig, topics: &[&str]) -> domain::Result<()> {
    let admin: AdminClient<DefaultClientContext> = config.create().map_err(kafka_error)?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|topic| NewTopic::new(topic, NEW_TOPIC_PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(ADMIN_TIMEOUT))
        .request_timeout(Some(ADMIN_TIMEOUT));
    let results =
        admin
            .create_topics(&new_topics, &options)
            .await
            .map_err(|error| match error {
                KafkaError::AdminOp(RDKafkaErrorCode::OperationTimedOut) => no_answer(),
                error => kafka_error(error),
            })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(domain::Error::Broker(format!(
                    "cannot create topic {topic}: {code}"
                )))
            }
        }
    }
    Ok(())
}

/// A header's value as text, if the message has it and it is UTF-8.
pub fn header<M: Message>(message: &M, name: &str) -> Option<String> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|header| header.key == name)
        .and_then(|header| header.value)
        .and_then(|value| std::str::from_utf8(value).ok())
        .map(str::to_owned)
}
