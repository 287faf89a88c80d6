//! Comparing the stored records with an upstream snapshot, and repairing the differences.

use std::collections::HashMap;

use sqlx::PgPool;

use super::{apply_changes, stored_records, Change, CrmRecord, CRM};
use crate::Result;

/// How the stored CRM records differ from an upstream snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Upstream records absent here.
    pub missing: Vec<u64>,
    /// Records here whose content differs from upstream.
    pub stale: Vec<u64>,
    /// Records here that upstream does not have.
    pub ghosts: Vec<u64>,
}

impl VerifyReport {
    /// Whether the stored records equal the snapshot.
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.stale.is_empty() && self.ghosts.is_empty()
    }
}

/// Compares the stored records with an upstream snapshot.
pub async fn verify(pool: &PgPool, snapshot: &[CrmRecord]) -> Result<VerifyReport> {
    let mut stored = stored_records(pool).await?;
    let mut report = VerifyReport::default();
    for record in snapshot {
        match stored.remove(&record.id) {
            None => report.missing.push(record.id),
            Some(mine) if &mine != record => report.stale.push(record.id),
            Some(_) => {}
        }
    }
    report.ghosts = stored.into_keys().collect();
    report.missing.sort_unstable();
    report.stale.sort_unstable();
    report.ghosts.sort_unstable();
    Ok(report)
}

/// Makes the stored records equal the snapshot (read at feed position `seq`).
pub async fn repair(
    pool: &PgPool,
    snapshot: &[CrmRecord],
    report: &VerifyReport,
    seq: u64,
) -> Result<()> {
    let wanted: HashMap<u64, &CrmRecord> =
        snapshot.iter().map(|record| (record.id, record)).collect();
    let version = seq + 1;
    let mut changes: Vec<(u64, Change)> = report
        .missing
        .iter()
        .chain(&report.stale)
        .filter_map(|id| {
            wanted
                .get(id)
                .map(|record| (version, Change::Upsert((*record).clone())))
        })
        .collect();
    changes.extend(
        report
            .ghosts
            .iter()
            .map(|id| (version, Change::Delete(*id))),
    );
    // Repairs must win over anything stored, so they bypass version checks.
    sqlx::query(
        "UPDATE customers SET source_version = NULL WHERE source = $1 AND external_id = ANY($2)",
    )
    .bind(CRM)
    .bind(
        changes
            .iter()
            .map(|(_, change)| change.id().to_string())
            .collect::<Vec<_>>(),
    )
    .execute(pool)
    .await?;
    sqlx::query("DELETE FROM customer_tombstones WHERE source = $1 AND external_id = ANY($2)")
        .bind(CRM)
        .bind(
            report
                .missing
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>(),
        )
        .execute(pool)
        .await?;
    apply_changes(pool, &changes, seq).await
}
