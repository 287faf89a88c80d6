//! The gateway's configuration: flags, each with its environment variable, grouped into the
//! sections `gateway --help` shows (HTTP, database, brokers, search, upstreams, security,
//! telemetry). Sections shared with the workers (`DatabaseArgs`, `RabbitArgs`,
//! `CrmFeedArgs`, `MeiliArgs`, `TelemetryArgs`) come from `domain`, so each variable is
//! declared once for every process.

use std::net::SocketAddr;

use clap::{Args, Parser};
use domain::amqp::{OrdersExchangeArgs, RabbitArgs};
use domain::config::{
    parse_http_url, AccountsUpstreamArgs, CrmFeedArgs, DatabaseArgs, MeiliArgs, Secret,
    TelemetryArgs,
};
use domain::kafka::{KafkaArgs, PurchasesTopicArgs};

use crate::auth::{ApiKeys, JwksFile, Roles};
use crate::graphql::limits::{LimitMode, Limits};
use crate::graphql::persisted::{PersistedQueries, TrustedDocuments};

/// The customer data hub's GraphQL gateway.
#[derive(Debug, Clone, Parser)]
#[command(name = "gateway", version, about, long_about = None)]
pub struct GatewayCli {
    /// Print the GraphQL schema (SDL) and exit; needs no database.
    #[arg(long)]
    pub print_schema: bool,
    #[command(flatten)]
    pub config: GatewayConfig,
    #[command(flatten, next_help_heading = "Telemetry")]
    pub telemetry: TelemetryArgs,
}

/// Everything the running gateway needs, by section. Every section names its own help
/// heading: a flattened section's heading carries over to what follows it.
#[derive(Debug, Clone, Args)]
pub struct GatewayConfig {
    #[command(flatten, next_help_heading = "HTTP")]
    pub http: HttpConfig,
    #[command(flatten, next_help_heading = "GraphQL limits")]
    pub graphql: GraphqlLimitsConfig,
    #[command(flatten, next_help_heading = "Database")]
    pub database: DatabaseConfig,
    #[command(flatten, next_help_heading = "Brokers")]
    pub brokers: BrokerConfig,
    #[command(flatten, next_help_heading = "Search")]
    pub search: MeiliArgs,
    #[command(flatten, next_help_heading = "Upstreams")]
    pub upstreams: AccountsUpstreamArgs,
    #[command(flatten, next_help_heading = "Security")]
    pub security: SecurityConfig,
}

/// The HTTP server: where it listens, who may call it from a browser, and the limits every
/// request meets.
#[derive(Debug, Clone, Args)]
pub struct HttpConfig {
    /// Address to listen on.
    #[arg(long, env = "GATEWAY_ADDR", default_value = "127.0.0.1:4000")]
    pub gateway_addr: SocketAddr,
    /// Threads serving connections, REST routes, subscriptions and health checks. Default:
    /// half the CPUs, at least 1 (GraphQL queries and mutations run on threads of their own,
    /// `GATEWAY_GRAPHQL_THREADS`; more threads than CPUs only add context switches).
    #[arg(long, env = "GATEWAY_HTTP_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub gateway_http_threads: Option<u16>,
    /// Threads running GraphQL queries and mutations. Default: one per CPU.
    #[arg(long, env = "GATEWAY_GRAPHQL_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub gateway_graphql_threads: Option<u16>,
    /// Origins allowed to call the API from a browser (comma-separated, or `*` for any).
    /// Empty: same-origin only.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_allowed_origins: Vec<String>,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "BODY_LIMIT_BYTES", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..=1024 * 1024 * 1024))]
    pub body_limit_bytes: u64,
    /// Longest time a request may take before it is answered 504, in seconds.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout_secs: u64,
    /// Seconds a subscription client has to send `connection_init` before the socket is
    /// closed with 4408.
    #[arg(long, env = "WS_INIT_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub ws_init_timeout_secs: u64,
    /// Most subscriptions one `graphql-transport-ws` connection may run at once; one more
    /// is refused with an `error` message (`SUBSCRIPTION_LIMIT_EXCEEDED`).
    #[arg(long, env = "WS_MAX_SUBSCRIPTIONS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub ws_max_subscriptions: u64,
    /// Most WebSocket connections one client (API key or JWT subject on the upgrade
    /// request, else address) may hold open; one more is answered 429.
    #[arg(long, env = "WS_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub ws_max_connections_per_client: u64,
    /// Seconds between the server's pings on a subscription connection (`ping` on
    /// graphql-transport-ws, `ka` on the legacy protocol), so proxies keep it open and
    /// clients see it alive.
    #[arg(long, env = "WS_PING_INTERVAL_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ws_ping_interval_secs: u64,
    /// Results queued for each subscriber of a shared subscription; one that falls
    /// further behind skips the oldest, and its next result says how many it missed
    /// (`extensions.missedEvents`).
    #[arg(long, env = "WS_SUBSCRIPTION_QUEUE", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub ws_subscription_queue: u64,
    /// Where GraphiQL's bundle is: `make graphiql` builds it into web/graphiql/dist
    /// (relative to the directory the gateway starts in).
    #[arg(long, env = "GRAPHIQL_ASSETS_DIR", default_value = "web/graphiql/dist")]
    pub graphiql_assets_dir: std::path::PathBuf,
    /// Requests a second each client address may send (a token bucket refilled at this
    /// rate); more get 429 with `Retry-After`. 0: no limit.
    #[arg(long, env = "RATE_LIMIT_PER_SECOND", default_value_t = 0.0, value_parser = parse_rate)]
    pub rate_limit_per_second: f64,
    /// Requests a client may send at once before the rate applies (the bucket's size).
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_limit_burst: u32,
}

impl HttpConfig {
    /// `GATEWAY_HTTP_THREADS`, or half the CPUs (at least 1).
    pub fn http_threads(&self) -> usize {
        self.gateway_http_threads
            .map_or_else(|| (cpus() / 2).max(1), usize::from)
    }

    /// `GATEWAY_GRAPHQL_THREADS`, or [`default_graphql_threads`].
    pub fn graphql_threads(&self) -> usize {
        self.gateway_graphql_threads
            .map_or_else(default_graphql_threads, usize::from)
    }
}

/// How many threads run GraphQL operations when `GATEWAY_GRAPHQL_THREADS` is not set: one
/// per CPU.
pub fn default_graphql_threads() -> usize {
    cpus()
}

/// The CPUs this process may use (2 when that cannot be read), read once: the subscription
/// fan-out asks for every result it writes.
pub(crate) fn cpus() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(2, usize::from))
}

/// What one GraphQL document or batch may cost (see README, GraphQL limits). A refusal is
/// an error whose `extensions.code` names the limit and whose `extensions.limit` names the
/// variable below.
#[derive(Debug, Clone, Args)]
pub struct GraphqlLimitsConfig {
    /// Deepest nesting of fields in a document.
    #[arg(long, env = "GRAPHQL_MAX_DEPTH", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub graphql_max_depth: u64,
    /// Largest complexity of an operation, and of a batch's operations together: each
    /// field and fragment spread counts 1 (a search 500), a list field's selection once per
    /// item of its page (`first`, or its default), fragments where they are spread.
    #[arg(long, env = "GRAPHQL_MAX_COMPLEXITY", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub graphql_max_complexity: u64,
    /// Most aliased fields in a document.
    #[arg(long, env = "GRAPHQL_MAX_ALIASES", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub graphql_max_aliases: u64,
    /// Most fields at the top of a document's operations.
    #[arg(long, env = "GRAPHQL_MAX_ROOT_FIELDS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub graphql_max_root_fields: u64,
    /// Most operations in one batch (a JSON array of requests).
    #[arg(long, env = "GRAPHQL_MAX_BATCH", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub graphql_max_batch: u64,
    /// `enforce` refuses what goes over a limit; `measure` runs it and logs a warning
    /// naming the limit, to learn what real traffic needs first.
    #[arg(long, env = "GRAPHQL_LIMITS_MODE", value_enum, default_value_t = LimitMode::Enforce)]
    pub graphql_limits_mode: LimitMode,
    /// Bytes of documents kept for automatic persisted queries (Apollo's protocol); the
    /// oldest go first. 0: persisted queries are refused.
    #[arg(long, env = "GRAPHQL_APQ_CACHE_BYTES", default_value_t = 16 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(0..=4 * 1024 * 1024 * 1024))]
    pub graphql_apq_cache_bytes: u64,
    /// Bytes of document text kept parsed, and of text with variables kept validated, so
    /// a repeated operation skips both (oldest out first); 0 turns the caches off.
    #[arg(long, env = "GRAPHQL_DOCUMENT_CACHE_BYTES", default_value_t = 1024 * 1024)]
    pub graphql_document_cache_bytes: u64,
    /// An Apollo persisted query manifest: when set, only its documents run (by hash or
    /// exact text), and nothing is registered.
    #[arg(long, env = "GRAPHQL_TRUSTED_DOCUMENTS", value_parser = parse_trusted_documents)]
    pub graphql_trusted_documents: Option<TrustedDocuments>,
    /// A tracing span for every resolved field (async-graphql's `Tracing` extension), for
    /// when someone is looking at one slow query. Off, each operation still has its span
    /// (`graphql.execute`, inside the request's `http` span, carrying the trace id), and
    /// the per-field work is not done at all: it cost a third of a request's CPU.
    #[arg(long, env = "GRAPHQL_FIELD_SPANS", default_value_t = false, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub graphql_field_spans: bool,
}

impl GraphqlLimitsConfig {
    /// Where persisted documents come from, and which documents may run.
    pub fn persisted_queries(&self) -> PersistedQueries {
        match &self.graphql_trusted_documents {
            Some(trusted) => PersistedQueries::Trusted(trusted.clone()),
            None => PersistedQueries::Automatic(self.graphql_apq_cache_bytes),
        }
    }

    /// The limits as the GraphQL layer applies them.
    pub fn limits(&self) -> Limits {
        Limits {
            max_depth: self.graphql_max_depth,
            max_complexity: self.graphql_max_complexity,
            max_aliases: self.graphql_max_aliases,
            max_root_fields: self.graphql_max_root_fields,
            max_batch: self.graphql_max_batch,
            mode: self.graphql_limits_mode,
        }
    }
}

/// The system of record.
#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Largest number of database connections this gateway opens.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_max_connections: u32,
}

/// The brokers and feeds behind the subscriptions.
#[derive(Debug, Clone, Args)]
pub struct BrokerConfig {
    #[command(flatten)]
    pub rabbit: RabbitArgs,
    /// The orders exchange: new orders' events are written for it, and each gateway binds
    /// its own queue to it for the `orderCreated` subscription.
    #[command(flatten)]
    pub orders: OrdersExchangeArgs,
    /// The purchases topic `POST /buy` writes events for (the relay publishes them) and
    /// `purchaseMade` reads.
    #[command(flatten)]
    pub purchases: PurchasesTopicArgs,
    /// Kafka, read by the `purchaseMade` subscription.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The CRM's change feed, behind the `customerChanged` subscription.
    #[command(flatten)]
    pub crm: CrmFeedArgs,
}

/// Who may call what (see README, Authentication).
#[derive(Debug, Clone, Args)]
pub struct SecurityConfig {
    /// Key the customer service routes require in `X-Internal-Api-Key`. Unset: those
    /// routes refuse every request (unless the caller has the `customer-service` role).
    #[arg(long, env = "INTERNAL_API_KEY", hide_env_values = true)]
    pub internal_api_key: Option<Secret>,
    /// API keys, sent in `X-Api-Key`: a JSON file `{"keys": [{"name", "sha256", "roles"}]}`
    /// holding each key's hex SHA-256, never the key.
    #[arg(long, env = "AUTH_API_KEYS_FILE", value_parser = parse_api_keys)]
    pub auth_api_keys_file: Option<ApiKeys>,
    /// Secret of HS256 JWTs (`Authorization: Bearer`), at least 32 bytes.
    #[arg(long, env = "AUTH_JWT_HS256_SECRET", hide_env_values = true, value_parser = parse_hs256_secret)]
    pub auth_jwt_hs256_secret: Option<Secret>,
    /// A JWKS file of the RSA keys RS256 JWTs are signed with; re-read when it changes.
    #[arg(long, env = "AUTH_JWT_JWKS_FILE", value_parser = parse_jwks)]
    pub auth_jwt_jwks_file: Option<JwksFile>,
    /// The `iss` every JWT must carry. Unset: not checked.
    #[arg(long, env = "AUTH_JWT_ISSUER")]
    pub auth_jwt_issuer: Option<String>,
    /// The `aud` every JWT must carry. Unset: not checked.
    #[arg(long, env = "AUTH_JWT_AUDIENCE")]
    pub auth_jwt_audience: Option<String>,
    /// The JWT claim holding its roles: an array of names, or one space-separated string.
    #[arg(long, env = "AUTH_JWT_ROLES_CLAIM", default_value = "roles")]
    pub auth_jwt_roles_claim: String,
    /// Roles of a caller without credentials (comma-separated; `none` for none). Unset:
    /// every role but `customer-service` while no API keys or JWTs are configured
    /// (local development), `read` once they are.
    #[arg(long, env = "AUTH_ANONYMOUS_ROLES", value_parser = Roles::parse_list)]
    pub auth_anonymous_roles: Option<Roles>,
}

impl GatewayConfig {
    /// A configuration with every default, for tests and tools.
    pub fn defaults() -> Self {
        GatewayCli::parse_from(["gateway"]).config
    }
}

fn parse_api_keys(value: &str) -> Result<ApiKeys, String> {
    ApiKeys::load(std::path::Path::new(value))
}

fn parse_jwks(value: &str) -> Result<JwksFile, String> {
    JwksFile::load(std::path::Path::new(value))
}

/// At least 32 bytes: RFC 7518 asks an HS256 key to be as long as the hash.
fn parse_hs256_secret(value: &str) -> Result<Secret, String> {
    if value.len() < 32 {
        return Err(format!(
            "must be at least 32 bytes (it has {}): a long random secret",
            value.len()
        ));
    }
    value.parse()
}

fn parse_trusted_documents(value: &str) -> Result<TrustedDocuments, String> {
    TrustedDocuments::load(std::path::Path::new(value))
}

fn parse_rate(value: &str) -> Result<f64, String> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|rate| rate.is_finite() && (0.0..=1_000_000.0).contains(rate))
        .ok_or_else(|| "a number of requests a second, 0 to 1000000 (0: no limit)".to_owned())
}

fn parse_origin(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value == "*" {
        return Ok(value.to_owned());
    }
    let origin = parse_http_url(value)?;
    match is_bare_origin(&origin) {
        true => Ok(origin),
        false => Err("an origin is scheme://host[:port] with no path".into()),
    }
}

fn is_bare_origin(origin: &str) -> bool {
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| !rest.is_empty() && !rest.contains('/'))
}
