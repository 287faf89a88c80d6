//! `workers consume purchases`: purchases from the Kafka topic into the `purchases` table,
//! as the original purchases API stored them, exactly once.
//!
//! Our own messages (`id` header) are the purchases `POST /buy` already stored: they are
//! recognised by their event id and not stored twice. A foreign producer's message (the
//! original sends no headers and keys every message `key1`) is identified by its position,
//! `kafka:<topic>/<partition>/<offset>`. A message that is not JSON or lacks a field is
//! poison: it goes to `<topic>.dlq` and the partition moves on.

use std::net::SocketAddr;

use clap::Args;
use domain::config::DatabaseArgs;
use domain::kafka::{KafkaArgs, PurchasesTopicArgs};
use domain::purchases::NewPurchase;
use prometheus_client::registry::Registry;
use sqlx::PgConnection;

use super::{ConsumerMetrics, Decoded, Effect, Handler, KafkaConsumerSettings};
use crate::stop::Stop;

/// Options of `workers consume purchases`.
#[derive(Debug, Clone, Args)]
pub struct ConsumePurchasesArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub purchases: PurchasesTopicArgs,
    /// Consumer group (partitions are shared among its members).
    #[arg(long, env = "KAFKA_GROUPID", default_value = "scalable-shop")]
    pub group_id: String,
    /// Session timeout of the group membership, in ms (joins and failovers take about
    /// this long).
    #[arg(long, env = "KAFKA_SESSION_TIMEOUT_MS", default_value_t = 6_000, value_parser = clap::value_parser!(u32).range(1_000..=300_000))]
    pub session_timeout_ms: u32,
    /// Address of the admin server (`/metrics`, `/healthz`).
    #[arg(
        long,
        env = "PURCHASES_CONSUMER_ADMIN_ADDR",
        default_value = "127.0.0.1:9104"
    )]
    pub admin_addr: SocketAddr,
}

impl ConsumePurchasesArgs {
    /// The consumer settings these options describe.
    pub fn settings(&self) -> KafkaConsumerSettings {
        KafkaConsumerSettings {
            kafka: self.kafka.clone(),
            topic: self.purchases.kafka_topic.clone(),
            group_id: self.group_id.clone(),
            session_timeout_ms: self.session_timeout_ms,
        }
    }
}

/// Stores each purchase once.
#[derive(Debug, Clone, Copy, Default)]
pub struct PurchasesHandler;

impl Handler for PurchasesHandler {
    type Event = NewPurchase;
    const NAME: &'static str = "purchases";

    fn decode(&self, body: &[u8]) -> Decoded<NewPurchase> {
        let value: serde_json::Value = match serde_json::from_slice(body) {
            Ok(value) => value,
            Err(error) => return Decoded::Poison(format!("not JSON: {error}")),
        };
        match NewPurchase::from_json(&value) {
            Ok(purchase) => Decoded::Event(purchase),
            Err(error) => Decoded::Poison(error.to_string()),
        }
    }

    fn foreign_key(&self, _purchase: &NewPurchase) -> Option<String> {
        None
    }

    async fn apply(
        &self,
        transaction: &mut PgConnection,
        purchase: &NewPurchase,
        key: &str,
    ) -> Result<Effect, sqlx::Error> {
        domain::purchases::store_consumed(transaction, purchase, key).await?;
        Ok(Effect::Applied)
    }
}

/// Runs `workers consume purchases` until SIGTERM or ctrl-c.
pub(super) async fn run(args: ConsumePurchasesArgs) -> anyhow::Result<()> {
    let pool = domain::db::connect_and_migrate(&args.database, 4).await?;
    let mut registry = Registry::default();
    let metrics = ConsumerMetrics::register(&mut registry);
    crate::admin::spawn(args.admin_addr, registry, vec![metrics.health.clone()]).await?;
    let stop = Stop::on_signal();
    let heartbeat = crate::health::spawn_heartbeat(
        pool.clone(),
        domain::pipelines::PURCHASES_CONSUMER,
        metrics.health.clone(),
        stop.clone(),
    );
    super::run_kafka_consumer(pool, PurchasesHandler, args.settings(), metrics, stop).await?;
    heartbeat.await?;
    Ok(())
}
