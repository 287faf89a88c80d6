//! The order service's REST routes, the customer service route and orders in GraphQL,
//! against a real database (see README, Compatibility notes: Orders).

use crate::common;

use std::collections::HashSet;
use std::sync::Arc;

use common::TestGateway;
use gateway::config::GatewayConfig;
use serde_json::{json, Value};
use sqlx::PgPool;

async fn post_order(gateway: &TestGateway, body: Value, key: Option<&str>) -> (u16, Value) {
    let mut request = gateway
        .client
        .post(gateway.url("/api/v1/orders"))
        .json(&body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn key_set(body: &Value) -> HashSet<&str> {
    body.as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

fn widget(customer_id: i64) -> Value {
    json!({"customer_id": customer_id, "product_name": "Widget", "quantity": 2, "price": 19.99, "status": "pending"})
}

#[sqlx::test(migrations = "../migrations")]
async fn creating_an_order_answers_201_with_the_contract_shape_and_writes_its_event(pool: PgPool) {
    let gateway = TestGateway::start(pool.clone()).await;
    let (status, order) = post_order(&gateway, widget(3), None).await;
    assert_eq!(status, 201, "{order}");
    let keys = key_set(&order);
    assert_eq!(
        keys,
        HashSet::from([
            "id",
            "customer_id",
            "product_name",
            "quantity",
            "price",
            "status",
            "created_at"
        ])
    );
    assert_eq!(order["customer_id"], 3);
    assert_eq!(order["product_name"], "Widget");
    assert_eq!(order["quantity"], 2);
    assert_eq!(order["price"], 19.99);
    assert_eq!(order["status"], "pending");
    let created_at = order["created_at"].as_str().unwrap();
    assert_eq!(
        created_at.len(),
        24,
        "ISO 8601 with milliseconds: {created_at}"
    );
    assert!(
        created_at.ends_with('Z') && created_at.as_bytes()[19] == b'.',
        "{created_at}"
    );

    let (aggregate_type, aggregate_id, event_type, status, payload, headers): (
        String,
        String,
        String,
        String,
        Value,
        Value,
    ) = sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, event_type, status, payload::jsonb, headers
         FROM outbox_events",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (
            aggregate_type.as_str(),
            event_type.as_str(),
            status.as_str()
        ),
        ("Order", "order.created", "pending")
    );
    assert_eq!(aggregate_id, order["id"].to_string());
    let (event_id, broker, destination, message_key): (String, String, String, String) =
        sqlx::query_as(
            "SELECT event_id::text, broker, destination, message_key FROM outbox_events",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        (broker.as_str(), destination.as_str(), message_key.as_str()),
        ("rabbitmq", "orders.v1", "order.created")
    );
    assert_eq!(
        event_id.as_bytes()[14],
        b'7',
        "event ids are UUID v7: {event_id}"
    );
    assert_eq!(
        payload,
        json!({"order_id": order["id"], "customer_id": 3, "product_name": "Widget", "quantity": 2,
               "price": 19.99, "status": "pending", "event_id": event_id,
               "occurred_at": created_at})
    );
    assert_eq!(headers["id"], event_id);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["type"], "order.created");
    let traceparent: Option<String> = headers["traceparent"].as_str().map(str::to_owned);
    let traceparent = traceparent.expect("a traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(
        parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
        vec![2, 32, 16, 2],
        "{traceparent}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn an_idempotency_key_replays_the_first_order_and_refuses_another_body(pool: PgPool) {
    let gateway = TestGateway::start(pool.clone()).await;
    let (status, first) = post_order(&gateway, widget(1), Some("key-1")).await;
    assert_eq!(status, 201);
    let (status, again) = post_order(&gateway, widget(1), Some("key-1")).await;
    assert_eq!(status, 200);
    assert_eq!(again, first);
    let mut other = widget(1);
    other["quantity"] = json!(3);
    let (status, refused) = post_order(&gateway, other, Some("key-1")).await;
    assert_eq!(status, 422);
    assert_eq!(refused["error"], "idempotency_key_reused", "{refused}");
    let counts: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM outbox_events)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(counts, (1, 1));
}

#[sqlx::test(migrations = "../migrations")]
async fn concurrent_requests_with_one_key_create_exactly_one_order(pool: PgPool) {
    let gateway = Arc::new(TestGateway::start(pool.clone()).await);
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let gateway = gateway.clone();
        requests.spawn(async move { post_order(&gateway, widget(2), Some("same-key")).await });
    }
    let mut statuses = Vec::new();
    let mut ids = HashSet::new();
    while let Some(result) = requests.join_next().await {
        let (status, order) = result.unwrap();
        statuses.push(status);
        ids.insert(order["id"].clone());
    }
    statuses.sort();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        19,
        "{statuses:?}"
    );
    assert_eq!(ids.len(), 1);
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(outbox, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn invalid_orders_are_422_validation_failed_naming_the_field(pool: PgPool) {
    let gateway = TestGateway::start(pool).await;
    let cases = [
        (
            json!({"product_name": "W", "quantity": 1, "price": 1}),
            "customer_id",
        ),
        (
            json!({"customer_id": "x", "product_name": "W", "quantity": 1, "price": 1}),
            "customer_id",
        ),
        (
            json!({"customer_id": 1, "quantity": 1, "price": 1}),
            "product_name",
        ),
        (
            json!({"customer_id": 1, "product_name": "", "quantity": 1, "price": 1}),
            "product_name",
        ),
        (
            json!({"customer_id": 1, "product_name": "W", "quantity": -1, "price": 1}),
            "quantity",
        ),
        (
            json!({"customer_id": 1, "product_name": "W", "quantity": 1.5, "price": 1}),
            "quantity",
        ),
        (
            json!({"customer_id": 1, "product_name": "W", "quantity": 1, "price": -0.5}),
            "price",
        ),
        (
            json!({"customer_id": 1, "product_name": "W", "quantity": 1, "price": "abc"}),
            "price",
        ),
        (
            json!({"customer_id": 1, "product_name": "W", "quantity": 1, "price": 1, "status": "shipped"}),
            "status",
        ),
        (json!([1, 2]), "body"),
    ];
    for (body, field) in cases {
        let (status, error) = post_order(&gateway, body.clone(), None).await;
        assert_eq!(status, 422, "{body}: {error}");
        assert_eq!(error["error"], "validation_failed", "{body}");
        assert!(
            error["message"].as_str().unwrap().contains(field),
            "{body}: {error}"
        );
    }
    let response = gateway
        .client
        .post(gateway.url("/api/v1/orders"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
}

#[sqlx::test(migrations = "../migrations")]
async fn an_unknown_customer_is_404_customer_not_found(pool: PgPool) {
    let gateway = TestGateway::start(pool).await;
    let (status, error) = post_order(&gateway, widget(999), None).await;
    assert_eq!(status, 404);
    assert_eq!(error["error"], "customer_not_found");
}

#[sqlx::test(migrations = "../migrations")]
async fn orders_list_newest_first_filter_by_customer_and_product_names_repeat(pool: PgPool) {
    let gateway = TestGateway::start(pool).await;
    let mut ids = Vec::new();
    for customer in [1, 2, 1] {
        let (status, order) = post_order(&gateway, widget(customer), None).await;
        assert_eq!(status, 201, "the same product name twice is fine");
        ids.push(order["id"].as_i64().unwrap());
    }
    let (status, all) = gateway.get("/api/v1/orders").await;
    assert_eq!(status, 200);
    let listed: Vec<i64> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, vec![ids[2], ids[1], ids[0]]);
    let (_, mine) = gateway.get("/api/v1/orders?customer_id=1").await;
    let listed: Vec<i64> = mine
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, vec![ids[2], ids[0]]);
    let (status, error) = gateway.get("/api/v1/orders?customer_id=abc").await;
    assert_eq!(
        (status, error["error"].as_str()),
        (422, Some("validation_failed"))
    );

    let (status, one) = gateway.get(&format!("/api/v1/orders/{}", ids[1])).await;
    assert_eq!((status, one["id"].as_i64()), (200, Some(ids[1])));
    for missing in ["999999", "abc"] {
        let (status, error) = gateway.get(&format!("/api/v1/orders/{missing}")).await;
        assert_eq!((status, error["error"].as_str()), (404, Some("not_found")));
    }
}

async fn get_shop_customer(gateway: &TestGateway, id: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = gateway.client.get(gateway.url(&format!("/customers/{id}")));
    if let Some(key) = key {
        request = request.header("X-Internal-Api-Key", key);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[sqlx::test(migrations = "../migrations")]
async fn the_customer_service_route_refuses_everyone_without_a_configured_key(pool: PgPool) {
    let gateway = TestGateway::start(pool).await;
    for key in [None, Some(""), Some("anything")] {
        let (status, error) = get_shop_customer(&gateway, "1", key).await;
        assert_eq!(
            (status, error["error"].as_str()),
            (401, Some("unauthorized"))
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn the_customer_service_route_answers_with_the_right_key(pool: PgPool) {
    let mut config = GatewayConfig::defaults();
    config.security.internal_api_key = Some("s3cret".parse().unwrap());
    let gateway = TestGateway::start_with(pool, config).await;
    let (status, error) = get_shop_customer(&gateway, "1", Some("wrong")).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = get_shop_customer(&gateway, "1", None).await;
    assert_eq!(status, 401);
    let (status, customer) = get_shop_customer(&gateway, "1", Some("s3cret")).await;
    assert_eq!(status, 200);
    let keys = key_set(&customer);
    assert_eq!(
        keys,
        HashSet::from([
            "id",
            "name",
            "address",
            "orders_count",
            "created_at",
            "updated_at"
        ])
    );
    assert_eq!(customer["id"], 1);
    assert_eq!(customer["name"], "Alice Johnson");
    assert_eq!(customer["orders_count"], 0);
    let (_, last) = get_shop_customer(&gateway, "10", Some("s3cret")).await;
    assert_eq!(last["name"], "Jack Anderson");
    for missing in ["11", "abc"] {
        let (status, error) = get_shop_customer(&gateway, missing, Some("s3cret")).await;
        assert_eq!((status, error["error"].as_str()), (404, Some("not_found")));
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn graphql_order_errors_have_codes(pool: PgPool) {
    let gateway = TestGateway::start(pool).await;
    let accounts_customer = testkit::customer_id("ACCOUNTS", "CUST001");
    let body = gateway
        .graphql(
            "mutation($input: CreateOrderInput!) { createOrder(input: $input) { id } }",
            json!({"input": {"customerId": accounts_customer, "productName": "x", "quantity": 1, "price": "1"}}),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{body}"
    );
    let unknown = testkit::customer_id("SHOP", "404");
    let body = gateway
        .graphql(
            "mutation($input: CreateOrderInput!) { createOrder(input: $input) { id } }",
            json!({"input": {"customerId": unknown, "productName": "x", "quantity": -1, "price": "1"}}),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{body}"
    );
    let body = gateway
        .graphql(
            "mutation($input: CreateOrderInput!) { createOrder(input: $input) { id } }",
            json!({"input": {"customerId": unknown, "productName": "x", "quantity": 1, "price": "1"}}),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "CUSTOMER_NOT_FOUND",
        "{body}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn retry_failed_events_puts_dead_events_back_in_line(pool: PgPool) {
    let gateway = TestGateway::start(pool.clone()).await;
    for _ in 0..3 {
        post_order(&gateway, widget(5), None).await;
    }
    sqlx::query(
        "UPDATE outbox_events SET status = 'failed', attempts = 10, error_message = 'unroutable'
         WHERE id IN (SELECT id FROM outbox_events ORDER BY id LIMIT 2)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let body = gateway
        .graphql("mutation { retryFailedEvents }", json!({}))
        .await;
    assert_eq!(body, json!({"data": {"retryFailedEvents": 2}}));
    let states: Vec<(String, i32)> =
        sqlx::query_as("SELECT status, attempts FROM outbox_events ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(
        states
            .iter()
            .all(|(status, attempts)| status == "pending" && *attempts == 0),
        "{states:?}"
    );
    let body = gateway
        .graphql("mutation { retryFailedEvents }", json!({}))
        .await;
    assert_eq!(body, json!({"data": {"retryFailedEvents": 0}}));
}

#[sqlx::test(migrations = "../migrations")]
async fn idempotency_compares_normalized_values_and_a_reused_key_wins_over_the_customer(
    pool: PgPool,
) {
    let gateway = TestGateway::start(pool.clone()).await;
    let lamp = |customer_id: Value, price: Value| json!({"customer_id": customer_id, "product_name": "Lamp", "quantity": 1, "price": price});
    let (status, first) = post_order(&gateway, lamp(json!(1), json!(25.5)), Some("k")).await;
    assert_eq!(status, 201, "{first}");
    // The same request, written differently: a replay of the first order.
    let (status, again) = post_order(&gateway, lamp(json!("1"), json!("25.50")), Some("k")).await;
    assert_eq!((status, &again["id"]), (200, &first["id"]), "{again}");
    // The key decides before the customer is looked up.
    let (status, body) = post_order(&gateway, lamp(json!(999), json!(1)), Some("k")).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], "idempotency_key_reused");
    // A price too large for an exact decimal is told the real bound.
    let (status, body) = post_order(&gateway, lamp(json!(1), json!(1e30)), None).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["message"], "price must be below 10,000,000,000");
}

#[sqlx::test(migrations = "../migrations")]
async fn the_order_list_is_paged_with_a_default_and_a_next_link(pool: PgPool) {
    let gateway = TestGateway::start(pool.clone()).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, order) = post_order(&gateway, widget(2), None).await;
        assert_eq!(status, 201);
        ids.push(order["id"].as_i64().unwrap());
    }
    let response = gateway.fetch("/api/v1/orders?customer_id=2&limit=2").await;
    assert_eq!(response.status(), 200);
    let link = response.headers()["link"].to_str().unwrap().to_owned();
    let page: Vec<Value> = response.json().await.unwrap();
    let page_ids: Vec<i64> = page
        .iter()
        .map(|order| order["id"].as_i64().unwrap())
        .collect();
    assert_eq!(page_ids, [ids[2], ids[1]]);
    let next = format!("/api/v1/orders?customer_id=2&limit=2&before={}", ids[1]);
    assert_eq!(link, format!("<{next}>; rel=\"next\""));
    let response = gateway.fetch(&next).await;
    assert!(response.headers().get("link").is_none());
    let page: Vec<Value> = response.json().await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0]["id"], ids[0]);
    // Without a limit: the default page (all three here), no next link.
    let response = gateway.fetch("/api/v1/orders").await;
    assert!(response.headers().get("link").is_none());
    assert_eq!(response.json::<Vec<Value>>().await.unwrap().len(), 3);
    for bad in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "before=0",
        "limit=2&limit=x",
    ] {
        let (status, body) = gateway.get(&format!("/api/v1/orders?{bad}")).await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(body["error"], "validation_failed");
    }
    // A repeated parameter's last value counts, as in Rails (found by schemathesis: it was
    // a 400 the document did not describe).
    let (status, page) = gateway.get("/api/v1/orders?limit=x&limit=1").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page.as_array().unwrap().len(), 1);
}
