//! `syncStatus` and `syncEvents` against real worker processes: a running relay whose
//! outbox holds an old event reads `LAGGING`, a consumer stopped with SIGTERM reads
//! `STOPPED`, a sync whose source answers 500 reads `FAILING`; profile outcomes and run
//! ends stream on `syncEvents`.

use std::time::Duration;

use axum::routing::any;
use axum::Router;
use serde_json::{json, Value};
use sqlx::PgPool;
use testkit::{database_url, unique, wait_until, GraphqlWs, Launch, Protocol};

use crate::common::TestGateway;

const SYNC_STATUS: &str = r#"{ syncStatus { pipeline state lastSuccessAt lastError errorsTotal
    backlog { outboxPending outboxFailed oldestPendingSeconds consumerLag deadLettered } } }"#;

async fn pipeline(gateway: &TestGateway, name: &str) -> Value {
    let answer = gateway.graphql(SYNC_STATUS, json!({})).await;
    answer["data"]["syncStatus"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"))
        .iter()
        .find(|entry| entry["pipeline"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

async fn wait_for_state(gateway: &TestGateway, name: &str, state: &str) -> Value {
    wait_until(&format!("{name} is {state}"), || async {
        pipeline(gateway, name).await["state"] == state
    })
    .await;
    pipeline(gateway, name).await
}

/// `workers sync --once` over `pool` against a source answering `status` and `body`.
async fn sync_once(pool: &PgPool, status: u16, body: &'static str) -> std::process::Output {
    let source = testkit::serve(Router::new().route(
        "/users/changes",
        any(move || async move {
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                [("content-type", "application/json")],
                body,
            )
        }),
    ))
    .await;
    Launch::binary("workers")
        .args(["sync", "--once"])
        .env("DATABASE_URL", database_url(pool).await)
        .env("SOURCE_SERVICE_URL", format!("{source}/users/changes"))
        .start()
        .await
        .wait()
        .await
}

#[sqlx::test(migrations = "../migrations")]
async fn pipelines_read_lagging_stopped_and_failing_from_what_workers_record(pool: PgPool) {
    let gateway = TestGateway::start(pool.clone()).await;
    let url = database_url(&pool).await;
    let (exchange, queue) = (unique("status_orders"), unique("status_queue"));

    // A running relay with an event waiting two minutes (backing off until later).
    let relay =
        testkit::spawn_workers(&url, &["relay", "--exchange", &exchange, "--queue", &queue]).await;
    wait_for_state(&gateway, "orders-relay", "OK").await;
    sqlx::query(
        "INSERT INTO outbox_events (event_id, broker, destination, message_key, headers,
                                    aggregate_type, aggregate_id, event_type, payload,
                                    created_at, next_attempt_at)
         VALUES (gen_random_uuid(), 'rabbitmq', $1, 'order.created', '{}', 'order', '1',
                 'order.created', '{}', now() - interval '2 minutes', now() + interval '1 hour')",
    )
    .bind(&exchange)
    .execute(&pool)
    .await
    .unwrap();
    let relay_status = wait_for_state(&gateway, "orders-relay", "LAGGING").await;
    assert_eq!(
        relay_status["backlog"]["outboxPending"], 1,
        "{relay_status}"
    );
    assert_eq!(relay_status["backlog"]["outboxFailed"], 0);
    assert!(
        relay_status["backlog"]["oldestPendingSeconds"]
            .as_f64()
            .unwrap()
            >= 120.0
    );

    // A consumer that runs, then stops.
    let consumer = testkit::spawn_workers(
        &url,
        &[
            "consume",
            "orders",
            "--exchange",
            &exchange,
            "--queue",
            &queue,
        ],
    )
    .await;
    let running = wait_for_state(&gateway, "orders-consumer", "OK").await;
    assert_eq!(running["backlog"]["deadLettered"], 0, "{running}");
    let stopped = consumer.stop().await;
    assert!(stopped.status.success(), "{stopped:?}");
    wait_for_state(&gateway, "orders-consumer", "STOPPED").await;

    // A sync whose source fails.
    let failed = sync_once(&pool, 500, "oops").await;
    assert_eq!(failed.status.code(), Some(1));
    let sync = wait_for_state(&gateway, "profiles-sync", "FAILING").await;
    assert!(
        sync["lastError"].as_str().unwrap().contains("500"),
        "{sync}"
    );
    assert_eq!(sync["errorsTotal"], 1);
    // Then succeeds: OK again.
    let ok = sync_once(&pool, 200, "[]").await;
    assert!(ok.status.success());
    wait_for_state(&gateway, "profiles-sync", "OK").await;

    drop(relay);
    testkit::rabbit::remove(
        &[&queue, &format!("{queue}.dlq")],
        &[&exchange, &format!("{exchange}.dlx")],
    )
    .await;
}

#[sqlx::test(migrations = "../migrations")]
async fn sync_events_stream_each_profile_outcome_then_the_run(pool: PgPool) {
    let gateway = TestGateway::start(pool.clone()).await;
    let mut client = GraphqlWs::connect(&gateway.base, Protocol::TransportWs).await;
    client
        .subscribe(
            "s",
            r#"subscription { syncEvents(pipeline: "profiles-sync") { pipeline outcome detail at } }"#,
            json!({}),
        )
        .await;
    // Let the subscription settle before the run.
    client.drain(Duration::from_millis(300)).await;
    let body = r#"[{"id":"00000000-0000-0000-0000-000000000001","name":"User1","email":"one@example.com","mobile":"+911","status":"active","last_updated_at":"2025-07-01T10:00:00Z"},
                   {"id":"00000000-0000-0000-0000-000000000002","name":"User2","email":"bad","mobile":"+912","status":"active","last_updated_at":"2025-07-01T10:00:00Z"}]"#;
    assert!(sync_once(&pool, 200, body).await.status.success());
    let mut events = Vec::new();
    while events.len() < 3 {
        let message = client
            .next(Duration::from_secs(10))
            .await
            .expect("a syncEvents event within 10 s");
        assert_eq!(message["type"], "next", "{message}");
        events.push(message["payload"]["data"]["syncEvents"].clone());
    }
    let outcomes: Vec<&str> = events
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["synced", "failed_validation", "run_ok"]);
    assert!(events.iter().all(|e| e["pipeline"] == "profiles-sync"));
    assert_eq!(
        events[1]["detail"],
        "00000000-0000-0000-0000-000000000002: Invalid email format"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn accounts_ingests_are_runs_whose_last_outcome_is_the_state(pool: PgPool) {
    let mut config = gateway::config::GatewayConfig::defaults();
    // Nothing listens there: the ingest fails.
    config.upstreams.mock_server_url = format!("http://127.0.0.1:{}", testkit::free_port());
    let gateway = TestGateway::start_with(pool.clone(), config).await;
    let (status, _) = testkit::http::post_json(&gateway.url("/api/ingest"), &json!({})).await;
    assert_eq!(status, 502);
    let failing = wait_for_state(&gateway, "accounts-ingest", "FAILING").await;
    assert_eq!(failing["errorsTotal"], 1, "{failing}");
    crate::common::seed_accounts(&pool).await;
    let ok = wait_for_state(&gateway, "accounts-ingest", "OK").await;
    assert!(ok["lastSuccessAt"].is_string(), "{ok}");
    let runs: Vec<(bool, Value)> = sqlx::query_as(
        "SELECT ok, counts FROM pipeline_runs WHERE pipeline = 'accounts-ingest' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(runs.len(), 2);
    assert!(!runs[0].0 && runs[1].0);
    assert_eq!(runs[1].1["records"], 25);
}
