//! Full scans of the paginated API (the backfill and every resync): pages fetched
//! concurrently with retries, each stored with the scan's progress, the scan judged clean
//! or dirty at the end; and the wait for a quiet upstream before a resync scan.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::crm::CrmRecord;
use sqlx::PgPool;

use super::metrics::OutcomeLabels;
use super::Indexer;
use crate::stop::Stop;

impl Indexer {
    /// Fetches one page, retrying failures and stalls with backoff and jitter. Returns the
    /// records and the feed position read before the successful request.
    pub async fn fetch_page(&self, page: i32) -> domain::Result<(u64, Vec<CrmRecord>)> {
        let url = format!("{}/customers?page={page}", self.api_url);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let position = self.clock.load(Ordering::SeqCst);
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
                    self.metrics.health.success();
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
        let mut records_fixed = 0u64;
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
            records_fixed +=
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
        let position = self.clock.load(Ordering::SeqCst);
        let (clean, ghosts) =
            domain::crm::finish_scan(&self.pool, scan_id, unchanged, position).await?;
        if clean {
            self.reconcile_search().await?;
            self.metrics.last_exact_proof.set(unix_now());
        }
        self.metrics.ghosts_removed.inc_by(ghosts);
        self.metrics.records_fixed.inc_by(records_fixed);
        let outcome = if clean { "clean" } else { "dirty" };
        self.metrics
            .scans
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
        progress.finish(&format!(
            "scan {scan_id} done: {records_stored} records read in {:.1} s, {records_fixed} \
             added or corrected; {}",
            started.elapsed().as_secs_f64(),
            if clean {
                format!(
                    "clean: content compared, the table is exact at clock {position} ({ghosts} \
                     ghosts removed)"
                )
            } else {
                "the upstream changed meanwhile, another scan follows once it is quiet".to_owned()
            }
        ));
        Ok(clean)
    }

    /// Waits until the feed has been silent for `quiet`, or `max_wait` passed.
    pub(super) async fn wait_for_quiet(
        &self,
        quiet: Duration,
        max_wait: Duration,
        stop: &mut Stop,
    ) {
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

/// Seconds since the Unix epoch, for timestamp gauges.
pub(super) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
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
