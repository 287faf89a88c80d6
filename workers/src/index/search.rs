//! Keeping Meilisearch, when used (`MEILI_URL`), a projection of the table: its settings
//! applied at start; after every write the current rows of the touched ids pushed (retried,
//! a resync marked if it still fails); after a clean scan the whole index reconciled with
//! the table; and `--reindex`, a rebuild from PostgreSQL with progress.

use std::io::IsTerminal;
use std::time::Duration;

use domain::crm::CrmRecord;
use domain::meili::MeiliSearch;
use sqlx::PgPool;

use super::Indexer;

/// Attempts at a Meilisearch write before it counts as failed.
const WRITE_ATTEMPTS: u32 = 3;
/// Attempts at reaching Meilisearch at start (about a minute with the backoff), so an
/// indexer started beside a Meilisearch still booting waits for it.
const START_ATTEMPTS: u32 = 12;

/// Creates the index if needed and applies the original's settings, retrying while
/// Meilisearch is unreachable; then an error naming `MEILI_URL`.
pub(super) async fn prepare(search: MeiliSearch) -> anyhow::Result<MeiliSearch> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match search.prepare().await {
            Ok(()) => return Ok(search),
            Err(error) if attempt < START_ATTEMPTS => {
                tracing::warn!(%error, attempt, "Meilisearch not ready; retrying");
                tokio::time::sleep(domain::backoff::reconnect(attempt)).await;
            }
            Err(error) => {
                anyhow::bail!("Meilisearch (MEILI_URL) cannot be prepared: {error}")
            }
        }
    }
}

/// `--reindex`: rebuilds the index from PostgreSQL and swaps it in, with a progress bar on
/// a terminal (log lines otherwise).
pub(super) async fn reindex(search: &MeiliSearch, pool: &PgPool) -> anyhow::Result<()> {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} reindex {bar:30} {pos}/{len} documents  ETA {eta}",
            )
            .expect("a valid template"),
        );
        bar
    });
    let started = std::time::Instant::now();
    let progress = |written: usize, total: usize| match &bar {
        Some(bar) => {
            bar.set_length(total as u64);
            bar.set_position(written as u64);
        }
        None => tracing::info!(written, total, "reindexing Meilisearch"),
    };
    let documents = search.reindex(pool, &progress).await?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    println!(
        "reindex done: {documents} documents in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

impl Indexer {
    /// Keeps a Meilisearch index in step with the table too.
    pub fn use_search(&self, search: MeiliSearch) {
        let _ = self.search.set(search);
    }

    /// Pushes the current rows of `ids` to Meilisearch, if used, retrying; if it still
    /// fails a resync is marked, and the next clean scan reconciles the whole index.
    pub(super) async fn sync_search(&self, ids: &[u64]) {
        let Some(search) = self.search.get() else {
            return;
        };
        for attempt in 1..=WRITE_ATTEMPTS {
            match search.sync_ids(&self.pool, ids).await {
                Ok(()) => return,
                Err(error) if attempt < WRITE_ATTEMPTS => {
                    tracing::warn!(%error, attempt, "search index write failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200) * attempt).await;
                }
                Err(error) => {
                    self.metrics.health.error(&error);
                    tracing::warn!(%error, "search index write failed");
                }
            }
        }
        self.mark_resync("the search index missed a write").await;
    }

    /// After a clean scan: makes the whole search index equal the table.
    pub(super) async fn reconcile_search(&self) -> domain::Result<()> {
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
}
