//! The Meilisearch search backend, used when `MEILI_URL` is set: index `customers` (primary
//! key `id`) holding the CRM's customers with the original CRM's index settings, kept
//! as a projection of PostgreSQL (after every write the current rows of the touched ids are
//! pushed, so the index never holds data the database rejected as stale). Every task is
//! awaited and its failure surfaced. `reindex` builds a new index and swaps it in, so
//! searches never see a half-built index.

use std::collections::HashMap;
use std::time::Duration;

use meilisearch_sdk::client::{Client, SwapIndexes};
use meilisearch_sdk::settings::{MinWordSizeForTypos, Settings, TypoToleranceSettings};
use meilisearch_sdk::task_info::TaskInfo;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::crm::CrmRecord;
use crate::{Error, Result};

/// The index searches read.
pub const INDEX: &str = "customers";
/// Documents per write request.
const BATCH: usize = 10_000;
/// How long a task may take before we call it failed.
const TASK_TIMEOUT: Duration = Duration::from_secs(300);

/// A customer as indexed: null names become `""`, and `_searchableName` is "first last".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeiliDocument {
    /// CRM id.
    pub id: u64,
    /// First name or `""`.
    #[serde(rename = "firstName")]
    pub first_name: String,
    /// Last name or `""`.
    #[serde(rename = "lastName")]
    pub last_name: String,
    /// Emails.
    pub email: Vec<String>,
    /// "first last", trimmed.
    #[serde(rename = "_searchableName", default)]
    pub searchable_name: String,
}

impl MeiliDocument {
    /// The document of a record; `None` for records with no name and no email, which the
    /// index leaves out.
    pub fn from_record(record: &CrmRecord) -> Option<Self> {
        let first = record.first_name.clone().unwrap_or_default();
        let last = record.last_name.clone().unwrap_or_default();
        if first.is_empty() && last.is_empty() && record.email.is_empty() {
            return None;
        }
        Some(Self {
            id: record.id,
            searchable_name: format!("{first} {last}").trim().to_owned(),
            first_name: first,
            last_name: last,
            email: record.email.clone(),
        })
    }
}

/// The original CRM's index settings (with its setup guide's sortable `id` and `sort`
/// first, which the CRM apps' search route relies on; without a sort, ranking is by
/// relevance), plus one-typo words from 3 letters so "jon smth" finds John Smith (see
/// README, Compatibility notes: CRM).
pub fn settings() -> Settings {
    Settings::new()
        .with_searchable_attributes(["firstName", "lastName", "_searchableName", "email"])
        .with_ranking_rules([
            "sort",
            "words",
            "typo",
            "proximity",
            "attribute",
            "exactness",
        ])
        .with_sortable_attributes(["id"])
        .with_displayed_attributes(["id", "firstName", "lastName", "email"])
        .with_typo_tolerance(TypoToleranceSettings {
            min_word_size_for_typos: Some(MinWordSizeForTypos {
                one_typo: Some(3),
                two_typos: None,
            }),
            ..TypoToleranceSettings::default()
        })
}

fn search_error(error: impl std::fmt::Display) -> Error {
    Error::Search(error.to_string())
}

/// A connection to Meilisearch and the index searches read.
#[derive(Clone)]
pub struct MeiliSearch {
    client: Client,
    index: String,
}

impl std::fmt::Debug for MeiliSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeiliSearch")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl MeiliSearch {
    /// A client for `url` working on index `index` (the key, if any, is sent as the API
    /// key).
    pub fn with_index(url: &str, key: Option<&str>, index: &str) -> Result<Self> {
        Ok(Self {
            client: Client::new(url, key).map_err(search_error)?,
            index: index.to_owned(),
        })
    }

    async fn wait(&self, task: TaskInfo) -> Result<()> {
        let task = task
            .wait_for_completion(
                &self.client,
                Some(Duration::from_millis(50)),
                Some(TASK_TIMEOUT),
            )
            .await
            .map_err(search_error)?;
        if task.is_failure() {
            return Err(search_error(format!(
                "task failed: {:?}",
                task.unwrap_failure()
            )));
        }
        Ok(())
    }

    async fn prepare_index(&self, uid: &str) -> Result<()> {
        if self.client.get_raw_index(uid).await.is_err() {
            let created = self
                .client
                .create_index(uid, Some("id"))
                .await
                .map_err(search_error)?;
            self.wait(created).await?;
        }
        let index = self.client.index(uid);
        let task = index
            .set_settings(&settings())
            .await
            .map_err(search_error)?;
        self.wait(task).await
    }

    /// The settings the index has now (tests compare them with [`settings`]).
    pub async fn settings_in_use(&self) -> Result<Settings> {
        self.client
            .index(&self.index)
            .get_settings()
            .await
            .map_err(search_error)
    }

    /// Deletes the index (tests clean up with it).
    pub async fn delete_index(&self) -> Result<()> {
        let task = self
            .client
            .index(&self.index)
            .delete()
            .await
            .map_err(search_error)?;
        self.wait(task).await
    }

    /// Creates the index if needed and applies the settings.
    pub async fn prepare(&self) -> Result<()> {
        self.prepare_index(&self.index).await
    }

    /// Adds or replaces `documents` and deletes `deletions` in index `uid`, batch by batch,
    /// each task awaited; `progress` hears how many documents are written so far.
    async fn write(
        &self,
        uid: &str,
        documents: &[MeiliDocument],
        deletions: &[u64],
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<()> {
        let index = self.client.index(uid);
        let mut written = 0;
        for batch in documents.chunks(BATCH) {
            let task = index
                .add_or_replace(batch, Some("id"))
                .await
                .map_err(search_error)?;
            self.wait(task).await?;
            written += batch.len();
            progress(written);
        }
        for batch in deletions.chunks(BATCH) {
            let task = index.delete_documents(batch).await.map_err(search_error)?;
            self.wait(task).await?;
        }
        Ok(())
    }

    /// Pushes the current database state of these CRM ids: indexable rows are added or
    /// replaced, the others (deleted, or with nothing to search) removed.
    pub async fn sync_ids(&self, pool: &PgPool, ids: &[u64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let stored = crate::crm::stored_records_with_ids(pool, ids).await?;
        let mut documents = Vec::new();
        let mut deletions = Vec::new();
        for id in ids {
            match stored.get(id).and_then(MeiliDocument::from_record) {
                Some(document) => documents.push(document),
                None => deletions.push(*id),
            }
        }
        self.write(&self.index, &documents, &deletions, &|_| {})
            .await
    }

    /// Ids of the best `limit` matches, and the estimated number of hits.
    pub async fn search(&self, query: &str, limit: usize) -> Result<(Vec<u64>, i64)> {
        let index = self.client.index(&self.index);
        let results = index
            .search()
            .with_query(query)
            .with_limit(limit)
            .execute::<MeiliDocument>()
            .await
            .map_err(search_error)?;
        let total = results
            .estimated_total_hits
            .or(results.total_hits)
            .unwrap_or(results.hits.len());
        Ok((
            results.hits.into_iter().map(|hit| hit.result.id).collect(),
            total as i64,
        ))
    }

    /// Page `page` (1-based) of the CRM apps' search: the documents matching `query`
    /// (every document when it is empty), id descending, `page_size` a page.
    pub async fn crm_page(
        &self,
        query: &str,
        page: u64,
        page_size: u64,
    ) -> Result<Vec<MeiliDocument>> {
        let index = self.client.index(&self.index);
        let offset = page.saturating_sub(1).saturating_mul(page_size);
        let results = index
            .search()
            .with_query(query)
            .with_sort(&["id:desc"])
            .with_offset(usize::try_from(offset).unwrap_or(usize::MAX))
            .with_limit(usize::try_from(page_size).unwrap_or(usize::MAX))
            .execute::<MeiliDocument>()
            .await
            .map_err(search_error)?;
        Ok(results.hits.into_iter().map(|hit| hit.result).collect())
    }

    /// Every document in the index.
    pub async fn all_documents(&self) -> Result<HashMap<u64, MeiliDocument>> {
        let index = self.client.index(&self.index);
        let mut documents = HashMap::new();
        let mut offset = 0;
        loop {
            let page = meilisearch_sdk::documents::DocumentsQuery::new(&index)
                .with_offset(offset)
                .with_limit(BATCH)
                .execute::<MeiliDocument>()
                .await
                .map_err(search_error)?;
            let received = page.results.len();
            documents.extend(
                page.results
                    .into_iter()
                    .map(|document| (document.id, document)),
            );
            offset += received;
            if received < BATCH {
                return Ok(documents);
            }
        }
    }

    /// Compares the index with an upstream snapshot (missing, stale, ghosts).
    pub async fn verify(&self, snapshot: &[CrmRecord]) -> Result<crate::crm::VerifyReport> {
        let mut indexed = self.all_documents().await?;
        let mut report = crate::crm::VerifyReport::default();
        for document in snapshot.iter().filter_map(MeiliDocument::from_record) {
            match indexed.remove(&document.id) {
                None => report.missing.push(document.id),
                Some(mine) if mine != document => report.stale.push(document.id),
                Some(_) => {}
            }
        }
        report.ghosts = indexed.into_keys().collect();
        report.missing.sort_unstable();
        report.stale.sort_unstable();
        report.ghosts.sort_unstable();
        Ok(report)
    }

    /// Rebuilds the index from PostgreSQL into a new index, swaps it in, and deletes the
    /// old one: searches keep answering from a complete index throughout. `progress` hears
    /// `(documents written, documents in all)` after each batch. Returns how many documents
    /// the new index holds.
    pub async fn reindex(
        &self,
        pool: &PgPool,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<usize> {
        let fresh = format!(
            "{}_{}",
            self.index,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_millis())
        );
        self.prepare_index(&fresh).await?;
        self.prepare().await?;
        let documents: Vec<MeiliDocument> = crate::crm::stored_records(pool)
            .await?
            .values()
            .filter_map(MeiliDocument::from_record)
            .collect();
        let total = documents.len();
        progress(0, total);
        self.write(&fresh, &documents, &[], &|written| progress(written, total))
            .await?;
        let swap = SwapIndexes {
            indexes: (self.index.clone(), fresh.clone()),
            rename: None,
        };
        let task = self
            .client
            .swap_indexes([&swap])
            .await
            .map_err(search_error)?;
        self.wait(task).await?;
        // After the swap, `fresh` names the old index.
        let task = self
            .client
            .index(&fresh)
            .delete()
            .await
            .map_err(search_error)?;
        self.wait(task).await?;
        Ok(documents.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_records_are_left_out_and_null_names_become_empty() {
        let record = |first: Option<&str>, last: Option<&str>, email: &[&str]| CrmRecord {
            email: email.iter().map(|e| e.to_string()).collect(),
            first_name: first.map(str::to_owned),
            id: 1,
            last_name: last.map(str::to_owned),
        };
        assert!(MeiliDocument::from_record(&record(None, None, &[])).is_none());
        let partial = MeiliDocument::from_record(&record(None, Some("Smith"), &["s@x.y"])).unwrap();
        assert_eq!(partial.first_name, "");
        assert_eq!(partial.searchable_name, "Smith");
        let full =
            MeiliDocument::from_record(&record(Some("John"), Some("Smith"), &["j@x.y"])).unwrap();
        assert_eq!(full.searchable_name, "John Smith");
        let json = serde_json::to_value(&full).unwrap();
        assert_eq!(json["_searchableName"], "John Smith");
        assert_eq!(json["firstName"], "John");
    }

    #[test]
    fn settings_follow_the_contract() {
        let value = serde_json::to_value(settings()).unwrap();
        assert_eq!(
            value["searchableAttributes"],
            serde_json::json!(["firstName", "lastName", "_searchableName", "email"])
        );
        assert_eq!(
            value["rankingRules"],
            serde_json::json!([
                "sort",
                "words",
                "typo",
                "proximity",
                "attribute",
                "exactness"
            ])
        );
        assert_eq!(value["sortableAttributes"], serde_json::json!(["id"]));
        assert_eq!(
            value["displayedAttributes"],
            serde_json::json!(["id", "firstName", "lastName", "email"])
        );
        assert_eq!(value["typoTolerance"]["minWordSizeForTypos"]["oneTypo"], 3);
    }
}
