//! `workers index`: keeps the CRM's customers (source `CRM`) exactly in step with the
//! upstream: the ZeroMQ feed for live changes, and full scans of the paginated API
//! (concurrent, retried with backoff and jitter) for the initial backfill and every resync.
//!
//! Exactness comes from versions (see `domain::crm`): every change, from the feed or from a
//! page, is applied only if newer than what is stored, and deletions leave tombstones. Pages
//! shift under offset pagination while the upstream changes, so a scan during changes can
//! miss records; a scan during which nothing changed is an exact snapshot and also removes
//! ghosts. So: a gap in `seq`, a feed reconnect or a restart marks a resync as due; a scan
//! that saw changes leaves it due; the next scan waits for the upstream to go quiet (or
//! for `--max-resync-wait-secs`) and runs again, until one comes out clean. A scan stores
//! each page with its progress in one transaction, so a restarted indexer resumes the scan
//! where it stopped.

use std::collections::{BTreeMap, HashSet};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use domain::config::{parse_http_url, DatabaseArgs};
use domain::crm::{Change, CrmRecord};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use tokio::sync::{mpsc, Notify};

use crate::stop::Stop;

/// Options of `workers index`.
#[derive(Debug, Clone, Args)]
pub struct IndexArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Base URL of the CRM API (`GET /customers?page=N`).
    #[arg(long, env = "CRM_API_URL", default_value = "http://127.0.0.1:8080", value_parser = parse_http_url)]
    pub crm_api_url: String,
    /// The CRM's ZeroMQ change feed (PUB endpoint).
    #[arg(long, env = "CRM_ZMQ_URL", default_value = "tcp://127.0.0.1:5555")]
    pub crm_zmq_url: String,
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
    /// Meilisearch URL. Unset: search runs on PostgreSQL (the table is the index).
    #[arg(long, env = "MEILI_URL", value_parser = parse_http_url)]
    pub meili_url: Option<String>,
    /// Meilisearch master key.
    #[arg(long, env = "MEILI_MASTER_KEY", hide_env_values = true)]
    pub meili_master_key: Option<domain::config::Secret>,
    /// Rebuild the Meilisearch index from PostgreSQL without downtime (a new index, then a
    /// swap), and exit.
    #[arg(long, requires = "meili_url", conflicts_with = "verify")]
    pub reindex: bool,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// The indexer's metrics.
#[derive(Debug, Clone, Default)]
pub struct IndexMetrics {
    pages_fetched: Counter,
    page_errors: Counter,
    events_applied: Counter,
    gaps_detected: Counter,
    resyncs: Counter,
    scans: Family<OutcomeLabels, Counter>,
    ghosts_removed: Counter,
    feed_seq: Gauge,
    last_event_applied: Gauge,
}

impl IndexMetrics {
    /// Registers the indexer's metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "index_pages_fetched",
            "API pages fetched",
            metrics.pages_fetched.clone(),
        );
        registry.register(
            "index_page_errors",
            "API page requests that failed or timed out",
            metrics.page_errors.clone(),
        );
        registry.register(
            "index_events_applied",
            "Feed events applied",
            metrics.events_applied.clone(),
        );
        registry.register(
            "index_gaps_detected",
            "Gaps in the feed's seq (lost events)",
            metrics.gaps_detected.clone(),
        );
        registry.register(
            "index_resyncs",
            "Resyncs marked due (gap, reconnect, restart)",
            metrics.resyncs.clone(),
        );
        registry.register(
            "index_scans",
            "Full scans by outcome (clean or dirty)",
            metrics.scans.clone(),
        );
        registry.register(
            "index_ghosts_removed",
            "Records deleted because a clean scan did not see them",
            metrics.ghosts_removed.clone(),
        );
        registry.register(
            "index_feed_seq",
            "Highest feed seq applied",
            metrics.feed_seq.clone(),
        );
        registry.register(
            "index_last_event_applied_timestamp_seconds",
            "When the last feed event was applied (lag = now - this)",
            metrics.last_event_applied.clone(),
        );
        metrics
    }
}

/// What the indexer's tasks share.
pub struct Indexer {
    pool: PgPool,
    http: reqwest::Client,
    api_url: String,
    /// Highest feed position seen: pages are stored at the position read before their request.
    position: AtomicU64,
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
            position: AtomicU64::new(0),
            events_received: AtomicU64::new(0),
            last_event_at: Mutex::new(Instant::now()),
            resync_due: Notify::new(),
            metrics,
            concurrency: concurrency as usize,
            search: std::sync::OnceLock::new(),
        })
    }

    /// Keeps a Meilisearch index in step with the table too.
    pub fn use_search(&self, search: domain::meili::MeiliSearch) {
        let _ = self.search.set(search);
    }

    /// Pushes the current rows of `ids` to Meilisearch, if used; on failure a resync is
    /// marked, and the next clean scan reconciles the whole index.
    async fn sync_search(&self, ids: &[u64]) {
        let Some(search) = self.search.get() else {
            return;
        };
        if let Err(error) = search.sync_ids(&self.pool, ids).await {
            tracing::warn!(%error, "search index write failed");
            self.mark_resync("the search index missed a write").await;
        }
    }

    /// After a clean scan: makes the whole search index equal the table.
    async fn reconcile_search(&self) -> domain::Result<()> {
        let Some(search) = self.search.get() else {
            return Ok(());
        };
        let truth: Vec<CrmRecord> = domain::crm::stored_records(&self.pool)
            .await?
            .into_values()
            .collect();
        let report = search.verify(&truth).await?;
        let ids: Vec<u64> = report
            .missing
            .iter()
            .chain(&report.stale)
            .chain(&report.ghosts)
            .copied()
            .collect();
        search.sync_ids(&self.pool, &ids).await
    }

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

    /// Fetches one page, retrying failures and stalls with backoff and jitter. Returns the
    /// records and the feed position read before the successful request.
    pub async fn fetch_page(&self, page: i32) -> domain::Result<(u64, Vec<CrmRecord>)> {
        let url = format!("{}/customers?page={page}", self.api_url);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let position = self.position.load(Ordering::SeqCst);
            let outcome = async {
                let response = self
                    .http
                    .get(&url)
                    .send()
                    .await
                    .map_err(|error| error.to_string())?;
                if !response.status().is_success() {
                    return Err(format!("answered {}", response.status()));
                }
                response
                    .json::<Vec<CrmRecord>>()
                    .await
                    .map_err(|error| error.to_string())
            }
            .await;
            match outcome {
                Ok(records) => {
                    self.metrics.pages_fetched.inc();
                    return Ok((position, records));
                }
                Err(problem) if attempt < 10 => {
                    self.metrics.page_errors.inc();
                    let delay = domain::backoff::delay(
                        attempt,
                        Duration::from_millis(200),
                        Duration::from_secs(10),
                    );
                    tracing::debug!(page, attempt, %problem, "page failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(problem) => {
                    self.metrics.page_errors.inc();
                    return Err(domain::Error::Upstream(format!("page {page}: {problem}")));
                }
            }
        }
    }

    /// Reads every page (continuing the scan in progress, if any), stores them, and ends
    /// the scan. Returns whether it was clean.
    pub async fn scan(self: &Arc<Self>, stop: &Stop) -> domain::Result<bool> {
        let (scan_id, done) = domain::crm::begin_scan(&self.pool).await?;
        let resumed = !done.is_empty();
        let done: HashSet<i32> = done.into_iter().collect();
        let events_before = self.events_received.load(Ordering::SeqCst);
        let started = Instant::now();
        let progress = Progress::start(&self.pool, done.len()).await;
        let mut in_flight = tokio::task::JoinSet::new();
        let mut next_page = 1;
        let mut end: Option<i32> = None;
        let mut records_stored = 0usize;
        loop {
            while in_flight.len() < self.concurrency
                && end.is_none_or(|end| next_page < end)
                && !stop.requested()
            {
                let page = next_page;
                next_page += 1;
                if done.contains(&page) {
                    continue;
                }
                let indexer = Arc::clone(self);
                in_flight.spawn(async move { (page, indexer.fetch_page(page).await) });
            }
            let Some(joined) = in_flight.join_next().await else {
                break;
            };
            let (page, fetched) =
                joined.map_err(|error| domain::Error::Upstream(error.to_string()))?;
            let (position, records) = fetched?;
            if records.is_empty() {
                end = Some(end.map_or(page, |end| end.min(page)));
                continue;
            }
            domain::crm::store_page(&self.pool, scan_id, page, position, &records).await?;
            self.sync_search(&records.iter().map(|record| record.id).collect::<Vec<_>>())
                .await;
            records_stored += records.len();
            progress.page_done(records.len());
        }
        if stop.requested() {
            progress.finish("scan interrupted; it resumes at the next start");
            return Ok(false);
        }
        // Let events already on the wire arrive before judging the scan.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let unchanged = !resumed && self.events_received.load(Ordering::SeqCst) == events_before;
        let position = self.position.load(Ordering::SeqCst);
        let (clean, ghosts) =
            domain::crm::finish_scan(&self.pool, scan_id, unchanged, position).await?;
        if clean {
            self.reconcile_search().await?;
        }
        self.metrics.ghosts_removed.inc_by(ghosts);
        let outcome = if clean { "clean" } else { "dirty" };
        self.metrics
            .scans
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
        progress.finish(&format!(
            "scan {scan_id} done: {records_stored} records stored in {:.1} s; {}",
            started.elapsed().as_secs_f64(),
            if clean {
                format!("clean, the table is exact at seq {position} ({ghosts} ghosts removed)")
            } else {
                "the upstream changed meanwhile, another scan follows once it is quiet".to_owned()
            }
        ));
        Ok(clean)
    }

    /// Receives feed events and hands them to the applier; marks a resync after a
    /// reconnect (events may have been lost while disconnected).
    async fn follow_feed(
        self: Arc<Self>,
        url: String,
        events: mpsc::Sender<domain::crm::FeedEvent>,
    ) {
        let (items, mut received) = mpsc::channel(65_536);
        tokio::spawn(domain::crm::follow_feed(url, items));
        while let Some(item) = received.recv().await {
            match item {
                domain::crm::FeedItem::Connected { reconnected: true } => {
                    self.mark_resync("the feed reconnected").await;
                }
                domain::crm::FeedItem::Connected { reconnected: false } => {}
                domain::crm::FeedItem::Event(event) => {
                    self.events_received.fetch_add(1, Ordering::SeqCst);
                    *self.last_event_at.lock().expect("never poisoned") = Instant::now();
                    if events.send(event).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Applies feed events in batches, checking `seq` for gaps.
    async fn apply_events(self: Arc<Self>, mut events: mpsc::Receiver<domain::crm::FeedEvent>) {
        let mut expected: Option<u64> = None;
        let mut batch = Vec::with_capacity(1_000);
        while events.recv_many(&mut batch, 1_000).await > 0 {
            let mut changes: Vec<(u64, Change)> = Vec::with_capacity(batch.len());
            let mut gap = None;
            for event in batch.drain(..) {
                let version = match event.seq {
                    Some(seq) => {
                        match expected {
                            Some(next) if seq > next => {
                                gap = Some(format!("seq jumped from {} to {seq}", next - 1))
                            }
                            Some(next) if seq < next && seq == 1 => {
                                gap = Some("the upstream restarted its seq".into())
                            }
                            _ => {}
                        }
                        expected = Some(seq + 1);
                        seq
                    }
                    // A feed without seq: number events in arrival order.
                    None => self.position.load(Ordering::SeqCst) + 1,
                };
                self.position.fetch_max(version, Ordering::SeqCst);
                changes.push((version, event.change));
            }
            if let Some(why) = gap {
                self.metrics.gaps_detected.inc();
                self.mark_resync(&why).await;
            }
            let position = self.position.load(Ordering::SeqCst);
            let mut failures = 0;
            while let Err(error) = domain::crm::apply_changes(&self.pool, &changes, position).await
            {
                failures += 1;
                tracing::warn!(%error, "cannot apply feed events; retrying");
                tokio::time::sleep(domain::backoff::reconnect(failures)).await;
            }
            self.sync_search(
                &changes
                    .iter()
                    .map(|(_, change)| change.id())
                    .collect::<Vec<_>>(),
            )
            .await;
            self.metrics.events_applied.inc_by(changes.len() as u64);
            self.metrics
                .feed_seq
                .set(i64::try_from(position).unwrap_or(i64::MAX));
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs() as i64);
            self.metrics.last_event_applied.set(now);
        }
    }

    /// Waits until the feed has been silent for `quiet`, or `max_wait` passed.
    async fn wait_for_quiet(&self, quiet: Duration, max_wait: Duration, stop: &mut Stop) {
        let started = Instant::now();
        loop {
            let silent = self.last_event_at.lock().expect("never poisoned").elapsed();
            if silent >= quiet || started.elapsed() >= max_wait {
                return;
            }
            if !stop
                .sleep((quiet - silent).min(Duration::from_millis(500)))
                .await
            {
                return;
            }
        }
    }
}

/// Scan progress: a bar on a terminal, log lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    pages: AtomicU64,
    records: AtomicU64,
    started: Instant,
}

impl Progress {
    async fn start(pool: &PgPool, already_done: usize) -> Self {
        let stored = domain::customers::count(pool, Some(domain::customers::CustomerSource::Crm))
            .await
            .unwrap_or_default();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new((stored as u64).div_ceil(1_000).max(1));
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} scan {bar:30} {pos}/{len} pages  {msg}  ETA {eta}",
                )
                .expect("a valid template"),
            );
            bar.set_position(already_done as u64);
            bar
        });
        Self {
            bar,
            pages: AtomicU64::new(already_done as u64),
            records: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    fn page_done(&self, records: usize) {
        let pages = self.pages.fetch_add(1, Ordering::Relaxed) + 1;
        let records = self.records.fetch_add(records as u64, Ordering::Relaxed) + records as u64;
        let rate = records as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        match &self.bar {
            Some(bar) => {
                if pages > bar.length().unwrap_or(0) {
                    bar.set_length(pages + 1);
                }
                bar.set_position(pages);
                bar.set_message(format!("{rate:.0} records/s"));
            }
            None if pages.is_multiple_of(10) => {
                tracing::info!(
                    pages,
                    records,
                    records_per_second = rate as u64,
                    "scanning the CRM"
                );
            }
            None => {}
        }
    }

    fn finish(&self, message: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        tracing::info!("{message}");
    }
}

/// Runs the indexer until SIGTERM or ctrl-c.
pub async fn run(args: IndexArgs) -> anyhow::Result<()> {
    let pool = domain::db::connect_and_migrate(&args.database.database_url, 8).await?;
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
    if args.verify {
        return verify(&indexer, args.repair).await;
    }
    crate::admin::spawn(args.admin_addr, registry).await?;
    let stop = Stop::on_signal();
    run_indexer(
        indexer,
        args.crm_zmq_url,
        Duration::from_millis(args.quiet_ms),
        Duration::from_secs(args.max_resync_wait_secs),
        stop,
    )
    .await
}

/// The indexer's loop: follows the feed, and scans whenever a resync is due.
pub async fn run_indexer(
    indexer: Arc<Indexer>,
    feed_url: String,
    quiet: Duration,
    max_wait: Duration,
    mut stop: Stop,
) -> anyhow::Result<()> {
    let state = domain::crm::load_state(&indexer.pool).await?;
    indexer.position.store(state.last_seq, Ordering::SeqCst);
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
                () = stop.wait() => break,
            }
            continue;
        }
        if !first && state.scan_id.is_none() {
            indexer.wait_for_quiet(quiet, max_wait, &mut stop).await;
        }
        first = false;
        if let Err(error) = indexer.scan(&stop).await {
            tracing::warn!(%error, "scan failed; it resumes shortly");
            stop.sleep(domain::backoff::reconnect(2)).await;
        }
    }
    feed.abort();
    applier.abort();
    tracing::info!("indexer stopped");
    Ok(())
}

/// `--verify`: reads the whole upstream and compares; `--repair` fixes the differences.
async fn verify(indexer: &Arc<Indexer>, repair: bool) -> anyhow::Result<()> {
    let snapshot = read_everything(indexer).await?;
    let report = domain::crm::verify(&indexer.pool, &snapshot).await?;
    print_report("database", &report);
    let search_report = match indexer.search.get() {
        Some(search) => {
            let report = search.verify(&snapshot).await?;
            print_report("search index (Meilisearch)", &report);
            report
        }
        None => {
            println!("search index (PostgreSQL): the same table as the database");
            domain::crm::VerifyReport::default()
        }
    };
    if report.is_exact() && search_report.is_exact() {
        return Ok(());
    }
    if repair {
        let seq = domain::crm::load_state(&indexer.pool).await?.last_seq;
        domain::crm::repair(&indexer.pool, &snapshot, &report, seq).await?;
        let after = domain::crm::verify(&indexer.pool, &snapshot).await?;
        print_report("after repair", &after);
        let mut search_exact = true;
        if let Some(search) = indexer.search.get() {
            let ids: Vec<u64> = snapshot
                .iter()
                .map(|record| record.id)
                .chain(search_report.ghosts.iter().copied())
                .collect();
            search.sync_ids(&indexer.pool, &ids).await?;
            let after = search.verify(&snapshot).await?;
            print_report("search index after repair", &after);
            search_exact = after.is_exact();
        }
        if after.is_exact() && search_exact {
            return Ok(());
        }
    }
    std::process::exit(1);
}

fn print_report(what: &str, report: &domain::crm::VerifyReport) {
    let sample = |ids: &[u64]| {
        ids.iter()
            .take(5)
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "{what}: {} missing [{}], {} stale [{}], {} ghosts [{}]",
        report.missing.len(),
        sample(&report.missing),
        report.stale.len(),
        sample(&report.stale),
        report.ghosts.len(),
        sample(&report.ghosts),
    );
}

/// Every upstream record, read page by page until an empty page (concurrently).
pub async fn read_everything(indexer: &Arc<Indexer>) -> domain::Result<Vec<CrmRecord>> {
    let mut records: BTreeMap<u64, CrmRecord> = BTreeMap::new();
    let mut next_page = 1;
    let mut end: Option<i32> = None;
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        while in_flight.len() < indexer.concurrency && end.is_none_or(|end| next_page < end) {
            let (page, indexer) = (next_page, Arc::clone(indexer));
            next_page += 1;
            in_flight.spawn(async move { (page, indexer.fetch_page(page).await) });
        }
        let Some(joined) = in_flight.join_next().await else {
            break;
        };
        let (page, fetched) = joined.map_err(|error| domain::Error::Upstream(error.to_string()))?;
        let (_, page_records) = fetched?;
        if page_records.is_empty() {
            end = Some(end.map_or(page, |end| end.min(page)));
        }
        records.extend(page_records.into_iter().map(|record| (record.id, record)));
    }
    Ok(records.into_values().collect())
}
