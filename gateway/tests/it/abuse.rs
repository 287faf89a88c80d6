//! The abuse suite: what an attacker sends, against the real gateway binary on 127.0.0.1.
//! Nothing a client sends may stall the process (fragment DAGs, batches, aliases), every
//! limit is set by its variable and named by its refusal, bad bytes are the client's fault,
//! every error has a JSON body, cross-site simple requests run nothing, and SIGTERM ends
//! the process whatever is open.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::PgPool;
use testkit::{GraphqlWs, Protocol};

async fn post(base: &str, content_type: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    (status, body)
}

async fn graphql(base: &str, body: &Value) -> Value {
    post(base, "application/json", body.to_string()).await.1
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

/// A GET whose answer must be JSON, whatever its status.
async fn get_json_answer(
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = reqwest::Client::new().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{url}: {status} without a JSON body: {text:?}"));
    (status, headers, body)
}

#[sqlx::test(migrations = "../migrations")]
async fn a_fragment_dag_is_refused_at_once_and_never_stalls_the_process(pool: PgPool) {
    let url = testkit::db::database_url(&pool).await;
    let gateway = testkit::spawn_gateway(&url, &[]).await;
    let base = gateway.base();
    let bomb = json!({"query": testkit::documents::fragment_dag(30)});
    assert!(bomb.to_string().len() < 4096);
    // Two at once (one per runtime thread) while the health check must still answer.
    let bombs: Vec<_> = (0..2)
        .map(|_| {
            let (base, bomb) = (base.clone(), bomb.clone());
            tokio::spawn(async move { graphql(&base, &bomb).await })
        })
        .collect();
    let health = tokio::time::timeout(
        Duration::from_secs(5),
        testkit::http::get_text(&gateway.url("/healthz")),
    )
    .await
    .expect("/healthz answered while the documents were checked");
    assert_eq!(health, "Success");
    for bomb in bombs {
        let body = tokio::time::timeout(Duration::from_secs(10), bomb)
            .await
            .expect("the document was refused in time")
            .unwrap();
        assert_eq!(code(&body), "COMPLEXITY_LIMIT_EXCEEDED", "{body}");
        assert_eq!(
            body["errors"][0]["extensions"]["limit"],
            "GRAPHQL_MAX_COMPLEXITY"
        );
        assert!(body.get("data").is_none_or(Value::is_null), "{body}");
    }
    // The same bomb over WebSocket is refused as well (an `error` message for its id).
    let mut client = GraphqlWs::connect(&base, Protocol::TransportWs).await;
    let dag = testkit::documents::fragment_dag(30).replace("query", "subscription");
    client.subscribe("1", &dag, json!({})).await;
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let message = client
                .next(Duration::from_secs(10))
                .await
                .expect("an answer to the subscription");
            if message["id"] == "1" {
                return message;
            }
        }
    })
    .await
    .expect("the subscription was refused in time");
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(
        answer["payload"][0]["extensions"]["code"], "COMPLEXITY_LIMIT_EXCEEDED",
        "{answer}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn every_limit_is_set_by_its_variable_and_named_by_its_refusal(pool: PgPool) {
    let url = testkit::db::database_url(&pool).await;
    let gateway = testkit::spawn_gateway(
        &url,
        &[
            ("GRAPHQL_MAX_DEPTH", "3"),
            ("GRAPHQL_MAX_COMPLEXITY", "40"),
            ("GRAPHQL_MAX_ALIASES", "2"),
            ("GRAPHQL_MAX_ROOT_FIELDS", "3"),
            ("GRAPHQL_MAX_BATCH", "2"),
        ],
    )
    .await;
    let base = gateway.base();
    let cases = [
        (
            "{ customers { edges { node { id } } } }",
            "DEPTH_LIMIT_EXCEEDED",
            "GRAPHQL_MAX_DEPTH",
        ),
        (
            "{ a: __typename b: __typename c: __typename }",
            "ALIAS_LIMIT_EXCEEDED",
            "GRAPHQL_MAX_ALIASES",
        ),
        (
            "{ __typename syncStatus { pipeline } node(id: \"x\") { id } customer(id: \"x\") { id } }",
            "ROOT_FIELD_LIMIT_EXCEEDED",
            "GRAPHQL_MAX_ROOT_FIELDS",
        ),
        (
            "{ searchCustomers(query: \"jon\") { totalHits } }",
            "COMPLEXITY_LIMIT_EXCEEDED",
            "GRAPHQL_MAX_COMPLEXITY",
        ),
    ];
    for (query, expected, variable) in cases {
        let body = graphql(&base, &json!({"query": query})).await;
        assert_eq!(code(&body), expected, "{query}: {body}");
        assert_eq!(body["errors"][0]["extensions"]["limit"], variable, "{body}");
    }
    // Within every limit, the same kind of document runs.
    let body = graphql(
        &base,
        &json!({"query": "{ a: __typename customers { totalCount } }"}),
    )
    .await;
    assert_eq!(body["data"]["a"], "Query", "{body}");

    let one = json!({"query": "{ __typename }"});
    let (status, two) = post(&base, "application/json", json!([one, one]).to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(two.as_array().unwrap().len(), 2, "{two}");
    let three = graphql(&base, &json!([one, one, one])).await;
    assert_eq!(code(&three), "BATCH_LIMIT_EXCEEDED", "{three}");
    assert_eq!(
        three["errors"][0]["extensions"]["limit"],
        "GRAPHQL_MAX_BATCH"
    );
    // Two operations of 25 each: each within 40, together over it.
    let fields = vec!["__typename"; 25].join(" ");
    let heavy = json!({"query": format!("{{ {fields} }}")});
    let body = graphql(&base, &json!([heavy, heavy])).await;
    assert_eq!(code(&body), "BATCH_COMPLEXITY_LIMIT_EXCEEDED", "{body}");
}

#[sqlx::test(migrations = "../migrations")]
async fn the_default_limits_refuse_a_thousand_operation_batch_and_600_aliases(pool: PgPool) {
    let url = testkit::db::database_url(&pool).await;
    let gateway = testkit::spawn_gateway(&url, &[]).await;
    let base = gateway.base();
    let operation = json!({"query": "{ customers(first: 1) { totalCount } }"});
    let batch = Value::Array(vec![operation; 1_000]);
    let body = graphql(&base, &batch).await;
    assert_eq!(code(&body), "BATCH_LIMIT_EXCEEDED", "{body}");

    let aliases: String = (0..600)
        .map(|index| format!("a{index}: customers(first: 1) {{ totalCount }} "))
        .collect();
    let body = graphql(&base, &json!({"query": format!("{{ {aliases} }}")})).await;
    assert_eq!(code(&body), "ALIAS_LIMIT_EXCEEDED", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["measured"], 600);
}

#[sqlx::test(migrations = "../migrations")]
async fn measure_mode_runs_what_it_would_refuse_and_logs_the_limit(pool: PgPool) {
    let url = testkit::db::database_url(&pool).await;
    let gateway = testkit::spawn_gateway(
        &url,
        &[
            ("GRAPHQL_MAX_ALIASES", "1"),
            ("GRAPHQL_LIMITS_MODE", "measure"),
        ],
    )
    .await;
    let body = graphql(
        &gateway.base(),
        &json!({"query": "{ a: __typename b: __typename }"}),
    )
    .await;
    assert_eq!(body, json!({"data": {"a": "Query", "b": "Query"}}));
    testkit::wait_until("the warning is logged", || async {
        gateway.stderr().contains("GRAPHQL_MAX_ALIASES")
    })
    .await;
}

#[sqlx::test(migrations = "../migrations")]
async fn nul_characters_and_bad_bytes_are_the_clients_fault(pool: PgPool) {
    let url = testkit::db::database_url(&pool).await;
    let gateway = testkit::spawn_gateway(&url, &[]).await;
    let base = gateway.base();

    // GraphQL: in an argument and in a variable.
    let body = graphql(
        &base,
        &json!({"query": r#"{ purchases(username: "a\u0000b") { totalCount } }"#}),
    )
    .await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    let body = graphql(
        &base,
        &json!({
            "query": "query($u: String) { purchases(username: $u) { totalCount } }",
            "variables": {"u": "a\u{0}b"}
        }),
    )
    .await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");

    // REST: a path is 404, a query string or a JSON body 422 (400 on the purchases routes,
    // as their own validation answers), each in its route's shape.
    let (status, _, body) = get_json_answer(&gateway.url("/buyList/a%00b"), &[]).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (404, Some("Error")),
        "{body}"
    );
    let (status, _, body) =
        get_json_answer(&gateway.url("/api/v1/orders?customer_id=1%00"), &[]).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], "validation_failed");
    let (status, body) = testkit::http::post_json(
        &gateway.url("/buy"),
        &json!({"username": "a\u{0}", "userid": "1", "price": "1.00",
                "timestamp": "2024-05-31T15:54:32.204Z"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["status"], "Error");
    let (status, body) = testkit::http::post_json(
        &gateway.url("/api/v1/orders"),
        &json!({"customer_id": 1, "product_name": "x\u{0}", "quantity": 1, "price": 1,
                "status": "pending"}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(orders, 0);

    // Bytes that are not UTF-8 in a path parameter: 400, as JSON.
    let (status, _, body) = get_json_answer(&gateway.url("/buyList/%FF"), &[]).await;
    assert_eq!(status, 400, "{body}");
}

#[sqlx::test(migrations = "../migrations")]
async fn every_error_answer_has_a_json_body_in_its_routes_shape(pool: PgPool) {
    let url = testkit::db::database_url(&pool).await;
    let gateway = testkit::spawn_gateway(&url, &[("BODY_LIMIT_BYTES", "2048")]).await;
    let base = gateway.base();

    let (status, body) = post(&base, "application/json", "{not json").await;
    assert_eq!((status, code(&body)), (400, "BAD_REQUEST"), "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        !message.contains("Error(") && !message.contains("{ "),
        "{message}"
    );

    let (status, body) = post(&base, "application/json", "x".repeat(4096)).await;
    assert_eq!(
        (status, code(&body)),
        (413, "BODY_LIMIT_EXCEEDED"),
        "{body}"
    );
    assert!(body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("BODY_LIMIT_BYTES"));

    let (status, _, body) = get_json_answer(&gateway.url("/api/nope"), &[]).await;
    assert_eq!((status, body), (404, json!({"detail": "Not Found"})));
    let (status, _, body) = get_json_answer(&gateway.url("/no/such/route"), &[]).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found", "{body}");
    let (status, headers, body) = get_json_answer(&gateway.url("/buy"), &[]).await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(headers["allow"], "POST");
    assert_eq!(body["status"], "Error");

    // A repeated query parameter counts by its last value, as in Rails (it was a 400 from
    // the extractor, which the OpenAPI document did not describe).
    let (status, _, body) = get_json_answer(
        &gateway.url("/api/v1/orders?customer_id=x&customer_id=2"),
        &[],
    )
    .await;
    assert_eq!((status, body), (200, json!([])));
}

#[sqlx::test(migrations = "../migrations")]
async fn cross_site_simple_requests_run_no_operation(pool: PgPool) {
    let url = testkit::db::database_url(&pool).await;
    let gateway = testkit::spawn_gateway(&url, &[]).await;
    let base = gateway.base();
    let mutation = json!({"query": "mutation { retryFailedEvents }"}).to_string();
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=hub",
    ] {
        let (status, body) = post(&base, content_type, mutation.clone()).await;
        assert_eq!(status, 415, "{content_type}: {body}");
        assert_eq!(code(&body), "UNSUPPORTED_MEDIA_TYPE");
    }
    // GET never executes an operation: it serves GraphiQL.
    let page = reqwest::get(format!(
        "{base}/graphql?query=mutation%7BretryFailedEvents%7D"
    ))
    .await
    .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("GraphiQL"));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_long_request_id_is_cut_before_it_is_echoed_or_logged(pool: PgPool) {
    let url = testkit::db::database_url(&pool).await;
    let gateway = testkit::spawn_gateway(&url, &[("RUST_LOG", "info")]).await;
    let long = "r".repeat(10_000);
    let response = reqwest::Client::new()
        .get(gateway.url("/healthz"))
        .header("x-request-id", &long)
        .send()
        .await
        .unwrap();
    let echoed = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(echoed, "r".repeat(gateway::edge::MAX_REQUEST_ID));
    assert!(!gateway.stderr().contains(&"r".repeat(200)));
}

#[sqlx::test(migrations = "../migrations")]
async fn an_oversized_websocket_message_closes_the_socket(pool: PgPool) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let url = testkit::db::database_url(&pool).await;
    let gateway = testkit::spawn_gateway(&url, &[("BODY_LIMIT_BYTES", "65536")]).await;
    let mut socket = testkit::ws::open(&gateway.base(), Protocol::TransportWs).await;
    let huge = json!({"type": "connection_init", "payload": {"pad": "x".repeat(200_000)}});
    let _ = socket.send(Message::text(huge.to_string())).await;
    // Never acknowledged: the server closes with 1009 (or, when the rest of the message is
    // still unread as it closes, the connection is reset).
    let ending = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => panic!("answered {text}"),
                Some(Ok(Message::Close(frame))) => return frame.map(|frame| u16::from(frame.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("the server closed the socket");
    assert!(matches!(ending, Some(1009) | None), "{ending:?}");
    // A message within the limit is served as before.
    GraphqlWs::connect(&gateway.base(), Protocol::TransportWs).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn sigterm_ends_the_process_within_its_grace_even_with_a_stream_open(pool: PgPool) {
    let url = testkit::db::database_url(&pool).await;
    let gateway = testkit::spawn_gateway(&url, &[]).await;
    // A subscription over HTTP (multipart/mixed): a response that never ends by itself, so
    // a graceful shutdown alone would wait for it forever.
    let stream = reqwest::Client::new()
        .post(gateway.url("/graphql"))
        .header("content-type", "application/json")
        .header(
            "accept",
            r#"multipart/mixed; boundary="graphql"; subscriptionSpec="1.0""#,
        )
        .body(json!({"query": "subscription { syncEvents { pipeline } }"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let started = Instant::now();
    let output = gateway.stop().await;
    let took = started.elapsed();
    // testkit SIGKILLs after 10 s; the gateway's own deadline ends it first, with 124.
    assert!(
        took < domain::shutdown::GRACE + Duration::from_secs(1),
        "took {took:?}"
    );
    assert_eq!(output.status.code(), Some(124), "{:?}", output.status);
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(logs.contains("exiting now"), "{logs}");
    drop(stream);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_connection_runs_at_most_ws_max_subscriptions(pool: PgPool) {
    let url = testkit::db::database_url(&pool).await;
    let gateway = testkit::spawn_gateway(&url, &[("WS_MAX_SUBSCRIPTIONS", "2")]).await;
    let mut client = GraphqlWs::connect(&gateway.base(), Protocol::TransportWs).await;
    let sync_events = "subscription { syncEvents { pipeline } }";
    for id in ["1", "2", "3"] {
        client.subscribe(id, sync_events, json!({})).await;
    }
    let refusal = client
        .next(Duration::from_secs(5))
        .await
        .expect("the third subscription is answered");
    assert_eq!(refusal["id"], "3", "{refusal}");
    assert_eq!(refusal["type"], "error");
    assert_eq!(
        refusal["payload"][0]["extensions"]["code"],
        "SUBSCRIPTION_LIMIT_EXCEEDED"
    );
    // Completing one frees its place.
    client.send(&json!({"id": "1", "type": "complete"})).await;
    client.subscribe("4", sync_events, json!({})).await;
    let quiet = client.next(Duration::from_secs(1)).await;
    assert!(
        quiet
            .as_ref()
            .is_none_or(|message| message["id"] != "4" || message["type"] != "error"),
        "{quiet:?}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_client_over_its_rate_gets_429_with_retry_after_and_probes_never_do(pool: PgPool) {
    let url = testkit::db::database_url(&pool).await;
    let gateway = testkit::spawn_gateway(
        &url,
        &[("RATE_LIMIT_PER_SECOND", "0.5"), ("RATE_LIMIT_BURST", "3")],
    )
    .await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = client
            .get(gateway.url("/buyList/ann"))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            assert_eq!(response.headers()["retry-after"], "2");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["status"], "Error", "{body}");
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    // GraphQL is refused the same way, with its own code.
    let (status, body) = post(
        &gateway.base(),
        "application/json",
        json!({"query": "{ __typename }"}).to_string(),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(code(&body), "RATE_LIMITED");
    // Health, readiness and metrics are never limited; refusals are counted.
    assert_eq!(
        testkit::http::get_text(&gateway.url("/healthz")).await,
        "Success"
    );
    let metrics = testkit::http::get_text(&gateway.url("/metrics")).await;
    assert_eq!(
        testkit::http::metric(&metrics, "http_rate_limited_total"),
        Some(2.0),
        "{metrics}"
    );
}

/// Opens a subscription socket, or gives the handshake's HTTP status.
async fn try_open(base: &str) -> Result<testkit::ws::WebSocket, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = testkit::ws::ws_url(base).into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(error) => panic!("handshake: {error}"),
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_client_holds_at_most_ws_max_connections_per_client_sockets(pool: PgPool) {
    let url = testkit::db::database_url(&pool).await;
    let gateway = testkit::spawn_gateway(&url, &[("WS_MAX_CONNECTIONS_PER_CLIENT", "2")]).await;
    let base = gateway.base();
    let first = try_open(&base).await.expect("the first connection");
    let _second = try_open(&base).await.expect("the second connection");
    assert_eq!(try_open(&base).await.err(), Some(429));
    // A closed connection gives its place back.
    drop(first);
    testkit::wait_until("a place is free again", || async {
        try_open(&base).await.is_ok()
    })
    .await;
}
