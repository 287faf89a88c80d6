//! `workers sync`: the profile sync of seed 002 (the original TargetService), done right.
//!
//! At start, then every `SYNC_INTERVAL` seconds: fetch a batch from `SOURCE_SERVICE_URL`
//! (bounded time, status checked, body size capped, decoded strictly) and apply it in one
//! statement through the sync's writer (`domain::profiles::SyncWriter`: a connection
//! holding the sync's lock, so a second `workers sync` waits as a standby). A failed
//! fetch or apply is a failed run:
//! recorded in `pipeline_runs`, counted, logged; never a crash and never a partial write.
//! Prometheus metrics on `SYNC_METRICS_ADDR` (default :2112, as the original) carry the
//! original's four metric names and ours.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Args;
use domain::config::{parse_http_url, DatabaseArgs};
use domain::pipelines::PROFILES_SYNC;
use domain::profiles::BatchReport;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use sqlx::PgPool;

use crate::health::{spawn_heartbeat, Health};
use crate::stop::Stop;

/// Largest batch body accepted from the source.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// The Prometheus client's default histogram buckets (the original's histogram).
const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Options of `workers sync`.
#[derive(Debug, Clone, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The profile source's changes endpoint.
    #[arg(long, env = "SOURCE_SERVICE_URL", default_value = "http://127.0.0.1:8081/users/changes", value_parser = parse_http_url)]
    pub source_service_url: String,
    /// Seconds between syncs (fractions allowed); the first sync runs at start.
    #[arg(long, env = "SYNC_INTERVAL", default_value_t = 15.0, value_parser = parse_interval)]
    pub sync_interval: f64,
    /// Longest a fetch may take, in seconds (connecting included).
    #[arg(long, env = "SYNC_FETCH_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub fetch_timeout_secs: u64,
    /// Address of the Prometheus `/metrics` (and `/healthz`) server.
    #[arg(long, env = "SYNC_METRICS_ADDR", default_value = "127.0.0.1:2112")]
    pub metrics_addr: SocketAddr,
    /// Run one sync and exit: 0 when it succeeded, 1 when it failed.
    #[arg(long)]
    pub once: bool,
}

fn parse_interval(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && (0.01..=86_400.0).contains(&seconds) => Ok(seconds),
        _ => Err("expected a number of seconds between 0.01 and 86400".into()),
    }
}

/// The sync's metrics: the original's four, then ours.
#[derive(Debug, Clone)]
pub struct SyncMetrics {
    fetched: Counter,
    synced: Counter,
    skipped: Counter,
    batch_duration: Histogram,
    runs: Counter,
    failed_runs: Counter,
    failed_validation: Counter,
    conflicts: Counter,
    superseded: Counter,
    last_success: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl SyncMetrics {
    /// Registers the metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            fetched: Counter::default(),
            synced: Counter::default(),
            skipped: Counter::default(),
            batch_duration: Histogram::new(DEFAULT_BUCKETS),
            runs: Counter::default(),
            failed_runs: Counter::default(),
            failed_validation: Counter::default(),
            conflicts: Counter::default(),
            superseded: Counter::default(),
            last_success: Gauge::default(),
        };
        let counters = [
            (
                "profiles_fetched",
                "Total profiles fetched from the source",
                &metrics.fetched,
            ),
            (
                "profiles_synced",
                "Total profiles successfully synced to the database",
                &metrics.synced,
            ),
            (
                "profiles_skipped",
                "Profiles skipped or failing validation",
                &metrics.skipped,
            ),
            ("sync_runs", "Sync runs, failed or not", &metrics.runs),
            (
                "sync_runs_failed",
                "Sync runs that failed (fetch, decode or database)",
                &metrics.failed_runs,
            ),
            (
                "profiles_failed_validation",
                "Profiles failing validation (also in profiles_skipped)",
                &metrics.failed_validation,
            ),
            (
                "profiles_conflicts",
                "Profiles whose email or mobile belongs to another profile",
                &metrics.conflicts,
            ),
            (
                "profiles_superseded",
                "Profiles replaced by a newer change of the same batch",
                &metrics.superseded,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "sync_batch_duration_seconds",
            "Time taken per batch (fetch and apply)",
            metrics.batch_duration.clone(),
        );
        registry.register(
            "sync_last_success_timestamp_seconds",
            "Unix time of the last successful sync",
            metrics.last_success.clone(),
        );
        metrics
    }

    fn record(&self, report: &BatchReport) {
        self.fetched.inc_by(report.fetched);
        self.synced.inc_by(report.synced);
        self.skipped.inc_by(report.skipped);
        self.failed_validation.inc_by(report.failed_validation);
        self.conflicts.inc_by(report.conflicts);
        self.superseded.inc_by(report.superseded);
        self.last_success
            .set(Utc::now().timestamp_millis() as f64 / 1_000.0);
    }
}

/// One sync at a time against one source.
pub struct Syncer {
    pool: PgPool,
    /// Taken at the first apply, dropped (and taken again) after a failed one.
    writer: tokio::sync::Mutex<Option<domain::profiles::SyncWriter>>,
    client: reqwest::Client,
    url: String,
    metrics: SyncMetrics,
    health: Health,
}

impl Syncer {
    /// A syncer of `url` into `pool`, each fetch bounded by `fetch_timeout`.
    pub fn new(
        pool: PgPool,
        url: String,
        fetch_timeout: Duration,
        metrics: SyncMetrics,
        health: Health,
    ) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(fetch_timeout.min(Duration::from_secs(5)))
            .timeout(fetch_timeout)
            .user_agent(concat!("customer-data-hub/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a client with static settings builds");
        Self {
            pool,
            writer: tokio::sync::Mutex::new(None),
            client,
            url,
            metrics,
            health,
        }
    }

    /// Fetches and applies one batch. A failure is recorded as a failed run (when the
    /// database takes it) and returned.
    pub async fn sync_once(&self) -> domain::Result<BatchReport> {
        let started_at = Utc::now();
        let clock = Instant::now();
        self.metrics.runs.inc();
        let outcome = match self.fetch().await {
            Ok(batch) => self.apply(started_at, &batch).await,
            Err(error) => Err(error),
        };
        self.metrics
            .batch_duration
            .observe(clock.elapsed().as_secs_f64());
        match &outcome {
            Ok(report) => {
                self.metrics.record(report);
                self.health.success();
                tracing::info!(
                    run = report.run_id,
                    fetched = report.fetched,
                    synced = report.synced,
                    skipped = report.skipped,
                    failed_validation = report.failed_validation,
                    conflicts = report.conflicts,
                    superseded = report.superseded,
                    "profiles synced"
                );
            }
            Err(error) => {
                self.metrics.failed_runs.inc();
                self.health.error(error);
                tracing::warn!(%error, "profile sync failed; nothing was written");
                domain::pipelines::record_failed_run(&self.pool, PROFILES_SYNC, started_at, error)
                    .await;
            }
        }
        outcome
    }

    /// Applies a batch through the writer, taking it first if needed; a failure drops it,
    /// so the next run starts on a fresh connection.
    async fn apply(
        &self,
        started_at: chrono::DateTime<Utc>,
        batch: &[domain::profiles::ProfileChange],
    ) -> domain::Result<BatchReport> {
        let mut writer = self.writer.lock().await;
        if writer.is_none() {
            *writer = Some(domain::profiles::SyncWriter::acquire(&self.pool).await?);
        }
        let applied = writer
            .as_mut()
            .expect("taken just above")
            .apply(started_at, batch)
            .await;
        if applied.is_err() {
            *writer = None;
        }
        applied
    }

    async fn fetch(&self) -> domain::Result<Vec<domain::profiles::ProfileChange>> {
        let upstream = |error: reqwest::Error| {
            domain::Error::Upstream(format!(
                "cannot fetch the profile source: {}",
                error.without_url()
            ))
        };
        let mut response = self.client.get(&self.url).send().await.map_err(upstream)?;
        let status = response.status();
        if !status.is_success() {
            return Err(domain::Error::Upstream(format!(
                "the profile source answered {status}"
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(upstream)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(domain::Error::Upstream(format!(
                    "the profile source sent more than {MAX_BODY_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        domain::profiles::decode_batch(&body)
    }
}

/// Runs `workers sync`: a sync at start, then one every interval, until SIGTERM or
/// ctrl-c (the sync in flight finishes first). With `--once`, one sync.
pub async fn run(args: SyncArgs) -> anyhow::Result<()> {
    let pool = domain::db::connect_and_migrate(&args.database, 4).await?;
    let mut registry = Registry::default();
    let metrics = SyncMetrics::register(&mut registry);
    let health = Health::default();
    let syncer = Syncer::new(
        pool.clone(),
        args.source_service_url.clone(),
        Duration::from_secs(args.fetch_timeout_secs),
        metrics,
        health.clone(),
    );
    if args.once {
        syncer.sync_once().await?;
        return Ok(());
    }
    crate::admin::spawn(args.metrics_addr, registry, vec![health.clone()]).await?;
    let mut stop = Stop::on_signal();
    let heartbeat = spawn_heartbeat(pool, PROFILES_SYNC, health, stop.clone());
    let interval = Duration::from_secs_f64(args.sync_interval);
    tracing::info!(interval_secs = args.sync_interval, "profile sync started");
    loop {
        let _ = syncer.sync_once().await;
        if !stop.sleep(interval).await {
            break;
        }
    }
    heartbeat.await?;
    tracing::info!("profile sync stopped");
    Ok(())
}
