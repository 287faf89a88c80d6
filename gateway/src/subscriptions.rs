//! The subscription endpoint `/graphql/ws`: both subprotocols (`graphql-transport-ws` and
//! the legacy `graphql-ws`), executed by async-graphql, behind a guard that enforces the
//! `graphql-transport-ws` rules async-graphql leaves out, with the spec's close codes:
//! 4400 for a malformed message, 4401 for a subscribe before the connection is
//! acknowledged, 4409 for a duplicate operation id, 4429 for a second `connection_init`,
//! and 4408 when no `connection_init` arrives in time. An operation refused before it ran
//! (a syntax error, a limit, validation, a missing role) is answered with an `error`
//! message, as both specs say (`GQL_ERROR` in the legacy one), not async-graphql's
//! `next`/`data` + `complete`; the connection and its other operations go on. A message larger than `BODY_LIMIT_BYTES`
//! closes the socket with 1009. Closing the socket drops every subscription stream it held.
//!
//! Once a connection is acknowledged the server pings it every `WS_PING_INTERVAL_SECS`
//! (`ping` on graphql-transport-ws, `ka` on the legacy protocol). The same endpoint also
//! answers WebSocket upgrades on `/graphql` (see `crate::graphiql::graphql_get`).
//!
//! A client identifies in `connection_init` (its payload's `x-api-key` or `authorization`,
//! see [`Authenticator::identify_init_payload`]) or with the upgrade request's headers;
//! bad credentials, or an identity without the `read` role, close the socket with 4403 on
//! either protocol. Operations then run as that identity.
//!
//! A `graphql-transport-ws` subscription that can be shared (see [`crate::fanout`]) is not
//! run through async-graphql's WebSocket: its first result is written here, and the later
//! ones by the shared execution itself, straight into the connection's socket
//! ([`crate::socket`]); this task then only writes out what the socket did not take at
//! once, and ends the subscription when its execution ends.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::http::{
    WebSocket as GraphQLWebSocket, WebSocketProtocols, WsMessage, ALL_WEBSOCKET_PROTOCOLS,
};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::auth::{Authenticator, Identity, Role};
use crate::fanout::{FeedItem, SharedFeed, SharedSubscriptions};
use crate::rate_limit::Client;
use crate::socket::{Peer, SocketWriter};

/// The read buffer each socket starts with, and how much it writes at once. tungstenite's
/// 128 KiB defaults were most of a subscriber's memory; subscription messages are small,
/// and a larger one still gets through (the read buffer grows for it).
const SOCKET_BUFFER_BYTES: usize = 4 * 1024;

/// What the endpoint serves: the schema, and how long a client has to send
/// `connection_init`.
#[derive(Clone)]
pub struct SubscriptionEndpoint {
    /// What runs the operations: the schema, each subscription shared by every
    /// subscriber of the same operation.
    pub executor: SharedSubscriptions,
    /// Time allowed before `connection_init`.
    pub init_timeout: Duration,
    /// Time between the server's pings (`ping`, or `ka` on the legacy protocol).
    pub ping_interval: Duration,
    /// Largest message a client may send (`BODY_LIMIT_BYTES`, as for HTTP bodies): a larger
    /// one closes the socket with 1009.
    pub max_message_bytes: usize,
    /// Most subscriptions one `graphql-transport-ws` connection runs at once
    /// (`WS_MAX_SUBSCRIPTIONS`); one more is answered with an `error` message.
    pub max_subscriptions: usize,
    /// Who a `connection_init` payload names.
    pub auth: Arc<Authenticator>,
    /// Open connections per client, capped at `WS_MAX_CONNECTIONS_PER_CLIENT`.
    pub connections: ConnectionCounts,
}

/// Open WebSocket connections per client (its API key or JWT subject on the upgrade
/// request, else its address), each held by a [`ConnectionPermit`].
#[derive(Clone)]
pub struct ConnectionCounts {
    limit: usize,
    open: Arc<Mutex<HashMap<Client, usize>>>,
}

impl ConnectionCounts {
    /// Counts allowing `limit` connections per client.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            open: Arc::default(),
        }
    }

    /// A permit for one more connection of `client`, unless it has `limit` open.
    fn acquire(&self, client: Client) -> Option<ConnectionPermit> {
        let mut open = self
            .open
            .lock()
            .expect("never poisoned: no panics while held");
        let count = open.entry(client.clone()).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(ConnectionPermit {
            counts: self.clone(),
            client,
        })
    }
}

/// One open connection, counted until dropped.
pub struct ConnectionPermit {
    counts: ConnectionCounts,
    client: Client,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut open = self
            .counts
            .open
            .lock()
            .expect("never poisoned: no panics while held");
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

/// Upgrades to a WebSocket speaking the subprotocol the client asked for; a client that
/// offers neither subprotocol gets 400, as does a HEAD (it answers as a GET that cannot
/// upgrade, not 405: the route allows HEAD).
pub async fn handler(
    State(endpoint): State<SubscriptionEndpoint>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade_identity = extensions
        .get::<Identity>()
        .cloned()
        .unwrap_or_else(|| endpoint.auth.anonymous());
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        // Only GET and HEAD reach this handler, so this is a HEAD.
        Err(WebSocketUpgradeRejection::MethodNotGet(_)) => {
            return (StatusCode::BAD_REQUEST, "a WebSocket upgrade needs GET").into_response()
        }
        Err(rejection) => return rejection.into_response(),
    };
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|name| name.trim().parse::<WebSocketProtocols>().ok());
    let Some(protocol) = offered else {
        return (
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Protocol must offer graphql-transport-ws or graphql-ws",
        )
            .into_response();
    };
    let direct = extensions
        .get::<axum::extract::ConnectInfo<Peer>>()
        .map(|info| info.0.socket.clone());
    let permit = match Client::of(&extensions) {
        Some(client) => match endpoint.connections.acquire(client) {
            Some(permit) => Some(permit),
            None => {
                let limit = endpoint.connections.limit;
                let mut refusal = crate::edge::error_answer(
                    crate::GRAPHQL_WS_PATH,
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!(
                        "this client already has {limit} subscription connections open \
                         (WS_MAX_CONNECTIONS_PER_CLIENT)"
                    ),
                );
                refusal
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
                return refusal;
            }
        },
        // An in-process server without peer addresses counts nothing.
        None => None,
    };
    upgrade
        .read_buffer_size(SOCKET_BUFFER_BYTES)
        .write_buffer_size(SOCKET_BUFFER_BYTES)
        .max_message_size(endpoint.max_message_bytes)
        .max_frame_size(endpoint.max_message_bytes)
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| async move {
            serve(socket, endpoint, protocol, upgrade_identity, direct).await;
            drop(permit);
        })
}

/// A protocol violation: close the socket with this code and reason.
type Violation = (u16, String);

/// The `error` message refusing subscription `id`: the connection already runs `limit`.
fn subscription_limit_error(id: &str, limit: usize) -> String {
    serde_json::json!({
        "id": id,
        "type": "error",
        "payload": [{
            "message": format!("this connection already runs {limit} subscriptions (WS_MAX_SUBSCRIPTIONS)"),
            "extensions": {"code": "SUBSCRIPTION_LIMIT_EXCEEDED", "limit": "WS_MAX_SUBSCRIPTIONS", "allowed": limit},
        }],
    })
    .to_string()
}

/// The `graphql-transport-ws` rules, checked on every client message.
#[derive(Default)]
struct ProtocolGuard {
    /// Most subscriptions running at once on the connection.
    max_subscriptions: usize,
    init_received: bool,
    acknowledged: bool,
    operations: HashSet<String>,
    /// Operations that have had a result (`next`) already.
    started: HashSet<String>,
    /// Operations refused before they ran, answered with `error`: the `complete` that
    /// async-graphql sends after is dropped (an `error` ends the operation).
    refused: HashSet<String>,
    /// Ids the client completed whose server `complete` echo has not come back yet: that
    /// echo must not end a new operation that reuses the id.
    completed_by_client: HashSet<String>,
}

impl ProtocolGuard {
    /// `Ok(None)`: pass the message on; `Ok(Some(reply))`: answer it with `reply` instead
    /// (a subscription over the per-connection limit); `Err`: close the socket.
    fn check_client(&mut self, text: &str) -> Result<Option<String>, Violation> {
        let malformed = |why: &str| (4400, format!("Invalid message received: {why}"));
        let message: Value = serde_json::from_str(text).map_err(|_| malformed("not JSON"))?;
        let kind = message
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed("no type"))?;
        let id = || {
            message
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| malformed("no operation id"))
        };
        match kind {
            "connection_init" => {
                if self.init_received {
                    return Err((4429, "Too many initialisation requests".into()));
                }
                self.init_received = true;
            }
            "subscribe" => {
                let id = id()?;
                if !self.acknowledged {
                    return Err((4401, "Unauthorized".into()));
                }
                if message
                    .get("payload")
                    .and_then(|p| p.get("query"))
                    .is_none()
                {
                    return Err(malformed("subscribe without a query"));
                }
                if self.operations.contains(&id) {
                    return Err((4409, format!("Subscriber for {id} already exists")));
                }
                if self.operations.len() >= self.max_subscriptions {
                    return Ok(Some(subscription_limit_error(&id, self.max_subscriptions)));
                }
                self.operations.insert(id);
            }
            "complete" => {
                let id = id()?;
                if self.operations.remove(&id) {
                    self.completed_by_client.insert(id);
                }
            }
            "ping" | "pong" => {}
            other => return Err(malformed(&format!("unknown type {other:?}"))),
        }
        Ok(None)
    }

    /// Follows what the server is about to send (the acknowledgement, operations that
    /// ended) and makes it what both protocols specify: an operation refused before it ran
    /// (its first result has errors, no data and no error path: parsing, limits,
    /// validation, roles) is an `error` message whose payload is the errors, not a `next`
    /// (`data` in the legacy protocol); the `complete` after it is dropped (`None`). Each
    /// message is parsed once, and a later result of a running operation (most messages
    /// by far) not at all.
    fn on_server(&mut self, text: String) -> Option<String> {
        if self.is_later_result(&text) {
            return Some(text);
        }
        let Ok(message) = serde_json::from_str::<Value>(&text) else {
            return Some(text);
        };
        let kind = message.get("type").and_then(Value::as_str);
        if kind == Some("connection_ack") {
            self.acknowledged = true;
        }
        let Some(id) = message.get("id").and_then(Value::as_str).map(str::to_owned) else {
            return Some(text);
        };
        match kind {
            Some("next" | "data") if self.started.insert(id.clone()) => {
                let payload = &message["payload"];
                let errors = payload.get("errors").and_then(Value::as_array);
                let refused_before_running = payload.get("data").is_none_or(Value::is_null)
                    && errors.is_some_and(|errors| {
                        !errors.is_empty() && errors.iter().all(|error| error.get("path").is_none())
                    });
                if !refused_before_running {
                    return Some(text);
                }
                self.started.remove(&id);
                self.refused.insert(id.clone());
                self.operation_ended(&id);
                Some(
                    serde_json::json!({"id": id, "type": "error", "payload": payload["errors"]})
                        .to_string(),
                )
            }
            Some("complete") if self.refused.remove(&id) => None,
            Some("complete" | "error") => {
                self.started.remove(&id);
                self.operation_ended(&id);
                Some(text)
            }
            _ => Some(text),
        }
    }

    /// Whether `text` is a result (`next`, or `data` on the legacy protocol) of an
    /// operation that has had one already, as async-graphql writes it
    /// (`{"type":"next","id":"..."`), told without parsing it.
    fn is_later_result(&self, text: &str) -> bool {
        let rest = text
            .strip_prefix(r#"{"type":"next","id":""#)
            .or_else(|| text.strip_prefix(r#"{"type":"data","id":""#));
        let id = rest.and_then(|rest| rest.split_once('"')).map(|(id, _)| id);
        id.is_some_and(|id| !id.contains('\\') && self.started.contains(id))
    }

    /// Operation `id` ended on the server's side; unless the client completed it first,
    /// its id is free again.
    fn operation_ended(&mut self, id: &str) {
        if !self.completed_by_client.remove(id) {
            self.operations.remove(id);
        }
    }
}

/// Who a connection runs as, decided by its `connection_init`: the payload's credentials,
/// else the upgrade request's. `Err`: the 4403 close reason.
fn connection_identity(
    auth: &Authenticator,
    upgrade_identity: &Identity,
    init: &Value,
) -> Result<Identity, String> {
    let payload = init.get("payload").unwrap_or(&Value::Null);
    let identity = auth
        .identify_init_payload(payload)
        .unwrap_or_else(|| upgrade_identity.clone());
    match identity.require(Role::Read, "a subscription connection") {
        Ok(()) => Ok(identity),
        Err(denied) => {
            // A close reason holds at most 123 bytes.
            let mut reason = format!("Forbidden: {}", denied.message());
            let mut end = reason.len().min(123);
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
            Err(reason)
        }
    }
}

/// A `graphql-transport-ws` subscription served from its shared execution's results
/// directly (see [`crate::fanout`]), not through async-graphql's WebSocket.
struct FedSubscription {
    feed: SharedFeed,
    /// The operation id as a JSON string, written into each `next`.
    quoted_id: String,
    /// The `subscribe` message, until a result came: should the shared execution end
    /// before giving this subscriber anything, async-graphql runs it on its own.
    subscribe: Option<String>,
}

impl FedSubscription {
    /// The `complete` message ending it, written as async-graphql writes it.
    fn complete(self) -> String {
        format!(r#"{{"type":"complete","id":{}}}"#, self.quoted_id)
    }
}

/// The parts of the `next` message carrying `payload` (a result's JSON) for the operation
/// whose id is `quoted_id` (a JSON string), as async-graphql writes it.
fn next_message_parts<'a>(quoted_id: &'a str, payload: &'a str) -> [&'a str; 5] {
    [
        r#"{"type":"next","id":"#,
        quoted_id,
        r#","payload":"#,
        payload,
        "}",
    ]
}

/// The `next` message carrying `payload` for operation `quoted_id` (see
/// [`next_message_parts`]).
fn next_message(quoted_id: &str, payload: &str) -> String {
    next_message_parts(quoted_id, payload).concat()
}

/// The same message as one unmasked WebSocket text frame (RFC 6455, 5.2), ready for a
/// server's socket.
pub(crate) fn next_frame(quoted_id: &str, payload: &str) -> Vec<u8> {
    let parts = next_message_parts(quoted_id, payload);
    let length: usize = parts.iter().map(|part| part.len()).sum();
    let mut frame = Vec::with_capacity(length + 10);
    // FIN, text.
    frame.push(0x81);
    match length {
        0..=125 => frame.push(length as u8),
        126..=0xffff => {
            frame.push(126);
            frame.extend_from_slice(&(length as u16).to_be_bytes());
        }
        _ => {
            frame.push(127);
            frame.extend_from_slice(&(length as u64).to_be_bytes());
        }
    }
    for part in parts {
        frame.extend_from_slice(part.as_bytes());
    }
    frame
}

/// What one of a connection's fed subscriptions has to say next.
enum FedEvent {
    /// A `next` message of subscription `id` to send; `first`: its first (the guard sees
    /// it, and the execution writes the later ones itself).
    Next {
        id: String,
        text: String,
        first: bool,
    },
    /// The shared execution behind subscription `id` ended.
    Ended { id: String },
}

/// The next event of any of `fed` (pending while there is none). A result is written into
/// its `next` message here, with the subscription at hand.
fn next_fed_event(
    fed: &mut HashMap<String, FedSubscription>,
) -> impl std::future::Future<Output = FedEvent> + '_ {
    std::future::poll_fn(move |cx| {
        for (id, subscription) in fed.iter_mut() {
            let std::task::Poll::Ready(item) = subscription.feed.poll_next(cx) else {
                continue;
            };
            return std::task::Poll::Ready(match item {
                FeedItem::Result { shared, missed } => FedEvent::Next {
                    id: id.clone(),
                    text: next_message(&subscription.quoted_id, &shared.json_for(missed)),
                    first: subscription.subscribe.take().is_some(),
                },
                FeedItem::Ended { .. } => FedEvent::Ended { id: id.clone() },
            });
        }
        std::task::Poll::Pending
    })
}

/// What a connection's operations run with: who it runs as.
fn session_data(identity: Identity) -> async_graphql::Data {
    let mut data = async_graphql::Data::default();
    data.insert(identity);
    data
}

/// Runs one connection until either side closes it.
///
/// With `direct` (the connection's socket) the shared executions behind its
/// `graphql-transport-ws` subscriptions write their results after the first to the socket
/// themselves; this task writes out what the socket did not take at once.
pub async fn serve(
    socket: WebSocket,
    endpoint: SubscriptionEndpoint,
    protocol: WebSocketProtocols,
    upgrade_identity: Identity,
    direct: Option<SocketWriter>,
) {
    let SubscriptionEndpoint {
        executor,
        init_timeout,
        ping_interval,
        max_subscriptions,
        auth,
        ..
    } = endpoint;
    let strict = matches!(protocol, WebSocketProtocols::GraphQLWS);
    let ping = match strict {
        true => r#"{"type":"ping"}"#,
        false => r#"{"type":"ka"}"#,
    };
    let mut pings =
        tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
    let (mut sink, mut incoming) = socket.split();
    let (to_graphql, mut from_client) = mpsc::channel::<String>(64);
    let client_messages = futures_util::stream::poll_fn(move |cx| from_client.poll_recv(cx));
    // Set when `connection_init` arrives, before it is passed on; read as it is handled.
    let identity_slot: Arc<Mutex<Option<Identity>>> = Arc::default();
    let connection_identity_slot = identity_slot.clone();
    let anonymous = auth.anonymous();
    let mut graphql = GraphQLWebSocket::new(executor.clone(), client_messages, protocol)
        .on_connection_init(move |_payload| async move {
            let identity = connection_identity_slot
                .lock()
                .expect("never poisoned: no panics while held")
                .take()
                .unwrap_or(anonymous);
            Ok(session_data(identity))
        });
    // `graphql-transport-ws` subscriptions fed from shared executions, by operation id, and
    // the session they start with (set by `connection_init`).
    let mut fed: HashMap<String, FedSubscription> = HashMap::new();
    let mut session: Option<Arc<async_graphql::Data>> = None;
    let mut guard = ProtocolGuard {
        max_subscriptions,
        ..ProtocolGuard::default()
    };
    let init_deadline = tokio::time::sleep(init_timeout);
    tokio::pin!(init_deadline);
    let close = |code: u16, reason: String| {
        Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    loop {
        tokio::select! {
            // Shared results first: with thousands of subscribers each event wakes every
            // connection for them, and a wake that finds one polls nothing else.
            biased;
            event = next_fed_event(&mut fed), if !fed.is_empty() => {
                let text = match event {
                    // Its first result goes past the guard (a refusal becomes `error`);
                    // once it is on the socket, the execution writes the later ones there.
                    FedEvent::Next { id, text, first: true } => {
                        let Some(text) = guard.on_server(text) else { continue };
                        if sink.send(Message::Text(text.into())).await.is_err() {
                            break;
                        }
                        if let (Some(socket), Some(subscription)) = (&direct, fed.get_mut(&id)) {
                            let quoted_id = subscription.quoted_id.clone();
                            subscription.feed.write_directly(socket.clone(), quoted_id);
                        }
                        continue;
                    }
                    FedEvent::Next { text, first: false, .. } => text,
                    FedEvent::Ended { id } => {
                        let Some(mut subscription) = fed.remove(&id) else { continue };
                        if let Some(subscribe) = subscription.subscribe.take() {
                            // Ended before giving it anything: it runs on its own.
                            if to_graphql.send(subscribe).await.is_err() {
                                break;
                            }
                            continue;
                        }
                        let Some(complete) = guard.on_server(subscription.complete()) else { continue };
                        complete
                    }
                };
                if sink.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            message = incoming.next() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text.to_string(),
                    Some(Ok(Message::Binary(_))) if strict => {
                        let _ = sink.send(close(4400, "Invalid message received: binary".into())).await;
                        break;
                    }
                    Some(Ok(Message::Binary(bytes))) => String::from_utf8_lossy(&bytes).into_owned(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Err(error)) => {
                        // A message over the size limit (tungstenite's capacity error): say so
                        // with 1009, best effort, and close.
                        if error.to_string().contains("Message too long") {
                            let _ = sink.send(close(1009, "Message too big".into())).await;
                        }
                        break;
                    }
                    Some(Ok(Message::Close(_))) | None => break,
                };
                if strict {
                    match guard.check_client(&text) {
                        Ok(None) => {}
                        Ok(Some(reply)) => {
                            if sink.send(Message::Text(reply.into())).await.is_err() {
                                break;
                            }
                            continue;
                        }
                        Err((code, reason)) => {
                            let _ = sink.send(close(code, reason)).await;
                            break;
                        }
                    }
                }
                let mut message: Option<Value> = serde_json::from_str(&text).ok();
                let kind = message.as_ref().and_then(|message| message.get("type")?.as_str()).map(str::to_owned);
                let id = message.as_ref().and_then(|message| message.get("id")?.as_str()).map(str::to_owned);
                match (strict, kind.as_deref(), id, &session) {
                    (true, Some("subscribe"), Some(id), Some(session)) => {
                        let payload = message.as_mut().and_then(|message| message.get_mut("payload")).map(Value::take);
                        if let Some(request) = payload.and_then(|payload| serde_json::from_value(payload).ok()) {
                            if let Some(feed) = executor.feed(request, session.clone()) {
                                let quoted_id = serde_json::to_string(&id).expect("a string serializes");
                                fed.insert(id, FedSubscription { feed, quoted_id, subscribe: Some(text) });
                                continue;
                            }
                        }
                    }
                    (true, Some("complete"), Some(id), _) => {
                        if let Some(subscription) = fed.remove(&id) {
                            // Answered as async-graphql answers a `complete` of an operation it runs.
                            if let Some(complete) = guard.on_server(subscription.complete()) {
                                if sink.send(Message::Text(complete.into())).await.is_err() {
                                    break;
                                }
                            }
                            continue;
                        }
                    }
                    _ => {}
                }
                let init = message.filter(|_| kind.as_deref() == Some("connection_init"));
                if let Some(init) = init {
                    guard.init_received = true;
                    match connection_identity(&auth, &upgrade_identity, &init) {
                        Ok(identity) => {
                            session = Some(Arc::new(session_data(identity.clone())));
                            *identity_slot.lock().expect("never poisoned: no panics while held") = Some(identity);
                        }
                        Err(reason) => {
                            let _ = sink.send(close(4403, reason)).await;
                            break;
                        }
                    }
                }
                if to_graphql.send(text).await.is_err() {
                    break;
                }
            }
            reply = graphql.next() => match reply {
                Some(WsMessage::Text(text)) => {
                    let Some(text) = guard.on_server(text) else { continue };
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Some(WsMessage::Close(code, reason)) => {
                    let _ = sink.send(close(code, reason)).await;
                    break;
                }
                None => break,
            },
            _ = pings.tick(), if guard.acknowledged => {
                if sink.send(Message::Text(ping.into())).await.is_err() {
                    break;
                }
            }
            () = &mut init_deadline, if !guard.init_received => {
                let _ = sink.send(close(4408, "Connection initialisation timeout".into())).await;
                break;
            }
            // What the executions wrote that the socket did not take at once.
            _broken = async {
                match &direct {
                    Some(socket) => socket.write_backlog().await,
                    None => std::future::pending().await,
                }
            } => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_enforces_the_transport_ws_rules() {
        let mut guard = ProtocolGuard {
            max_subscriptions: 1,
            ..ProtocolGuard::default()
        };
        let subscribe = r#"{"id":"1","type":"subscribe","payload":{"query":"subscription { x }"}}"#;
        assert_eq!(guard.check_client(subscribe).unwrap_err().0, 4401);
        assert_eq!(guard.check_client("nope").unwrap_err().0, 4400);
        assert_eq!(
            guard.check_client(r#"{"type":"what"}"#).unwrap_err().0,
            4400
        );
        guard.check_client(r#"{"type":"connection_init"}"#).unwrap();
        assert_eq!(
            guard
                .check_client(r#"{"type":"connection_init"}"#)
                .unwrap_err()
                .0,
            4429
        );
        guard.on_server(r#"{"type":"connection_ack"}"#.into());
        guard.check_client(subscribe).unwrap();
        assert_eq!(guard.check_client(subscribe).unwrap_err().0, 4409);
        guard.on_server(r#"{"id":"1","type":"complete"}"#.into());
        guard.check_client(subscribe).unwrap();
        guard
            .check_client(r#"{"id":"1","type":"complete"}"#)
            .unwrap();
        guard.check_client(subscribe).unwrap();
        // A second subscription on a connection allowed one: answered, not passed on.
        let other = r#"{"id":"2","type":"subscribe","payload":{"query":"subscription { x }"}}"#;
        let reply: Value =
            serde_json::from_str(&guard.check_client(other).unwrap().unwrap()).unwrap();
        assert_eq!(reply["type"], "error");
        assert_eq!(reply["id"], "2");
        assert_eq!(
            reply["payload"][0]["extensions"]["code"],
            "SUBSCRIPTION_LIMIT_EXCEEDED"
        );
    }

    #[test]
    fn an_operation_refused_before_it_ran_is_an_error_message_without_complete() {
        let mut guard = ProtocolGuard::default();
        let refused =
            r#"{"id":"1","type":"next","payload":{"data":null,"errors":[{"message":"no"}]}}"#;
        let rewritten: Value =
            serde_json::from_str(&guard.on_server(refused.into()).unwrap()).unwrap();
        assert_eq!(
            rewritten,
            serde_json::json!({"id": "1", "type": "error", "payload": [{"message": "no"}]})
        );
        assert_eq!(
            guard.on_server(r#"{"id":"1","type":"complete"}"#.into()),
            None
        );
        // A field error while running, or any later result, stays a `next`.
        let running = r#"{"id":"2","type":"next","payload":{"data":null,"errors":[{"message":"x","path":["f"]}]}}"#;
        assert_eq!(guard.on_server(running.into()).as_deref(), Some(running));
        let ok = r#"{"id":"3","type":"next","payload":{"data":{"f":1}}}"#;
        assert_eq!(guard.on_server(ok.into()).as_deref(), Some(ok));
        let later =
            r#"{"id":"3","type":"next","payload":{"data":null,"errors":[{"message":"x"}]}}"#;
        assert_eq!(guard.on_server(later.into()).as_deref(), Some(later));
        // As async-graphql writes them, later results pass without being parsed.
        let written = r#"{"type":"next","id":"3","payload":{"data":{"f":2}}}"#;
        assert!(guard.is_later_result(written));
        assert_eq!(guard.on_server(written.into()).as_deref(), Some(written));
        assert!(!guard.is_later_result(r#"{"type":"next","id":"4","payload":{}}"#));
        let complete = r#"{"id":"3","type":"complete"}"#;
        assert_eq!(guard.on_server(complete.into()).as_deref(), Some(complete));
    }
}
