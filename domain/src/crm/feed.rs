//! The CRM's ZeroMQ change feed: two frames, the topic `dataChanges` then the JSON event
//! (with our simulator's `seq` when present); and a follower that survives publisher
//! restarts.

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

/// Reads one feed message body (frame 2); `None` when it is not a change we understand.
pub fn parse_feed_event(body: &[u8]) -> Option<FeedEvent> {
    let raw: RawEvent = serde_json::from_slice(body).ok()?;
    let change = match raw.event_type.as_str() {
        "CREATE" | "UPDATE" => Change::Upsert(serde_json::from_value(raw.data).ok()?),
        "DELETE" => Change::Delete(raw.data.get("id")?.as_u64()?),
        _ => return None,
    };
    Some(FeedEvent {
        event_type: raw.event_type,
        seq: raw.seq,
        change,
    })
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
}

/// Follows the ZeroMQ feed at `url` (SUB, topic `dataChanges`) until `sink` is closed,
/// rebuilding the socket with backoff whenever the publisher goes away, so the follower
/// comes back with a CRM or simulator that restarts.
pub async fn follow_feed(url: String, sink: tokio::sync::mpsc::Sender<FeedItem>) {
    use futures_util::StreamExt;
    use zeromq::{Socket, SocketEvent, SocketRecv};

    let mut failures: u32 = 0;
    let mut connected_before = false;
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
                        let Some(event) = message.get(1).and_then(|body| parse_feed_event(body)) else {
                            continue;
                        };
                        if sink.send(FeedItem::Event(event)).await.is_err() {
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
        assert!(parse_feed_event(br#"{"eventType":"MERGE","data":{"id":1}}"#).is_none());
        assert!(parse_feed_event(b"garbage").is_none());
    }
}
