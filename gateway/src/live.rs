//! Live events behind GraphQL subscriptions. Each gateway instance listens for the
//! database's notifications and fans them out to its subscribers through in-process
//! broadcast channels, so every instance sees events committed by any process (another
//! gateway, `workers ingest`). A subscriber that goes away drops its receiver and holds
//! nothing; a slow one skips what it missed rather than slowing the others.

use std::time::Duration;

use futures_util::Stream;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::broadcast;

/// Events buffered per subscriber before a slow one starts missing events.
const CHANNEL_CAPACITY: usize = 256;

/// A committed accounts ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CustomersIngested {
    /// Records stored.
    pub records_processed: u64,
}

/// The broadcast side of every live feed.
#[derive(Debug, Clone)]
pub struct LiveFeeds {
    customers_ingested: broadcast::Sender<CustomersIngested>,
}

impl Default for LiveFeeds {
    fn default() -> Self {
        Self {
            customers_ingested: broadcast::channel(CHANNEL_CAPACITY).0,
        }
    }
}

impl LiveFeeds {
    /// Starts forwarding database notifications; the task lives as long as the runtime and
    /// reconnects (with backoff) whenever the database goes away.
    pub fn start(pool: PgPool) -> Self {
        let feeds = Self::default();
        tokio::spawn(forward_notifications(pool, feeds.clone()));
        feeds
    }

    /// Every accounts ingest committed from now on.
    pub fn customers_ingested(&self) -> impl Stream<Item = CustomersIngested> + Send + 'static {
        receiver_stream(self.customers_ingested.subscribe())
    }
}

fn receiver_stream<T: Clone + Send + 'static>(
    receiver: broadcast::Receiver<T>,
) -> impl Stream<Item = T> + Send {
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(event) => return Some((event, receiver)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "slow subscriber skipped events");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

async fn forward_notifications(pool: PgPool, feeds: LiveFeeds) {
    let mut failures: u32 = 0;
    loop {
        match listen(&pool, &feeds).await {
            Ok(()) => return,
            Err(error) => {
                failures = failures.saturating_add(1);
                let delay = Duration::from_millis(250 << failures.min(7));
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "database notifications lost");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn listen(pool: &PgPool, feeds: &LiveFeeds) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(domain::accounts::INGESTED_CHANNEL).await?;
    loop {
        let notification = listener.recv().await?;
        if notification.channel() == domain::accounts::INGESTED_CHANNEL {
            match notification.payload().parse() {
                Ok(records_processed) => {
                    // No subscribers is fine: the event is simply not needed.
                    let _ = feeds
                        .customers_ingested
                        .send(CustomersIngested { records_processed });
                }
                Err(_) => tracing::warn!(
                    payload = notification.payload(),
                    "malformed ingest notification"
                ),
            }
        }
    }
}
