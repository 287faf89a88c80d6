//! The gateway binary as operators run it: it creates its database, serves, exports its
//! spans over OTLP/HTTP to a collector, and stops cleanly on SIGTERM; HEAD works wherever
//! GET does, and every error it answers has a JSON body.

use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;
use testkit::Launch;

#[sqlx::test(migrations = "../migrations")]
async fn the_gateway_creates_its_database_exports_spans_and_stops_on_sigterm(pool: PgPool) {
    let collector = testkit::otlp::Collector::start().await;
    // A database that does not exist yet: the gateway must create and migrate it.
    let fresh = testkit::unique("fresh");
    let gateway = Launch::new(env!("CARGO_BIN_EXE_gateway"))
        .env("DATABASE_URL", testkit::db::url_for(&fresh))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url)
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "json")
        .listen_env("GATEWAY_ADDR")
        .ready_path("/readyz")
        .start()
        .await;
    let (status, _) = testkit::http::get_json(&gateway.url("/api/health")).await;
    assert_eq!(status, 200);

    // SIGTERM, then the exit status and everything it logged.
    let output = gateway.stop_cleanly().await;
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(logs.contains("SIGTERM received"), "{logs}");
    for line in logs.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
    }

    // Spans are flushed at shutdown: the collector must hold the request's span.
    let paths = collector.paths();
    assert!(!paths.is_empty(), "no OTLP export arrived");
    assert!(paths.iter().all(|path| path == "/v1/traces"), "{paths:?}");
    assert!(
        collector.holds(b"/api/health"),
        "the request's route is not in any span"
    );
    assert!(collector.holds(b"gateway"), "service.name missing");

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

/// What a gateway exports to a fresh collector for one named query sent twice (the second
/// time on the repeated-operations path when it is on), with `GRAPHQL_FIELD_SPANS` set to
/// `field_spans` (or left unset); the gateway is stopped.
async fn spans_of_one_operation(
    database: &str,
    field_spans: Option<&str>,
) -> testkit::otlp::Collector {
    let collector = testkit::otlp::Collector::start().await;
    let mut launch = Launch::new(env!("CARGO_BIN_EXE_gateway"))
        .env("DATABASE_URL", database)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url);
    if let Some(value) = field_spans {
        launch = launch.env("GRAPHQL_FIELD_SPANS", value);
    }
    let gateway = launch
        .listen_env("GATEWAY_ADDR")
        .ready_path("/readyz")
        .start()
        .await;
    for _ in 0..2 {
        let body = testkit::http::graphql(
            &gateway.url(""),
            "query ProbeOperation { syncStatus { __typename } }",
            json!({}),
        )
        .await;
        assert!(body.get("errors").is_none(), "{body}");
    }
    gateway.stop_cleanly().await;
    collector
}

#[sqlx::test(migrations = "../migrations")]
async fn gateway_http_threads_and_gateway_graphql_threads_size_the_two_runtimes(pool: PgPool) {
    let database = testkit::database_url(&pool).await;
    let cpus = std::thread::available_parallelism().map_or(2, usize::from);
    for (settings, http, graphql) in [
        (vec![], (cpus / 2).max(1), cpus),
        (
            vec![
                ("GATEWAY_HTTP_THREADS", "3"),
                ("GATEWAY_GRAPHQL_THREADS", "1"),
            ],
            3,
            1,
        ),
    ] {
        let gateway = testkit::spawn_gateway(&database, &settings).await;
        let metrics = testkit::http::get_text(&gateway.url("/metrics")).await;
        for (runtime, threads) in [("http", http), ("graphql", graphql)] {
            let series = format!("gateway_runtime_threads{{runtime=\"{runtime}\"}}");
            assert_eq!(
                testkit::http::metric(&metrics, &series),
                Some(threads as f64),
                "{settings:?}: {series}\n{metrics}"
            );
        }
        // Their threads by name: the GraphQL runtime's workers are "graphql" (the HTTP
        // runtime's share their name with tokio's blocking threads).
        let names = gateway.thread_names();
        let graphql_threads = names.iter().filter(|name| *name == "graphql").count();
        assert_eq!(graphql_threads, graphql, "{settings:?}: {names:?}");
    }
    for variable in ["GATEWAY_HTTP_THREADS", "GATEWAY_GRAPHQL_THREADS"] {
        let stderr = crate::common::refused_start(variable, "0").await;
        assert!(stderr.contains(variable), "{variable}: {stderr}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn each_operation_has_its_span_and_field_spans_only_when_asked_for(pool: PgPool) {
    let database = testkit::database_url(&pool).await;
    // The default: the operation's span, named after it, and no span per field
    // (async-graphql's field spans carry a `parent_type` attribute).
    let quiet = spans_of_one_operation(&database, None).await;
    assert!(
        quiet.holds(b"graphql.execute"),
        "no operation span exported"
    );
    assert_eq!(
        quiet.count(b"ProbeOperation"),
        2,
        "each run of the operation, the repeated one too, has its named span"
    );
    assert!(
        !quiet.holds(b"parent_type"),
        "field spans exported by default"
    );

    let off = spans_of_one_operation(&database, Some("false")).await;
    assert!(off.holds(b"graphql.execute") && !off.holds(b"parent_type"));

    let on = spans_of_one_operation(&database, Some("true")).await;
    assert!(on.holds(b"graphql.execute"), "no operation span exported");
    assert!(
        on.holds(b"parent_type"),
        "GRAPHQL_FIELD_SPANS=true exported no field span"
    );
    assert!(
        on.holds(b"syncStatus"),
        "the field span does not name its field"
    );
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

/// Every route the gateway answers GET on, with what it needs (seeded ids, the service key).
const GET_ROUTES: &[&str] = &[
    "/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/graphql",
    "/graphql/ws",
    "/api/health",
    "/api/customers",
    "/api/customers/CUST001",
    "/api/v1/orders",
    "/api/v1/orders/1",
    "/customers/1",
    "/customers/999",
    "/getAllUserBuys/ann",
    "/buyList/ann",
    "/search?q=john",
    "/search?q=john&page=x",
];

/// The service key the gateway under test is given.
const SERVICE_KEY: &str = "s3cret";

async fn send(method: Method, url: &str, key: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(key) = key {
        request = request.header("X-Internal-Api-Key", key);
    }
    request.send().await.unwrap()
}

fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[sqlx::test(migrations = "../migrations")]
async fn head_answers_like_get_on_every_get_route(pool: PgPool) {
    let database_url = testkit::database_url(&pool).await;
    let gateway = testkit::spawn_gateway(&database_url, &[("INTERNAL_API_KEY", SERVICE_KEY)]).await;
    for path in GET_ROUTES {
        let url = gateway.url(path);
        let get = send(Method::GET, &url, Some(SERVICE_KEY)).await;
        let head = send(Method::HEAD, &url, Some(SERVICE_KEY)).await;
        assert_eq!(head.status(), get.status(), "HEAD {path}");
        assert_eq!(content_type(&head), content_type(&get), "HEAD {path}");
        if get.status().is_client_error() || get.status().is_server_error() {
            assert!(content_type(&get).contains("json"), "GET {path}");
        }
        assert!(head.bytes().await.unwrap().is_empty(), "HEAD {path}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn unknown_routes_wrong_methods_and_refused_keys_answer_json_in_the_routes_shape(
    pool: PgPool,
) {
    let database_url = testkit::database_url(&pool).await;
    let gateway = testkit::spawn_gateway(&database_url, &[("INTERNAL_API_KEY", SERVICE_KEY)]).await;
    let not_found = json!({"error": "not_found", "message": "Not Found"});
    let method_not_allowed =
        json!({"error": "method_not_allowed", "message": "Method Not Allowed"});
    let cases = [
        (
            Method::GET,
            "/api/nope",
            None,
            404,
            None,
            json!({"detail": "Not Found"}),
        ),
        (Method::GET, "/nope", None, 404, None, not_found),
        (
            Method::DELETE,
            "/api/customers",
            None,
            405,
            Some("GET,HEAD"),
            json!({"detail": "Method Not Allowed"}),
        ),
        (
            Method::GET,
            "/api/ingest",
            None,
            405,
            Some("POST"),
            json!({"detail": "Method Not Allowed"}),
        ),
        (
            Method::DELETE,
            "/api/v1/orders",
            None,
            405,
            Some("GET,HEAD,POST"),
            method_not_allowed.clone(),
        ),
        (
            Method::POST,
            "/customers/1",
            Some(SERVICE_KEY),
            405,
            Some("GET,HEAD"),
            method_not_allowed,
        ),
        (
            Method::GET,
            "/buy",
            None,
            405,
            Some("POST"),
            json!({"status": "Error", "message": "Method Not Allowed"}),
        ),
    ];
    for (method, path, key, status, allow, body) in cases {
        let response = send(method.clone(), &gateway.url(path), key).await;
        assert_eq!(response.status(), status, "{method} {path}");
        let allowed = response
            .headers()
            .get("allow")
            .map(|value| value.to_str().unwrap());
        assert_eq!(allowed, allow, "{method} {path}");
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            body,
            "{method} {path}"
        );
    }
    // The customer service route's key, missing or wrong: 401 in the order service's shape.
    for key in [None, Some(""), Some("wrong")] {
        let response = send(Method::GET, &gateway.url("/customers/1"), key).await;
        assert_eq!(response.status(), 401, "{key:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized", "{key:?}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("X-Internal-Api-Key"),
            "{body}"
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_statement_past_database_statement_timeout_secs_is_answered_503_not_left_hanging(
    pool: PgPool,
) {
    let database = testkit::database_url(&pool).await;
    let gateway =
        testkit::spawn_gateway(&database, &[("DATABASE_STATEMENT_TIMEOUT_SECS", "1")]).await;
    // Another session holds the customers table, as a stuck migration or a long report
    // would.
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap();
    let rest = client
        .get(gateway.url("/api/customers"))
        .send()
        .await
        .expect("an answer before the lock is let go");
    assert_eq!(rest.status(), 503);
    let body: Value = rest.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("DATABASE_STATEMENT_TIMEOUT_SECS"),
        "{body}"
    );
    let graphql: Value = client
        .post(gateway.url("/graphql"))
        .json(&json!({"query": "{ customers(first: 1) { totalCount } }"}))
        .send()
        .await
        .expect("an answer before the lock is let go")
        .json()
        .await
        .unwrap();
    assert_eq!(
        graphql["errors"][0]["extensions"]["code"], "SERVICE_UNAVAILABLE",
        "{graphql}"
    );
    holder.rollback().await.unwrap();
    // Once the table is free, the same request answers.
    let (status, _) = testkit::http::get_json(&gateway.url("/api/customers")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn processes_starting_together_on_a_missing_database_all_create_or_find_it() {
    let fresh = testkit::unique("together");
    let url = testkit::db::url_for(&fresh);
    let start = || testkit::gateway_launch(&url).start();
    // Each waits for its /healthz; one that lost the race to create the database used to
    // exit with PostgreSQL's unique violation on pg_database.
    let gateways = tokio::join!(start(), start(), start(), start());
    drop(gateways);
    testkit::db::drop_database(&fresh).await;
}

/// Text logs written anywhere but a terminal (a file, a pipe, a log collector) carry no
/// colour codes: escape sequences there are noise to whoever reads or searches them.
#[sqlx::test(migrations = "../migrations")]
async fn text_logs_off_a_terminal_carry_no_colour_codes(pool: PgPool) {
    let database = testkit::database_url(&pool).await;
    let gateway = testkit::spawn_gateway(&database, &[("LOG_FORMAT", "text")]).await;
    let logs = gateway.stderr();
    // Its warning that no caller is authenticated (none is configured here).
    assert!(logs.contains(" WARN gateway: no API keys"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "{logs}");
}
