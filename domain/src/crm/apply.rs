//! Versioned writes: upserts that never overwrite a newer row or resurrect a record
//! deleted at a later version, and deletes that leave tombstones.
//!
//! Versions come from the indexer's clock (see `workers::index`), which every feed event
//! advances. Two kinds of write compete: an *event* at version V changes what is older than
//! V; a *read* of the upstream (a page, a `--verify` snapshot) taken at clock P reflects every
//! event received before it, so it also replaces what was written at P itself. A later
//! event (V > P) still beats the read.

use std::collections::HashMap;

use sqlx::{PgConnection, PgPool};

use super::{Change, CrmRecord, CRM};
use crate::customers::CustomerSource;
use crate::Result;

/// Where a write comes from, which decides who wins at the same version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// A feed event: wins over strictly older versions.
    Event,
    /// A read of the upstream at a clock value: wins over versions up to and including it.
    Read,
}

/// What applying a batch of feed events found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Records created or updated although the feed had deleted them: the upstream
    /// re-created ids, as the original does when it restarts (a new epoch).
    pub recreated: u64,
}

/// Applies feed events, each with its version, in one transaction; records the clock.
/// Several changes to one id collapse to the newest.
pub async fn apply_changes(
    pool: &PgPool,
    changes: &[(u64, Change)],
    clock: u64,
) -> Result<Applied> {
    let mut newest: HashMap<u64, (u64, &Change)> = HashMap::new();
    for (version, change) in changes {
        let entry = newest.entry(change.id()).or_insert((*version, change));
        if *version >= entry.0 {
            *entry = (*version, change);
        }
    }
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    for (version, change) in newest.into_values() {
        match change {
            Change::Upsert(record) => upserts.push((version, record)),
            Change::Delete(id) => deletes.push((version, *id)),
        }
    }
    let mut transaction = pool.begin().await?;
    let recreated: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM customer_tombstones WHERE source = $1 AND external_id = ANY($2)",
    )
    .bind(CRM)
    .bind(
        upserts
            .iter()
            .map(|(_, record)| record.id.to_string())
            .collect::<Vec<_>>(),
    )
    .fetch_one(&mut *transaction)
    .await?;
    upsert_records(&mut transaction, &upserts, None, Origin::Event).await?;
    delete_records(&mut transaction, &deletes, Origin::Event).await?;
    advance_clock(&mut transaction, clock).await?;
    transaction.commit().await?;
    Ok(Applied {
        recreated: u64::try_from(recreated).unwrap_or_default(),
    })
}

/// Records that the clock reached `clock` (it never goes back).
pub(super) async fn advance_clock(connection: &mut PgConnection, clock: u64) -> Result<()> {
    sqlx::query("UPDATE sync_state SET last_seq = GREATEST(last_seq, $2), updated_at = now() WHERE source = $1")
        .bind(CRM)
        .bind(i64::try_from(clock).unwrap_or(i64::MAX))
        .execute(connection)
        .await?;
    Ok(())
}

/// Upserts records at their versions unless the row (or a tombstone) is newer, as
/// `origin` decides; marks every given record as seen by `scan` (when scanning). Returns
/// how many rows it inserted or whose content it changed.
pub(super) async fn upsert_records(
    connection: &mut PgConnection,
    records: &[(u64, &CrmRecord)],
    scan: Option<i64>,
    origin: Origin,
) -> Result<u64> {
    if records.is_empty() {
        return Ok(0);
    }
    let ids: Vec<String> = records
        .iter()
        .map(|(_, record)| record.id.to_string())
        .collect();
    let versions: Vec<i64> = records
        .iter()
        .map(|(version, _)| i64::try_from(*version).unwrap_or(i64::MAX))
        .collect();
    let first_names: Vec<Option<&str>> = records
        .iter()
        .map(|(_, r)| r.first_name.as_deref())
        .collect();
    let last_names: Vec<Option<&str>> = records
        .iter()
        .map(|(_, r)| r.last_name.as_deref())
        .collect();
    let emails: Vec<String> = records
        .iter()
        .map(|(_, r)| serde_json::to_string(&r.email).expect("strings serialize"))
        .collect();
    // `crm_write_wins` (migrations): whether a write at a version replaces a row or a
    // tombstone at another, for an event or a read.
    let changed: Vec<bool> = sqlx::query_scalar(
        "INSERT INTO customers AS c (source, external_id, first_name, last_name, emails, source_version, seen_in_scan)
         SELECT $1, r.id, r.first_name, r.last_name,
                ARRAY(SELECT jsonb_array_elements_text(r.emails::jsonb)), r.version, $7
         FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[])
              AS r(id, version, first_name, last_name, emails)
         WHERE NOT EXISTS (SELECT 1 FROM customer_tombstones t
                           WHERE t.source = $1 AND t.external_id = r.id
                             AND NOT crm_write_wins(t.version, r.version, $8))
         ON CONFLICT (source, external_id) DO UPDATE SET
             first_name = CASE WHEN crm_write_wins(c.source_version, EXCLUDED.source_version, $8)
                               THEN EXCLUDED.first_name ELSE c.first_name END,
             last_name = CASE WHEN crm_write_wins(c.source_version, EXCLUDED.source_version, $8)
                              THEN EXCLUDED.last_name ELSE c.last_name END,
             emails = CASE WHEN crm_write_wins(c.source_version, EXCLUDED.source_version, $8)
                           THEN EXCLUDED.emails ELSE c.emails END,
             updated_at = CASE WHEN crm_write_wins(c.source_version, EXCLUDED.source_version, $8)
                                    AND (c.first_name, c.last_name, c.emails)
                                        IS DISTINCT FROM (EXCLUDED.first_name, EXCLUDED.last_name, EXCLUDED.emails)
                               THEN now() ELSE c.updated_at END,
             source_version = GREATEST(c.source_version, EXCLUDED.source_version),
             seen_in_scan = COALESCE(EXCLUDED.seen_in_scan, c.seen_in_scan)
         RETURNING c.updated_at = now()",
    )
    .bind(CustomerSource::Crm.as_str())
    .bind(&ids)
    .bind(&versions)
    .bind(&first_names)
    .bind(&last_names)
    .bind(&emails)
    .bind(scan)
    .bind(origin == Origin::Read)
    .fetch_all(&mut *connection)
    .await?;
    Ok(changed.into_iter().filter(|changed| *changed).count() as u64)
}

/// Deletes records at their versions (unless the row is newer, as `origin` decides) and
/// leaves tombstones.
pub(super) async fn delete_records(
    connection: &mut PgConnection,
    deletes: &[(u64, u64)],
    origin: Origin,
) -> Result<()> {
    if deletes.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = deletes.iter().map(|(_, id)| id.to_string()).collect();
    let versions: Vec<i64> = deletes
        .iter()
        .map(|(version, _)| i64::try_from(*version).unwrap_or(i64::MAX))
        .collect();
    sqlx::query(
        "DELETE FROM customers c USING unnest($2::text[], $3::bigint[]) AS d(id, version)
         WHERE c.source = $1 AND c.external_id = d.id
           AND crm_write_wins(c.source_version, d.version, $4)",
    )
    .bind(CRM)
    .bind(&ids)
    .bind(&versions)
    .bind(origin == Origin::Read)
    .execute(&mut *connection)
    .await?;
    sqlx::query(
        "INSERT INTO customer_tombstones (source, external_id, version)
         SELECT $1, d.id, d.version FROM unnest($2::text[], $3::bigint[]) AS d(id, version)
         ON CONFLICT (source, external_id) DO UPDATE
         SET version = GREATEST(customer_tombstones.version, EXCLUDED.version)",
    )
    .bind(CRM)
    .bind(&ids)
    .bind(&versions)
    .execute(&mut *connection)
    .await?;
    Ok(())
}
