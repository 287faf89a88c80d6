//! Nested lists cost a constant number of SQL queries: listing 2 or 10 shop customers with
//! their orders and each order's customer runs the same number of statements. It counts
//! with a dispatcher set for its own thread only, so the other tests of the binary, running
//! on their own threads, never add to the count.

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::TestGateway;
use serde_json::json;
use sqlx::PgPool;

const SHOP_CUSTOMERS_WITH_ORDERS: &str = "query($n: Int) {
  customers(source: SHOP, first: $n) {
    edges { node { externalId ordersCount orders(first: 2) { productName customer { externalId } } } }
  }
}";

/// Counts the SQL statements sqlx runs on this thread (the test runtime is single-threaded,
/// so the gateway's queries run here too).
#[derive(Clone, Default)]
struct QueryCounter(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for QueryCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn graphql_orders_round_trip_and_nested_lists_cost_constant_queries(pool: PgPool) {
    use tracing_subscriber::layer::SubscriberExt;

    let gateway = TestGateway::start(pool.clone()).await;
    let customer = gateway
        .graphql(
            "{ customers(source: SHOP, first: 1) { edges { node { id } } } }",
            json!({}),
        )
        .await["data"]["customers"]["edges"][0]["node"]["id"]
        .clone();
    let created = gateway
        .graphql(
            "mutation($input: CreateOrderInput!) { createOrder(input: $input, idempotencyKey: \"g-1\") {
               id productName quantity price status customer { externalId } } }",
            json!({"input": {"customerId": customer, "productName": "Lamp", "quantity": 1, "price": "25.50"}}),
        )
        .await;
    assert!(created.get("errors").is_none(), "{created}");
    let order = &created["data"]["createOrder"];
    assert_eq!(order["price"], "25.50");
    assert_eq!(order["status"], "PENDING");
    assert_eq!(order["customer"]["externalId"], "1");
    let fetched = gateway
        .graphql(
            "query($id: ID!) { order(id: $id) { productName } node(id: $id) { ... on Order { quantity } } }",
            json!({"id": order["id"]}),
        )
        .await;
    assert_eq!(
        fetched["data"],
        json!({"order": {"productName": "Lamp"}, "node": {"quantity": 1}})
    );
    let listed = gateway
        .graphql(
            "{ orders(first: 5) { totalCount edges { node { productName } } } }",
            json!({}),
        )
        .await;
    assert_eq!(listed["data"]["orders"]["totalCount"], 1);

    let counter = QueryCounter::default();
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::filter::Targets::new()
                .with_target("sqlx::query", tracing::Level::TRACE),
        )
        .with(counter.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    // Another test's thread registering a sqlx callsite at the same moment can leave its
    // interest cached as "never" for this thread's subscriber: rebuild and measure again
    // until the counter sees the queries (the count itself is what is asserted).
    let mut costs = Vec::new();
    for _attempt in 0..5 {
        tracing::callsite::rebuild_interest_cache();
        costs.clear();
        for n in [2, 10] {
            let before = counter.0.load(Ordering::SeqCst);
            let body = gateway
                .graphql(SHOP_CUSTOMERS_WITH_ORDERS, json!({"n": n}))
                .await;
            assert!(body.get("errors").is_none(), "{body}");
            assert_eq!(
                body["data"]["customers"]["edges"].as_array().unwrap().len(),
                n
            );
            costs.push(counter.0.load(Ordering::SeqCst) - before);
        }
        if costs.iter().all(|cost| *cost > 0) {
            break;
        }
    }
    assert!(costs[0] > 0, "the counter saw no queries");
    assert_eq!(
        costs[0], costs[1],
        "10 customers cost more queries than 2: {costs:?}"
    );
}
