//! The gateway's configuration: flags, each with its environment variable (`gateway --help`).

use std::net::SocketAddr;

use clap::{Args, Parser};
use domain::amqp::RabbitArgs;
use domain::config::{parse_http_url, DatabaseArgs, Secret, TelemetryArgs};

/// The customer data hub's GraphQL gateway.
#[derive(Debug, Clone, Parser)]
#[command(name = "gateway", version, about, long_about = None)]
pub struct GatewayCli {
    /// Print the GraphQL schema (SDL) and exit; needs no database.
    #[arg(long)]
    pub print_schema: bool,
    #[command(flatten)]
    pub config: GatewayConfig,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// Everything the running gateway needs.
#[derive(Debug, Clone, Args)]
pub struct GatewayConfig {
    /// Address to listen on.
    #[arg(long, env = "GATEWAY_ADDR", default_value = "127.0.0.1:4000")]
    pub gateway_addr: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Largest number of database connections this gateway opens.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_max_connections: u32,
    /// Base URL of the accounts mock server that `POST /api/ingest` reads.
    #[arg(long, env = "MOCK_SERVER_URL", default_value = "http://127.0.0.1:5000", value_parser = parse_http_url)]
    pub mock_server_url: String,
    /// Origins allowed to call the API from a browser (comma-separated, or `*` for any).
    /// Empty: same-origin only.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_allowed_origins: Vec<String>,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "BODY_LIMIT_BYTES", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..=1024 * 1024 * 1024))]
    pub body_limit_bytes: u64,
    #[command(flatten)]
    pub rabbit: RabbitArgs,
    /// Exchange the relay publishes order events to; each gateway binds its own queue to
    /// it for the `orderCreated` subscription.
    #[arg(long, env = "ORDERS_EXCHANGE", default_value = "orders.v1")]
    pub orders_exchange: String,
    /// The CRM's ZeroMQ change feed (PUB endpoint) behind the `customerChanged` subscription.
    #[arg(long, env = "CRM_ZMQ_URL", default_value = "tcp://127.0.0.1:5555")]
    pub crm_zmq_url: String,
    /// Meilisearch URL. Unset: search runs on PostgreSQL.
    #[arg(long, env = "MEILI_URL", value_parser = parse_http_url)]
    pub meili_url: Option<String>,
    /// Meilisearch API key (its master key or a search key).
    #[arg(long, env = "MEILI_MASTER_KEY", hide_env_values = true)]
    pub meili_master_key: Option<Secret>,
    /// Key the customer service routes require in `X-Internal-Api-Key`. Unset: those
    /// routes refuse every request.
    #[arg(long, env = "INTERNAL_API_KEY", hide_env_values = true)]
    pub internal_api_key: Option<Secret>,
    /// Seconds a subscription client has to send `connection_init` before the socket is
    /// closed with 4408.
    #[arg(long, env = "WS_INIT_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub ws_init_timeout_secs: u64,
    /// Longest time a request may take before it is answered 504, in seconds.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout_secs: u64,
}

impl GatewayConfig {
    /// A configuration with every default, for tests and tools.
    pub fn defaults() -> Self {
        GatewayCli::parse_from(["gateway"]).config
    }
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
