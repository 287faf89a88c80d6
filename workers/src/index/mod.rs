//! `workers index`: keeps the CRM's customers (source `CRM`) exactly in step with the
//! upstream: the ZeroMQ feed for live changes, and full scans of the paginated API
//! (concurrent, retried with backoff and jitter) for the initial backfill and every resync.
//!
//! Exactness comes from versions (see `domain::crm`): every change, from the feed or from a
//! page, is applied only if newer than what is stored, and deletions leave tombstones. The
//! versions come from the indexer's own clock, which every feed event advances as it arrives
//! (following `seq` when the feed has it), so they never go back, whatever the upstream
//! does. Pages shift under offset pagination while the upstream changes, so a scan during
//! changes can miss records; a scan during which nothing changed is an exact snapshot: it
//! compares content, fixes what differs, removes ghosts, and is the only proof that the
//! table is exact. So: a gap in `seq`, a feed reconnect, deleted ids coming back (the
//! upstream restarted), the start, and every `--reconcile-secs` (a feed without `seq` shows
//! no gaps) mark a resync as due; a scan that saw changes leaves it due; the next scan waits
//! for the upstream to go quiet (or for `--max-resync-wait-secs`) and runs again, until one
//! comes out clean. A scan stores each page with its progress in one transaction, so a
//! restarted indexer resumes the scan where it stopped.
//!
//! This file holds the options, the shared [`Indexer`] state and the loop ([`run`],
//! [`run_indexer`]) that ties the pieces together:
//! - `feed.rs`: receives feed events, marks a resync after a reconnect;
//! - `apply.rs`: applies feed events in batches, detecting gaps in `seq`;
//! - `scan.rs`: reads every page into the table (backfill and resyncs), with progress;
//! - `search.rs`: keeps Meilisearch, when used, a projection of the table, and rebuilds it
//!   (`--reindex`);
//! - `verify.rs`: `--verify` and `--repair` against a full read of the upstream;
//! - `metrics.rs`: the indexer's Prometheus metrics.

mod apply;
mod feed;
mod metrics;
mod scan;
mod search;
mod verify;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use domain::config::{parse_http_url, CrmFeedArgs, DatabaseArgs, MeiliArgs};
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use tokio::sync::{mpsc, Notify};

use crate::stop::Stop;

pub use metrics::IndexMetrics;
pub use verify::read_everything;

/// Options of `workers index`.
#[derive(Debug, Clone, Args)]
pub struct IndexArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Base URL of the CRM API (`GET /customers?page=N`).
    #[arg(long, env = "CRM_API_URL", default_value = "http://127.0.0.1:8080", value_parser = parse_http_url)]
    pub crm_api_url: String,
    #[command(flatten)]
    pub crm_feed: CrmFeedArgs,
    /// Pages fetched at once during a scan.
    #[arg(long, env = "INDEX_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,
    /// A page request taking longer than this is abandoned and retried, in seconds.
    #[arg(long, env = "INDEX_PAGE_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub page_timeout_secs: u64,
    /// A resync scan waits until the feed has been silent this long, in milliseconds.
    #[arg(long, env = "INDEX_QUIET_MS", default_value_t = 2_000)]
    pub quiet_ms: u64,
    /// ...but no longer than this, in seconds, so drift is repaired even under constant change.
    #[arg(long, env = "INDEX_MAX_RESYNC_WAIT_SECS", default_value_t = 60)]
    pub max_resync_wait_secs: u64,
    /// A reconcile scan (every page read, content compared, differences fixed) runs this
    /// long after the last scan, in seconds, whatever the feed says: a feed without `seq`
    /// cannot show a lost event or an upstream restart any other way.
    #[arg(long, env = "INDEX_RECONCILE_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub reconcile_secs: u64,
    /// Address of the admin server (`/metrics`, `/healthz`).
    #[arg(long, env = "INDEX_ADMIN_ADDR", default_value = "127.0.0.1:9103")]
    pub admin_addr: SocketAddr,
    /// Read the whole upstream once, report missing, stale and ghost records, and exit (0
    /// only when all are zero). Run it once the upstream is quiet.
    #[arg(long)]
    pub verify: bool,
    /// With `--verify`: fix what differs, then verify again.
    #[arg(long, requires = "verify")]
    pub repair: bool,
    #[command(flatten)]
    pub meili: MeiliArgs,
    /// Rebuild the Meilisearch index from PostgreSQL without downtime (a new index, then a
    /// swap), and exit.
    #[arg(long, requires = "meili_url", conflicts_with = "verify")]
    pub reindex: bool,
}

/// What the indexer's tasks share.
pub struct Indexer {
    pool: PgPool,
    http: reqwest::Client,
    api_url: String,
    /// The version clock: every feed event advances it on arrival (see `tick`), and a page
    /// is stored at the value read before its request.
    clock: AtomicU64,
    /// Feed events received so far: a scan during which this moves is not clean.
    events_received: AtomicU64,
    last_event_at: Mutex<Instant>,
    resync_due: Notify,
    metrics: IndexMetrics,
    concurrency: usize,
    /// Meilisearch, kept as a projection of the table (set once, before running).
    search: std::sync::OnceLock<domain::meili::MeiliSearch>,
}

impl Indexer {
    /// An indexer over `pool` reading the CRM API at `api_url`.
    pub fn new(
        pool: PgPool,
        api_url: &str,
        concurrency: u32,
        page_timeout: Duration,
        metrics: IndexMetrics,
    ) -> Arc<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(page_timeout)
            .build()
            .expect("a client with static settings builds");
        Arc::new(Self {
            pool,
            http,
            api_url: api_url.trim_end_matches('/').to_owned(),
            clock: AtomicU64::new(0),
            events_received: AtomicU64::new(0),
            last_event_at: Mutex::new(Instant::now()),
            resync_due: Notify::new(),
            metrics,
            concurrency: concurrency as usize,
            search: std::sync::OnceLock::new(),
        })
    }

    /// Records that a resync is due (retrying until the database takes it) and wakes the
    /// scan loop.
    async fn mark_resync(&self, why: &str) {
        tracing::info!(reason = why, "resync due");
        self.metrics.resyncs.inc();
        loop {
            match domain::crm::mark_resync_needed(&self.pool).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(%error, "cannot record the resync; retrying");
                    tokio::time::sleep(domain::backoff::reconnect(1)).await;
                }
            }
        }
        self.resync_due.notify_one();
    }
}

/// How the indexer's loop paces its scans.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// A resync scan waits until the feed has been silent this long...
    pub quiet: Duration,
    /// ...but no longer than this.
    pub max_resync_wait: Duration,
    /// A reconcile scan runs this long after the last scan ended.
    pub reconcile_every: Duration,
}

/// Runs the indexer until SIGTERM or ctrl-c (or, with `--verify` or `--reindex`, once).
pub async fn run(args: IndexArgs) -> anyhow::Result<()> {
    let pool = domain::db::connect_and_migrate(&args.database, 8).await?;
    let mut registry = Registry::default();
    let metrics = IndexMetrics::register(&mut registry);
    let page_timeout = Duration::from_secs(args.page_timeout_secs);
    let indexer = Indexer::new(
        pool.clone(),
        &args.crm_api_url,
        args.concurrency,
        page_timeout,
        metrics,
    );
    if let Some(client) = args.meili.client() {
        let search = search::prepare(client?).await?;
        if args.reindex {
            return search::reindex(&search, &pool).await;
        }
        indexer.use_search(search);
    }
    if args.verify {
        return verify::verify(&indexer, args.repair).await;
    }
    crate::admin::spawn(
        args.admin_addr,
        registry,
        vec![indexer.metrics.health.clone()],
    )
    .await?;
    let stop = Stop::on_signal();
    let heartbeat = crate::health::spawn_heartbeat(
        pool,
        domain::pipelines::CRM_INDEX,
        indexer.metrics.health.clone(),
        stop.clone(),
    );
    let pacing = Pacing {
        quiet: Duration::from_millis(args.quiet_ms),
        max_resync_wait: Duration::from_secs(args.max_resync_wait_secs),
        reconcile_every: Duration::from_secs(args.reconcile_secs),
    };
    run_indexer(indexer, args.crm_feed.crm_zmq_url, pacing, stop).await?;
    heartbeat.await?;
    Ok(())
}

/// The indexer's loop: follows the feed, scans whenever a resync is due, and reconciles
/// (a scan) `pacing.reconcile_every` after the last scan.
pub async fn run_indexer(
    indexer: Arc<Indexer>,
    feed_url: String,
    pacing: Pacing,
    mut stop: Stop,
) -> anyhow::Result<()> {
    let state = domain::crm::load_state(&indexer.pool).await?;
    indexer.clock.store(state.last_seq, Ordering::SeqCst);
    if let Some(proved) = state.proved_exact_at {
        indexer.metrics.last_exact_proof.set(proved.timestamp());
    }
    // Whatever happened while we were not running is unknown.
    indexer.mark_resync("indexer start").await;
    let (sender, receiver) = mpsc::channel(65_536);
    let feed = tokio::spawn(Arc::clone(&indexer).follow_feed(feed_url, sender));
    let applier = tokio::spawn(Arc::clone(&indexer).apply_events(receiver));
    // The first scan starts at once (backfill or resumed scan); later ones wait for quiet.
    let mut first = true;
    while !stop.requested() {
        let state = domain::crm::load_state(&indexer.pool).await?;
        if state.scan_id.is_none() && !state.resync_needed {
            tokio::select! {
                () = indexer.resync_due.notified() => {}
                () = tokio::time::sleep(pacing.reconcile_every) => {
                    indexer.mark_resync("periodic reconcile").await;
                }
                () = stop.wait() => break,
            }
            continue;
        }
        if !first && state.scan_id.is_none() {
            indexer
                .wait_for_quiet(pacing.quiet, pacing.max_resync_wait, &mut stop)
                .await;
        }
        first = false;
        if let Err(error) = indexer.scan(&stop).await {
            indexer.metrics.health.error(&error);
            tracing::warn!(%error, "scan failed; it resumes shortly");
            stop.sleep(domain::backoff::reconnect(2)).await;
        }
    }
    feed.abort();
    applier.abort();
    tracing::info!("indexer stopped");
    Ok(())
}
