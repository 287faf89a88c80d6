//! Applying feed events: in batches, each change at the version the clock gave it on
//! arrival; a gap in `seq`, a `seq` starting over, or ids the feed deleted coming back
//! (the upstream restarted) mark a resync as due.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use domain::crm::Change;
use tokio::sync::mpsc;

use super::Indexer;

impl Indexer {
    /// Applies feed events in batches, checking `seq` for gaps.
    pub(super) async fn apply_events(
        self: Arc<Self>,
        mut events: mpsc::Receiver<(u64, domain::crm::FeedEvent)>,
    ) {
        let mut expected: Option<u64> = None;
        let mut batch = Vec::with_capacity(1_000);
        while events.recv_many(&mut batch, 1_000).await > 0 {
            let mut changes: Vec<(u64, Change)> = Vec::with_capacity(batch.len());
            let mut gap = None;
            for (version, event) in batch.drain(..) {
                if let Some(seq) = event.seq {
                    match expected {
                        Some(next) if seq > next => {
                            gap = Some(format!("seq jumped from {} to {seq}", next - 1))
                        }
                        Some(next) if seq < next && seq == 1 => {
                            self.metrics.epochs.inc();
                            gap = Some("the upstream restarted its seq".into())
                        }
                        _ => {}
                    }
                    expected = Some(seq + 1);
                }
                changes.push((version, event.change));
            }
            if let Some(why) = gap {
                self.metrics.gaps_detected.inc();
                self.mark_resync(&why).await;
            }
            let position = self.clock.load(Ordering::SeqCst);
            let mut failures = 0;
            let applied = loop {
                match domain::crm::apply_changes(&self.pool, &changes, position).await {
                    Ok(applied) => break applied,
                    Err(error) => {
                        failures += 1;
                        self.metrics.health.error(&error);
                        tracing::warn!(%error, "cannot apply feed events; retrying");
                        tokio::time::sleep(domain::backoff::reconnect(failures)).await;
                    }
                }
            };
            if applied.recreated > 0 {
                self.metrics.epochs.inc();
                self.mark_resync(&format!(
                    "the feed re-created {} deleted ids: the upstream restarted",
                    applied.recreated
                ))
                .await;
            }
            self.sync_search(
                &changes
                    .iter()
                    .map(|(_, change)| change.id())
                    .collect::<Vec<_>>(),
            )
            .await;
            self.metrics.events_applied.inc_by(changes.len() as u64);
            self.metrics.health.success();
            self.metrics
                .feed_seq
                .set(i64::try_from(position).unwrap_or(i64::MAX));
            self.metrics.last_event_applied.set(super::scan::unix_now());
        }
    }
}
