//! Subscription fan-out: subscriptions that are the same operation (the same document,
//! operation name, variables and request extensions) of the same caller share one
//! execution. Its results are resolved once and handed to each subscriber through a
//! bounded queue of its own (`WS_SUBSCRIPTION_QUEUE` results): a subscriber that falls
//! that far behind skips the oldest results, never slowing the others nor growing memory,
//! and its next result says how many it missed in `extensions.missedEvents`.
//!
//! The execution starts with its first subscriber and stops when the last one leaves. A
//! subscription that replays from a cursor (`purchaseMade(after:)`) runs on its own.
//! A subscriber that joins an execution which ends before giving it anything (one refused
//! as it started) runs its own, so it gets its own answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_graphql::futures_util::stream::BoxStream;
use async_graphql::{Data, Executor, Request, Response};
use futures_util::StreamExt;
use tokio::sync::broadcast;

use crate::auth::Identity;
use crate::graphql::authorization::identity_in;
use crate::graphql::HubSchema;

/// The extension naming how many results a subscriber missed before this one.
pub const MISSED_EVENTS_EXTENSION: &str = "missedEvents";

/// What makes two subscriptions the same: who asks, and the operation as sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SubscriptionKey {
    identity: Option<Identity>,
    operation: String,
}

/// One result of a shared execution, with its JSON written once for every subscriber.
pub struct SharedResult {
    response: Response,
    /// `response` as JSON: the payload of a `next` message.
    json: String,
}

impl SharedResult {
    fn new(response: Response) -> Self {
        let json =
            serde_json::to_string(&response).expect("a GraphQL response always serializes to JSON");
        Self { response, json }
    }

    /// The result's JSON for a subscriber that missed `missed` results before it: the
    /// shared text, or after a gap its own (with `extensions.missedEvents`).
    pub fn json_for(&self, missed: u64) -> std::borrow::Cow<'_, str> {
        if missed == 0 {
            return std::borrow::Cow::Borrowed(&self.json);
        }
        let own = serde_json::to_string(&self.copy(missed))
            .expect("a GraphQL response always serializes to JSON");
        std::borrow::Cow::Owned(own)
    }

    /// A subscriber's own copy (`Response` is not `Clone`), saying it missed `missed`
    /// results before this one when it did.
    fn copy(&self, missed: u64) -> Response {
        let shared = &self.response;
        let mut response = Response::new(shared.data.clone());
        response.extensions = shared.extensions.clone();
        response.errors = shared.errors.clone();
        response.cache_control = shared.cache_control;
        response.http_headers = shared.http_headers.clone();
        if missed > 0 {
            response.extensions.insert(
                MISSED_EVENTS_EXTENSION.to_owned(),
                async_graphql::Value::from(missed),
            );
        }
        response
    }
}

type Results = broadcast::Sender<Arc<SharedResult>>;

/// The shared executions running now, by what they run. Cheap to clone; the gateway's
/// state holds it so `/metrics` can count them.
#[derive(Clone, Default)]
pub struct RunningSubscriptions(Arc<Mutex<HashMap<SubscriptionKey, Results>>>);

impl RunningSubscriptions {
    /// How many executions run (each serving one or more subscribers).
    pub fn executions(&self) -> usize {
        self.lock().len()
    }

    /// How many subscribers the running executions serve.
    pub fn subscribers(&self) -> usize {
        self.lock()
            .values()
            .map(broadcast::Sender::receiver_count)
            .sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SubscriptionKey, Results>> {
        self.0.lock().expect("never poisoned: no panics while held")
    }
}

/// The executor behind `/graphql/ws`: queries and mutations run as usual, subscriptions
/// are shared (see the module documentation).
#[derive(Clone)]
pub struct SharedSubscriptions {
    schema: HubSchema,
    queue: usize,
    running: RunningSubscriptions,
}

impl SharedSubscriptions {
    /// Shares the subscriptions of `schema` through `running`, queueing up to `queue`
    /// results per subscriber.
    pub fn new(schema: HubSchema, queue: usize, running: RunningSubscriptions) -> Self {
        Self {
            schema,
            queue: queue.max(1),
            running,
        }
    }

    fn run_alone(
        &self,
        request: Request,
        session: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        self.schema
            .execute_stream_with_session_data(request, session.unwrap_or_default())
    }
}

/// How a subscription request meets the shared executions.
enum Sharing {
    /// It cannot be shared (see [`live_only`]): here it is back, to run alone.
    Alone(Request),
    /// It started a shared execution; its results come through this receiver.
    Started(broadcast::Receiver<Arc<SharedResult>>),
    /// It joined one already running (the request is kept in case that one ends before
    /// giving it anything).
    Joined(broadcast::Receiver<Arc<SharedResult>>, Request),
}

impl SharedSubscriptions {
    /// Joins the running execution of the same operation by the same caller, or starts it.
    fn share(&self, mut request: Request, session: Option<Arc<Data>>) -> Sharing {
        if !live_only(&mut request) {
            return Sharing::Alone(request);
        }
        let Ok(operation) = serde_json::to_string(&request) else {
            return Sharing::Alone(request);
        };
        let key = SubscriptionKey {
            // The caller the connection runs as (its `connection_init` put it there).
            identity: session.as_deref().and_then(identity_in).cloned(),
            operation,
        };
        let mut running = self.running.lock();
        if let Some(results) = running.get(&key) {
            let receiver = results.subscribe();
            return Sharing::Joined(receiver, request);
        }
        let (results, receiver) = broadcast::channel(self.queue);
        running.insert(key.clone(), results.clone());
        drop(running);
        let upstream = self.run_alone(request, session);
        tokio::spawn(pump(upstream, results, self.running.clone(), key));
        Sharing::Started(receiver)
    }

    /// The results of subscription `request`, run as `session`'s caller, ready to be
    /// written as they are: shared when the operation can be, else `None` (run it another
    /// way).
    pub fn feed(&self, request: Request, session: Arc<Data>) -> Option<SharedFeed> {
        let receiver = match self.share(request, Some(session)) {
            Sharing::Alone(_) => return None,
            Sharing::Started(receiver) | Sharing::Joined(receiver, _) => receiver,
        };
        Some(SharedFeed::new(receiver))
    }
}

impl Executor for SharedSubscriptions {
    async fn execute(&self, request: Request) -> Response {
        self.schema.execute(request).await
    }

    fn execute_stream(
        &self,
        request: Request,
        session: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        match self.share(request, session.clone()) {
            Sharing::Alone(request) => self.run_alone(request, session),
            Sharing::Started(receiver) => subscriber(SharedFeed::new(receiver), None),
            Sharing::Joined(receiver, request) => {
                let fallback = Fallback {
                    executor: self.clone(),
                    request,
                    session,
                };
                subscriber(SharedFeed::new(receiver), Some(fallback))
            }
        }
    }
}

/// What a [`SharedFeed`] gives next.
pub enum FeedItem {
    /// The next result, and how many this subscriber missed before it (write it with
    /// [`SharedResult::json_for`]).
    Result {
        shared: Arc<SharedResult>,
        missed: u64,
    },
    /// The shared execution ended; `received_any`: after giving this subscriber a result
    /// (else it joined one ending without it, and should run its own).
    Ended { received_any: bool },
}

/// One subscriber's results of a shared execution (see [`SharedSubscriptions::feed`]): a
/// subscriber that fell more than the queue behind skips the oldest, counted in `missed`.
pub struct SharedFeed {
    results: BoxStream<'static, Result<Arc<SharedResult>, broadcast::error::RecvError>>,
    missed: u64,
    received: bool,
}

impl SharedFeed {
    fn new(receiver: broadcast::Receiver<Arc<SharedResult>>) -> Self {
        let results = futures_util::stream::unfold(receiver, |mut receiver| async move {
            let result = receiver.recv().await;
            Some((result, receiver))
        });
        Self {
            results: results.boxed(),
            missed: 0,
            received: false,
        }
    }

    /// The next result, or the end of the execution.
    pub fn poll_next(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<FeedItem> {
        loop {
            let next = std::task::ready!(self.results.poll_next_unpin(cx));
            match next {
                Some(Ok(shared)) => {
                    self.received = true;
                    let missed = std::mem::take(&mut self.missed);
                    return std::task::Poll::Ready(FeedItem::Result { shared, missed });
                }
                Some(Err(broadcast::error::RecvError::Lagged(missed))) => {
                    tracing::debug!(missed, "a slow subscriber skipped results");
                    self.missed = self.missed.saturating_add(missed);
                }
                Some(Err(broadcast::error::RecvError::Closed)) | None => {
                    return std::task::Poll::Ready(FeedItem::Ended {
                        received_any: self.received,
                    })
                }
            }
        }
    }
}

/// Whether every result of `request` is an event from the moment it subscribes, so a
/// subscriber may join its execution at any time: not when a root field replays from a
/// cursor (`purchaseMade(after:)` first sends what came after it, which a subscriber joining
/// later would miss), nor when the root holds fragments (not looked into).
fn live_only(request: &mut Request) -> bool {
    use async_graphql::parser::types::{DocumentOperations, Selection};
    let variables = request.variables.clone();
    let Ok(document) = request.parsed_query() else {
        // Refused as it starts, whoever asks: sharing that is harmless.
        return true;
    };
    let operations: Vec<_> = match &document.operations {
        DocumentOperations::Single(operation) => vec![operation],
        DocumentOperations::Multiple(operations) => operations.values().collect(),
    };
    operations.iter().all(|operation| {
        operation
            .node
            .selection_set
            .node
            .items
            .iter()
            .all(|selection| {
                match &selection.node {
                    Selection::Field(field) => field.node.arguments.iter().all(|(name, value)| {
                        // An `after` left null (literally, or by a variable given no
                        // value) replays nothing.
                        let given = value
                            .node
                            .clone()
                            .into_const_with(|name| variables.get(&name).cloned().ok_or(()))
                            .is_ok_and(|value| value != async_graphql::Value::Null);
                        name.node != "after" || !given
                    }),
                    Selection::FragmentSpread(_) | Selection::InlineFragment(_) => false,
                }
            })
    })
}

/// Moves one execution's results to its subscribers until it ends or nobody listens.
async fn pump(
    mut upstream: BoxStream<'static, Response>,
    results: Results,
    running: RunningSubscriptions,
    key: SubscriptionKey,
) {
    loop {
        tokio::select! {
            result = upstream.next() => match result {
                // Nobody listening is fine: the last subscriber is just leaving.
                Some(response) => { let _ = results.send(Arc::new(SharedResult::new(response))); }
                None => break,
            },
            () = results.closed() => {
                // One may have joined meanwhile; one joining as this ends runs alone.
                if results.receiver_count() == 0 {
                    break;
                }
            }
        }
    }
    let mut running = running.lock();
    if running
        .get(&key)
        .is_some_and(|entry| entry.same_channel(&results))
    {
        running.remove(&key);
    }
}

/// A joining subscriber's own request, run alone if the shared execution ends before
/// giving it a result.
struct Fallback {
    executor: SharedSubscriptions,
    request: Request,
    session: Option<Arc<Data>>,
}

/// One subscriber's results: copies of the shared ones, the first after a gap saying how
/// many it missed.
fn subscriber(feed: SharedFeed, fallback: Option<Fallback>) -> BoxStream<'static, Response> {
    futures_util::stream::unfold(Some((feed, fallback)), |state| async move {
        let (mut feed, fallback) = state?;
        match std::future::poll_fn(|cx| feed.poll_next(cx)).await {
            FeedItem::Result { shared, missed } => {
                let response = shared.copy(missed);
                let state = Some((feed, fallback));
                Some((futures_util::stream::iter([response]).boxed(), state))
            }
            FeedItem::Ended { received_any } => {
                let fallback = fallback.filter(|_| !received_any)?;
                let alone = fallback
                    .executor
                    .run_alone(fallback.request, fallback.session);
                Some((alone, None))
            }
        }
    })
    .flatten()
    .boxed()
}
