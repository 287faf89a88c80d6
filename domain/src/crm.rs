//! The CRM of seed 000 in the hub: its wire formats (the API's records, the ZeroMQ feed's
//! events) and the storage rules that make the indexer converge exactly.
//!
//! Every CRM row carries `source_version`: the feed `seq` of the last change it reflects.
//! A change (an event, or a page read at a known feed position) is applied only if it is
//! newer than the row, and deletions leave tombstones, so events and pages can be applied
//! in any order and a stale page cannot bring a deleted record back. A scan marks the rows
//! it sees; a clean scan (no change upstream while it ran) is an exact snapshot, so rows it
//! did not see are deleted.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use crate::customers::CustomerSource;
use crate::Result;

/// A CRM record as the API serves it. Field order is the sorted order Flask's `jsonify`
/// writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmRecord {
    /// Email addresses (none for id-only records).
    #[serde(default)]
    pub email: Vec<String>,
    /// First name, or null.
    #[serde(rename = "firstName", default)]
    pub first_name: Option<String>,
    /// Record id.
    pub id: u64,
    /// Last name, or null.
    #[serde(rename = "lastName", default)]
    pub last_name: Option<String>,
}

/// What a feed event does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// CREATE or UPDATE: the record's full new state.
    Upsert(CrmRecord),
    /// DELETE: only the id.
    Delete(u64),
}

impl Change {
    /// The record id the change is about.
    pub fn id(&self) -> u64 {
        match self {
            Self::Upsert(record) => record.id,
            Self::Delete(id) => *id,
        }
    }
}

/// A parsed feed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEvent {
    /// `CREATE`, `UPDATE` or `DELETE` as sent.
    pub event_type: String,
    /// The feed's sequence number, when the publisher sends one (ours does).
    pub seq: Option<u64>,
    /// The change.
    pub change: Change,
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "eventType")]
    event_type: String,
    data: Value,
    #[serde(default)]
    seq: Option<u64>,
}

/// Reads one feed message body (frame 2); `None` when it is not a change we understand.
pub fn parse_feed_event(body: &[u8]) -> Option<FeedEvent> {
    let raw: RawEvent = serde_json::from_slice(body).ok()?;
    let change = match raw.event_type.as_str() {
        "CREATE" | "UPDATE" => Change::Upsert(serde_json::from_value(raw.data).ok()?),
        "DELETE" => Change::Delete(raw.data.get("id")?.as_u64()?),
        _ => return None,
    };
    Some(FeedEvent {
        event_type: raw.event_type,
        seq: raw.seq,
        change,
    })
}

/// What following the feed yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedItem {
    /// Subscribed; `reconnected` when an earlier connection was lost (events may have been
    /// missed in between).
    Connected {
        /// Whether this is not the first connection.
        reconnected: bool,
    },
    /// A change event.
    Event(FeedEvent),
}

/// Follows the ZeroMQ feed at `url` (SUB, topic `dataChanges`) until `sink` is closed,
/// rebuilding the socket with backoff whenever the publisher goes away, so the follower
/// comes back with a CRM or simulator that restarts.
pub async fn follow_feed(url: String, sink: tokio::sync::mpsc::Sender<FeedItem>) {
    use futures_util::StreamExt;
    use zeromq::{Socket, SocketEvent, SocketRecv};

    let mut failures: u32 = 0;
    let mut connected_before = false;
    loop {
        let mut socket = zeromq::SubSocket::new();
        let mut monitor = socket.monitor();
        let connected = async {
            socket.connect(&url).await?;
            socket.subscribe("dataChanges").await
        }
        .await;
        if let Err(error) = connected {
            failures = failures.saturating_add(1);
            let delay = crate::backoff::reconnect(failures);
            tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "CRM feed unreachable");
            tokio::time::sleep(delay).await;
            continue;
        }
        failures = 0;
        tracing::info!(%url, "following the CRM feed");
        let announced = FeedItem::Connected {
            reconnected: connected_before,
        };
        if sink.send(announced).await.is_err() {
            return;
        }
        connected_before = true;
        loop {
            tokio::select! {
                message = socket.recv() => match message {
                    Ok(message) => {
                        let Some(event) = message.get(1).and_then(|body| parse_feed_event(body)) else {
                            continue;
                        };
                        if sink.send(FeedItem::Event(event)).await.is_err() {
                            return;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "CRM feed failed");
                        break;
                    }
                },
                event = monitor.next() => match event {
                    Some(SocketEvent::Disconnected(_)) | None => {
                        tracing::warn!("CRM feed disconnected");
                        break;
                    }
                    Some(_) => {}
                },
            }
        }
        tokio::time::sleep(crate::backoff::reconnect(1)).await;
    }
}

const CRM: &str = "CRM";

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
async fn upsert_records(
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

/// Where the indexer stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncState {
    /// Highest feed seq applied.
    pub last_seq: u64,
    /// The scan in progress, if any.
    pub scan_id: Option<i64>,
    /// Pages of that scan already stored.
    pub scan_pages_done: Vec<i32>,
    /// Whether events may have been missed since the last clean scan.
    pub resync_needed: bool,
    /// Feed seq of the last clean scan.
    pub consistent_at_seq: Option<u64>,
}

/// Reads the indexer's state.
pub async fn load_state(pool: &PgPool) -> Result<SyncState> {
    let (last_seq, scan_id, scan_pages_done, resync_needed, consistent_at_seq): (
        i64,
        Option<i64>,
        Vec<i32>,
        bool,
        Option<i64>,
    ) = sqlx::query_as(
        "SELECT last_seq, scan_id, scan_pages_done, resync_needed, consistent_at_seq
             FROM sync_state WHERE source = $1",
    )
    .bind(CRM)
    .fetch_one(pool)
    .await?;
    Ok(SyncState {
        last_seq: u64::try_from(last_seq).unwrap_or_default(),
        scan_id,
        scan_pages_done,
        resync_needed,
        consistent_at_seq: consistent_at_seq.and_then(|seq| u64::try_from(seq).ok()),
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

/// Stores one page of a scan, read at feed position `version`, and records the page as
/// done (one transaction, so a restart resumes exactly after it).
pub async fn store_page(
    pool: &PgPool,
    scan_id: i64,
    page: i32,
    version: u64,
    records: &[CrmRecord],
) -> Result<()> {
    let versioned: Vec<(u64, &CrmRecord)> =
        records.iter().map(|record| (version, record)).collect();
    let mut transaction = pool.begin().await?;
    upsert_records(&mut transaction, &versioned, Some(scan_id)).await?;
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
    Ok(())
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

/// Every stored CRM record, by id.
pub async fn stored_records(pool: &PgPool) -> Result<HashMap<u64, CrmRecord>> {
    stored_records_where(pool, None).await
}

/// The stored CRM records among `ids`, by id.
pub async fn stored_records_with_ids(
    pool: &PgPool,
    ids: &[u64],
) -> Result<HashMap<u64, CrmRecord>> {
    stored_records_where(pool, Some(ids)).await
}

async fn stored_records_where(
    pool: &PgPool,
    ids: Option<&[u64]>,
) -> Result<HashMap<u64, CrmRecord>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        external_id: String,
        first_name: Option<String>,
        last_name: Option<String>,
        emails: Vec<String>,
    }
    let ids: Option<Vec<String>> = ids.map(|ids| ids.iter().map(u64::to_string).collect());
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT external_id, first_name, last_name, emails FROM customers
         WHERE source = $1 AND ($2::text[] IS NULL OR external_id = ANY($2))",
    )
    .bind(CRM)
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let id = row.external_id.parse().ok()?;
            let record = CrmRecord {
                email: row.emails,
                first_name: row.first_name,
                id,
                last_name: row.last_name,
            };
            Some((id, record))
        })
        .collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_events_parse_with_or_without_seq() {
        let update = br#"{"eventType":"UPDATE","data":{"id":4,"firstName":"A","lastName":null,"email":["a@b.c"]},"seq":9}"#;
        let event = parse_feed_event(update).unwrap();
        assert_eq!(event.seq, Some(9));
        assert_eq!(event.change.id(), 4);
        let original = br#"{"eventType": "DELETE", "data": {"id": 5}}"#;
        assert_eq!(
            parse_feed_event(original).unwrap().change,
            Change::Delete(5)
        );
        assert!(parse_feed_event(br#"{"eventType":"MERGE","data":{"id":1}}"#).is_none());
        assert!(parse_feed_event(b"garbage").is_none());
    }
}
