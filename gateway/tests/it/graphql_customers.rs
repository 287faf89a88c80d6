//! Customers through GraphQL: the Relay connection, global ids, `node`, and error codes.

use crate::common;

use std::collections::HashSet;

use common::{seed_accounts, TestGateway};
use serde_json::{json, Value};
use sqlx::PgPool;

const PAGE: &str = "query Page($first: Int, $after: String) {
  customers(source: ACCOUNTS, first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage endCursor }
    edges { cursor node { id externalId } }
  }
}";

#[sqlx::test(migrations = "../migrations")]
async fn customers_pagination_walks_all_25_without_duplicates_or_gaps(pool: PgPool) {
    seed_accounts(&pool).await;
    let gateway = TestGateway::start(pool).await;
    let mut seen = Vec::new();
    let mut after = Value::Null;
    let mut pages = 0;
    loop {
        let body = gateway
            .graphql(PAGE, json!({"first": 7, "after": after}))
            .await;
        assert!(body.get("errors").is_none(), "{body}");
        let connection = &body["data"]["customers"];
        assert_eq!(connection["totalCount"], 25);
        assert_eq!(connection["pageInfo"]["hasPreviousPage"], pages > 0);
        for edge in connection["edges"].as_array().unwrap() {
            seen.push(edge["node"]["externalId"].as_str().unwrap().to_owned());
        }
        pages += 1;
        if connection["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = connection["pageInfo"]["endCursor"].clone();
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(pages, 4);
    let expected: Vec<String> = (1..=25).map(|n| format!("CUST{n:03}")).collect();
    assert_eq!(seen, expected);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 25);
}

#[sqlx::test(migrations = "../migrations")]
async fn customer_and_node_resolve_a_global_id_with_every_field(pool: PgPool) {
    seed_accounts(&pool).await;
    let gateway = TestGateway::start(pool).await;
    let id = first_customer_id(&gateway).await;

    let body = gateway
        .graphql(
            "query($id: ID!) {
               customer(id: $id) { id source externalId firstName lastName emails phone address
                                   dateOfBirth accountBalance createdAt updatedAt }
               node(id: $id) { id ... on Customer { externalId } }
             }",
            json!({"id": id}),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    let customer = &body["data"]["customer"];
    assert_eq!(customer["id"], id);
    assert_eq!(customer["source"], "ACCOUNTS");
    assert_eq!(customer["externalId"], "CUST001");
    assert_eq!(customer["firstName"], "John");
    assert_eq!(customer["lastName"], "Smith");
    assert_eq!(customer["emails"], json!(["john.smith@example.com"]));
    assert_eq!(customer["phone"], "+1-555-0101");
    assert_eq!(customer["dateOfBirth"], "1963-06-08");
    assert_eq!(customer["accountBalance"], "1250.50");
    assert_eq!(customer["createdAt"], "2023-02-04T09:13:00+00:00");
    assert_eq!(
        body["data"]["node"],
        json!({"id": id, "externalId": "CUST001"})
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn an_unknown_but_well_formed_id_resolves_to_null(pool: PgPool) {
    seed_accounts(&pool).await;
    let gateway = TestGateway::start(pool).await;
    let id = first_customer_id(&gateway).await;
    sqlx::query("DELETE FROM customers")
        .execute(&gateway.state.pool)
        .await
        .unwrap();
    let body = gateway
        .graphql(
            "query($id: ID!) { customer(id: $id) { id } node(id: $id) { id } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(body, json!({"data": {"customer": null, "node": null}}));
}

/// The global id of the first customer, as the API hands it out.
async fn first_customer_id(gateway: &TestGateway) -> String {
    let body = gateway
        .graphql(
            "{ customers(first: 1) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    body["data"]["customers"]["edges"][0]["node"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

#[sqlx::test(migrations = "../migrations")]
async fn a_malformed_id_is_an_error_with_the_invalid_id_code(pool: PgPool) {
    let gateway = TestGateway::start(pool).await;
    for id in ["nonsense", "", "T3JkZXI6eA"] {
        let body = gateway
            .graphql(
                "query($id: ID!) { customer(id: $id) { id } }",
                json!({"id": id}),
            )
            .await;
        assert_eq!(error_code(&body), "INVALID_ID", "{body}");
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains("malformed id") || message.contains("is not a customer id"),
            "{message}"
        );
        let body = gateway
            .graphql(
                "query($id: ID!) { node(id: $id) { id } }",
                json!({"id": id}),
            )
            .await;
        assert_eq!(error_code(&body), "INVALID_ID", "{body}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn bad_pagination_arguments_are_bad_user_input(pool: PgPool) {
    let gateway = TestGateway::start(pool).await;
    for (first, after) in [
        (json!(101), Value::Null),
        (json!(-1), Value::Null),
        (json!(5), json!("%%%")),
    ] {
        let body = gateway
            .graphql(PAGE, json!({"first": first, "after": after}))
            .await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn ingest_mutation_reports_an_unreachable_upstream_as_upstream_error(pool: PgPool) {
    let mut config = gateway::config::GatewayConfig::defaults();
    config.upstreams.mock_server_url = "http://127.0.0.1:9".into();
    let gateway = TestGateway::start_with(pool, config).await;
    let body = gateway
        .graphql(
            "mutation { ingestCustomers { recordsProcessed } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&body), "UPSTREAM_ERROR", "{body}");
    assert!(body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .starts_with("Ingestion failed: "));
}

#[test]
fn schema_graphql_matches_the_code() {
    let checked_in = include_str!("../../../schema.graphql");
    assert!(
        checked_in == gateway::graphql::sdl(),
        "schema.graphql is stale: run `make schema` and commit the result"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn search_customers_finds_with_typos_and_reports_total_hits(pool: PgPool) {
    seed_accounts(&pool).await;
    let gateway = TestGateway::start(pool).await;
    let body = gateway
        .graphql(
            "{ searchCustomers(query: \"jon smth\", first: 3) { totalHits nodes { externalId firstName lastName } } }",
            json!({}),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    let result = &body["data"]["searchCustomers"];
    assert_eq!(result["nodes"][0]["externalId"], "CUST001", "{body}");
    assert!(result["totalHits"].as_i64().unwrap() >= 1);
    let body = gateway
        .graphql("{ searchCustomers(query: \" \") { totalHits } }", json!({}))
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
}
