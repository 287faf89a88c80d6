//! `workers ingest`: the accounts ingest of `POST /api/ingest`, from the command line.

use clap::Args;
use domain::config::{parse_http_url, DatabaseArgs};

/// Options of `workers ingest`.
#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Base URL of the accounts mock server.
    #[arg(long, env = "MOCK_SERVER_URL", default_value = "http://127.0.0.1:5000", value_parser = parse_http_url)]
    pub mock_server_url: String,
}

/// Fetches every accounts page and stores it in one transaction; prints the count.
pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    let pool = domain::db::connect_and_migrate(&args.database.database_url, 4).await?;
    let report = domain::accounts::ingest(
        &pool,
        &domain::accounts::upstream_client(),
        &args.mock_server_url,
    )
    .await
    .map_err(|error| anyhow::anyhow!("Ingestion failed: {error}"))?;
    println!(
        "{{\"status\": \"success\", \"records_processed\": {}}}",
        report.records_processed
    );
    Ok(())
}
