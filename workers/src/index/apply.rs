//! Applying feed events: in batches, each change at its `seq` as version, with gaps in
//! `seq` marking a resync as due.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use domain::crm::Change;
use tokio::sync::mpsc;

use super::Indexer;

impl Indexer {
    /// Applies feed events in batches, checking `seq` for gaps.
    pub(super) async fn apply_events(
        self: Arc<Self>,
        mut events: mpsc::Receiver<domain::crm::FeedEvent>,
    ) {
        let mut expected: Option<u64> = None;
        let mut batch = Vec::with_capacity(1_000);
        while events.recv_many(&mut batch, 1_000).await > 0 {
            let mut changes: Vec<(u64, Change)> = Vec::with_capacity(batch.len());
            let mut gap = None;
            for event in batch.drain(..) {
                let version = match event.seq {
                    Some(seq) => {
                        match expected {
                            Some(next) if seq > next => {
                                gap = Some(format!("seq jumped from {} to {seq}", next - 1))
                            }
                            Some(next) if seq < next && seq == 1 => {
                                gap = Some("the upstream restarted its seq".into())
                            }
                            _ => {}
                        }
                        expected = Some(seq + 1);
                        seq
                    }
                    // A feed without seq: number events in arrival order.
                    None => self.position.load(Ordering::SeqCst) + 1,
                };
                self.position.fetch_max(version, Ordering::SeqCst);
                changes.push((version, event.change));
            }
            if let Some(why) = gap {
                self.metrics.gaps_detected.inc();
                self.mark_resync(&why).await;
            }
            let position = self.position.load(Ordering::SeqCst);
            let mut failures = 0;
            while let Err(error) = domain::crm::apply_changes(&self.pool, &changes, position).await
            {
                failures += 1;
                self.metrics.health.error(&error);
                tracing::warn!(%error, "cannot apply feed events; retrying");
                tokio::time::sleep(domain::backoff::reconnect(failures)).await;
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
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs() as i64);
            self.metrics.last_event_applied.set(now);
        }
    }
}
