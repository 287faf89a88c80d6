//! Live events behind GraphQL subscriptions. Each gateway instance listens to the sources
//! itself (the database's notifications; RabbitMQ through an exclusive, auto-delete queue
//! of its own bound to the orders exchange) and fans events out to its subscribers through
//! in-process broadcast channels, so every instance sees every event, whoever caused it. A subscriber that goes away drops its receiver and holds
//! nothing; a slow one skips what it missed rather than slowing the others.

use domain::amqp::{broker_error, QueueTopology};
use domain::orders::OrderCreatedMessage;
use domain::pipelines::PipelineEvent;
use futures_util::{Stream, StreamExt};
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};

/// Events buffered per receiver (one per shared subscription execution, see `fanout.rs`)
/// before a slow one starts missing events.
const CHANNEL_CAPACITY: usize = 256;
/// The CRM feed can burst thousands of changes a second.
const CRM_CHANNEL_CAPACITY: usize = 4_096;

/// A committed accounts ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CustomersIngested {
    /// Records stored.
    pub records_processed: u64,
}

/// An order whose `order.created` event passed through the broker, read once from the
/// database for every subscriber.
#[derive(Debug, Clone)]
pub struct OrderCreated(pub Arc<domain::orders::Order>);

/// A change on the CRM's ZeroMQ feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmChange {
    /// `CREATE`, `UPDATE` or `DELETE`.
    pub event_type: CrmChangeType,
    /// The CRM record id.
    pub id: u64,
    /// The record's state after the change (all empty for a DELETE).
    pub first_name: Option<String>,
    /// Last name after the change.
    pub last_name: Option<String>,
    /// Emails after the change.
    pub emails: Vec<String>,
}

/// The kind of a CRM change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrmChangeType {
    /// A new record.
    Create,
    /// A record's new state.
    Update,
    /// A record removed (only its id is known).
    Delete,
}

impl From<domain::crm::FeedEvent> for CrmChange {
    fn from(event: domain::crm::FeedEvent) -> Self {
        use domain::crm::Change;
        match event.change {
            Change::Upsert(record) => Self {
                event_type: if event.event_type == "CREATE" {
                    CrmChangeType::Create
                } else {
                    CrmChangeType::Update
                },
                id: record.id,
                first_name: record.first_name,
                last_name: record.last_name,
                emails: record.email,
            },
            Change::Delete(id) => Self {
                event_type: CrmChangeType::Delete,
                id,
                first_name: None,
                last_name: None,
                emails: Vec::new(),
            },
        }
    }
}

/// Where the orders feed comes from.
#[derive(Debug, Clone)]
pub struct OrdersFeed {
    /// AMQP URL (credentials included; never logged).
    pub url: String,
    /// The exchange order events are published to.
    pub exchange: String,
}

/// The broadcast side of every live feed.
#[derive(Debug, Clone)]
pub struct LiveFeeds {
    customers_ingested: broadcast::Sender<CustomersIngested>,
    orders_created: broadcast::Sender<OrderCreated>,
    crm_changes: broadcast::Sender<CrmChange>,
    pipeline_events: broadcast::Sender<PipelineEvent>,
}

impl Default for LiveFeeds {
    fn default() -> Self {
        Self {
            customers_ingested: broadcast::channel(CHANNEL_CAPACITY).0,
            orders_created: broadcast::channel(CHANNEL_CAPACITY).0,
            crm_changes: broadcast::channel(CRM_CHANNEL_CAPACITY).0,
            pipeline_events: broadcast::channel(CHANNEL_CAPACITY).0,
        }
    }
}

impl LiveFeeds {
    /// Starts forwarding database notifications and broker events; the tasks live as long
    /// as the runtime and reconnect (with backoff) whenever a source goes away.
    pub fn start(pool: PgPool, orders: OrdersFeed, crm_feed_url: String) -> Self {
        let feeds = Self::default();
        tokio::spawn(forward_notifications(pool.clone(), feeds.clone()));
        tokio::spawn(forward_orders(pool, orders, feeds.orders_created.clone()));
        tokio::spawn(forward_crm_changes(crm_feed_url, feeds.crm_changes.clone()));
        feeds
    }

    /// How many subscribers hold a live feed right now (operators and tests watch it to
    /// see that closed subscriptions release what they held).
    pub fn subscriber_count(&self) -> usize {
        self.customers_ingested.receiver_count()
            + self.orders_created.receiver_count()
            + self.crm_changes.receiver_count()
            + self.pipeline_events.receiver_count()
    }

    /// Every CRM change from now on.
    pub fn crm_changes(&self) -> impl Stream<Item = CrmChange> + Send + 'static {
        receiver_stream(self.crm_changes.subscribe())
    }

    /// Every accounts ingest committed from now on.
    pub fn customers_ingested(&self) -> impl Stream<Item = CustomersIngested> + Send + 'static {
        receiver_stream(self.customers_ingested.subscribe())
    }

    /// Every pipeline event (run ends, profile outcomes, errors) from now on.
    pub fn pipeline_events(&self) -> impl Stream<Item = PipelineEvent> + Send + 'static {
        receiver_stream(self.pipeline_events.subscribe())
    }

    /// Every order created from now on.
    pub fn orders_created(&self) -> impl Stream<Item = OrderCreated> + Send + 'static {
        receiver_stream(self.orders_created.subscribe())
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
                let delay = domain::backoff::reconnect(failures);
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "database notifications lost");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn listen(pool: &PgPool, feeds: &LiveFeeds) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener
        .listen_all([
            domain::accounts::INGESTED_CHANNEL,
            domain::pipelines::EVENTS_CHANNEL,
        ])
        .await?;
    loop {
        let notification = listener.recv().await?;
        if notification.channel() == domain::pipelines::EVENTS_CHANNEL {
            match serde_json::from_str::<PipelineEvent>(notification.payload()) {
                Ok(event) => {
                    let _ = feeds.pipeline_events.send(event);
                }
                Err(error) => tracing::warn!(%error, "malformed pipeline event notification"),
            }
        } else if notification.channel() == domain::accounts::INGESTED_CHANNEL {
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

async fn forward_orders(pool: PgPool, feed: OrdersFeed, sender: broadcast::Sender<OrderCreated>) {
    let mut failures: u32 = 0;
    loop {
        let started = std::time::Instant::now();
        let error = match consume_orders(&pool, &feed, &sender).await {
            Ok(()) => domain::Error::Broker("the broker cancelled the feed".into()),
            Err(error) => error,
        };
        failures = domain::backoff::failures_after(failures, started.elapsed());
        let delay = domain::backoff::reconnect(failures);
        tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "orders feed lost");
        tokio::time::sleep(delay).await;
    }
}

/// Binds a queue of this instance's own to the orders exchange and forwards events until
/// the connection fails (an error) or the broker cancels the consumer (`Ok`). Each order
/// is read from the database once, when someone subscribes.
async fn consume_orders(
    pool: &PgPool,
    feed: &OrdersFeed,
    sender: &broadcast::Sender<OrderCreated>,
) -> domain::Result<()> {
    let (_connection, channel) = domain::amqp::connect(&feed.url, "hub-gateway-live").await?;
    QueueTopology::named(&feed.exchange, "")
        .declare_exchange(&channel)
        .await?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(broker_error)?;
    channel
        .queue_bind(
            queue.name().clone(),
            feed.exchange.as_str().into(),
            domain::orders::ORDER_CREATED.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(broker_error)?;
    let mut deliveries = channel
        .basic_consume(
            queue.name().clone(),
            "hub-gateway-live".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(broker_error)?;
    tracing::info!(exchange = %feed.exchange, "orders feed connected");
    while let Some(delivery) = deliveries.next().await {
        let delivery = delivery.map_err(broker_error)?;
        match serde_json::from_slice::<OrderCreatedMessage>(&delivery.data) {
            Ok(_) if sender.receiver_count() == 0 => {}
            Ok(message) => match domain::orders::find(pool, message.order_id).await {
                Ok(Some(order)) => {
                    let _ = sender.send(OrderCreated(Arc::new(order)));
                }
                Ok(None) => {
                    tracing::debug!(
                        order_id = message.order_id,
                        "an order event for no stored order"
                    )
                }
                Err(error) => {
                    tracing::warn!(%error, order_id = message.order_id, "cannot load a created order")
                }
            },
            Err(error) => tracing::debug!(%error, "ignoring a malformed order event"),
        }
    }
    Ok(())
}

/// Follows the CRM feed (see `domain::crm::follow_feed`) and broadcasts its changes.
async fn forward_crm_changes(url: String, sender: broadcast::Sender<CrmChange>) {
    let (items, mut received) = mpsc::channel(1_024);
    tokio::spawn(domain::crm::follow_feed(url, items));
    while let Some(item) = received.recv().await {
        if let domain::crm::FeedItem::Event(event) = item {
            // No subscribers is fine: the change is simply not needed.
            let _ = sender.send(CrmChange::from(event));
        }
    }
}
