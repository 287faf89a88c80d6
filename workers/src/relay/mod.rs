//! `workers relay`: publishes outbox events to their brokers, confirmed.
//!
//! - `mod.rs` (here): the options, and the one claim/publish/mark loop every broker shares
//!   ([`Relay`], [`run_relay`]) with its per-destination metrics.
//! - [`Publisher`]: what a broker implements to be a destination: connect, then publish a
//!   batch and say, per event, whether the broker took it.
//! - `rabbitmq.rs`: the RabbitMQ publisher (publisher confirms, mandatory, persistent).
//! - `kafka.rs`: the Kafka publisher (`acks=all`, delivery reports, topics created when
//!   missing).
//!
//! `workers relay` runs the loop once per broker, side by side.
//!
//! Each batch claims due rows of one broker with `FOR UPDATE SKIP LOCKED` in a transaction
//! held until the rows are marked, hands them to the publisher, then marks the confirmed
//! rows processed; a refused row costs an attempt (exponential backoff, `failed` after
//! `--max-attempts`). A lost connection rolls the batch back untouched (no attempt spent)
//! and the relay reconnects with backoff. The loop knows nothing of event types: a row
//! carries its destination, key, headers and body. Any number of relays can run side by
//! side. New events wake the relay through `NOTIFY`.

mod kafka;
mod rabbitmq;

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use clap::Args;
use domain::amqp::{OrdersTopologyArgs, RabbitArgs};
use domain::config::DatabaseArgs;
use domain::kafka::{KafkaArgs, PurchasesTopicArgs};
use domain::outbox::{self, Broker, OutboxEvent};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use sqlx::postgres::PgListener;
use sqlx::PgPool;

pub use kafka::{KafkaPublisher, KafkaSettings};
pub use rabbitmq::{ConsumerQueue, RabbitPublisher, RabbitSettings};

use crate::health::{spawn_heartbeat, Health};
use crate::stop::Stop;
use domain::pipelines::{ORDERS_RELAY, PURCHASES_RELAY};

/// Options of `workers relay`.
#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub rabbit: RabbitArgs,
    /// Events claimed and published per batch (confirms are awaited per batch).
    #[arg(long, env = "RELAY_BATCH_SIZE", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// Attempts before an event becomes `failed` (dead).
    #[arg(long, env = "RELAY_MAX_ATTEMPTS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub max_attempts: u32,
    /// Longest wait between looks at the outbox when no notification arrives, in ms.
    #[arg(long, env = "RELAY_POLL_INTERVAL_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub poll_interval_ms: u64,
    /// The orders consumer's queue, declared by the relay too (see [`RabbitSettings`]).
    #[command(flatten)]
    pub orders: OrdersTopologyArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The purchases topic, created at start when missing.
    #[command(flatten)]
    pub purchases: PurchasesTopicArgs,
    /// Address of the admin server (`/metrics`, `/healthz`).
    #[arg(long, env = "RELAY_ADMIN_ADDR", default_value = "127.0.0.1:9101")]
    pub admin_addr: SocketAddr,
    /// Put every failed (dead) event back to pending, then exit.
    #[arg(long)]
    pub retry_failed: bool,
}

/// A broker the relay can publish to.
pub trait Publisher: Sized + Send + Sync {
    /// What connecting needs.
    type Settings: Clone + Send + Sync;
    /// The broker whose outbox rows this publisher takes.
    const BROKER: Broker;
    /// The variable naming the broker's address, for errors.
    const ADDRESS_VARIABLE: &'static str;
    /// Longest a whole [`Publisher::publish`] may take: a broker that stops answering on
    /// an open connection is a lost connection (the batch is rolled back, the relay
    /// reconnects), never a wait for ever.
    const PUBLISH_TIMEOUT: Duration;

    /// Connects and prepares (declares what must exist before the first publish).
    fn connect(settings: &Self::Settings) -> impl Future<Output = domain::Result<Self>> + Send;

    /// Publishes every event and waits until the broker answered for each: one result
    /// per event, in order (`Err(reason)`: the broker refused it; the row spends an
    /// attempt). `Err` of the whole call: the connection failed, nothing is marked.
    fn publish(
        &mut self,
        events: &[OutboxEvent],
    ) -> impl Future<Output = domain::Result<Vec<Result<(), String>>>> + Send;
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestinationLabels {
    broker: String,
    destination: String,
}

impl DestinationLabels {
    fn new(broker: Broker, destination: &str) -> Self {
        Self {
            broker: broker.as_str().to_owned(),
            destination: destination.to_owned(),
        }
    }
}

/// The relay's metrics, per destination where it matters.
#[derive(Debug, Clone)]
pub struct RelayMetrics {
    published: Family<DestinationLabels, Counter>,
    attempts_failed: Family<DestinationLabels, Counter>,
    dead: Family<DestinationLabels, Counter>,
    backlog: Family<DestinationLabels, Gauge>,
    oldest_pending: Family<DestinationLabels, Gauge<f64, AtomicU64>>,
    reconnects: Counter,
    batch_duration: Histogram,
}

impl RelayMetrics {
    /// Registers the relay's metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            published: Family::default(),
            attempts_failed: Family::default(),
            dead: Family::default(),
            backlog: Family::default(),
            oldest_pending: Family::default(),
            reconnects: Counter::default(),
            batch_duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
        };
        registry.register(
            "relay_events_published",
            "Events published and confirmed, by destination",
            metrics.published.clone(),
        );
        registry.register(
            "relay_attempts_failed",
            "Publish attempts the broker refused (nack, unroutable), by destination",
            metrics.attempts_failed.clone(),
        );
        registry.register(
            "relay_events_dead",
            "Events that ran out of attempts, by destination",
            metrics.dead.clone(),
        );
        registry.register(
            "relay_backlog",
            "Events waiting to be published (including those backing off), by destination",
            metrics.backlog.clone(),
        );
        registry.register(
            "relay_oldest_pending_seconds",
            "Age of the oldest event waiting to be published, by destination",
            metrics.oldest_pending.clone(),
        );
        registry.register(
            "relay_broker_reconnects",
            "Broker connections re-established",
            metrics.reconnects.clone(),
        );
        registry.register(
            "relay_batch_duration_seconds",
            "Time to claim, publish, confirm and mark one batch",
            metrics.batch_duration.clone(),
        );
        metrics
    }

    /// Reads the backlog of `broker`'s destinations into the gauges; destinations that
    /// emptied since the last look read 0.
    async fn refresh_backlog(
        &self,
        pool: &PgPool,
        broker: Broker,
        seen: &mut HashSet<DestinationLabels>,
    ) -> domain::Result<()> {
        let backlog = outbox::backlog(pool, broker).await?;
        for labels in seen.iter() {
            self.backlog.get_or_create(labels).set(0);
            self.oldest_pending.get_or_create(labels).set(0.0);
        }
        for entry in backlog {
            let labels = DestinationLabels::new(broker, &entry.destination.name);
            self.backlog.get_or_create(&labels).set(entry.pending);
            self.oldest_pending
                .get_or_create(&labels)
                .set(entry.oldest_pending_seconds);
            seen.insert(labels);
        }
        Ok(())
    }
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Rows claimed.
    pub claimed: usize,
    /// Rows published and confirmed.
    pub published: usize,
    /// Rows whose attempt failed (including those now dead).
    pub failed: usize,
    /// Rows that ran out of attempts in this batch.
    pub dead: u64,
}

/// How the loop batches and gives up, whatever the broker.
#[derive(Debug, Clone, Copy)]
pub struct RelaySettings {
    /// Rows per batch.
    pub batch_size: u32,
    /// Attempts before a row is dead.
    pub max_attempts: u32,
}

/// The loop's state over one broker connection.
pub struct Relay<P: Publisher> {
    pool: PgPool,
    publisher: P,
    settings: RelaySettings,
    metrics: RelayMetrics,
}

impl<P: Publisher> Relay<P> {
    /// Connects the publisher.
    pub async fn connect(
        pool: PgPool,
        publisher_settings: &P::Settings,
        settings: RelaySettings,
        metrics: RelayMetrics,
    ) -> domain::Result<Self> {
        Ok(Self {
            pool,
            publisher: P::connect(publisher_settings).await?,
            settings,
            metrics,
        })
    }

    /// Claims, publishes, confirms and marks one batch. A broker error rolls the batch back
    /// untouched and is returned, so the caller reconnects.
    pub async fn process_next_batch(&mut self) -> domain::Result<BatchOutcome> {
        let started = Instant::now();
        let mut transaction = self.pool.begin().await?;
        let events = outbox::claim_due(
            &mut transaction,
            P::BROKER,
            i64::from(self.settings.batch_size),
        )
        .await?;
        if events.is_empty() {
            transaction.commit().await?;
            return Ok(BatchOutcome::default());
        }
        // A span per event, child of the request that wrote it (its `traceparent`), open
        // while the batch is published: the relay's step in each request's trace. It names
        // the request and its trace, as do the log lines about the event, made inside it.
        let spans: Vec<tracing::Span> = events
            .iter()
            .map(|event| {
                let traceparent = event.header(outbox::TRACEPARENT_HEADER);
                let span = tracing::info_span!(
                    "relay publish",
                    broker = %P::BROKER,
                    destination = %event.destination,
                    event_id = %event.event_id,
                    request_id = event.header(outbox::REQUEST_ID_HEADER).unwrap_or_default(),
                    trace_id = tracing::field::Empty,
                );
                if let Some(traceparent) = traceparent {
                    domain::telemetry::continue_trace(&span, traceparent);
                }
                span
            })
            .collect();
        let results = tokio::time::timeout(P::PUBLISH_TIMEOUT, self.publisher.publish(&events))
            .await
            .map_err(|_| {
                domain::Error::Broker(format!(
                    "{}: no answer to a publish within {} s",
                    P::ADDRESS_VARIABLE,
                    P::PUBLISH_TIMEOUT.as_secs()
                ))
            })??;
        let mut published = Vec::with_capacity(events.len());
        let mut failures: Vec<(i64, String)> = Vec::new();
        for ((event, result), span) in events.iter().zip(results).zip(&spans) {
            let _in_event = span.enter();
            match result {
                Ok(()) => {
                    tracing::debug!("event published");
                    published.push(event.id);
                }
                Err(error) => {
                    tracing::warn!(%error, "publish attempt failed");
                    failures.push((event.id, error));
                }
            }
        }
        outbox::mark_processed(&mut transaction, &published).await?;
        let dead =
            outbox::record_failures(&mut transaction, &failures, self.max_attempts()).await?;
        transaction.commit().await?;
        drop(spans);
        // Counted once committed: a batch rolled back is published again and counted then.
        let count = |family: &Family<DestinationLabels, Counter>, ids: &[i64]| {
            for event in events.iter().filter(|event| ids.contains(&event.id)) {
                let labels = DestinationLabels::new(P::BROKER, &event.destination);
                family.get_or_create(&labels).inc();
            }
        };
        let failed: Vec<i64> = failures.iter().map(|(id, _)| *id).collect();
        count(&self.metrics.published, &published);
        count(&self.metrics.attempts_failed, &failed);
        count(&self.metrics.dead, &dead);
        self.metrics
            .batch_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(BatchOutcome {
            claimed: events.len(),
            published: published.len(),
            failed: failures.len(),
            dead: dead.len() as u64,
        })
    }

    /// Processes batches until none is due; how many events were published.
    pub async fn process_all(&mut self) -> domain::Result<usize> {
        let mut published = 0;
        loop {
            let outcome = self.process_next_batch().await?;
            if outcome.claimed == 0 {
                return Ok(published);
            }
            published += outcome.published;
        }
    }

    fn max_attempts(&self) -> i32 {
        i32::try_from(self.settings.max_attempts).unwrap_or(i32::MAX)
    }
}

/// Runs the relay until SIGTERM or ctrl-c (the batch in flight finishes first).
pub async fn run(args: RelayArgs) -> anyhow::Result<()> {
    let pool = domain::db::connect_and_migrate(&args.database, 4).await?;
    if args.retry_failed {
        let count = outbox::retry_failed(&pool).await?;
        println!("{count} failed events put back to pending");
        return Ok(());
    }
    let mut registry = Registry::default();
    let metrics = RelayMetrics::register(&mut registry);
    let rabbit = RabbitSettings {
        url: args.rabbit.url(),
        consumer_queues: vec![ConsumerQueue {
            topology: args.orders.topology(),
            routing_key: domain::orders::ORDER_CREATED.to_owned(),
            delivery_limit: args.orders.delivery_limit,
        }],
    };
    let settings = RelaySettings {
        batch_size: args.batch_size,
        max_attempts: args.max_attempts,
    };
    let kafka = KafkaSettings {
        kafka: args.kafka.clone(),
        topics: vec![args.purchases.kafka_topic.clone()],
    };
    let poll_interval = Duration::from_millis(args.poll_interval_ms);
    let stop = Stop::on_signal();
    let (rabbit_health, kafka_health) = (Health::default(), Health::default());
    crate::admin::spawn(
        args.admin_addr,
        registry,
        vec![rabbit_health.clone(), kafka_health.clone()],
    )
    .await?;
    let heartbeats = [
        spawn_heartbeat(
            pool.clone(),
            ORDERS_RELAY,
            rabbit_health.clone(),
            stop.clone(),
        ),
        spawn_heartbeat(
            pool.clone(),
            PURCHASES_RELAY,
            kafka_health.clone(),
            stop.clone(),
        ),
    ];
    let rabbit_relay = run_relay::<RabbitPublisher>(
        pool.clone(),
        rabbit,
        settings,
        metrics.clone(),
        rabbit_health,
        poll_interval,
        stop.clone(),
    );
    let kafka_relay = run_relay::<KafkaPublisher>(
        pool,
        kafka,
        settings,
        metrics,
        kafka_health,
        poll_interval,
        stop,
    );
    tokio::try_join!(rabbit_relay, kafka_relay)?;
    for heartbeat in heartbeats {
        heartbeat.await?;
    }
    Ok(())
}

/// How often the backlog gauges are refreshed.
const BACKLOG_REFRESH: Duration = Duration::from_secs(2);

/// The relay's loop for one broker: drains due events batch after batch, sleeps until an
/// event is appended (or `poll_interval` passes), reconnects after broker failures, and
/// returns once `stop` is raised (the batch in flight finishes first). Successes and
/// failures are reported to `health` (the pipeline's heartbeat).
pub async fn run_relay<P: Publisher>(
    pool: PgPool,
    publisher_settings: P::Settings,
    settings: RelaySettings,
    metrics: RelayMetrics,
    health: Health,
    poll_interval: Duration,
    mut stop: Stop,
) -> anyhow::Result<()> {
    let backlog = tokio::spawn(refresh_backlog_until_stopped(
        pool.clone(),
        P::BROKER,
        metrics.clone(),
        stop.clone(),
    ));
    let mut wakeups = PgListener::connect_with(&pool).await?;
    wakeups.listen(outbox::APPENDED_CHANNEL).await?;
    let mut connect_failures = 0;
    while !stop.requested() {
        // Connecting races the stop: a broker that does not answer must not hold SIGTERM.
        let connected = tokio::select! {
            connected = Relay::<P>::connect(pool.clone(), &publisher_settings, settings, metrics.clone()) => connected,
            () = stop.wait() => break,
        };
        let mut relay = match connected {
            Ok(relay) => {
                if connect_failures > 0 {
                    metrics.reconnects.inc();
                }
                connect_failures = 0;
                tracing::info!(broker = %P::BROKER, "relay connected to the broker");
                relay
            }
            // Retrying cannot help: the consumer's queue or exchange exists declared
            // otherwise. One line naming it and the fix, as the consumer says it.
            Err(domain::Error::TopologyRefused(conflict)) => {
                health.error(&conflict);
                backlog.abort();
                return Err(anyhow::anyhow!(conflict));
            }
            Err(error) => {
                connect_failures += 1;
                health.error(&error);
                let delay = domain::backoff::reconnect(connect_failures);
                tracing::warn!(broker = %P::BROKER, %error, retry_in_ms = delay.as_millis() as u64, "cannot connect to the broker or declare the topology");
                stop.sleep(delay).await;
                continue;
            }
        };
        let mut database_failures = 0;
        while !stop.requested() {
            match relay.process_next_batch().await {
                Ok(outcome) => {
                    database_failures = 0;
                    health.success();
                    if outcome.claimed < settings.batch_size as usize {
                        wait_for_events(&mut wakeups, poll_interval, &mut stop).await;
                    }
                }
                Err(domain::Error::Broker(error)) => {
                    connect_failures = 1;
                    health.error(&error);
                    tracing::warn!(broker = %P::BROKER, %error, "broker connection lost; the batch was rolled back");
                    break;
                }
                Err(error) => {
                    database_failures += 1;
                    health.error(&error);
                    let delay = domain::backoff::reconnect(database_failures);
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "relay batch failed");
                    stop.sleep(delay).await;
                }
            }
        }
    }
    backlog.abort();
    tracing::info!(broker = %P::BROKER, "relay stopped");
    Ok(())
}

/// Keeps the backlog gauges current until the stop.
async fn refresh_backlog_until_stopped(
    pool: PgPool,
    broker: Broker,
    metrics: RelayMetrics,
    mut stop: Stop,
) {
    let mut seen = HashSet::new();
    loop {
        if let Err(error) = metrics.refresh_backlog(&pool, broker, &mut seen).await {
            tracing::debug!(%error, "cannot read the outbox backlog");
        }
        if !stop.sleep(BACKLOG_REFRESH).await {
            return;
        }
    }
}

/// Waits for an append notification, the poll interval, or the stop, whichever is first.
async fn wait_for_events(wakeups: &mut PgListener, poll_interval: Duration, stop: &mut Stop) {
    tokio::select! {
        notification = tokio::time::timeout(poll_interval, wakeups.recv()) => {
            if let Ok(Err(error)) = notification {
                tracing::debug!(%error, "outbox notifications interrupted");
                stop.sleep(poll_interval).await;
            }
        }
        () = stop.wait() => {}
    }
}
