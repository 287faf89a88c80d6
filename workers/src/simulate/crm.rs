//! The original CRM upstream: `GET /customers?page=N` (1000 records a page, id descending,
//! slow) and a ZeroMQ PUB socket publishing `dataChanges` events, byte-compatible with the
//! original. Our events also carry a `seq` number inside the JSON, so a consumer can see a
//! gap (see README, Compatibility notes: CRM); `--feed-seq false` leaves it out, as the
//! original does, and a restart with another `--seed` then stands for the original
//! restarting (ids 1..N come back with other content).
//!
//! Everything random comes from one seeded generator: the same `--seed` gives the same
//! data and the same sequence of changes. Request errors (`--error-rate`) use a generator
//! of their own, so they never shift the change sequence.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use zeromq::{Socket, SocketSend, ZmqMessage};

use super::flask::{self, query_int};
use super::random::{Failure, Failures, Random, STALL};

/// The ZeroMQ topic of change events (frame 1 of every message).
pub const TOPIC: &str = "dataChanges";

const FIRST_NAMES: [&str; 24] = [
    "John", "Jane", "Michael", "Emily", "David", "Sarah", "James", "Laura", "Robert", "Anna",
    "William", "Olivia", "Daniel", "Sophia", "Thomas", "Mia", "Joseph", "Grace", "Charles",
    "Chloe", "Henry", "Ella", "Peter", "Lucy",
];
const LAST_NAMES: [&str; 24] = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Thompson",
    "White",
    "Harris",
    "Clark",
];

pub use domain::crm::CrmRecord;

/// One change, as published on the feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// `CREATE`, `UPDATE` or `DELETE`.
    #[serde(rename = "eventType")]
    pub event_type: String,
    /// The full record (CREATE, UPDATE) or `{"id": n}` (DELETE).
    pub data: serde_json::Value,
    /// 1, 2, 3...: a consumer that sees a jump missed events.
    pub seq: u64,
}

fn email_for(names: &[&str], id: u64) -> String {
    format!("{}.{id}@example.com", names.join(".").to_lowercase())
}

/// One of the three kinds with equal probability: full, partial (one name null), id only.
fn random_record(random: &mut Random, id: u64) -> CrmRecord {
    match random.below(3) {
        0 => full_record(random, id),
        1 => {
            let (first, last) = if random.below(2) == 0 {
                (Some(random.pick(&FIRST_NAMES).to_owned()), None)
            } else {
                (None, Some(random.pick(&LAST_NAMES).to_owned()))
            };
            let name = first.as_deref().or(last.as_deref()).unwrap_or_default();
            CrmRecord {
                email: vec![email_for(&[name], id)],
                first_name: first,
                id,
                last_name: last,
            }
        }
        _ => CrmRecord {
            email: Vec::new(),
            first_name: None,
            id,
            last_name: None,
        },
    }
}

fn full_record(random: &mut Random, id: u64) -> CrmRecord {
    let (first, last) = (random.pick(&FIRST_NAMES), random.pick(&LAST_NAMES));
    CrmRecord {
        email: vec![email_for(&[first, last], id)],
        first_name: Some(first.to_owned()),
        id,
        last_name: Some(last.to_owned()),
    }
}

/// The simulator's knobs.
#[derive(Debug, Clone)]
pub struct CrmSettings {
    /// Initial records (ids 1..=records).
    pub records: u64,
    /// Records per page.
    pub page_size: usize,
    /// Delay before every API answer.
    pub latency: Duration,
    /// Time between changes (zero: as fast as possible).
    pub change_interval: Duration,
    /// Stop changing after this many (None: never stop).
    pub max_changes: Option<u64>,
    /// Seed of the data and of the change sequence.
    pub seed: u64,
    /// Fraction of API calls answered 500 (half) or stalled (half).
    pub error_rate: f64,
    /// Whether feed events carry `seq` (ours) or not (the original's exact frames).
    pub feed_seq: bool,
}

struct CrmData {
    records: BTreeMap<u64, CrmRecord>,
    next_id: u64,
    floor: usize,
    random: Random,
    seq: u64,
}

impl CrmData {
    fn new(settings: &CrmSettings) -> Self {
        let mut random = Random(settings.seed);
        let records: BTreeMap<u64, CrmRecord> = (1..=settings.records)
            .map(|id| (id, random_record(&mut random, id)))
            .collect();
        Self {
            floor: (records.len() * 9).div_ceil(10),
            next_id: settings.records + 1,
            records,
            random,
            seq: 0,
        }
    }

    /// An existing id, chosen at random (ids are dense enough that a few tries suffice).
    fn random_existing_id(&mut self) -> Option<u64> {
        let last = *self.records.keys().next_back()?;
        loop {
            let candidate = 1 + self.random.below(last);
            if self.records.contains_key(&candidate) {
                return Some(candidate);
            }
        }
    }

    /// Makes the next change: CREATE, UPDATE or DELETE with equal probability; never
    /// deletes below 90% of the initial count (an UPDATE instead).
    fn change(&mut self) -> ChangeEvent {
        self.seq += 1;
        let roll = self.random.below(3);
        let existing = if roll == 0 {
            None
        } else {
            self.random_existing_id()
        };
        let (event_type, data) = match (roll, existing) {
            (2, Some(id)) if self.records.len() > self.floor => {
                self.records.remove(&id);
                ("DELETE", serde_json::json!({ "id": id }))
            }
            (1 | 2, Some(id)) => {
                let first = self.random.pick(&FIRST_NAMES).to_owned();
                let record = self.records.get_mut(&id).expect("an existing id");
                record.first_name = Some(first);
                (
                    "UPDATE",
                    serde_json::to_value(&*record).expect("a record serializes"),
                )
            }
            _ => {
                let id = self.next_id;
                self.next_id += 1;
                let record = full_record(&mut self.random, id);
                let data = serde_json::to_value(&record).expect("a record serializes");
                self.records.insert(id, record);
                ("CREATE", data)
            }
        };
        ChangeEvent {
            event_type: event_type.to_owned(),
            data,
            seq: self.seq,
        }
    }
}

/// The simulated CRM: its data, the request error generator and the knobs.
pub struct CrmUpstream {
    data: Mutex<CrmData>,
    failures: Failures,
    settings: CrmSettings,
}

impl CrmUpstream {
    /// Generates the initial records from the seed.
    pub fn new(settings: CrmSettings) -> Self {
        Self {
            data: Mutex::new(CrmData::new(&settings)),
            failures: Failures::new(
                settings.error_rate,
                &[Failure::ServerError, Failure::Stall],
                settings.seed,
            ),
            settings,
        }
    }

    fn data(&self) -> std::sync::MutexGuard<'_, CrmData> {
        self.data
            .lock()
            .expect("never poisoned: no panics while held")
    }

    /// How many records exist now.
    pub fn len(&self) -> usize {
        self.data().records.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every record now, id ascending (tests and benchmarks compare against it).
    pub fn snapshot(&self) -> Vec<CrmRecord> {
        self.data().records.values().cloned().collect()
    }

    /// The seq of the last change made (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.data().seq
    }

    /// Makes the next change now (the change loop calls this; tests may too).
    pub fn change(&self) -> ChangeEvent {
        self.data().change()
    }

    /// Deletes record `id` now, as a DELETE of the change loop does (tests); `None` when
    /// there is no such record.
    pub fn delete(&self, id: u64) -> Option<ChangeEvent> {
        let mut data = self.data();
        data.records.remove(&id)?;
        data.seq += 1;
        Some(ChangeEvent {
            event_type: "DELETE".to_owned(),
            data: serde_json::json!({ "id": id }),
            seq: data.seq,
        })
    }

    /// Records of page `page` (1-based), id descending, rendered as Flask did.
    pub fn page_json(&self, page: i64) -> String {
        if page < 1 {
            return "[]".into();
        }
        let size = self.settings.page_size;
        let skip = usize::try_from(page - 1)
            .unwrap_or(usize::MAX)
            .saturating_mul(size);
        let data = self.data();
        let records: Vec<&CrmRecord> = data.records.values().rev().skip(skip).take(size).collect();
        flask::to_string(&records)
    }
}

/// The API's routes.
pub fn router(upstream: Arc<CrmUpstream>) -> Router {
    Router::new()
        .route("/customers", get(list_customers))
        .with_state(upstream)
}

async fn list_customers(
    State(upstream): State<Arc<CrmUpstream>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    tokio::time::sleep(upstream.settings.latency).await;
    match upstream.failures.next() {
        Some(Failure::ServerError) => {
            return flask::response(
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"error":"injected failure"}"#.into(),
            )
        }
        Some(_) => tokio::time::sleep(STALL).await,
        None => {}
    }
    let page = query_int(&params, "page").unwrap_or(1);
    flask::response(StatusCode::OK, upstream.page_json(page))
}

/// The original's event: `eventType` and `data`, nothing else.
#[derive(Serialize)]
struct OriginalEvent<'a> {
    #[serde(rename = "eventType")]
    event_type: &'a str,
    data: &'a serde_json::Value,
}

/// The two-frame message of one event: `dataChanges`, then the JSON, with `seq` or (as the
/// original) without.
pub fn feed_message(event: &ChangeEvent, with_seq: bool) -> ZmqMessage {
    let json = if with_seq {
        serde_json::to_vec(event)
    } else {
        serde_json::to_vec(&OriginalEvent {
            event_type: &event.event_type,
            data: &event.data,
        })
    }
    .expect("an event serializes");
    ZmqMessage::try_from(vec![
        Bytes::from_static(TOPIC.as_bytes()),
        Bytes::from(json),
    ])
    .expect("two frames are a valid message")
}

/// Binds the PUB socket; returns it with the endpoint it got (`tcp://127.0.0.1:0` picks a
/// free port).
pub async fn bind_feed(endpoint: &str) -> anyhow::Result<(zeromq::PubSocket, String)> {
    let mut socket = zeromq::PubSocket::new();
    let bound = socket
        .bind(endpoint)
        .await
        .map_err(|error| anyhow::anyhow!("cannot bind the ZeroMQ feed on {endpoint}: {error}"))?;
    Ok((socket, bound.to_string()))
}

/// Makes changes at the configured pace and publishes each, until `max_changes` or the
/// stop. Falls behind gracefully: overdue changes are made in a burst.
pub async fn run_changes(
    upstream: Arc<CrmUpstream>,
    mut feed: zeromq::PubSocket,
    mut stop: crate::stop::Stop,
) -> anyhow::Result<()> {
    let interval = upstream.settings.change_interval;
    let mut made = 0u64;
    let mut next = tokio::time::Instant::now() + interval;
    loop {
        if !interval.is_zero() {
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = stop.wait() => return Ok(()),
            }
        } else if stop.requested() {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        let mut due = 0u64;
        if interval.is_zero() {
            due = 100;
        } else {
            while next <= now && due < 10_000 {
                due += 1;
                next += interval;
            }
            if next <= now {
                next = now + interval;
            }
        }
        for _ in 0..due {
            if upstream.settings.max_changes.is_some_and(|max| made >= max) {
                tracing::info!(
                    changes = made,
                    "change limit reached; the upstream is quiet now"
                );
                return Ok(());
            }
            let event = upstream.change();
            made += 1;
            feed.send(feed_message(&event, upstream.settings.feed_seq))
                .await
                .map_err(|error| anyhow::anyhow!("cannot publish on the ZeroMQ feed: {error}"))?;
        }
        if interval.is_zero() {
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(records: u64, seed: u64) -> CrmSettings {
        CrmSettings {
            records,
            page_size: 1000,
            latency: Duration::ZERO,
            change_interval: Duration::ZERO,
            max_changes: None,
            seed,
            error_rate: 0.0,
            feed_seq: true,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_data_and_changes() {
        let (a, b) = (
            CrmUpstream::new(settings(500, 7)),
            CrmUpstream::new(settings(500, 7)),
        );
        assert_eq!(a.snapshot(), b.snapshot());
        let changes =
            |upstream: &CrmUpstream| (0..300).map(|_| upstream.change()).collect::<Vec<_>>();
        assert_eq!(changes(&a), changes(&b));
        assert_ne!(CrmUpstream::new(settings(500, 8)).snapshot(), a.snapshot());
    }

    #[test]
    fn records_come_in_three_kinds() {
        let records = CrmUpstream::new(settings(3_000, 1)).snapshot();
        let full = records
            .iter()
            .filter(|r| r.first_name.is_some() && r.last_name.is_some())
            .count();
        let id_only = records
            .iter()
            .filter(|r| r.first_name.is_none() && r.last_name.is_none() && r.email.is_empty())
            .count();
        let partial = records.len() - full - id_only;
        for count in [full, partial, id_only] {
            assert!((800..1200).contains(&count), "{full} {partial} {id_only}");
        }
        assert!(records
            .iter()
            .filter(|r| !r.email.is_empty())
            .all(|r| r.email.len() == 1));
    }

    #[test]
    fn changes_follow_the_rules_and_never_delete_below_90_percent() {
        let upstream = CrmUpstream::new(settings(100, 3));
        let mut highest = 100;
        for expected_seq in 1..=2_000 {
            let event = upstream.change();
            assert_eq!(event.seq, expected_seq);
            match event.event_type.as_str() {
                "CREATE" => {
                    let id = event.data["id"].as_u64().unwrap();
                    assert_eq!(id, highest + 1, "CREATE takes the next id");
                    highest = id;
                    assert!(
                        event.data["firstName"].is_string() && event.data["lastName"].is_string()
                    );
                }
                "UPDATE" => assert!(event.data["firstName"].is_string()),
                "DELETE" => assert_eq!(event.data.as_object().unwrap().len(), 1),
                other => panic!("{other}"),
            }
            assert!(upstream.len() >= 90);
        }
    }

    #[test]
    fn pages_are_id_descending_and_past_the_end_is_empty() {
        let upstream = CrmUpstream::new(CrmSettings {
            page_size: 10,
            ..settings(25, 1)
        });
        let page: Vec<CrmRecord> = serde_json::from_str(&upstream.page_json(1)).unwrap();
        assert_eq!(
            page.iter().map(|r| r.id).collect::<Vec<_>>(),
            (16..=25).rev().collect::<Vec<_>>()
        );
        let last: Vec<CrmRecord> = serde_json::from_str(&upstream.page_json(3)).unwrap();
        assert_eq!(last.len(), 5);
        assert_eq!(upstream.page_json(4), "[]");
        assert_eq!(upstream.page_json(0), "[]");
    }
}
