//! The customer data hub's gateway: the only public API. [`app`] builds the whole router
//! (GraphQL, GraphiQL, subscriptions, REST compatibility routes, health, metrics) around an
//! [`AppState`], so tests and benchmarks run exactly what production runs. GraphQL over HTTP
//! goes through one handler, [`graphql::handler::execute`], where per-request policy lives.

pub mod auth;
pub mod config;
pub mod docs;
pub mod edge;
pub mod errors;
pub mod fanout;
pub mod graphiql;
pub mod graphql;
mod health;
pub mod live;
pub mod metrics;
pub mod purchase_feed;
pub mod rate_limit;
pub mod rest;
pub mod socket;
pub mod subscriptions;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::handler::Handler;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::routing::{get, get_service};
use axum::Router;
use sqlx::PgPool;
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::GatewayConfig;
use crate::errors::ApiError;
use crate::live::{LiveFeeds, OrdersFeed};
use crate::metrics::Metrics;
use crate::purchase_feed::PurchaseFeed;

/// Where GraphQL is served (POST executes, GET shows GraphiQL).
pub const GRAPHQL_PATH: &str = "/graphql";
/// Where subscriptions are served over WebSocket.
pub const GRAPHQL_WS_PATH: &str = "/graphql/ws";

/// The request id every response carries; the GraphQL handler hands it to resolvers.
pub(crate) const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// What every handler and resolver shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The system of record.
    pub pool: PgPool,
    /// Connections of `pool` kept from one GraphQL read to the next (see
    /// [`domain::warm`]).
    pub warm: Arc<domain::warm::WarmConnections>,
    /// Client for upstream calls (ingest).
    pub http: reqwest::Client,
    /// The configuration the gateway started with.
    pub config: Arc<GatewayConfig>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Live feeds behind subscriptions.
    pub live: LiveFeeds,
    /// Meilisearch, when `MEILI_URL` is set (search runs on PostgreSQL otherwise).
    pub search: Option<domain::meili::MeiliSearch>,
    /// The purchases topic behind `purchaseMade`.
    pub purchase_feed: PurchaseFeed,
    /// Who a request comes from (API keys, JWTs, the anonymous roles).
    pub auth: Arc<auth::Authenticator>,
    /// The shared subscription executions running now.
    pub subscriptions: fanout::RunningSubscriptions,
}

impl AppState {
    /// State over an existing pool; starts listening for live events. Call it inside the
    /// Tokio runtime.
    pub fn new(pool: PgPool, config: GatewayConfig) -> Self {
        let orders_feed = OrdersFeed {
            url: config.brokers.rabbit.url(),
            exchange: config.brokers.orders.orders_exchange.clone(),
        };
        let search = config.search.client().and_then(|client| {
            client
                .inspect_err(|error| tracing::error!(%error, "Meilisearch client not created; searching PostgreSQL"))
                .ok()
        });
        let purchase_feed =
            PurchaseFeed::new(&config.brokers.kafka, &config.brokers.purchases.kafka_topic);
        Self {
            search,
            purchase_feed,
            auth: Arc::new(auth::Authenticator::new(&config.security)),
            live: LiveFeeds::start(
                pool.clone(),
                orders_feed,
                config.brokers.crm.crm_zmq_url.clone(),
            ),
            warm: domain::warm::WarmConnections::new(pool.clone()),
            pool,
            http: domain::accounts::upstream_client(),
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            subscriptions: fanout::RunningSubscriptions::default(),
        }
    }

    /// Where order events go (the outbox destination of `order.created`).
    pub fn orders_destination(&self) -> domain::outbox::Destination {
        domain::outbox::Destination::rabbitmq(&self.config.brokers.orders.orders_exchange)
    }

    /// Where purchase events go (the outbox destination of `purchase.made`).
    pub fn purchases_destination(&self) -> domain::outbox::Destination {
        domain::outbox::Destination::kafka(&self.config.brokers.purchases.kafka_topic)
    }

    /// Runs the accounts ingest (REST and GraphQL share it) and counts it. Errors carry the
    /// `Ingestion failed: <reason>` message the original service gave.
    pub async fn ingest_accounts(&self) -> Result<domain::accounts::IngestReport, ApiError> {
        let outcome = domain::accounts::ingest(
            &self.pool,
            &self.http,
            &self.config.upstreams.mock_server_url,
        )
        .await;
        self.metrics.record_ingest(
            outcome
                .as_ref()
                .map(|report| report.records_processed)
                .map_err(|_| ()),
        );
        outcome.map_err(|error| {
            tracing::warn!(%error, "accounts ingest failed");
            let error = ApiError::from(error);
            ApiError::new(error.kind, format!("Ingestion failed: {}", error.message))
        })
    }
}

/// Serves the gateway on `listener` until `shutdown` completes: every connection is a
/// [`socket::Socket`], and handlers learn its peer and writer (`ConnectInfo<socket::Peer>`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let service = app(state).into_make_service_with_connect_info::<socket::Peer>();
    axum::serve(socket::Listener::new(listener), service)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The whole gateway as a router.
pub fn app(state: AppState) -> Router {
    let (schema, repeated) = graphql::build_schemas(state.clone(), state.metrics.clone());
    let config = state.config.clone();
    let body_limit = usize::try_from(config.http.body_limit_bytes).unwrap_or(usize::MAX);
    let metrics = state.metrics.clone();
    let authenticator = state.auth.clone();
    let subscription_endpoint = subscriptions::SubscriptionEndpoint {
        executor: fanout::SharedSubscriptions::new(
            schema.clone(),
            usize::try_from(config.http.ws_subscription_queue).unwrap_or(usize::MAX),
            state.subscriptions.clone(),
        ),
        init_timeout: Duration::from_secs(config.http.ws_init_timeout_secs),
        ping_interval: Duration::from_secs(config.http.ws_ping_interval_secs),
        max_message_bytes: body_limit,
        max_subscriptions: usize::try_from(config.http.ws_max_subscriptions).unwrap_or(usize::MAX),
        auth: state.auth.clone(),
        connections: subscriptions::ConnectionCounts::new(
            usize::try_from(config.http.ws_max_connections_per_client).unwrap_or(usize::MAX),
        ),
    };
    let graphiql = graphiql::Graphiql {
        assets_dir: config.http.graphiql_assets_dir.clone(),
    };
    let (rest_routes, api) = rest::routes().merge(health::routes()).split_for_parts();
    let docs = docs::Docs::new(
        &docs::document(api),
        config.http.graphiql_assets_dir.clone(),
    );
    let router = Router::new()
        .route(
            GRAPHQL_PATH,
            get_service(graphiql::graphql_get.with_state(graphiql::GraphqlGet {
                graphiql: graphiql.clone(),
                subscriptions: subscription_endpoint.clone(),
            }))
            .post_service(graphql::handler::execute.with_state(
                graphql::handler::GraphqlEndpoint {
                    schema: schema.clone(),
                    limits: config.graphql.limits(),
                    repeated,
                },
            )),
        )
        .route(
            GRAPHQL_WS_PATH,
            get(subscriptions::handler).with_state(subscription_endpoint),
        )
        .route(
            "/graphiql/{name}",
            get(graphiql::Graphiql::asset).with_state(graphiql),
        )
        .route(docs::OPENAPI_PATH, get(docs::Docs::openapi))
        .route(docs::DOCS_PATH, get(docs::Docs::page))
        .route(
            &format!("{}/{{name}}", docs::DOCS_PATH),
            get(docs::Docs::asset),
        )
        .with_state(docs)
        .merge(rest_routes)
        .with_state(state);
    // `Router::layer` wraps what is already there, so the first layer here is the innermost.
    // Metrics sit outside the timeout and body limit, so a 504 or a 413 is still counted.
    // NUL text is refused inside the body limit; every error gets its JSON body just inside
    // compression, and a long request id is cut before anything echoes or logs it. Callers
    // are identified before the rate limit (which buckets by key) and answered after it (a
    // caller guessing keys is limited by its address).
    router
        .layer(axum::middleware::from_fn(edge::refuse_nul_text))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(config.http.request_timeout_secs),
        ))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(auth::authorize))
        .layer(axum::middleware::from_fn_with_state(
            rate_limit::RateLimit::new(&config.http, metrics.clone()),
            rate_limit::limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            authenticator,
            auth::identify,
        ))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track_http,
        ))
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn(edge::cut_request_id))
                .layer(SetRequestIdLayer::new(REQUEST_ID_HEADER, MakeRequestUuid))
                .layer(axum::middleware::from_fn(edge::request_span))
                // Its request and response lines go in the span `request_span` opened.
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(|_: &Request| tracing::Span::current()),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID_HEADER))
                .option_layer(cors_layer(&config.http.cors_allowed_origins))
                .layer(CompressionLayer::new())
                .layer(axum::middleware::from_fn_with_state(
                    Arc::new(config.http.clone()),
                    edge::json_errors,
                )),
        )
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods(Any)
            .allow_headers(Any),
    )
}
