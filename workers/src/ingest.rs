//! `workers ingest`: the accounts ingest of `POST /api/ingest`, from the command line.

use clap::Args;
use domain::config::{AccountsUpstreamArgs, DatabaseArgs};

/// Options of `workers ingest`.
#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub upstream: AccountsUpstreamArgs,
}

/// Fetches every accounts page and stores it in one transaction; prints the count.
pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    let pool = domain::db::connect_and_migrate(&args.database, 4).await?;
    let report = domain::accounts::ingest(
        &pool,
        &domain::accounts::upstream_client(),
        &args.upstream.mock_server_url,
    )
    .await
    .map_err(|error| anyhow::anyhow!("Ingestion failed: {error}"))?;
    println!(
        "{{\"status\": \"success\", \"records_processed\": {}}}",
        report.records_processed
    );
    Ok(())
}
