//! `workers simulate`: the upstream systems the hub absorbs, served locally and faithful to
//! CONTRACTS.md, so the hub can be tried, tested and benchmarked without them. This issue
//! brings the accounts mock server; the CRM and profiles upstreams join the same command.

pub mod accounts;
pub mod flask_json;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum};

use self::accounts::AccountsDataset;

/// An upstream the simulator can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Upstream {
    /// The accounts mock server of seed 001 (`--accounts-addr`).
    Accounts,
}

/// Options of `workers simulate`.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Serve only these upstreams (comma-separated). Default: every upstream.
    #[arg(long, env = "SIMULATE_ONLY", value_enum, value_delimiter = ',')]
    pub only: Vec<Upstream>,
    /// Address of the accounts mock server.
    #[arg(long, env = "ACCOUNTS_ADDR", default_value = "127.0.0.1:5000")]
    pub accounts_addr: SocketAddr,
    /// JSON file of accounts customers to serve. Default: the 25 customers shipped in
    /// `workers/data/accounts_customers.json` (built into the binary).
    #[arg(long, env = "ACCOUNTS_FILE", conflicts_with = "accounts_generate")]
    pub accounts_file: Option<PathBuf>,
    /// Serve this many generated accounts customers instead of a file (load tests).
    #[arg(long, env = "ACCOUNTS_GENERATE")]
    pub accounts_generate: Option<usize>,
}

impl SimulateArgs {
    fn serves(&self, upstream: Upstream) -> bool {
        self.only.is_empty() || self.only.contains(&upstream)
    }

    fn accounts_dataset(&self) -> anyhow::Result<AccountsDataset> {
        Ok(match (&self.accounts_file, self.accounts_generate) {
            (Some(path), _) => AccountsDataset::from_file(path)?,
            (None, Some(count)) => AccountsDataset::from_records(accounts::generate(count))?,
            (None, None) => AccountsDataset::from_json(accounts::DEFAULT_DATA)?,
        })
    }
}

/// Runs the selected upstreams until SIGTERM or ctrl-c.
pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let mut servers = tokio::task::JoinSet::new();
    if args.serves(Upstream::Accounts) {
        let dataset = Arc::new(args.accounts_dataset()?);
        let listener = bind(args.accounts_addr, "accounts").await?;
        tracing::info!(addr = %args.accounts_addr, customers = dataset.len(), "accounts mock server listening");
        servers.spawn(async move {
            axum::serve(listener, accounts::router(dataset))
                .with_graceful_shutdown(domain::shutdown::signal())
                .await
        });
    }
    while let Some(joined) = servers.join_next().await {
        joined??;
    }
    Ok(())
}

async fn bind(addr: SocketAddr, upstream: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|error| {
        anyhow::anyhow!("cannot listen on {addr} for the {upstream} upstream: {error}")
    })
}
