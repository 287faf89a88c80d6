//! Prometheus metrics of the gateway: HTTP requests by route and status, request latency,
//! GraphQL operations by name and outcome, the document cache, running subscriptions, and
//! accounts ingests. Served at `/metrics` in the OpenMetrics text format.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextRequest,
};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Operation names longer than this are cut, so a client cannot blow up label storage.
const MAX_OPERATION_NAME: usize = 64;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DocumentCacheLabels {
    stage: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuntimeLabels {
    runtime: &'static str,
}

/// What the document cache saves: parsing, or validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentStage {
    /// A document parsed from its text.
    Parse,
    /// A parsed document validated against the schema with its variables.
    Validation,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The gateway's metrics registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: Family<RequestLabels, Counter>,
    http_request_duration: HistogramFamily<RouteLabels>,
    graphql_operations: Family<OperationLabels, Counter>,
    ingest_runs: Family<OutcomeLabels, Counter>,
    ingest_records: Counter,
    rate_limited: Counter,
    document_cache: Family<DocumentCacheLabels, Counter>,
    repeated_operations: Counter,
    runtime_threads: Family<RuntimeLabels, Gauge>,
    subscription_executions: Gauge,
    subscribers: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            http_requests.clone(),
        );
        let http_request_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            http_request_duration.clone(),
        );
        let graphql_operations = Family::<OperationLabels, Counter>::default();
        registry.register(
            "graphql_operations",
            "GraphQL operations by name and outcome (ok or error)",
            graphql_operations.clone(),
        );
        let ingest_runs = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "accounts_ingest_runs",
            "Accounts ingests by outcome",
            ingest_runs.clone(),
        );
        let ingest_records = Counter::default();
        registry.register(
            "accounts_ingest_records",
            "Accounts records upserted by successful ingests",
            ingest_records.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "http_rate_limited",
            "Requests refused with 429 by the per-client rate limit",
            rate_limited.clone(),
        );
        let document_cache = Family::<DocumentCacheLabels, Counter>::default();
        registry.register(
            "graphql_document_cache",
            "Documents found parsed or validated in the cache (hit) or not (miss), by stage",
            document_cache.clone(),
        );
        let repeated_operations = Counter::default();
        registry.register(
            "graphql_repeated_operations",
            "Operations sent again exactly after passing every check, run without the schema's extensions",
            repeated_operations.clone(),
        );
        let runtime_threads = Family::<RuntimeLabels, Gauge>::default();
        registry.register(
            "gateway_runtime_threads",
            "Worker threads of each runtime: http (connections, REST routes, subscriptions) and graphql (queries and mutations)",
            runtime_threads.clone(),
        );
        let subscription_executions = Gauge::default();
        registry.register(
            "graphql_subscription_executions",
            "Subscription executions running, each shared by the subscribers of one operation",
            subscription_executions.clone(),
        );
        let subscribers = Gauge::default();
        registry.register(
            "graphql_subscribers",
            "Subscribers of the running subscription executions",
            subscribers.clone(),
        );
        Self {
            rate_limited,
            document_cache,
            repeated_operations,
            runtime_threads,
            subscription_executions,
            subscribers,
            registry,
            http_requests,
            http_request_duration,
            graphql_operations,
            ingest_runs,
            ingest_records,
        }
    }
}

impl Metrics {
    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// Records how many shared subscription executions run and whom they serve.
    pub fn record_subscriptions(&self, executions: usize, subscribers: usize) {
        self.subscription_executions
            .set(i64::try_from(executions).unwrap_or(i64::MAX));
        self.subscribers
            .set(i64::try_from(subscribers).unwrap_or(i64::MAX));
    }

    /// Counts one look-up in the document cache.
    pub fn record_document_cache(&self, stage: DocumentStage, hit: bool) {
        let stage = match stage {
            DocumentStage::Parse => "parse",
            DocumentStage::Validation => "validation",
        };
        let outcome = if hit { "hit" } else { "miss" };
        self.document_cache
            .get_or_create(&DocumentCacheLabels { stage, outcome })
            .inc();
    }

    /// Records how many worker threads the HTTP and GraphQL runtimes have.
    pub fn record_runtime_threads(&self, http: usize, graphql: usize) {
        for (runtime, threads) in [("http", http), ("graphql", graphql)] {
            self.runtime_threads
                .get_or_create(&RuntimeLabels { runtime })
                .set(i64::try_from(threads).unwrap_or(i64::MAX));
        }
    }

    /// Counts one operation run on the repeated-operations path.
    pub fn record_repeated_operation(&self) {
        self.repeated_operations.inc();
    }

    /// Counts one request refused by the rate limit.
    pub fn record_rate_limited(&self) {
        self.rate_limited.inc();
    }

    /// Counts one accounts ingest.
    pub fn record_ingest(&self, outcome: Result<u64, ()>) {
        let outcome = match outcome {
            Ok(records) => {
                self.ingest_records.inc_by(records);
                "success"
            }
            Err(()) => "failure",
        };
        self.ingest_runs
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Counts one GraphQL operation by name (cut to a bounded length) and outcome.
    pub fn record_operation(&self, operation: &str, ok: bool) {
        let operation: String = operation.chars().take(MAX_OPERATION_NAME).collect();
        let outcome = if ok { "ok" } else { "error" };
        self.graphql_operations
            .get_or_create(&OperationLabels {
                operation,
                outcome: outcome.into(),
            })
            .inc();
    }
}

/// Axum middleware counting every request by matched route (`unmatched` for 404s, so
/// random paths cannot create new series) and timing it.
pub async fn track_http(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await.into_response();
    metrics
        .http_request_duration
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// GraphQL extension counting operations by name and outcome, and giving each operation
/// its `graphql.execute` span (always on, unlike the per-field spans of
/// `GRAPHQL_FIELD_SPANS`). Requests that fail before execution (syntax or validation
/// errors) count under the name `invalid`.
pub struct OperationMetrics(pub Arc<Metrics>);

/// What an operation without a name is called in metrics and spans.
pub const ANONYMOUS_OPERATION: &str = "anonymous";

/// The span an operation runs in, named after it (carrying the trace id).
pub fn operation_span(name: &str) -> tracing::Span {
    tracing::info_span!("graphql.execute", operation = name)
}

impl ExtensionFactory for OperationMetrics {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(OperationMetricsExtension {
            metrics: self.0.clone(),
            operation: Mutex::new(None),
        })
    }
}

struct OperationMetricsExtension {
    metrics: Arc<Metrics>,
    operation: Mutex<Option<String>>,
}

#[async_graphql::async_trait::async_trait]
impl Extension for OperationMetricsExtension {
    async fn request(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextRequest<'_>,
    ) -> async_graphql::Response {
        let response = next.run(ctx).await;
        let operation = self
            .operation
            .lock()
            .expect("never poisoned: no panics while held")
            .take()
            .unwrap_or_else(|| "invalid".into());
        self.metrics
            .record_operation(&operation, response.errors.is_empty());
        response
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> async_graphql::Response {
        use tracing::Instrument;
        let name = operation_name.unwrap_or(ANONYMOUS_OPERATION);
        let span = operation_span(name);
        *self
            .operation
            .lock()
            .expect("never poisoned: no panics while held") = Some(name.to_owned());
        next.run(ctx, operation_name).instrument(span).await
    }
}
