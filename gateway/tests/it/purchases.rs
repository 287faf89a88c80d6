//! The original customer management server's and purchases API's routes, and purchases in
//! GraphQL, against a real database (see README, Compatibility notes: Purchases). What the
//! relay and the consumer do with the events is tested in the workers.

use crate::common;

use common::TestGateway;
use serde_json::{json, Value};
use sqlx::PgPool;

const JOHN: &str = r#"{"username": "john", "userid": "005", "price": "1195.30", "timestamp": "2024-05-31T15:54:32.204Z"}"#;

/// POSTs `body` as it is to `/buy`: status and raw body.
async fn buy(gateway: &TestGateway, body: &str) -> (u16, String) {
    let response = gateway
        .client
        .post(gateway.url("/buy"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn raw(gateway: &TestGateway, path: &str) -> (u16, String) {
    let response = gateway.fetch(path).await;
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[sqlx::test(migrations = "../migrations")]
async fn the_route_map_and_health_answer_like_the_original(pool: PgPool) {
    let gateway = TestGateway::start(pool).await;
    assert_eq!(
        raw(&gateway, "/").await,
        (
            200,
            r#"{"/":"Get API Info","/healthz":"Health check","/getAllUserBuys":"Get Purchases for given customer","/buy":"POST Purchases and send to Kafka"}"#.to_owned()
        )
    );
    assert_eq!(raw(&gateway, "/healthz").await, (200, "Success".to_owned()));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_purchase_is_stored_with_its_kafka_event_before_the_200(pool: PgPool) {
    let gateway = TestGateway::start(pool.clone()).await;
    assert_eq!(
        buy(&gateway, JOHN).await,
        (
            200,
            r#"{"status":"Ok!","message":"Message successfully sent to Kafka!"}"#.to_owned()
        )
    );
    // The original's clients may also send the user id and the price as numbers.
    let numbers =
        r#"{"username": "john", "userid": 5, "price": 20, "timestamp": "2024-06-01T08:00:00Z"}"#;
    assert_eq!(buy(&gateway, numbers).await.0, 200);

    let (status, body) = raw(&gateway, "/buyList/john").await;
    assert_eq!(status, 200);
    let first_id: i64 = sqlx::query_scalar("SELECT min(id) FROM purchases")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        body,
        format!(
            r#"{{"status":"Ok!","purchases":[{{"_id":"{first_id}","username":"john","userid":"005","price":"1195.30","timestamp":"2024-05-31T15:54:32.204Z"}},{{"_id":"{}","username":"john","userid":"5","price":"20.00","timestamp":"2024-06-01T08:00:00.000Z"}}]}}"#,
            first_id + 1
        )
    );
    let (status, all) = gateway.get("/getAllUserBuys/john").await;
    assert_eq!(status, 200);
    assert_eq!(all["username"], "john");
    assert_eq!(all["purchases"].as_array().unwrap().len(), 2);
    assert_eq!(
        gateway.get("/getAllUserBuys/nobody").await,
        (200, json!({"username": "nobody", "purchases": []}))
    );

    let events: Vec<(String, String, String, Value, String, String)> = sqlx::query_as(
        "SELECT broker, destination, message_key, headers, payload::text, event_id::text
         FROM outbox_events ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(events.len(), 2);
    let (broker, topic, key, headers, body, event_id) = &events[0];
    assert_eq!(
        (broker.as_str(), topic.as_str(), key.as_str()),
        ("kafka", "scalable-shop-purchases", "john")
    );
    assert_eq!(
        body,
        r#"{"username":"john","userid":"005","price":"1195.30","timestamp":"2024-05-31T15:54:32.204Z"}"#
    );
    assert_eq!(headers["id"], *event_id);
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers["traceparent"].as_str().unwrap().starts_with("00-"));
    let stored_key: String = sqlx::query_scalar("SELECT source_key FROM purchases WHERE id = $1")
        .bind(first_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        &stored_key, event_id,
        "the purchase is known by its event id"
    );
    assert_eq!(
        events[1].4,
        r#"{"username":"john","userid":"5","price":"20.00","timestamp":"2024-06-01T08:00:00.000Z"}"#
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn bad_purchases_are_400_naming_the_field_and_store_nothing(pool: PgPool) {
    let gateway = TestGateway::start(pool.clone()).await;
    let good: Value = serde_json::from_str(JOHN).unwrap();
    let cases = [
        ("username", json!("")),
        ("username", json!("u".repeat(65))),
        ("userid", json!(null)),
        ("price", json!("-1.00")),
        ("price", json!("1.005")),
        ("price", json!("free")),
        // Over what the price column holds (NUMERIC(12, 2)): found by schemathesis, a 500.
        ("price", json!("10000000000")),
        ("price", json!(1e15)),
        ("timestamp", json!("31/05/2024")),
    ];
    for (field, value) in cases {
        let mut body = good.clone();
        body[field] = value.clone();
        let (status, answer) = buy(&gateway, &body.to_string()).await;
        assert_eq!(status, 400, "{field} = {value}: {answer}");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["status"], "Error");
        assert_eq!(answer["field"], field, "{answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(field),
            "{answer}"
        );
    }
    for body in [
        "not json",
        "[1]",
        r#"{"username": "nul\u0000byte", "userid": "1", "price": "1", "timestamp": "2024-05-31T15:54:32Z"}"#,
    ] {
        let (status, answer) = buy(&gateway, body).await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
    let (status, answer) = raw(&gateway, &format!("/buyList/{}", "u".repeat(65))).await;
    assert_eq!(status, 400, "{answer}");
    let stored: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM purchases), (SELECT count(*) FROM outbox_events)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(stored, (0, 0));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_database_outage_is_503_with_a_json_body(pool: PgPool) {
    let gateway = TestGateway::start(pool.clone()).await;
    pool.close().await;
    let (status, answer) = buy(&gateway, JOHN).await;
    assert_eq!(status, 503, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["status"], "Error");
}

#[sqlx::test(migrations = "../migrations")]
async fn graphql_records_and_pages_purchases(pool: PgPool) {
    let gateway = TestGateway::start(pool).await;
    let record = "mutation($i: RecordPurchaseInput!) { recordPurchase(input: $i) { id username userid price timestamp } }";
    for n in 0..3 {
        let body = gateway
            .graphql(
                record,
                json!({"i": {"username": "ada", "userid": "7", "price": format!("{n}.50"),
                             "timestamp": "2024-05-31T15:54:32.204Z"}}),
            )
            .await;
        assert_eq!(
            body["data"]["recordPurchase"]["price"],
            format!("{n}.50"),
            "{body}"
        );
    }
    let invalid = gateway
        .graphql(
            record,
            json!({"i": {"username": "", "userid": "7", "price": "1", "timestamp": "2024-05-31T15:54:32Z"}}),
        )
        .await;
    assert_eq!(
        invalid["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{invalid}"
    );

    let page = "query($after: String) { purchases(username: \"ada\", first: 2, after: $after) {
                  totalCount pageInfo { hasNextPage endCursor } edges { node { id price } } } }";
    let first = gateway.graphql(page, json!({})).await;
    let connection = &first["data"]["purchases"];
    assert_eq!(connection["totalCount"], 3, "{first}");
    assert_eq!(connection["pageInfo"]["hasNextPage"], true);
    assert_eq!(connection["edges"][0]["node"]["price"], "0.50");
    let after = connection["pageInfo"]["endCursor"].clone();
    let second = gateway.graphql(page, json!({"after": after})).await;
    let edges = second["data"]["purchases"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0]["node"]["price"], "2.50");
    let id = edges[0]["node"]["id"].clone();
    let node = gateway
        .graphql(
            "query($id: ID!) { node(id: $id) { ... on Purchase { username price } } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(
        node["data"]["node"],
        json!({"username": "ada", "price": "2.50"})
    );
}
