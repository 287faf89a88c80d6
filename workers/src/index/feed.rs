//! Receiving the CRM's ZeroMQ feed (through `domain::crm::follow_feed`) and handing its
//! events to the applier.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::Indexer;

impl Indexer {
    /// Receives feed events and hands them to the applier; marks a resync after a
    /// reconnect (events may have been lost while disconnected).
    pub(super) async fn follow_feed(
        self: Arc<Self>,
        url: String,
        events: mpsc::Sender<domain::crm::FeedEvent>,
    ) {
        let (items, mut received) = mpsc::channel(65_536);
        tokio::spawn(domain::crm::follow_feed(url, items));
        while let Some(item) = received.recv().await {
            match item {
                domain::crm::FeedItem::Connected { reconnected: true } => {
                    self.mark_resync("the feed reconnected").await;
                }
                domain::crm::FeedItem::Connected { reconnected: false } => {}
                domain::crm::FeedItem::Event(event) => {
                    self.events_received.fetch_add(1, Ordering::SeqCst);
                    *self.last_event_at.lock().expect("never poisoned") = Instant::now();
                    if events.send(event).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
