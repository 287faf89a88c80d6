//! The indexer's state (`sync_state`, row `CRM`): the clock, whether a resync is due, the
//! scan in progress with its pages (so a restarted indexer resumes it), and when a clean
//! scan last proved the table exact.

use sqlx::PgPool;

use super::apply::{advance_clock, upsert_records, Origin};
use super::{CrmRecord, CRM};
use crate::Result;

/// Where the indexer stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncState {
    /// The indexer's clock: the highest version written (the feed's `seq` when it has one).
    pub last_seq: u64,
    /// The scan in progress, if any.
    pub scan_id: Option<i64>,
    /// Pages of that scan already stored.
    pub scan_pages_done: Vec<i32>,
    /// Whether events may have been missed since the last clean scan.
    pub resync_needed: bool,
    /// Clock value of the last clean scan.
    pub consistent_at_seq: Option<u64>,
    /// When the last clean scan proved the table equal to the upstream.
    pub proved_exact_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Reads the indexer's state.
pub async fn load_state(pool: &PgPool) -> Result<SyncState> {
    #[derive(sqlx::FromRow)]
    struct Row {
        last_seq: i64,
        scan_id: Option<i64>,
        scan_pages_done: Vec<i32>,
        resync_needed: bool,
        consistent_at_seq: Option<i64>,
        proved_exact_at: Option<chrono::DateTime<chrono::Utc>>,
    }
    let row: Row = sqlx::query_as(
        "SELECT last_seq, scan_id, scan_pages_done, resync_needed, consistent_at_seq,
                proved_exact_at
             FROM sync_state WHERE source = $1",
    )
    .bind(CRM)
    .fetch_one(pool)
    .await?;
    Ok(SyncState {
        last_seq: u64::try_from(row.last_seq).unwrap_or_default(),
        scan_id: row.scan_id,
        scan_pages_done: row.scan_pages_done,
        resync_needed: row.resync_needed,
        consistent_at_seq: row
            .consistent_at_seq
            .and_then(|seq| u64::try_from(seq).ok()),
        proved_exact_at: row.proved_exact_at,
    })
}

/// Records that events may have been missed: a resync is due, and the scan in progress
/// (if any) can no longer be a clean snapshot.
pub async fn mark_resync_needed(pool: &PgPool) -> Result<()> {
    sqlx::query("UPDATE sync_state SET resync_needed = true, scan_dirty = true, updated_at = now() WHERE source = $1")
        .bind(CRM)
        .execute(pool)
        .await?;
    Ok(())
}

/// The scan to continue, or a new one: `(scan id, pages already stored)`.
pub async fn begin_scan(pool: &PgPool) -> Result<(i64, Vec<i32>)> {
    let state = load_state(pool).await?;
    if let Some(scan_id) = state.scan_id {
        return Ok((scan_id, state.scan_pages_done));
    }
    let scan_id: i64 = sqlx::query_scalar(
        "UPDATE sync_state SET scan_id = nextval('crm_scan_id_seq'), scan_pages_done = '{}',
                               scan_dirty = false, updated_at = now()
         WHERE source = $1 RETURNING scan_id",
    )
    .bind(CRM)
    .fetch_one(pool)
    .await?;
    Ok((scan_id, Vec::new()))
}

/// Stores one page of a scan, read at clock `version`, and records the page as done (one
/// transaction, so a restart resumes exactly after it). Returns how many records the page
/// added or corrected: content that no event had brought.
pub async fn store_page(
    pool: &PgPool,
    scan_id: i64,
    page: i32,
    version: u64,
    records: &[CrmRecord],
) -> Result<u64> {
    let versioned: Vec<(u64, &CrmRecord)> =
        records.iter().map(|record| (version, record)).collect();
    let mut transaction = pool.begin().await?;
    let fixed = upsert_records(&mut transaction, &versioned, Some(scan_id), Origin::Read).await?;
    advance_clock(&mut transaction, version).await?;
    sqlx::query(
        "UPDATE sync_state SET scan_pages_done = array_append(scan_pages_done, $2), updated_at = now()
         WHERE source = $1 AND scan_id = $3",
    )
    .bind(CRM)
    .bind(page)
    .bind(scan_id)
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(fixed)
}

/// Ends a scan. A clean one (nothing changed upstream while it ran, nothing missed) is an
/// exact snapshot at feed position `seq`: rows it did not see are deleted (and
/// tombstoned), and the table is marked consistent. Returns whether the scan counted as
/// clean (a resync marked during it makes it dirty) and how many ghosts it removed.
pub async fn finish_scan(
    pool: &PgPool,
    scan_id: i64,
    clean: bool,
    seq: u64,
) -> Result<(bool, u64)> {
    let mut transaction = pool.begin().await?;
    let dirty: bool =
        sqlx::query_scalar("SELECT scan_dirty FROM sync_state WHERE source = $1 FOR UPDATE")
            .bind(CRM)
            .fetch_one(&mut *transaction)
            .await?;
    let clean = clean && !dirty;
    let mut ghosts = 0;
    let seq = i64::try_from(seq).unwrap_or(i64::MAX);
    if clean {
        let removed: Vec<String> = sqlx::query_scalar(
            "DELETE FROM customers WHERE source = $1 AND seen_in_scan IS DISTINCT FROM $2 RETURNING external_id",
        )
        .bind(CRM)
        .bind(scan_id)
        .fetch_all(&mut *transaction)
        .await?;
        ghosts = removed.len() as u64;
        sqlx::query(
            "INSERT INTO customer_tombstones (source, external_id, version)
             SELECT $1, id, $3 FROM unnest($2::text[]) AS id
             ON CONFLICT (source, external_id) DO UPDATE
             SET version = GREATEST(customer_tombstones.version, EXCLUDED.version)",
        )
        .bind(CRM)
        .bind(&removed)
        .bind(seq)
        .execute(&mut *transaction)
        .await?;
    }
    sqlx::query(
        "UPDATE sync_state SET scan_id = NULL, scan_pages_done = '{}', scan_dirty = false,
             resync_needed = resync_needed AND NOT $2,
             consistent_at_seq = CASE WHEN $2 THEN $3 ELSE consistent_at_seq END,
             proved_exact_at = CASE WHEN $2 THEN now() ELSE proved_exact_at END,
             updated_at = now()
         WHERE source = $1",
    )
    .bind(CRM)
    .bind(clean)
    .bind(seq)
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok((clean, ghosts))
}
