//! The CRM's ZeroMQ change feed: two frames, the topic `dataChanges` then the JSON event
//! (with our simulator's `seq` when present); and a follower that survives publisher
//! restarts and reports (logged, rate-limited) every message it cannot read.

use serde::Deserialize;
use serde_json::Value;

use super::Change;

/// A parsed feed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEvent {
    /// `CREATE`, `UPDATE` or `DELETE` as sent.
    pub event_type: String,
    /// The feed's sequence number, when the publisher sends one (ours does).
    pub seq: Option<u64>,
    /// The change.
    pub change: Change,
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "eventType")]
    event_type: String,
    data: Value,
    #[serde(default)]
    seq: Option<u64>,
}

/// Reads one feed message body (frame 2), or says why it is not a change we understand.
pub fn parse_feed_event(body: &[u8]) -> Result<FeedEvent, String> {
    let raw: RawEvent =
        serde_json::from_slice(body).map_err(|error| format!("not an event: {error}"))?;
    let change = match raw.event_type.as_str() {
        "CREATE" | "UPDATE" => Change::Upsert(
            serde_json::from_value(raw.data)
                .map_err(|error| format!("{} data is not a record: {error}", raw.event_type))?,
        ),
        "DELETE" => Change::Delete(
            raw.data
                .get("id")
                .and_then(Value::as_u64)
                .ok_or("DELETE data has no numeric id")?,
        ),
        other => return Err(format!("unknown eventType {other:?}")),
    };
    Ok(FeedEvent {
        event_type: raw.event_type,
        seq: raw.seq,
        change,
    })
}

/// How much of an unreadable message a log line shows.
const LOGGED_PAYLOAD_CHARS: usize = 200;
/// At most one log line per this interval about unreadable messages (the rest are counted
/// and the count reported with the next line).
const UNREADABLE_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Logs unreadable feed messages: the first at once, then at most one per interval, each
/// line with the reason, the start of the payload and how many were not logged since.
struct UnreadableLog {
    last_logged: Option<std::time::Instant>,
    not_logged: u64,
}

impl UnreadableLog {
    fn report(&mut self, reason: &str, frames: &[&[u8]]) {
        if self
            .last_logged
            .is_some_and(|at| at.elapsed() < UNREADABLE_LOG_INTERVAL)
        {
            self.not_logged += 1;
            return;
        }
        let payload: String = frames
            .iter()
            .map(|frame| String::from_utf8_lossy(frame))
            .collect::<Vec<_>>()
            .join(" | ")
            .chars()
            .take(LOGGED_PAYLOAD_CHARS)
            .collect();
        tracing::warn!(
            reason,
            payload,
            not_logged_since_last = self.not_logged,
            "unreadable CRM feed message dropped"
        );
        self.last_logged = Some(std::time::Instant::now());
        self.not_logged = 0;
    }
}

/// What following the feed yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedItem {
    /// Subscribed; `reconnected` when an earlier connection was lost (events may have been
    /// missed in between).
    Connected {
        /// Whether this is not the first connection.
        reconnected: bool,
    },
    /// A change event.
    Event(FeedEvent),
    /// A message that is not a change we understand (logged, rate-limited).
    Unreadable,
}

/// Follows the ZeroMQ feed at `url` (SUB, topic `dataChanges`) until `sink` is closed,
/// rebuilding the socket with backoff whenever the publisher goes away, so the follower
/// comes back with a CRM or simulator that restarts.
pub async fn follow_feed(url: String, sink: tokio::sync::mpsc::Sender<FeedItem>) {
    use futures_util::StreamExt;
    use zeromq::{Socket, SocketEvent, SocketRecv};

    let mut failures: u32 = 0;
    let mut connected_before = false;
    let mut unreadable = UnreadableLog {
        last_logged: None,
        not_logged: 0,
    };
    loop {
        let mut socket = zeromq::SubSocket::new();
        let mut monitor = socket.monitor();
        let connected = async {
            socket.connect(&url).await?;
            socket.subscribe("dataChanges").await
        }
        .await;
        if let Err(error) = connected {
            failures = failures.saturating_add(1);
            let delay = crate::backoff::reconnect(failures);
            tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "CRM feed unreachable");
            tokio::time::sleep(delay).await;
            continue;
        }
        failures = 0;
        tracing::info!(%url, "following the CRM feed");
        let announced = FeedItem::Connected {
            reconnected: connected_before,
        };
        if sink.send(announced).await.is_err() {
            return;
        }
        connected_before = true;
        loop {
            tokio::select! {
                message = socket.recv() => match message {
                    Ok(message) => {
                        let item = match message.get(1).map(|body| parse_feed_event(body)) {
                            Some(Ok(event)) => FeedItem::Event(event),
                            problem => {
                                let reason = match problem {
                                    Some(Err(reason)) => reason,
                                    _ => format!("{} frame(s), expected 2", message.len()),
                                };
                                let frames: Vec<&[u8]> =
                                    message.iter().map(|frame| frame.as_ref()).collect();
                                unreadable.report(&reason, &frames);
                                FeedItem::Unreadable
                            }
                        };
                        if sink.send(item).await.is_err() {
                            return;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "CRM feed failed");
                        break;
                    }
                },
                event = monitor.next() => match event {
                    Some(SocketEvent::Disconnected(_)) | None => {
                        tracing::warn!("CRM feed disconnected");
                        break;
                    }
                    Some(_) => {}
                },
            }
        }
        tokio::time::sleep(crate::backoff::reconnect(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_events_parse_with_or_without_seq() {
        let update = br#"{"eventType":"UPDATE","data":{"id":4,"firstName":"A","lastName":null,"email":["a@b.c"]},"seq":9}"#;
        let event = parse_feed_event(update).unwrap();
        assert_eq!(event.seq, Some(9));
        assert_eq!(event.change.id(), 4);
        let original = br#"{"eventType": "DELETE", "data": {"id": 5}}"#;
        assert_eq!(
            parse_feed_event(original).unwrap().change,
            Change::Delete(5)
        );
        let unknown = parse_feed_event(br#"{"eventType":"MERGE","data":{"id":1}}"#).unwrap_err();
        assert!(unknown.contains("MERGE"), "{unknown}");
        let garbage = parse_feed_event(b"garbage").unwrap_err();
        assert!(garbage.starts_with("not an event"), "{garbage}");
        let no_id = parse_feed_event(br#"{"eventType":"DELETE","data":{}}"#).unwrap_err();
        assert!(no_id.contains("numeric id"), "{no_id}");
    }
}
