//! Keeping Meilisearch, when used, a projection of the table: after every write the
//! current rows of the touched ids are pushed; after a clean scan the whole index is
//! reconciled with the table.

use domain::crm::CrmRecord;

use super::Indexer;

impl Indexer {
    /// Keeps a Meilisearch index in step with the table too.
    pub fn use_search(&self, search: domain::meili::MeiliSearch) {
        let _ = self.search.set(search);
    }

    /// Pushes the current rows of `ids` to Meilisearch, if used; on failure a resync is
    /// marked, and the next clean scan reconciles the whole index.
    pub(super) async fn sync_search(&self, ids: &[u64]) {
        let Some(search) = self.search.get() else {
            return;
        };
        if let Err(error) = search.sync_ids(&self.pool, ids).await {
            tracing::warn!(%error, "search index write failed");
            self.mark_resync("the search index missed a write").await;
        }
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
