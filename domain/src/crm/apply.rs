//! Versioned writes: upserts that never overwrite a newer row or resurrect a record
//! deleted at a later version, and deletes that leave tombstones.

use std::collections::HashMap;

use sqlx::{PgConnection, PgPool};

use super::{Change, CrmRecord, CRM};
use crate::customers::CustomerSource;
use crate::Result;

/// Applies changes, each with its version, in one transaction; records the feed position.
/// Several changes to one id collapse to the newest.
pub async fn apply_changes(pool: &PgPool, changes: &[(u64, Change)], last_seq: u64) -> Result<()> {
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
    upsert_records(&mut transaction, &upserts, None).await?;
    delete_records(&mut transaction, &deletes).await?;
    sqlx::query("UPDATE sync_state SET last_seq = GREATEST(last_seq, $2), updated_at = now() WHERE source = $1")
        .bind(CRM)
        .bind(i64::try_from(last_seq).unwrap_or(i64::MAX))
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await?;
    Ok(())
}

/// Upserts records at their versions unless the row is newer or the record was deleted at
/// a later version; marks every given record as seen by `scan` (when scanning).
pub(super) async fn upsert_records(
    connection: &mut PgConnection,
    records: &[(u64, &CrmRecord)],
    scan: Option<i64>,
) -> Result<()> {
    if records.is_empty() {
        return Ok(());
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
    sqlx::query(
        "INSERT INTO customers AS c (source, external_id, first_name, last_name, emails, source_version, seen_in_scan)
         SELECT $1, r.id, r.first_name, r.last_name,
                ARRAY(SELECT jsonb_array_elements_text(r.emails::jsonb)), r.version, $7
         FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[])
              AS r(id, version, first_name, last_name, emails)
         WHERE NOT EXISTS (SELECT 1 FROM customer_tombstones t
                           WHERE t.source = $1 AND t.external_id = r.id AND t.version >= r.version)
         ON CONFLICT (source, external_id) DO UPDATE SET
             first_name = CASE WHEN c.source_version IS NULL OR c.source_version < EXCLUDED.source_version
                               THEN EXCLUDED.first_name ELSE c.first_name END,
             last_name = CASE WHEN c.source_version IS NULL OR c.source_version < EXCLUDED.source_version
                              THEN EXCLUDED.last_name ELSE c.last_name END,
             emails = CASE WHEN c.source_version IS NULL OR c.source_version < EXCLUDED.source_version
                           THEN EXCLUDED.emails ELSE c.emails END,
             updated_at = CASE WHEN (c.first_name, c.last_name, c.emails)
                                    IS DISTINCT FROM (EXCLUDED.first_name, EXCLUDED.last_name, EXCLUDED.emails)
                                    AND (c.source_version IS NULL OR c.source_version < EXCLUDED.source_version)
                               THEN now() ELSE c.updated_at END,
             source_version = GREATEST(c.source_version, EXCLUDED.source_version),
             seen_in_scan = COALESCE(EXCLUDED.seen_in_scan, c.seen_in_scan)",
    )
    .bind(CustomerSource::Crm.as_str())
    .bind(&ids)
    .bind(&versions)
    .bind(&first_names)
    .bind(&last_names)
    .bind(&emails)
    .bind(scan)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Deletes records at their versions (unless the row is newer) and leaves tombstones.
async fn delete_records(connection: &mut PgConnection, deletes: &[(u64, u64)]) -> Result<()> {
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
         WHERE c.source = $1 AND c.external_id = d.id AND COALESCE(c.source_version, 0) < d.version",
    )
    .bind(CRM)
    .bind(&ids)
    .bind(&versions)
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
