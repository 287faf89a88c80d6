//! Kafka settings every process reads the same way, under the original services' names
//! (`KAFKA_BROKERS`, `KAFKA_USERNAME`/`KAFKA_PASSWORD` for SASL PLAIN, `KAFKA_TOPIC`,
//! `KAFKA_GROUPID`). Only settings live here: the Kafka client itself (rdkafka) is linked by
//! the workers alone, so the gateway and most test binaries stay free of it.

use std::fmt;

use clap::Args;

use crate::config::Secret;

/// The purchases topic: the gateway writes `POST /buy` events for it, the relay publishes
/// to it, the purchases consumer reads it.
#[derive(Debug, Clone, Args)]
pub struct PurchasesTopicArgs {
    /// Topic of purchase events (its dead letters go to `<topic>.dlq`).
    #[arg(
        long = "kafka-topic",
        env = "KAFKA_TOPIC",
        default_value = "scalable-shop-purchases"
    )]
    pub kafka_topic: String,
}

/// Where Kafka is and how to log in.
#[derive(Clone, Args)]
pub struct KafkaArgs {
    /// Bootstrap brokers, comma-separated `host:port`.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// SASL PLAIN user; unset: no authentication.
    #[arg(long, env = "KAFKA_USERNAME")]
    pub kafka_username: Option<String>,
    /// SASL PLAIN password (with `KAFKA_USERNAME`).
    #[arg(long, env = "KAFKA_PASSWORD", hide_env_values = true)]
    pub kafka_password: Option<Secret>,
}

impl fmt::Debug for KafkaArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaArgs")
            .field("brokers", &self.kafka_brokers)
            .field("username", &self.kafka_username)
            .finish_non_exhaustive()
    }
}

impl KafkaArgs {
    /// Client properties for these settings (`bootstrap.servers`, and SASL PLAIN over
    /// plaintext when a user is set); the password is in them, so never log them.
    pub fn client_properties(&self) -> Vec<(&'static str, String)> {
        let mut properties = vec![("bootstrap.servers", self.kafka_brokers.clone())];
        if let Some(username) = &self.kafka_username {
            properties.extend([
                ("security.protocol", "SASL_PLAINTEXT".to_owned()),
                ("sasl.mechanisms", "PLAIN".to_owned()),
                ("sasl.username", username.clone()),
                (
                    "sasl.password",
                    self.kafka_password
                        .as_ref()
                        .map(|password| password.expose().to_owned())
                        .unwrap_or_default(),
                ),
            ]);
        }
        properties
    }
}
