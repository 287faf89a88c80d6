//! The document cache, through the gateway binary: a repeated operation is neither parsed
//! nor validated again, new variables are validated (their values are checked), a document
//! that fails validation is never kept, the limits still apply to a cached document, and
//! `GRAPHQL_DOCUMENT_CACHE_BYTES=0` turns the cache off.

use serde_json::{json, Value};
use sqlx::PgPool;

/// The `graphql_document_cache_total` counters: (stage, outcome) -> count.
async fn cache_counts(base: &str) -> Vec<(String, String, u64)> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut counts: Vec<(String, String, u64)> = text
        .lines()
        .filter_map(|line| {
            let labels = line.strip_prefix("graphql_document_cache_total{")?;
            let (labels, value) = labels.split_once("} ")?;
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|pair| pair.strip_prefix(&format!("{name}=\"")))
                    .map(|value| value.trim_end_matches('"').to_owned())
            };
            Some((label("stage")?, label("outcome")?, value.parse().ok()?))
        })
        .collect();
    counts.sort();
    counts
}

fn counts(expected: &[(&str, &str, u64)]) -> Vec<(String, String, u64)> {
    expected
        .iter()
        .map(|(stage, outcome, count)| (stage.to_string(), outcome.to_string(), *count))
        .collect()
}

async fn run(base: &str, query: &str, variables: Value) -> Value {
    testkit::http::graphql(base, query, variables).await
}

const PAGE: &str = "query Page($first: Int, $source: CustomerSource) \
                    { customers(first: $first, source: $source) { totalCount } }";

/// Runs a page of two customers `times` times, each answered.
async fn run_page(base: &str, times: usize) {
    for _ in 0..times {
        let body = run(base, PAGE, json!({"first": 2})).await;
        assert!(body["data"]["customers"]["totalCount"].is_i64(), "{body}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_repeated_operation_is_neither_parsed_nor_validated_again(pool: PgPool) {
    let url = testkit::database_url(&pool).await;
    let gateway = testkit::spawn_gateway(&url, &[("GRAPHQL_MAX_COMPLEXITY", "50")]).await;
    let base = gateway.base();
    run_page(&base, 3).await;
    assert_eq!(
        cache_counts(&base).await,
        counts(&[
            ("parse", "hit", 2),
            ("parse", "miss", 1),
            ("validation", "hit", 2),
            ("validation", "miss", 1),
        ])
    );

    // New variables: the parsed document is reused, the variables are validated.
    let wrong = run(&base, PAGE, json!({"first": 2, "source": "NOWHERE"})).await;
    assert!(
        wrong["errors"][0]["message"]
            .as_str()
            .is_some_and(|message| message.contains("Invalid value")),
        "{wrong}"
    );
    let again = run(&base, PAGE, json!({"first": 2, "source": "NOWHERE"})).await;
    assert_eq!(again, wrong, "a failed validation is not kept");
    // Still within the limits only while they allow it: a page of 100 costs more than 50.
    let over = run(&base, PAGE, json!({"first": 100})).await;
    assert_eq!(
        over["errors"][0]["extensions"]["code"], "COMPLEXITY_LIMIT_EXCEEDED",
        "{over}"
    );
    assert_eq!(
        cache_counts(&base).await,
        counts(&[
            ("parse", "hit", 5),
            ("parse", "miss", 1),
            ("validation", "hit", 2),
            ("validation", "miss", 3),
        ])
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn graphql_document_cache_bytes_0_turns_the_cache_off(pool: PgPool) {
    let url = testkit::database_url(&pool).await;
    let gateway = testkit::spawn_gateway(&url, &[("GRAPHQL_DOCUMENT_CACHE_BYTES", "0")]).await;
    let base = gateway.base();
    run_page(&base, 2).await;
    assert_eq!(cache_counts(&base).await, counts(&[]));
}
