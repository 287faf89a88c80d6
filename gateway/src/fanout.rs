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

type Results = broadcast::Sender<Arc<Response>>;

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

impl Executor for SharedSubscriptions {
    async fn execute(&self, request: Request) -> Response {
        self.schema.execute(request).await
    }

    fn execute_stream(
        &self,
        mut request: Request,
        session: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        if !live_only(&mut request) {
            return self.run_alone(request, session);
        }
        let Ok(operation) = serde_json::to_string(&request) else {
            return self.run_alone(request, session);
        };
        let key = SubscriptionKey {
            // The caller the connection runs as (its `connection_init` put it there).
            identity: session.as_deref().and_then(identity_in).cloned(),
            operation,
        };
        let mut running = self.running.lock();
        if let Some(results) = running.get(&key) {
            let receiver = results.subscribe();
            drop(running);
            let fallback = Fallback {
                executor: self.clone(),
                request,
                session,
            };
            return subscriber(receiver, Some(fallback));
        }
        let (results, receiver) = broadcast::channel(self.queue);
        running.insert(key.clone(), results.clone());
        drop(running);
        let upstream = self.run_alone(request, session);
        tokio::spawn(pump(upstream, results, self.running.clone(), key));
        subscriber(receiver, None)
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
                Some(response) => { let _ = results.send(Arc::new(response)); }
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
fn subscriber(
    receiver: broadcast::Receiver<Arc<Response>>,
    fallback: Option<Fallback>,
) -> BoxStream<'static, Response> {
    struct State {
        receiver: broadcast::Receiver<Arc<Response>>,
        fallback: Option<Fallback>,
        missed: u64,
    }
    let state = State {
        receiver,
        fallback,
        missed: 0,
    };
    futures_util::stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        loop {
            match state.receiver.recv().await {
                Ok(shared) => {
                    state.fallback = None;
                    let mut response = copy(&shared);
                    if state.missed > 0 {
                        response.extensions.insert(
                            MISSED_EVENTS_EXTENSION.to_owned(),
                            async_graphql::Value::from(std::mem::take(&mut state.missed)),
                        );
                    }
                    return Some((futures_util::stream::iter([response]).boxed(), Some(state)));
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "a slow subscriber skipped results");
                    state.missed = state.missed.saturating_add(missed);
                }
                Err(broadcast::error::RecvError::Closed) => {
                    let alone = state.fallback.take().map(|fallback| {
                        fallback
                            .executor
                            .run_alone(fallback.request, fallback.session)
                    })?;
                    return Some((alone, None));
                }
            }
        }
    })
    .flatten()
    .boxed()
}

/// A copy of a shared result (`Response` is not `Clone`).
fn copy(shared: &Response) -> Response {
    let mut response = Response::new(shared.data.clone());
    response.extensions = shared.extensions.clone();
    response.errors = shared.errors.clone();
    response.cache_control = shared.cache_control;
    response.http_headers = shared.http_headers.clone();
    response
}
