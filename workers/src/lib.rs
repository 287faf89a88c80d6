//! The background workers behind the hub. Each subcommand of the `workers` binary lives in
//! its own module and exposes its single step so tests can drive it directly.

pub mod admin;
pub mod consume;
pub mod health;
pub mod index;
pub mod ingest;
pub mod kafka;
pub mod relay;
pub mod simulate;
pub mod stop;
pub mod sync;

use clap::{Parser, Subcommand};
use domain::config::TelemetryArgs;

/// Background workers of the customer data hub.
#[derive(Debug, Parser)]
#[command(name = "workers", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the upstream systems locally (accounts :5000, CRM :8080 and ZeroMQ :5555,
    /// profiles :8081).
    Simulate(simulate::SimulateArgs),
    /// Ingest every accounts customer from the mock server into PostgreSQL, once.
    Ingest(ingest::IngestArgs),
    /// Keep the CRM's customers exactly in step: ZeroMQ feed plus API scans; `--verify`.
    Index(index::IndexArgs),
    /// Publish outbox events to RabbitMQ and Kafka, confirmed (run any number).
    Relay(relay::RelayArgs),
    /// Apply broker events to PostgreSQL, idempotently.
    #[command(subcommand)]
    Consume(consume::ConsumeCommand),
    /// Sync the profile source into PostgreSQL every interval (metrics on :2112).
    Sync(sync::SyncArgs),
}
