//! Statements per request, counted on the wire between the gateway binary and PostgreSQL
//! (`testkit::statements`): a page of orders with their customers is one statement (the
//! customer is joined), a page of customers with their newest orders two (the page, then
//! one batch for every customer's orders), one customer by id one.

use serde_json::json;
use sqlx::PgPool;
use std::time::Duration;

/// How many statements `query` costs the gateway at `base`, after a first run (so nothing
/// left over from start-up or a first use is counted), and its answer.
async fn statements_of(
    counter: &testkit::statements::StatementCounter,
    base: &str,
    query: &str,
) -> (u64, serde_json::Value) {
    let first = testkit::http::graphql(base, query, json!({})).await;
    assert!(first.get("errors").is_none(), "{first}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = counter.count();
    let body = testkit::http::graphql(base, query, json!({})).await;
    assert!(body.get("errors").is_none(), "{body}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    (counter.count() - before, body)
}

#[sqlx::test(migrations = "../migrations")]
async fn nested_relations_cost_one_statement_per_level_at_most(pool: PgPool) {
    sqlx::query(
        "INSERT INTO orders (customer_id, product_name, quantity, price, status) \
         SELECT 1 + g % 3, 'Lamp ' || g, 1, 9.99, 'pending' FROM generate_series(1, 30) g",
    )
    .execute(&pool)
    .await
    .unwrap();
    let counter = testkit::statements::StatementCounter::start().await;
    let url = counter.url(&testkit::database_url(&pool).await);
    let gateway = testkit::spawn_gateway(&url, &[]).await;
    let base = gateway.base();

    let idle_before = counter.count();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        counter.count(),
        idle_before,
        "the gateway queries while idle"
    );

    let orders = "{ orders(first: 20) { edges { node { id productName customer { firstName lastName } } } } }";
    let (count, body) = statements_of(&counter, &base, orders).await;
    assert_eq!(count, 1, "{orders}");
    let one = format!(
        "{{ customer(id: \"{}\") {{ firstName lastName }} }}",
        testkit::customer_id("SHOP", "1")
    );
    let (count, customer) = statements_of(&counter, &base, &one).await;
    assert_eq!(count, 1, "{one}");
    // Every order carries its customer, as loaded on its own (customer 1 is in the page).
    let edges = body["data"]["orders"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 20);
    assert!(
        edges
            .iter()
            .all(|edge| edge["node"]["customer"].is_object()),
        "{body}"
    );
    assert!(
        edges
            .iter()
            .any(|edge| edge["node"]["customer"] == customer["data"]["customer"]),
        "{body}"
    );
    let without_customer = "{ orders(first: 20) { edges { node { id productName } } } }";
    assert_eq!(statements_of(&counter, &base, without_customer).await.0, 1);
    let customers =
        "{ customers(source: SHOP, first: 5) { edges { node { id orders(first: 3) { id } } } } }";
    assert_eq!(
        statements_of(&counter, &base, customers).await.0,
        2,
        "{customers}"
    );
}
