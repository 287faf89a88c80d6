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
//!
//! A `graphql-transport-ws` subscriber that has had its first result is written to by the
//! execution itself ([`SharedFeed::write_directly`]): each result becomes one `next` frame
//! per operation id, written into every such subscriber's socket in turn, without waking
//! the connections' tasks. There the bounded queue is the socket's backlog: a subscriber
//! whose socket has `WS_SUBSCRIPTION_QUEUE` writes waiting skips results until it has room
//! again, and the next one it gets says how many it missed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use async_graphql::futures_util::stream::BoxStream;
use async_graphql::{Data, Executor, Request, Response};
use futures_util::StreamExt;
use tokio::sync::broadcast;

use crate::auth::Identity;
use crate::graphql::authorization::identity_in;
use crate::graphql::HubSchema;
use crate::socket::{SocketWriter, Written};
use crate::subscriptions::next_frame;

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

/// One running execution: the channel its results go out on, and the subscribers it
/// writes to itself.
#[derive(Clone)]
struct Execution {
    /// Every subscriber holds a receiver (one written to directly never reads it): the
    /// execution runs while any is left.
    results: Results,
    direct: Arc<DirectSubscribers>,
}

/// The shared executions running now, by what they run. Cheap to clone; the gateway's
/// state holds it so `/metrics` can count them.
#[derive(Clone, Default)]
pub struct RunningSubscriptions(Arc<Mutex<HashMap<SubscriptionKey, Execution>>>);

impl RunningSubscriptions {
    /// How many executions run (each serving one or more subscribers).
    pub fn executions(&self) -> usize {
        self.lock().len()
    }

    /// How many subscribers the running executions serve.
    pub fn subscribers(&self) -> usize {
        self.lock()
            .values()
            .map(|execution| execution.results.receiver_count())
            .sum()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SubscriptionKey, Execution>> {
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
    /// It started a shared execution; its results come through this feed.
    Started(SharedFeed),
    /// It joined one already running (the request is kept in case that one ends before
    /// giving it anything).
    Joined(SharedFeed, Request),
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
        if let Some(execution) = running.get(&key) {
            return Sharing::Joined(SharedFeed::new(execution), request);
        }
        let (results, _) = broadcast::channel(self.queue);
        let execution = Execution {
            results,
            direct: Arc::new(DirectSubscribers::new(self.queue)),
        };
        let feed = SharedFeed::new(&execution);
        running.insert(key.clone(), execution.clone());
        drop(running);
        let upstream = self.run_alone(request, session);
        tokio::spawn(pump(upstream, execution, self.running.clone(), key));
        Sharing::Started(feed)
    }

    /// The results of subscription `request`, run as `session`'s caller, ready to be
    /// written as they are: shared when the operation can be, else `None` (run it another
    /// way).
    pub fn feed(&self, request: Request, session: Arc<Data>) -> Option<SharedFeed> {
        match self.share(request, Some(session)) {
            Sharing::Alone(_) => None,
            Sharing::Started(feed) | Sharing::Joined(feed, _) => Some(feed),
        }
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
            Sharing::Started(feed) => subscriber(feed, None),
            Sharing::Joined(feed, request) => {
                let fallback = Fallback {
                    executor: self.clone(),
                    request,
                    session,
                };
                subscriber(feed, Some(fallback))
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
/// Once [`SharedFeed::write_directly`] hands its results to the execution, it only tells
/// when the execution ended.
pub struct SharedFeed {
    results: BoxStream<'static, Result<Arc<SharedResult>, broadcast::error::RecvError>>,
    missed: u64,
    received: bool,
    direct_subscribers: Arc<DirectSubscribers>,
    /// Set once the execution writes this subscriber's results itself.
    direct: Option<DirectSubscription>,
}

impl SharedFeed {
    fn new(execution: &Execution) -> Self {
        let receiver = execution.results.subscribe();
        let results = futures_util::stream::unfold(receiver, |mut receiver| async move {
            let result = receiver.recv().await;
            Some((result, receiver))
        });
        Self {
            results: results.boxed(),
            missed: 0,
            received: false,
            direct_subscribers: execution.direct.clone(),
            direct: None,
        }
    }

    /// The next result, or the end of the execution.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<FeedItem> {
        if let Some(direct) = &self.direct {
            return direct
                .poll_ended(cx)
                .map(|()| FeedItem::Ended { received_any: true });
        }
        loop {
            match std::task::ready!(self.results.poll_next_unpin(cx)) {
                Some(Ok(shared)) => {
                    self.received = true;
                    let missed = std::mem::take(&mut self.missed);
                    return Poll::Ready(FeedItem::Result { shared, missed });
                }
                Some(Err(broadcast::error::RecvError::Lagged(missed))) => {
                    tracing::debug!(missed, "a slow subscriber skipped results");
                    self.missed = self.missed.saturating_add(missed);
                }
                Some(Err(broadcast::error::RecvError::Closed)) | None => {
                    return Poll::Ready(FeedItem::Ended {
                        received_any: self.received,
                    })
                }
            }
        }
    }

    /// From now on the execution writes this subscriber's results to `socket` itself, as
    /// `next` frames of the operation whose id is `quoted_id` (a JSON string); what is
    /// queued for it already is written first. Call it once the subscriber's own writes
    /// are on the socket (the `next` before them is), and only for an unmasked server
    /// WebSocket speaking `graphql-transport-ws`. [`SharedFeed::poll_next`] then only
    /// tells when the execution ended.
    pub fn write_directly(&mut self, socket: SocketWriter, quoted_id: String) {
        if self.direct.is_some() {
            return;
        }
        let subscriber = Arc::new(DirectSubscriber {
            socket,
            quoted_id,
            state: Mutex::new(DirectState {
                active: true,
                ended: false,
                missed: 0,
                ended_waker: None,
            }),
        });
        let direct_subscribers = self.direct_subscribers.clone();
        // Under the list's lock the execution publishes nothing: what it published before
        // is in the receiver, written here; what it publishes after, it writes itself.
        let mut list = direct_subscribers.list();
        let mut ended = list.ended;
        let mut without_waiting = Context::from_waker(Waker::noop());
        while let Poll::Ready(item) = self.poll_next(&mut without_waiting) {
            let FeedItem::Result { shared, missed } = item else {
                ended = true;
                break;
            };
            subscriber.add_missed(missed);
            subscriber.deliver(&mut NextFrames::of(&shared), direct_subscribers.queue);
        }
        // Skipped after the last result it had here: its next result says so.
        subscriber.add_missed(std::mem::take(&mut self.missed));
        subscriber.state().ended = ended;
        let key = list.next_key;
        list.next_key += 1;
        list.by_key.insert(key, subscriber.clone());
        drop(list);
        self.direct = Some(DirectSubscription {
            key,
            subscriber,
            subscribers: direct_subscribers,
        });
    }
}

/// The subscribers one execution writes to itself.
struct DirectSubscribers {
    /// Most writes a subscriber's socket may have waiting before it skips results.
    queue: usize,
    list: Mutex<DirectList>,
}

#[derive(Default)]
struct DirectList {
    by_key: HashMap<u64, Arc<DirectSubscriber>>,
    next_key: u64,
    /// Set when the execution ended: a subscriber arriving later is ended at once.
    ended: bool,
}

impl DirectSubscribers {
    fn new(queue: usize) -> Self {
        Self {
            queue,
            list: Mutex::default(),
        }
    }

    fn list(&self) -> MutexGuard<'_, DirectList> {
        self.list
            .lock()
            .expect("never poisoned: no panics while held")
    }

    /// Sends `result` to the broadcast receivers and writes it to every direct subscriber,
    /// letting other tasks run between batches of them. From twice
    /// [`SUBSCRIBERS_PER_WRITER`] subscribers on, threads of the blocking pool write shares
    /// of them meanwhile (one writer per CPU at most): the writes never wait (a full socket
    /// skips the result), so each share is written as fast as a CPU goes, and the last
    /// subscriber gets the result sooner. The next result is written only once every
    /// share has this one, so each subscriber gets its results in order.
    async fn publish(&self, results: &Results, result: Arc<SharedResult>) {
        const BATCH: usize = 256;
        let mut subscribers: Vec<Arc<DirectSubscriber>> = {
            let list = self.list();
            // Nobody listening is fine: the last subscriber is just leaving.
            let _ = results.send(result.clone());
            list.by_key.values().cloned().collect()
        };
        let writers = (subscribers.len() / SUBSCRIBERS_PER_WRITER).clamp(1, crate::config::cpus());
        let share = subscribers.len().div_ceil(writers);
        let helpers: Vec<_> = (1..writers)
            .map(|_| {
                let theirs = subscribers.split_off(subscribers.len().saturating_sub(share));
                let (result, queue) = (result.clone(), self.queue);
                tokio::task::spawn_blocking(move || {
                    let mut frames = NextFrames::of(&result);
                    for subscriber in &theirs {
                        subscriber.deliver(&mut frames, queue);
                    }
                })
            })
            .collect();
        let mut frames = NextFrames::of(&result);
        for batch in subscribers.chunks(BATCH) {
            for subscriber in batch {
                subscriber.deliver(&mut frames, self.queue);
            }
            if subscribers.len() > BATCH {
                tokio::task::yield_now().await;
            }
        }
        for helper in helpers {
            // Only a bug in `deliver` would fail it; its share gets the next result.
            let _ = helper.await;
        }
    }

    /// The execution ended: tells every direct subscriber, and any arriving later.
    fn end(&self) {
        let mut list = self.list();
        list.ended = true;
        for subscriber in list.by_key.values() {
            let mut state = subscriber.state();
            state.ended = true;
            if let Some(waker) = state.ended_waker.take() {
                waker.wake();
            }
        }
    }
}

/// How many direct subscribers each writer of a result takes at least: below twice this,
/// the execution's own task writes them all (see [`DirectSubscribers::publish`]).
pub const SUBSCRIBERS_PER_WRITER: usize = 512;

/// A subscriber its execution writes to (see [`SharedFeed::write_directly`]).
struct DirectSubscriber {
    socket: SocketWriter,
    /// The operation id as a JSON string.
    quoted_id: String,
    state: Mutex<DirectState>,
}

struct DirectState {
    /// Cleared when the subscriber leaves: nothing is written for it after.
    active: bool,
    ended: bool,
    /// Results skipped since the last one written.
    missed: u64,
    /// The connection's task, waiting for the end.
    ended_waker: Option<Waker>,
}

impl DirectSubscriber {
    fn state(&self) -> MutexGuard<'_, DirectState> {
        self.state
            .lock()
            .expect("never poisoned: no panics while held")
    }

    /// Counts `missed` more results this subscriber skipped.
    fn add_missed(&self, missed: u64) {
        let mut state = self.state();
        state.missed = state.missed.saturating_add(missed);
    }

    /// Writes the result of `frames` as this subscriber's next `next` frame: the shared
    /// one, or after a gap its own saying how many it missed; skipped (and counted) while
    /// the socket has `queue` writes waiting.
    fn deliver(&self, frames: &mut NextFrames<'_>, queue: usize) {
        let mut state = self.state();
        if !state.active {
            return;
        }
        let written = match state.missed {
            0 => self
                .socket
                .write_whole(frames.frame(&self.quoted_id), queue),
            missed => {
                let own = next_frame(&self.quoted_id, &frames.result.json_for(missed));
                self.socket.write_whole(&own, queue)
            }
        };
        match written {
            Written::Taken => state.missed = 0,
            Written::BacklogFull => {
                tracing::debug!("a slow subscriber skipped a result");
                state.missed = state.missed.saturating_add(1);
            }
            // Its connection's task sees the socket closed and ends it.
            Written::Broken => {}
        }
    }
}

/// The `next` frames of one result, by operation id: most subscribers use the same id.
struct NextFrames<'a> {
    result: &'a SharedResult,
    by_quoted_id: HashMap<String, Vec<u8>>,
}

impl<'a> NextFrames<'a> {
    fn of(result: &'a SharedResult) -> Self {
        Self {
            result,
            by_quoted_id: HashMap::new(),
        }
    }

    /// The result's `next` frame for operation `quoted_id`.
    fn frame(&mut self, quoted_id: &str) -> &[u8] {
        if !self.by_quoted_id.contains_key(quoted_id) {
            let frame = next_frame(quoted_id, &self.result.json);
            self.by_quoted_id.insert(quoted_id.to_owned(), frame);
        }
        &self.by_quoted_id[quoted_id]
    }
}

/// A direct subscriber's place in its execution's list; it leaves it when dropped.
struct DirectSubscription {
    key: u64,
    subscriber: Arc<DirectSubscriber>,
    subscribers: Arc<DirectSubscribers>,
}

impl DirectSubscription {
    fn poll_ended(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.subscriber.state();
        if state.ended {
            return Poll::Ready(());
        }
        if !state
            .ended_waker
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            state.ended_waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for DirectSubscription {
    fn drop(&mut self) {
        self.subscribers.list().by_key.remove(&self.key);
        // A write under way finishes first; none starts after.
        self.subscriber.state().active = false;
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
    execution: Execution,
    running: RunningSubscriptions,
    key: SubscriptionKey,
) {
    let Execution { results, direct } = execution;
    loop {
        tokio::select! {
            result = upstream.next() => match result {
                Some(response) => direct.publish(&results, Arc::new(SharedResult::new(response))).await,
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
    direct.end();
    let mut running = running.lock();
    if running
        .get(&key)
        .is_some_and(|entry| entry.results.same_channel(&results))
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
