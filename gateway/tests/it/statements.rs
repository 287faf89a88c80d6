//! Statements per request, counted on the wire between the gateway binary and PostgreSQL
//! (`testkit::statements`): a page of orders with their customers is one statement (the
//! customer is joined), a page of customers with their newest orders two (the page, then
//! every customer's orders, read at once without the loader's batching wait), one
//! customer by id one.

use serde_json::json;
use sqlx::PgPool;
use std::time::Duration;

/// What `query` costs the gateway at `base` after a first run (so nothing left over from
/// start-up or a first use is counted).
struct Cost {
    statements: u64,
    round_trips: u64,
    answer: serde_json::Value,
}

async fn cost_of(counter: &testkit::statements::StatementCounter, base: &str, query: &str) -> Cost {
    let first = testkit::http::graphql(base, query, json!({})).await;
    assert!(first.get("errors").is_none(), "{first}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = (counter.count(), counter.round_trips());
    let answer = testkit::http::graphql(base, query, json!({})).await;
    assert!(answer.get("errors").is_none(), "{answer}");
    // sqlx's check of a connection it is given back runs in a task of its own, after the
    // answer: give it time to be counted.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Cost {
        statements: counter.count() - before.0,
        round_trips: counter.round_trips() - before.1,
        answer,
    }
}

/// How many statements `query` costs (see [`cost_of`]), and its answer.
async fn statements_of(
    counter: &testkit::statements::StatementCounter,
    base: &str,
    query: &str,
) -> (u64, serde_json::Value) {
    let cost = cost_of(counter, base, query).await;
    (cost.statements, cost.answer)
}

/// A read costs one round trip to PostgreSQL per statement, and no ping. sqlx checks every
/// connection it is given back with a round trip of its own (a `Sync`, then a wait for
/// `ReadyForQuery`), which doubled the round trips of every read and cost an eighth of the
/// gateway's CPU per page (issue 11); the gateway's reads, the batching loaders' included,
/// keep their connections warm instead (`domain::warm`).
#[sqlx::test(migrations = "../migrations")]
async fn a_read_costs_one_round_trip_per_statement(pool: PgPool) {
    place_thirty_orders(&pool).await;
    let counter = testkit::statements::StatementCounter::start().await;
    let url = counter.url(&testkit::database_url(&pool).await);
    let gateway = testkit::spawn_gateway(&url, &[]).await;
    let base = gateway.base();
    let reads = [
        format!(
            "{{ customer(id: \"{}\") {{ id firstName lastName emails }} }}",
            testkit::customer_id("SHOP", "1")
        ),
        "{ customers(first: 20) { edges { node { id firstName lastName emails } } } }".into(),
        "{ orders(first: 20) { edges { node { id productName price customer { firstName lastName } } } } }".into(),
        format!("{{ order(id: \"{}\") {{ id productName }} }}", testkit::order_id(1)),
        // Through the batching loaders: objects by global id, and orders counts that differ.
        format!(
            "{{ node(id: \"{}\") {{ id }} }}",
            testkit::customer_id("SHOP", "2")
        ),
        "{ customers(source: SHOP, first: 3) { nodes { a: orders(first: 1) { id } b: orders(first: 2) { id } } } }".into(),
    ];
    for read in &reads {
        let Cost {
            statements,
            round_trips,
            ..
        } = cost_of(&counter, &base, read).await;
        assert!(statements >= 1, "{read}");
        assert_eq!(round_trips, statements, "{read}");
    }
    // Asked again and again, each read still costs one.
    let before = counter.round_trips();
    for _ in 0..10 {
        let body = testkit::http::graphql(&base, &reads[1], json!({})).await;
        assert!(body.get("errors").is_none(), "{body}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(counter.round_trips() - before, 10);
}

/// Thirty orders, ten each for shop customers 1, 2 and 3.
async fn place_thirty_orders(pool: &PgPool) {
    sqlx::query(
        "INSERT INTO orders (customer_id, product_name, quantity, price, status) \
         SELECT 1 + g % 3, 'Lamp ' || g, 1, 9.99, 'pending' FROM generate_series(1, 30) g",
    )
    .execute(pool)
    .await
    .unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn nested_relations_cost_one_statement_per_level_at_most(pool: PgPool) {
    place_thirty_orders(&pool).await;
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
    // Selections asking for different counts each get theirs (through the loader).
    let mixed = "{ customers(source: SHOP, first: 3) { nodes { a: orders(first: 1) { id } b: orders(first: 2) { id } } } }";
    let (_, body) = statements_of(&counter, &base, mixed).await;
    let nodes = body["data"]["customers"]["nodes"].as_array().unwrap();
    assert!(
        nodes
            .iter()
            .any(|node| node["b"].as_array().unwrap().len() == 2),
        "{body}"
    );
    for node in nodes {
        let (a, b) = (node["a"].as_array().unwrap(), node["b"].as_array().unwrap());
        assert!(b.len() <= 2 && a.len() == b.len().min(1), "{body}");
        assert_eq!(a.first(), b.first(), "{body}");
    }
    // The loader's batching wait runs on tokio's timer, not on a timer thread of its own
    // (async-graphql without `tokio-timer` starts async-io's).
    let threads = gateway.thread_names();
    assert!(
        !threads.iter().any(|name| name.starts_with("async-io")),
        "{threads:?}"
    );
}

/// The newest orders of a page of customers (or of one customer) are read right after the
/// customers, in one statement, not through the batching loader, whose batch waits a
/// millisecond to gather keys (issue 11: "batched without an artificial delay"). The
/// loader's wait has a span of its own (`start_fetch`), exported like every span: it must
/// not be there. Selections that ask for different counts still get theirs, batched.
#[sqlx::test(migrations = "../migrations")]
async fn newest_orders_come_with_their_customers_without_the_batching_wait(pool: PgPool) {
    place_thirty_orders(&pool).await;
    let newest: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT customer_id, id FROM (SELECT customer_id, id, row_number() OVER \
         (PARTITION BY customer_id ORDER BY id DESC) AS n FROM orders) o \
         WHERE n <= 3 ORDER BY customer_id, id DESC",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let traces = testkit::otlp::Collector::start().await;
    let counter = testkit::statements::StatementCounter::start().await;
    let url = counter.url(&testkit::database_url(&pool).await);
    let gateway =
        testkit::spawn_gateway(&url, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &traces.url)]).await;
    let base = gateway.base();

    let ids_of = |orders: &serde_json::Value| -> Vec<String> {
        orders
            .as_array()
            .unwrap()
            .iter()
            .map(|order| order["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let expected = |shop_id: i64| -> Vec<String> {
        newest
            .iter()
            .filter(|(customer, _)| *customer == shop_id)
            .map(|(_, id)| testkit::ids::order_id(*id))
            .collect()
    };
    for query in [
        "{ customers(source: SHOP, first: 3) { edges { node { externalId orders(first: 3) { id } } } } }",
        "{ customers(source: SHOP, first: 3) { nodes { externalId orders(first: 3) { id } } } }",
    ] {
        let (count, body) = statements_of(&counter, &base, query).await;
        assert_eq!(count, 2, "{query}");
        let connection = &body["data"]["customers"];
        let nodes: Vec<&serde_json::Value> = match connection["nodes"].as_array() {
            Some(nodes) => nodes.iter().collect(),
            None => connection["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|edge| &edge["node"])
                .collect(),
        };
        assert_eq!(nodes.len(), 3, "{body}");
        for node in nodes {
            let shop_id: i64 = node["externalId"].as_str().unwrap().parse().unwrap();
            assert_eq!(ids_of(&node["orders"]), expected(shop_id), "{body}");
        }
    }
    let one = format!(
        "{{ customer(id: \"{}\") {{ orders(first: 3) {{ id }} }} }}",
        testkit::customer_id("SHOP", "2")
    );
    let (count, body) = statements_of(&counter, &base, &one).await;
    assert_eq!(count, 2, "{one}");
    assert_eq!(ids_of(&body["data"]["customer"]["orders"]), expected(2));
    gateway.stop_cleanly().await;
    assert!(traces.holds(b"graphql.execute"), "no spans exported");
    assert!(
        !traces.holds(b"start_fetch"),
        "a batch waited for keys (the loader's start_fetch span)"
    );
}
