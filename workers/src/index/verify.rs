//! `--verify` and `--repair`: read the whole upstream, compare it with the table (and the
//! search index), and fix what differs.

use std::collections::BTreeMap;
use std::sync::Arc;

use domain::crm::CrmRecord;

use super::Indexer;

/// `--verify`: reads the whole upstream and compares; `--repair` fixes the differences.
pub(super) async fn verify(indexer: &Arc<Indexer>, repair: bool) -> anyhow::Result<()> {
    // The clock before the first page: a repair written at it replaces what the feed had
    // brought until then, and any change a live indexer applies later still beats it.
    let clock = domain::crm::load_state(&indexer.pool).await?.last_seq;
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
        domain::crm::repair(&indexer.pool, &snapshot, &report, clock).await?;
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
