//! What operators rely on: health, readiness (also with the database down), metrics,
//! request ids, CORS, the subscription endpoint's handshake and configuration errors.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::TestGateway;
use gateway::config::GatewayConfig;
use serde_json::{json, Value};
use sqlx::PgPool;
use testkit::{GraphqlWs, Protocol};

#[sqlx::test(migrations = "../migrations")]
async fn healthz_and_readyz_answer_when_the_database_is_up(pool: PgPool) {
    let gateway = TestGateway::start(pool).await;
    let response = gateway.fetch("/healthz").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "Success");
    let (status, body) = gateway.get("/readyz").await;
    assert_eq!((status, body), (200, json!({"status": "ready"})));
}

#[tokio::test]
async fn readyz_is_503_with_a_reason_when_the_database_is_down() {
    // Nothing listens on port 9: every connection attempt is refused.
    let pool = domain::db::pool_options(2)
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy("postgres://postgres@127.0.0.1:9/hub")
        .unwrap();
    let gateway = TestGateway::start(pool).await;
    let started = Instant::now();
    let (status, body) = gateway.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert!(
        body["reason"].as_str().unwrap().contains("database"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "readyz hung");
    let alive = gateway.fetch("/healthz").await;
    assert_eq!(
        alive.status(),
        200,
        "liveness does not depend on the database"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn metrics_count_requests_by_route_and_graphql_operations_by_name(pool: PgPool) {
    let gateway = TestGateway::start(pool).await;
    gateway.get("/api/customers?limit=5").await;
    let missing = gateway.fetch("/no/such/route/42").await;
    assert_eq!(missing.status(), 404);
    let body = gateway
        .graphql(
            "query ListSome { customers(first: 1) { totalCount } }",
            json!({}),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    gateway.graphql("{ nope }", json!({})).await;
    let response = gateway.fetch("/metrics").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(
        text.contains(r#"http_requests_total{method="GET",route="/api/customers",status="200"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"route="unmatched",status="404""#), "{text}");
    assert!(
        !text.contains("/no/such/route"),
        "raw paths must not become labels"
    );
    assert!(
        text.contains(r#"http_request_duration_seconds_bucket{"#),
        "{text}"
    );
    assert!(
        text.contains(r#"graphql_operations_total{operation="ListSome",outcome="ok"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"graphql_operations_total{operation="invalid",outcome="error"} 1"#),
        "{text}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn every_response_carries_a_request_id(pool: PgPool) {
    let gateway = TestGateway::start(pool).await;
    let response = gateway.fetch("/healthz").await;
    let generated = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    let response = gateway
        .client
        .get(gateway.url("/healthz"))
        .header("x-request-id", "caller-chosen-id")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "caller-chosen-id");
}

#[sqlx::test(migrations = "../migrations")]
async fn cors_allows_only_the_configured_origins(pool: PgPool) {
    let mut config = GatewayConfig::defaults();
    config.http.cors_allowed_origins = vec!["http://app.example".into()];
    let gateway = TestGateway::start_with(pool, config).await;
    let preflight = |origin: &'static str| {
        gateway
            .client
            .request(reqwest::Method::OPTIONS, gateway.url("/graphql"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let allowed = preflight("http://app.example").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://app.example"
    );
    let refused = preflight("http://evil.example").await.unwrap();
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

#[sqlx::test(migrations = "../migrations")]
async fn bodies_over_the_limit_are_refused_with_413(pool: PgPool) {
    let mut config = GatewayConfig::defaults();
    config.http.body_limit_bytes = 1_000;
    let gateway = TestGateway::start_with(pool, config).await;
    let query = format!(
        "{{ customers(first: 1) {{ totalCount }} }} # {}",
        "x".repeat(2_000)
    );
    let response = gateway
        .client
        .post(gateway.url("/graphql"))
        .json(&json!({"query": query}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
}

#[sqlx::test(migrations = "../migrations")]
async fn graphiql_is_served_from_the_gateway_itself_or_says_how_to_build_it(pool: PgPool) {
    let page = common::assert_built_page(
        pool,
        "/graphql",
        &[
            ("/graphiql/graphiql.js", "text/javascript"),
            ("/graphiql/graphiql.css", "text/css"),
        ],
        "/graphiql/other.js",
    )
    .await;
    assert!(page.contains(r#"src="/graphiql/graphiql.js""#), "{page}");
    assert!(
        page.contains(r#""subscriptionEndpoint":"/graphql""#),
        "{page}"
    );
}

/// Connects with `protocol`, initialises, subscribes to `customersIngested`, then ingests
/// until an event arrives (the subscription and the database listener start
/// asynchronously, so the first ingest may come too early). Returns the ack and the event.
async fn subscribe_to_ingests(gateway: &TestGateway, protocol: Protocol) -> (Value, Value) {
    let mut socket = GraphqlWs::connect(&gateway.base, protocol).await;
    socket
        .subscribe(
            "1",
            "subscription { customersIngested { source recordsProcessed } }",
            json!({}),
        )
        .await;
    for _ in 0..20 {
        common::seed_accounts(&gateway.state.pool).await;
        if let Some(event) = socket.next(Duration::from_millis(500)).await {
            return (socket.ack, event);
        }
    }
    panic!("no subscription event after 20 ingests");
}

/// The handshake is acknowledged and an ingest arrives in the protocol's data message
/// (`next` or `data`).
async fn ingests_are_delivered_over(pool: PgPool, protocol: Protocol) {
    let gateway = TestGateway::start(pool).await;
    let (ack, event) = subscribe_to_ingests(&gateway, protocol).await;
    assert_eq!(ack["type"], "connection_ack");
    assert_eq!(
        event,
        json!({"id": "1", "type": protocol.data_type(),
               "payload": {"data": {"customersIngested": {"source": "ACCOUNTS", "recordsProcessed": 25}}}})
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn subscriptions_deliver_ingests_over_graphql_transport_ws(pool: PgPool) {
    ingests_are_delivered_over(pool, Protocol::TransportWs).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn subscriptions_deliver_ingests_over_legacy_graphql_ws(pool: PgPool) {
    ingests_are_delivered_over(pool, Protocol::LegacyWs).await;
}

fn run_gateway(env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gateway"));
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "off");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

#[test]
fn a_bad_configuration_value_is_one_line_naming_the_variable_and_exit_2() {
    for (variable, value) in [
        ("GATEWAY_ADDR", "not-an-address"),
        ("DATABASE_URL", "mysql://root@db/hub"),
        ("MOCK_SERVER_URL", "localhost:5000"),
        ("REQUEST_TIMEOUT_SECS", "0"),
        ("LOG_FORMAT", "xml"),
        ("CORS_ALLOWED_ORIGINS", "http://a.example/path"),
        ("WS_SUBSCRIPTION_QUEUE", "0"),
        ("GRAPHQL_FIELD_SPANS", "maybe"),
    ] {
        let output = run_gateway(&[(variable, value)], &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{variable}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{variable}: {stderr}");
        assert!(stderr.contains(variable), "{variable} not named: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn help_documents_every_option_with_its_variable() {
    let output = run_gateway(&[], &["--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    for variable in [
        "GATEWAY_ADDR",
        "DATABASE_URL",
        "DATABASE_MAX_CONNECTIONS",
        "MOCK_SERVER_URL",
        "CORS_ALLOWED_ORIGINS",
        "BODY_LIMIT_BYTES",
        "REQUEST_TIMEOUT_SECS",
        "RUST_LOG",
        "LOG_FORMAT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "GRAPHQL_FIELD_SPANS",
        "GRAPHQL_DOCUMENT_CACHE_BYTES",
        "WS_SUBSCRIPTION_QUEUE",
    ] {
        assert!(
            help.contains(variable),
            "--help does not mention {variable}"
        );
    }
}

#[test]
fn print_schema_needs_no_database() {
    let output = run_gateway(
        &[("DATABASE_URL", "postgres://nobody@127.0.0.1:9/none")],
        &["--print-schema"],
    );
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        gateway::graphql::sdl()
    );
}
