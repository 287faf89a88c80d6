//! The original CRM in the hub: its wire formats (the API's records, the ZeroMQ feed's
//! events) and the storage rules that make the indexer converge exactly.
//!
//! Every CRM row carries `source_version`: the indexer's clock when the change it reflects
//! arrived (the feed's `seq` when it has one and runs ahead; one more than the last value
//! otherwise, so the clock never goes back, whatever the upstream does). An event is applied
//! only if newer than the row; a page read at clock P also replaces what was written at P
//! (the read saw it); deletions leave tombstones. So events and pages can be applied in any
//! order, a stale page cannot bring a deleted record back, and a read after an upstream
//! restart replaces everything the old epoch left. A scan marks the rows it sees; a clean
//! scan (no change upstream while it ran) is an exact snapshot, so rows it did not see are
//! deleted, and it is the one proof that the table is exact.
//!
//! - `record.rs`: [`CrmRecord`] as the API serves it, and a [`Change`] to one;
//! - `feed.rs`: the ZeroMQ feed: parsing its events, and [`follow_feed`] (shared by the
//!   indexer and the gateway's `customerChanged`);
//! - `apply.rs`: [`apply_changes`], the versioned upserts and tombstoned deletes;
//! - `scan.rs`: the indexer's [`SyncState`] and the life of a scan (begin, store a page,
//!   finish, removing ghosts when clean);
//! - `stored.rs`: the stored records read back as upstream records (for verify and the
//!   search index);
//! - `verify.rs`: [`verify`] against an upstream snapshot, and [`repair`].
//!
//! See README, Compatibility notes: CRM, for where the hub differs from the original.

mod apply;
mod feed;
mod record;
mod scan;
mod stored;
mod verify;

pub use apply::{apply_changes, Applied};
pub use feed::{follow_feed, parse_feed_event, FeedEvent, FeedItem};
pub use record::{Change, CrmRecord};
pub use scan::{begin_scan, finish_scan, load_state, mark_resync_needed, store_page, SyncState};
pub use stored::{stored_records, stored_records_with_ids};
pub use verify::{repair, verify, VerifyReport};

/// The CRM's `source` in `customers`, `customer_tombstones` and `sync_state`.
const CRM: &str = "CRM";
