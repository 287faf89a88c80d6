//! `workers simulate`: the upstream systems the hub absorbs, served locally and faithful to
//! the originals (see README, Compatibility notes), so the hub can be tried, tested and
//! benchmarked without them: the original accounts mock server and the original CRM with
//! its ZeroMQ change feed, and the original profile source (`/users/changes`).

pub mod accounts;
pub mod crm;
pub mod flask;
pub mod profiles;
mod random;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};

use self::accounts::AccountsDataset;

/// An upstream the simulator can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Upstream {
    /// The accounts mock server (`--accounts-addr`).
    Accounts,
    /// The CRM: paginated API (`--crm-addr`) and ZeroMQ feed (`--zmq-addr`).
    Crm,
    /// The profile source, `/users/changes` (`--profiles-addr`).
    Profiles,
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
    /// Address of the CRM API (`GET /customers?page=N`).
    #[arg(long, env = "CRM_ADDR", default_value = "127.0.0.1:8080")]
    pub crm_addr: SocketAddr,
    /// ZeroMQ endpoint the CRM change feed (PUB) binds.
    #[arg(long, env = "CRM_ZMQ_BIND", default_value = "tcp://127.0.0.1:5555")]
    pub zmq_addr: String,
    /// Initial CRM records (ids 1..=N).
    #[arg(long, env = "CRM_RECORDS", default_value_t = 100_000)]
    pub records: u64,
    /// CRM records per page.
    #[arg(long, env = "CRM_PAGE_SIZE", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub page_size: u64,
    /// Delay before every CRM API answer, in milliseconds.
    #[arg(long, env = "CRM_LATENCY_MS", default_value_t = 1_000)]
    pub latency_ms: u64,
    /// Time between CRM changes, in milliseconds (fractions allowed; 0: as fast as possible).
    #[arg(long, env = "CRM_CHANGE_INTERVAL_MS", default_value_t = 10_000.0, value_parser = parse_interval_ms)]
    pub change_interval_ms: f64,
    /// Stop changing after this many changes, so the upstream goes quiet. Default: never.
    #[arg(long, env = "CRM_MAX_CHANGES")]
    pub max_changes: Option<u64>,
    /// Seed of the CRM data and its change sequence: the same seed, the same run.
    #[arg(long, env = "CRM_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Whether CRM feed events carry our `seq` number; `false` (or `0`) publishes exactly
    /// the original's frames, without it.
    #[arg(long, env = "CRM_FEED_SEQ", default_value_t = true, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub feed_seq: bool,
    /// Fraction of CRM API calls answered 500 or stalled (30 s), to exercise retries.
    #[arg(long, env = "CRM_ERROR_RATE", default_value_t = 0.0, value_parser = parse_fraction)]
    pub error_rate: f64,
    /// Address of the profile source (`/users/changes`, any method).
    #[arg(long, env = "PROFILES_ADDR", default_value = "127.0.0.1:8081")]
    pub profiles_addr: SocketAddr,
    /// Seed of the generated profiles and their changes.
    #[arg(long, env = "PROFILES_SEED", default_value_t = 42)]
    pub profiles_seed: u64,
    /// Fraction of new profiles given an invalid email (the sync's `failed_validation`).
    #[arg(long, env = "PROFILES_INVALID_EMAIL_RATE", default_value_t = 0.0, value_parser = parse_fraction)]
    pub profiles_invalid_email_rate: f64,
    /// Fraction of profile source calls answered 500, stalled (30 s) or cut short (truncated
    /// JSON), a third each.
    #[arg(long, env = "PROFILES_ERROR_RATE", default_value_t = 0.0, value_parser = parse_fraction)]
    pub profiles_error_rate: f64,
}

fn parse_interval_ms(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(ms) if ms.is_finite() && ms >= 0.0 => Ok(ms),
        _ => Err("expected a number of milliseconds >= 0".into()),
    }
}

fn parse_fraction(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(fraction) if (0.0..=1.0).contains(&fraction) => Ok(fraction),
        _ => Err("expected a fraction between 0 and 1".into()),
    }
}

impl SimulateArgs {
    fn serves(&self, upstream: Upstream) -> bool {
        self.only.is_empty() || self.only.contains(&upstream)
    }

    /// The CRM simulator's knobs.
    pub fn crm_settings(&self) -> crm::CrmSettings {
        crm::CrmSettings {
            records: self.records,
            page_size: usize::try_from(self.page_size).unwrap_or(usize::MAX),
            latency: Duration::from_millis(self.latency_ms),
            change_interval: Duration::from_secs_f64(self.change_interval_ms / 1_000.0),
            max_changes: self.max_changes,
            seed: self.seed,
            error_rate: self.error_rate,
            feed_seq: self.feed_seq,
        }
    }

    /// The profile source's knobs.
    pub fn profiles_settings(&self) -> profiles::ProfilesSettings {
        profiles::ProfilesSettings {
            seed: self.profiles_seed,
            invalid_email_rate: self.profiles_invalid_email_rate,
            error_rate: self.profiles_error_rate,
        }
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
    if args.serves(Upstream::Crm) {
        let upstream = Arc::new(crm::CrmUpstream::new(args.crm_settings()));
        let listener = bind(args.crm_addr, "CRM").await?;
        let (feed, _) = crm::bind_feed(&args.zmq_addr).await?;
        tracing::info!(
            api = %args.crm_addr,
            feed = %args.zmq_addr,
            records = upstream.len(),
            "CRM simulator listening"
        );
        let changes = upstream.clone();
        servers.spawn(async move {
            crm::run_changes(changes, feed, crate::stop::Stop::on_signal())
                .await
                .map_err(std::io::Error::other)
        });
        servers.spawn(async move {
            axum::serve(listener, crm::router(upstream))
                .with_graceful_shutdown(domain::shutdown::signal())
                .await
        });
    }
    if args.serves(Upstream::Profiles) {
        let source = Arc::new(profiles::ProfileSource::new(args.profiles_settings()));
        let listener = bind(args.profiles_addr, "profiles").await?;
        tracing::info!(addr = %args.profiles_addr, path = profiles::PATH, "profile source listening");
        servers.spawn(async move {
            axum::serve(listener, profiles::router(source))
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
