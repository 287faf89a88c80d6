//! Receiving the CRM's ZeroMQ feed (through `domain::crm::follow_feed`): each event gets
//! its version from the clock as it arrives, so a page requested afterwards is known to
//! reflect it; events go to the applier, unreadable messages are counted.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::Indexer;

impl Indexer {
    /// Receives feed events and hands them, versioned, to the applier; marks a resync
    /// after a reconnect (events may have been lost while disconnected, or the upstream
    /// restarted: a new epoch).
    pub(super) async fn follow_feed(
        self: Arc<Self>,
        url: String,
        events: mpsc::Sender<(u64, domain::crm::FeedEvent)>,
    ) {
        let (items, mut received) = mpsc::channel(65_536);
        tokio::spawn(domain::crm::follow_feed(url, items));
        while let Some(item) = received.recv().await {
            match item {
                domain::crm::FeedItem::Connected { reconnected: true } => {
                    self.metrics.epochs.inc();
                    self.mark_resync("the feed reconnected").await;
                }
                domain::crm::FeedItem::Unreadable => {
                    self.metrics.feed_rejected.inc();
                }
                domain::crm::FeedItem::Connected { reconnected: false } => {}
                domain::crm::FeedItem::Event(event) => {
                    let version = self.tick(event.seq);
                    self.events_received.fetch_add(1, Ordering::SeqCst);
                    *self.last_event_at.lock().expect("never poisoned") = Instant::now();
                    if events.send((version, event)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

impl Indexer {
    /// Advances the clock for one event and returns its version: the feed's `seq` when it
    /// runs ahead of the clock (so a healthy numbered feed keeps versions equal to `seq`),
    /// else one more than the clock (a feed without `seq`, or one that restarted at 1).
    fn tick(&self, seq: Option<u64>) -> u64 {
        let next = |clock: u64| seq.filter(|seq| *seq > clock).unwrap_or(clock + 1);
        let before = self
            .clock
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |clock| {
                Some(next(clock))
            })
            .expect("the update always yields a value");
        next(before)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn the_clock_follows_seq_when_ahead_and_never_goes_back() {
        let pool = sqlx::PgPool::connect_lazy("postgres://127.0.0.1:1/unused").unwrap();
        let indexer = Indexer::new(
            pool,
            "http://127.0.0.1:1",
            1,
            Duration::from_secs(1),
            super::super::IndexMetrics::default(),
        );
        assert_eq!(indexer.tick(Some(5)), 5, "a numbered feed keeps its seq");
        assert_eq!(indexer.tick(Some(6)), 6);
        assert_eq!(indexer.tick(None), 7, "no seq: one more");
        assert_eq!(
            indexer.tick(Some(1)),
            8,
            "seq started over: the clock goes on"
        );
        assert_eq!(indexer.tick(Some(20)), 20, "a gap: the clock jumps with it");
    }
}
