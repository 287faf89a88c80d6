//! The gateway binary as operators run it: it creates its database, serves, exports its
//! spans over OTLP/HTTP to a collector, and stops cleanly on SIGTERM.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use sqlx::PgPool;
use testkit::Launch;

type Received = Arc<Mutex<Vec<(String, Bytes)>>>;

/// A minimal OTLP/HTTP collector: records every request path and body.
async fn start_collector() -> (String, Received) {
    async fn record(
        State(received): State<Received>,
        uri: axum::http::Uri,
        body: Bytes,
    ) -> &'static str {
        received.lock().unwrap().push((uri.path().to_owned(), body));
        ""
    }
    let received = Received::default();
    let router = Router::new()
        .route("/v1/traces", post(record))
        .with_state(received.clone());
    (testkit::serve(router).await, received)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[sqlx::test(migrations = "../migrations")]
async fn the_gateway_creates_its_database_exports_spans_and_stops_on_sigterm(pool: PgPool) {
    let (collector, received) = start_collector().await;
    // A database that does not exist yet: the gateway must create and migrate it.
    let fresh = testkit::unique("fresh");
    let gateway = Launch::new(env!("CARGO_BIN_EXE_gateway"))
        .env("DATABASE_URL", testkit::db::url_for(&fresh))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector)
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "json")
        .listen_env("GATEWAY_ADDR")
        .ready_path("/readyz")
        .start()
        .await;
    let (status, _) = testkit::http::get_json(&gateway.url("/api/health")).await;
    assert_eq!(status, 200);

    // SIGTERM, then the exit status and everything it logged.
    let output = gateway.stop().await;
    let logs = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{logs}");
    assert!(logs.contains("SIGTERM received"), "{logs}");
    for line in logs.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
    }

    // Spans are flushed at shutdown: the collector must hold the request's span.
    let received = received.lock().unwrap().clone();
    assert!(!received.is_empty(), "no OTLP export arrived");
    let all: Vec<u8> = received
        .iter()
        .flat_map(|(_, body)| body.to_vec())
        .collect();
    assert!(received.iter().all(|(path, _)| path == "/v1/traces"));
    assert!(
        contains(&all, "/api/health"),
        "the request's route is not in any span"
    );
    assert!(contains(&all, "gateway"), "service.name missing");

    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&fresh)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(exists, "the gateway did not create its database");
    sqlx::query(&format!("DROP DATABASE \"{fresh}\" WITH (FORCE)"))
        .execute(&pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_database_that_accepts_and_never_answers_stops_the_start_naming_database_url() {
    let (port, silent) = testkit::net::silent_listener().await;
    let started = std::time::Instant::now();
    let gateway_addr = format!("127.0.0.1:{}", testkit::free_port());
    let database_url = format!("postgres://postgres@127.0.0.1:{port}/hub");
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
            .env_clear()
            .env("DATABASE_URL", database_url)
            .env("GATEWAY_ADDR", gateway_addr)
            .output()
            .unwrap()
    });
    let output = tokio::time::timeout(std::time::Duration::from_secs(30), run)
        .await
        .expect("the gateway gave up instead of hanging")
        .unwrap();
    let took = started.elapsed();
    silent.abort();
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{logs}");
    assert!(
        took < domain::db::CONNECT_TIMEOUT + std::time::Duration::from_secs(5),
        "took {took:?}"
    );
    assert_eq!(logs.matches("DATABASE_URL").count(), 1, "{logs}");
    assert!(logs.contains("no answer within 10 s"), "{logs}");
}
