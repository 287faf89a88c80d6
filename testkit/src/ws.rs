//! GraphQL over WebSocket, as a client: both subprotocols the gateway serves on
//! `/graphql/ws` (`graphql-transport-ws` and the legacy `graphql-ws`), the handshake, and
//! reading the next JSON message with a timeout. [`GraphqlWs`] is a connected, acknowledged
//! client; the free functions work on a raw socket, for tests of the protocol itself.

use std::time::Duration;

use futures_util::{SinkExt, Stream, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error, Message};

/// A client WebSocket over plain TCP.
pub type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The subprotocol a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `graphql-transport-ws` (the `graphql-ws` library's protocol).
    TransportWs,
    /// `graphql-ws` (the legacy subscriptions-transport-ws protocol).
    LegacyWs,
}

impl Protocol {
    /// Both protocols, for tests that must hold for each.
    pub const BOTH: [Protocol; 2] = [Protocol::TransportWs, Protocol::LegacyWs];

    /// The `Sec-WebSocket-Protocol` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::TransportWs => "graphql-transport-ws",
            Self::LegacyWs => "graphql-ws",
        }
    }

    /// The message type that starts an operation: `subscribe` or `start`.
    pub fn subscribe_type(self) -> &'static str {
        match self {
            Self::TransportWs => "subscribe",
            Self::LegacyWs => "start",
        }
    }

    /// The message type that carries a result: `next` or `data`.
    pub fn data_type(self) -> &'static str {
        match self {
            Self::TransportWs => "next",
            Self::LegacyWs => "data",
        }
    }
}

/// `ws://host:port/graphql/ws` for a gateway whose base URL is `http://host:port`.
pub fn ws_url(base: &str) -> String {
    let rest = base
        .strip_prefix("http")
        .unwrap_or_else(|| panic!("{base:?} is not an http(s) URL"));
    format!("ws{rest}/graphql/ws")
}

/// Opens `/graphql/ws` on the gateway at `base` asking for `protocol`, and checks that the
/// server agreed to it. Nothing is sent yet.
pub async fn open(base: &str, protocol: Protocol) -> WebSocket {
    let mut request = ws_url(base).into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", protocol.name().parse().unwrap());
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .unwrap_or_else(|error| panic!("WebSocket handshake with {base}: {error}"));
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        protocol.name(),
        "the server chose another subprotocol"
    );
    socket
}

/// Sends `message` as a text frame.
pub async fn send_json(socket: &mut WebSocket, message: &Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .expect("send on the WebSocket");
}

/// The next text message as JSON, skipping pings and other frames; `None` when nothing
/// arrives within `wait` or the server ended the stream.
pub async fn next_json<S>(socket: &mut S, wait: Duration) -> Option<Value>
where
    S: Stream<Item = Result<Message, Error>> + Unpin,
{
    loop {
        let message = tokio::time::timeout(wait, socket.next())
            .await
            .ok()??
            .expect("a readable WebSocket");
        if let Message::Text(text) = message {
            return Some(serde_json::from_str(&text).expect("a JSON message"));
        }
    }
}

/// The code the server closes the connection with, skipping other messages; 0 for a close
/// frame without one. Panics unless the server closes within 5 s.
pub async fn close_code(socket: &mut WebSocket) -> u16 {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("the server closed in time")
            .expect("a close frame before the end")
            .expect("a readable WebSocket");
        if let Message::Close(frame) = message {
            return frame.map_or(0, |frame| u16::from(frame.code));
        }
    }
}

/// A connected client whose `connection_init` the server acknowledged.
#[derive(Debug)]
pub struct GraphqlWs {
    /// The socket, for anything the methods do not cover.
    pub socket: WebSocket,
    /// The protocol spoken.
    pub protocol: Protocol,
    /// The server's `connection_ack` message.
    pub ack: Value,
}

impl GraphqlWs {
    /// Opens `/graphql/ws` on the gateway at `base`, sends `connection_init` and waits (5 s)
    /// for the `connection_ack`.
    pub async fn connect(base: &str, protocol: Protocol) -> Self {
        Self::connect_with(base, protocol, json!({})).await
    }

    /// As [`GraphqlWs::connect`], with this `connection_init` payload (credentials).
    pub async fn connect_with(base: &str, protocol: Protocol, payload: Value) -> Self {
        let mut socket = open(base, protocol).await;
        send_json(
            &mut socket,
            &json!({"type": "connection_init", "payload": payload}),
        )
        .await;
        let ack = next_json(&mut socket, Duration::from_secs(5))
            .await
            .expect("a connection_ack within 5 s");
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        Self {
            socket,
            protocol,
            ack,
        }
    }

    /// Starts operation `id` (`subscribe` or `start`, as the protocol says).
    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        let message = json!({
            "id": id,
            "type": self.protocol.subscribe_type(),
            "payload": {"query": query, "variables": variables},
        });
        self.send(&message).await;
    }

    /// Sends any message.
    pub async fn send(&mut self, message: &Value) {
        send_json(&mut self.socket, message).await;
    }

    /// The next JSON message, or `None` after `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Value> {
        next_json(&mut self.socket, wait).await
    }

    /// Reads and drops messages until none arrives for `quiet`.
    pub async fn drain(&mut self, quiet: Duration) {
        while self.next(quiet).await.is_some() {}
    }

    /// The code the server closes with (see [`close_code`]).
    pub async fn close_code(&mut self) -> u16 {
        close_code(&mut self.socket).await
    }
}
