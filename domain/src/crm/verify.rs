//! Comparing the stored records with an upstream snapshot, and repairing the differences.

use std::collections::HashMap;

use sqlx::PgPool;

use super::apply::{delete_records, upsert_records, Origin};
use super::{stored_records, CrmRecord};
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

/// Makes the stored records equal the snapshot, read at clock `clock` (read before the
/// snapshot's first page): each difference is written as a read at that clock, so it
/// replaces what the feed had brought up to then, and any later live change (a higher
/// version) still beats it.
pub async fn repair(
    pool: &PgPool,
    snapshot: &[CrmRecord],
    report: &VerifyReport,
    clock: u64,
) -> Result<()> {
    let wanted: HashMap<u64, &CrmRecord> =
        snapshot.iter().map(|record| (record.id, record)).collect();
    let upserts: Vec<(u64, &CrmRecord)> = report
        .missing
        .iter()
        .chain(&report.stale)
        .filter_map(|id| wanted.get(id).map(|record| (clock, *record)))
        .collect();
    let deletes: Vec<(u64, u64)> = report.ghosts.iter().map(|id| (clock, *id)).collect();
    let mut transaction = pool.begin().await?;
    upsert_records(&mut transaction, &upserts, None, Origin::Read).await?;
    delete_records(&mut transaction, &deletes, Origin::Read).await?;
    transaction.commit().await?;
    Ok(())
}
