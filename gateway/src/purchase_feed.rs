//! The purchases topic as a resumable live feed, behind the `purchaseMade` subscription.
//!
//! Every event carries an opaque cursor: for each partition of the topic, the offset that
//! follows what the subscriber has been given. A subscription started with `after:` reads
//! from those offsets, so a client that reconnects (to any gateway) gets every purchase it
//! missed, then the live ones, with no gap and no duplicate; without `after:` it starts at
//! the end of the topic. A cursor older than the topic's retention is a `CURSOR_EXPIRED`
//! error. The feed reads without a consumer group (nothing is committed): the cursor is the
//! client's.
//!
//! Each subscription reads with a Kafka client of its own, dropped when the subscriber goes
//! away. It starts [`READ_BACK`] offsets before its cursor and skips what it has given:
//! Tansu, asked for an offset in the middle of a stored batch, answers from the next batch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use domain::kafka::KafkaArgs;
use domain::purchases::NewPurchase;
use futures_util::Stream;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::errors::{ApiError, ErrorKind};

/// How far before its cursor a subscription starts reading (more than a stored batch holds).
pub const READ_BACK: i64 = 1_000;
/// How long a metadata or watermark request may take.
const BROKER_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a fetch waits for new records: bounds how late a purchase reaches a subscriber.
const FETCH_WAIT: Duration = Duration::from_millis(50);
/// Events buffered per subscriber.
const SUBSCRIBER_BUFFER: usize = 64;

/// Where each partition's next offset is: the resumable position of a subscriber.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor(BTreeMap<i32, i64>);

impl Cursor {
    /// The opaque form clients see and send back.
    pub fn encode(&self) -> String {
        let text: Vec<String> = self
            .0
            .iter()
            .map(|(partition, offset)| format!("{partition}:{offset}"))
            .collect();
        URL_SAFE_NO_PAD.encode(text.join(","))
    }

    /// Reads a cursor this API issued; anything else is `BAD_USER_INPUT`.
    pub fn decode(cursor: &str) -> Result<Self, ApiError> {
        let malformed = || {
            ApiError::new(
                ErrorKind::BadUserInput,
                format!("malformed cursor {cursor:?}: expected a cursor from purchaseMade"),
            )
        };
        let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| malformed())?;
        let text = String::from_utf8(bytes).map_err(|_| malformed())?;
        let mut positions = BTreeMap::new();
        for entry in text.split(',') {
            let (partition, offset) = entry.split_once(':').ok_or_else(malformed)?;
            let partition: i32 = partition.parse().map_err(|_| malformed())?;
            let offset: i64 = offset.parse().map_err(|_| malformed())?;
            if partition < 0 || offset < 0 {
                return Err(malformed());
            }
            positions.insert(partition, offset);
        }
        Ok(Self(positions))
    }
}

/// The offsets a partition holds: from `low` (older ones are gone) to `high` (the next).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    /// The oldest offset still kept.
    pub low: i64,
    /// The offset the next message will get.
    pub high: i64,
}

/// Where a subscription starts in each partition: the cursor's offsets, the oldest kept
/// one for a partition the cursor does not know (added since), the end of each partition
/// without a cursor. A cursor behind what the topic keeps is `CURSOR_EXPIRED`.
pub fn start_positions(
    cursor: Option<&Cursor>,
    watermarks: &BTreeMap<i32, Watermarks>,
) -> Result<Cursor, ApiError> {
    let mut start = BTreeMap::new();
    for (&partition, marks) in watermarks {
        let offset = match cursor {
            None => marks.high,
            Some(cursor) => match cursor.0.get(&partition) {
                None => marks.low,
                Some(&offset) if offset < marks.low => {
                    return Err(ApiError::new(
                        ErrorKind::CursorExpired,
                        format!(
                            "the cursor is older than what the topic keeps (partition {partition} starts at offset {}); subscribe without `after` to follow from now",
                            marks.low
                        ),
                    ))
                }
                Some(&offset) => offset.min(marks.high),
            },
        };
        start.insert(partition, offset);
    }
    Ok(Cursor(start))
}

/// A purchase read from the topic, with the cursor that resumes right after it.
#[derive(Debug, Clone)]
pub struct FeedEvent {
    /// Resumes after this event.
    pub cursor: String,
    /// The purchase.
    pub purchase: NewPurchase,
}

/// The purchases topic, as subscriptions read it.
#[derive(Clone)]
pub struct PurchaseFeed {
    config: Arc<ClientConfig>,
    topic: String,
}

impl std::fmt::Debug for PurchaseFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PurchaseFeed")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl PurchaseFeed {
    /// The feed of `topic` on the brokers of `kafka`.
    pub fn new(kafka: &KafkaArgs, topic: &str) -> Self {
        let mut config = ClientConfig::new();
        for (key, value) in kafka.client_properties() {
            config.set(key, value);
        }
        config
            .set("group.id", "hub-gateway-purchase-feed")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // A live feed: the broker answers a fetch within 50 ms even with nothing new.
            .set("fetch.wait.max.ms", FETCH_WAIT.as_millis().to_string());
        Self {
            config: Arc::new(config),
            topic: topic.to_owned(),
        }
    }

    /// Purchases (of `username`, or everyone's) after `after`, or from now on; the stream
    /// ends with an error when the cursor has expired or Kafka cannot be read.
    pub fn follow(
        &self,
        username: Option<String>,
        after: Option<Cursor>,
    ) -> impl Stream<Item = Result<FeedEvent, ApiError>> + Send + 'static {
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
        let feed = self.clone();
        tokio::spawn(async move {
            if let Err(error) = feed.read(username, after, &sender).await {
                let _ = sender.send(Err(error)).await;
            }
        });
        futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|event| (event, receiver))
        })
    }

    async fn read(
        &self,
        username: Option<String>,
        after: Option<Cursor>,
        sender: &mpsc::Sender<Result<FeedEvent, ApiError>>,
    ) -> Result<(), ApiError> {
        let unavailable = |error: rdkafka::error::KafkaError| {
            tracing::warn!(%error, topic = %self.topic, "purchase feed cannot read Kafka");
            ApiError::new(
                ErrorKind::Unavailable,
                "the purchases topic cannot be read, try again later",
            )
        };
        let consumer: Arc<StreamConsumer> = Arc::new(self.config.create().map_err(unavailable)?);
        let watermarks = {
            let (consumer, topic) = (consumer.clone(), self.topic.clone());
            tokio::task::spawn_blocking(move || watermarks(&consumer, &topic))
                .await
                .map_err(|_| ApiError::new(ErrorKind::Internal, "watermark lookup failed"))?
                .map_err(unavailable)?
        };
        if watermarks.is_empty() {
            return Err(ApiError::new(
                ErrorKind::Unavailable,
                format!("the purchases topic {} does not exist yet", self.topic),
            ));
        }
        let mut position = start_positions(after.as_ref(), &watermarks)?;
        let mut assignment = TopicPartitionList::new();
        for (&partition, &offset) in &position.0 {
            let from = (offset - READ_BACK).max(watermarks[&partition].low);
            assignment
                .add_partition_offset(&self.topic, partition, Offset::Offset(from))
                .map_err(unavailable)?;
        }
        consumer.assign(&assignment).map_err(unavailable)?;
        loop {
            let message = tokio::select! {
                message = consumer.recv() => message.map_err(unavailable)?,
                () = sender.closed() => return Ok(()),
            };
            let (partition, offset) = (message.partition(), message.offset());
            let next = position.0.entry(partition).or_insert(0);
            if offset < *next {
                continue; // read back before the cursor: already given
            }
            *next = offset + 1;
            let purchase = message
                .payload()
                .and_then(|body| serde_json::from_slice(body).ok())
                .and_then(|value| NewPurchase::from_json(&value).ok());
            let Some(purchase) = purchase else {
                continue; // not a purchase: the consumer dead-letters it
            };
            if username
                .as_deref()
                .is_some_and(|name| name != purchase.username())
            {
                continue;
            }
            let event = FeedEvent {
                cursor: position.encode(),
                purchase,
            };
            if sender.send(Ok(event)).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// Every partition of `topic` with its watermarks (blocking: run it off the runtime).
fn watermarks(
    consumer: &StreamConsumer,
    topic: &str,
) -> Result<BTreeMap<i32, Watermarks>, rdkafka::error::KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), BROKER_CALL_TIMEOUT)?;
    let mut marks = BTreeMap::new();
    for topic_metadata in metadata.topics().iter().filter(|t| t.name() == topic) {
        for partition in topic_metadata.partitions() {
            let (low, high) =
                consumer.fetch_watermarks(topic, partition.id(), BROKER_CALL_TIMEOUT)?;
            marks.insert(partition.id(), Watermarks { low, high });
        }
    }
    Ok(marks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(pairs: &[(i32, i64, i64)]) -> BTreeMap<i32, Watermarks> {
        pairs
            .iter()
            .map(|&(partition, low, high)| (partition, Watermarks { low, high }))
            .collect()
    }

    #[test]
    fn cursors_round_trip_and_anything_else_is_bad_input() {
        let cursor = Cursor(BTreeMap::from([(0, 5), (1, 0), (2, 17)]));
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        for bad in [
            "",
            "!!",
            &URL_SAFE_NO_PAD.encode("0:x"),
            &URL_SAFE_NO_PAD.encode("0:-1"),
        ] {
            assert_eq!(
                Cursor::decode(bad).unwrap_err().kind,
                ErrorKind::BadUserInput
            );
        }
    }

    #[test]
    fn a_subscription_starts_at_its_cursor_or_the_end_and_an_old_cursor_expires() {
        let watermarks = marks(&[(0, 0, 10), (1, 4, 8), (2, 0, 3)]);
        assert_eq!(
            start_positions(None, &watermarks).unwrap(),
            Cursor(BTreeMap::from([(0, 10), (1, 8), (2, 3)]))
        );
        // Partition 2 is new since the cursor; an offset past the end means the end.
        let cursor = Cursor(BTreeMap::from([(0, 7), (1, 4), (5, 1)]));
        assert_eq!(
            start_positions(Some(&cursor), &watermarks).unwrap(),
            Cursor(BTreeMap::from([(0, 7), (1, 4), (2, 0)]))
        );
        let future = Cursor(BTreeMap::from([(0, 99)]));
        assert_eq!(
            start_positions(Some(&future), &watermarks).unwrap().0[&0],
            10
        );
        let expired = Cursor(BTreeMap::from([(1, 3)]));
        assert_eq!(
            start_positions(Some(&expired), &watermarks)
                .unwrap_err()
                .kind,
            ErrorKind::CursorExpired
        );
    }
}
