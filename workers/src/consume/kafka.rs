//! The Kafka receive loop every Kafka flow shares: a consumer group member reading the
//! flow's topic from the earliest offset, applying each message through the inbox, and
//! storing its offset only after the database commit (`enable.auto.offset.store=false`;
//! stored offsets are committed in the background and on shutdown), so a crash replays at
//! most the messages after the last commit, which the inbox absorbs.
//!
//! A poison message goes to `<topic>.dlq` with its key, value and headers, plus error
//! headers in the spirit of Kafka Connect's `__connect.errors.*` (`__hub.errors.reason`,
//! `.consumer`, `.topic`, `.partition`, `.offset`); once the dead-letter topic has it, the
//! partition moves on. The inbox remembers it (`dead:<position>`), so reading it again
//! does not dead-letter it twice (only a crash between the two writes can). A database outage holds the message and retries with backoff.
//! Partition lag is exported from the client's statistics.
//!
//! Offsets within a partition follow each other on the topics we consume (no compaction, no
//! transactions), so the consumer checks that each message is the one it expects: the next
//! after the last it settled, or for the first message of a partition, the group's
//! committed offset. A jump means the broker skipped records: Tansu, asked for an offset in
//! the middle of a stored batch (as after every rebalance or restart), answers from the
//! next batch. The consumer then seeks back [`REREAD_WINDOW`] offsets before the expected
//! one, so the batch holding it is read whole (what it had settled again comes back as
//! duplicates, which the inbox absorbs); a jump that persists is accepted, logged and
//! counted (`consumer_offset_gaps_total`).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use domain::kafka::KafkaArgs;
use domain::outbox::{ID_HEADER, REQUEST_ID_HEADER, TRACEPARENT_HEADER};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sqlx::PgPool;
use tracing::Instrument;

use super::{
    apply_holding, inbox_has, record_in_inbox, Applied, ConsumerMetrics, Envelope, Handler,
    PartitionLabels, Reconnects,
};
use crate::kafka::{client_config, ensure_topics, header, kafka_error};
use crate::stop::Stop;

/// How often the client reports statistics (and so how fresh the lag gauge is).
const STATISTICS_INTERVAL: Duration = Duration::from_secs(5);
/// How long a seek, or reading the group's committed offset, may take.
const BROKER_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How far before a skipped offset the consumer reads again: more than a stored batch holds
/// (the relay sends at most `RELAY_BATCH_SIZE` events per batch, 100 by default).
pub const REREAD_WINDOW: i64 = 1_000;
/// How long a dead letter may take to be acknowledged.
const DEAD_LETTER_TIMEOUT: Duration = Duration::from_secs(30);

/// How a Kafka consumer consumes.
#[derive(Debug, Clone)]
pub struct KafkaConsumerSettings {
    /// Brokers and credentials.
    pub kafka: KafkaArgs,
    /// The topic read.
    pub topic: String,
    /// The consumer group.
    pub group_id: String,
    /// Group session timeout, in ms.
    pub session_timeout_ms: u32,
}

impl KafkaConsumerSettings {
    /// Where poison messages go.
    pub fn dead_letter_topic(&self) -> String {
        format!("{}.dlq", self.topic)
    }
}

/// Where each partition this member reads should continue, to notice offset jumps.
#[derive(Debug, Default)]
struct Positions {
    /// The offset expected next, per (topic, partition), once a message was settled.
    next: HashMap<(String, i32), i64>,
    /// Jumps already read again once: (topic, partition, expected offset).
    retried: HashSet<(String, i32, i64)>,
}

/// What to do with a message, given where its partition was.
#[derive(Debug, PartialEq, Eq)]
enum Continuity {
    /// The expected offset (or the first message of the partition here).
    InOrder,
    /// Past the expected offset: seek back to it and read again.
    ReadAgainFrom(i64),
    /// Past the expected offset again: the records are not there; go on.
    Gap(i64),
}

impl Positions {
    /// Where `offset` stands; `committed` gives the group's committed offset for a partition
    /// this member has not read yet.
    fn check(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        committed: impl FnOnce() -> Option<i64>,
    ) -> Continuity {
        let key = (topic.to_owned(), partition);
        let expected = match self.next.get(&key) {
            Some(&expected) => Some(expected),
            None => committed(),
        };
        match expected {
            Some(expected) if offset > expected => {
                if self.retried.insert((key.0, partition, expected)) {
                    Continuity::ReadAgainFrom(expected)
                } else {
                    Continuity::Gap(expected)
                }
            }
            _ => Continuity::InOrder,
        }
    }

    fn settled(&mut self, topic: &str, partition: i32, offset: i64) {
        self.next.insert((topic.to_owned(), partition), offset + 1);
    }
}

/// The consumer's context: exports partition lag from the client's statistics, and keeps
/// where each partition this member read stands (across rebalances: when a partition comes
/// back, a skip at its committed offset shows).
struct HubConsumerContext {
    metrics: ConsumerMetrics,
    positions: Mutex<Positions>,
}

impl HubConsumerContext {
    fn positions(&self) -> std::sync::MutexGuard<'_, Positions> {
        self.positions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl ClientContext for HubConsumerContext {
    fn stats(&self, statistics: Statistics) {
        let mut total_lag = 0;
        for (topic, partitions) in &statistics.topics {
            for (partition, state) in &partitions.partitions {
                // -1 is librdkafka's internal partition; a negative lag means unknown.
                if *partition < 0 || state.consumer_lag < 0 {
                    continue;
                }
                let labels = PartitionLabels {
                    topic: topic.clone(),
                    partition: partition.to_string(),
                };
                self.metrics
                    .lag
                    .get_or_create(&labels)
                    .set(state.consumer_lag);
                total_lag += state.consumer_lag;
            }
        }
        self.metrics
            .health
            .lag(domain::pipelines::Lag::Events(total_lag as f64));
    }
}

impl ConsumerContext for HubConsumerContext {}

/// The group's committed offset of one partition, if it has one.
fn committed_offset<C: ConsumerContext>(
    consumer: &StreamConsumer<C>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(topic, partition);
    let committed = consumer
        .committed_offsets(wanted, BROKER_CALL_TIMEOUT)
        .inspect_err(|error| tracing::debug!(%error, topic, partition, "committed offset unknown"))
        .ok()?;
    match committed.find_partition(topic, partition)?.offset() {
        Offset::Offset(offset) => Some(offset),
        _ => None,
    }
}

/// The message's value, key and headers, with the error headers added.
fn dead_letter_headers(
    message: &BorrowedMessage<'_>,
    consumer: &str,
    reason: &str,
) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = message.headers() {
        for header in original.iter() {
            headers = headers.insert(header);
        }
    }
    let partition = message.partition().to_string();
    let offset = message.offset().to_string();
    for (key, value) in [
        ("__hub.errors.reason", reason),
        ("__hub.errors.consumer", consumer),
        ("__hub.errors.topic", message.topic()),
        ("__hub.errors.partition", partition.as_str()),
        ("__hub.errors.offset", offset.as_str()),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    headers
}

/// Applies one message; `Ok(true)` when it is settled (its offset may be stored),
/// `Ok(false)` when the stop came while the database was failing.
async fn handle<H: Handler>(
    pool: &PgPool,
    handler: &H,
    message: &BorrowedMessage<'_>,
    dead_letters: &FutureProducer,
    dead_letter_topic: &str,
    metrics: &ConsumerMetrics,
    stop: &mut Stop,
) -> domain::Result<bool> {
    let id = header(message, ID_HEADER);
    let position = format!(
        "kafka:{}/{}/{}",
        message.topic(),
        message.partition(),
        message.offset()
    );
    let traceparent = header(message, TRACEPARENT_HEADER);
    let request_id = header(message, REQUEST_ID_HEADER);
    let envelope = Envelope {
        body: message.payload().unwrap_or_default(),
        id_header: id.as_deref(),
        position: Some(&position),
        traceparent: traceparent.as_deref(),
        request_id: request_id.as_deref(),
    };
    async {
        let Some(outcome) = apply_holding(pool, handler, envelope, metrics, stop).await else {
            return Ok(false);
        };
        if let Applied::Poison(reason) = outcome {
            // A message read again (after a restart, or a re-read) is dead-lettered once.
            let dead_key = format!("dead:{position}");
            if inbox_has(pool, H::NAME, &dead_key).await? {
                return Ok(true);
            }
            let mut record = FutureRecord::to(dead_letter_topic)
                .payload(envelope.body)
                .headers(dead_letter_headers(message, H::NAME, &reason));
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            dead_letters
                .send(record, DEAD_LETTER_TIMEOUT)
                .await
                .map_err(|(error, _)| kafka_error(error))?;
            record_in_inbox(pool, H::NAME, &dead_key).await?;
            tracing::warn!(%reason, %position, "poison message dead-lettered");
            metrics.dead_lettered();
        }
        Ok(true)
    }
    .instrument(envelope.span(H::NAME))
    .await
}

/// Consumes until the stop is raised or the client fails for good (returned as an error,
/// so the caller starts over).
async fn consume<H: Handler>(
    pool: &PgPool,
    handler: &H,
    settings: &KafkaConsumerSettings,
    metrics: &ConsumerMetrics,
    stop: &mut Stop,
) -> domain::Result<()> {
    let config = client_config(&settings.kafka);
    let dead_letter_topic = settings.dead_letter_topic();
    ensure_topics(&config, &[&settings.topic, &dead_letter_topic]).await?;
    let consumer: StreamConsumer<HubConsumerContext> = config
        .clone()
        .set("group.id", &settings.group_id)
        .set("client.id", format!("hub-consume-{}", H::NAME))
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "session.timeout.ms",
            settings.session_timeout_ms.to_string(),
        )
        .set(
            "statistics.interval.ms",
            STATISTICS_INTERVAL.as_millis().to_string(),
        )
        .create_with_context(HubConsumerContext {
            metrics: metrics.clone(),
            positions: Mutex::default(),
        })
        .map_err(kafka_error)?;
    consumer
        .subscribe(&[&settings.topic])
        .map_err(kafka_error)?;
    let dead_letters: FutureProducer = config
        .clone()
        .set("acks", "all")
        .create()
        .map_err(kafka_error)?;
    tracing::info!(consumer = H::NAME, topic = %settings.topic, group = %settings.group_id, "consuming");
    loop {
        let received = tokio::select! {
            received = consumer.recv() => received,
            () = stop.wait() => break,
        };
        let message = match received {
            Ok(message) => message,
            Err(error) => {
                if let Some((code, reason)) = consumer.client().fatal_error() {
                    return Err(domain::Error::Broker(format!(
                        "fatal consumer error {code}: {reason}"
                    )));
                }
                // librdkafka reconnects by itself; a transient error is only reported.
                tracing::warn!(%error, "Kafka consumer error");
                stop.sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        let continuity = consumer
            .context()
            .positions()
            .check(topic, partition, offset, || {
                committed_offset(&consumer, topic, partition)
            });
        match continuity {
            Continuity::InOrder => {}
            Continuity::ReadAgainFrom(expected) => {
                let from = (expected - REREAD_WINDOW).max(0);
                tracing::warn!(
                    topic,
                    partition,
                    expected,
                    offset,
                    from,
                    "offsets jumped; reading the partition again"
                );
                consumer
                    .seek(topic, partition, Offset::Offset(from), BROKER_CALL_TIMEOUT)
                    .map_err(kafka_error)?;
                continue;
            }
            Continuity::Gap(expected) => {
                tracing::warn!(
                    topic,
                    partition,
                    expected,
                    offset,
                    "offsets jumped again; going on"
                );
                metrics.offset_gaps.inc();
            }
        }
        let settled = handle(
            pool,
            handler,
            &message,
            &dead_letters,
            &dead_letter_topic,
            metrics,
            stop,
        )
        .await?;
        if !settled {
            break;
        }
        consumer
            .store_offset_from_message(&message)
            .map_err(kafka_error)?;
        consumer
            .context()
            .positions()
            .settled(topic, partition, offset);
    }
    if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(%error, "no offsets to commit on stop");
    }
    Ok(())
}

/// The Kafka consumer's loop: consumes, and starts over with backoff after client
/// failures, until `stop` is raised.
pub async fn run_kafka_consumer<H: Handler>(
    pool: PgPool,
    handler: H,
    settings: KafkaConsumerSettings,
    metrics: ConsumerMetrics,
    mut stop: Stop,
) -> anyhow::Result<()> {
    let mut reconnects = Reconnects::default();
    while !stop.requested() {
        let started = std::time::Instant::now();
        if let Err(error) = consume(&pool, &handler, &settings, &metrics, &mut stop).await {
            reconnects
                .after_failure(H::NAME, started, &error, &metrics.health, &mut stop)
                .await;
        }
    }
    tracing::info!(consumer = H::NAME, "consumer stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jump_is_read_again_once_then_accepted() {
        let mut positions = Positions::default();
        let never = || -> Option<i64> { panic!("the committed offset is asked only once") };
        assert_eq!(positions.check("t", 0, 5, || None), Continuity::InOrder);
        positions.settled("t", 0, 5);
        assert_eq!(positions.check("t", 0, 6, never), Continuity::InOrder);
        positions.settled("t", 0, 6);
        assert_eq!(
            positions.check("t", 0, 9, never),
            Continuity::ReadAgainFrom(7)
        );
        assert_eq!(positions.check("t", 0, 7, never), Continuity::InOrder);
        positions.settled("t", 0, 7);
        assert_eq!(
            positions.check("t", 0, 12, never),
            Continuity::ReadAgainFrom(8)
        );
        assert_eq!(positions.check("t", 0, 12, never), Continuity::Gap(8));
        positions.settled("t", 0, 12);
        // Redelivered earlier offsets (a re-read, a rebalance) are in order: the inbox
        // absorbs them.
        assert_eq!(positions.check("t", 0, 3, never), Continuity::InOrder);
    }

    #[test]
    fn the_first_message_of_a_partition_must_be_its_committed_offset() {
        let mut positions = Positions::default();
        assert_eq!(
            positions.check("t", 1, 40, || Some(40)),
            Continuity::InOrder
        );
        assert_eq!(
            positions.check("t", 2, 45, || Some(40)),
            Continuity::ReadAgainFrom(40)
        );
        assert_eq!(positions.check("t", 3, 45, || None), Continuity::InOrder);
    }
}
