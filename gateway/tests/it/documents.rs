//! The document cache, through the gateway binary: a repeated operation is neither parsed
//! nor validated again, new variables are validated (their values are checked), a document
//! that fails validation is never kept, the limits still apply to a cached document, and
//! `GRAPHQL_DOCUMENT_CACHE_BYTES=0` turns the cache off. A request sent again exactly runs
//! around the schema's extensions (`graphql_repeated_operations_total`) with the same
//! answer, span name and operation metrics; the roles of each caller are checked in
//! `auth.rs`.

use serde_json::{json, Value};
use sqlx::PgPool;

/// The `graphql_document_cache_total` counters: (stage, outcome) -> count.
async fn cache_counts(base: &str) -> Vec<(String, String, u64)> {
    let text = testkit::http::get_text(&format!("{base}/metrics")).await;
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

/// The value of one series (`name` or `name{labels}`) in the gateway's `/metrics` (0 when
/// it is not there yet).
async fn metric(base: &str, series: &str) -> u64 {
    let text = testkit::http::get_text(&format!("{base}/metrics")).await;
    testkit::http::metric(&text, series).unwrap_or(0.0) as u64
}

const REPEATED: &str = "graphql_repeated_operations_total";

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

/// Named, with a fragment, a variable and a directive: every part of a document the lean
/// path must run as the full schema does.
const SHAPED: &str = "query Shaped($first: Int, $withTotal: Boolean!) { ...Page } \
                      fragment Page on Query { customers(first: $first) { \
                      totalCount @include(if: $withTotal) edges { cursor node { id firstName emails } } } }";

#[sqlx::test(migrations = "../migrations")]
async fn an_operation_sent_again_runs_around_the_extensions_with_the_same_answer(pool: PgPool) {
    let url = testkit::database_url(&pool).await;
    let gateway = testkit::spawn_gateway(&url, &[]).await;
    let base = gateway.base();
    let variables = json!({"first": 3, "withTotal": false});
    let first = run(&base, SHAPED, variables.clone()).await;
    assert!(first.get("errors").is_none(), "{first}");
    assert_eq!(
        first["data"]["customers"]["edges"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert!(
        first["data"]["customers"].get("totalCount").is_none(),
        "{first}"
    );
    assert_eq!(
        metric(&base, REPEATED).await,
        0,
        "a first request meets every extension"
    );
    for _ in 0..2 {
        assert_eq!(run(&base, SHAPED, variables.clone()).await, first);
    }
    assert_eq!(metric(&base, REPEATED).await, 2);
    assert_eq!(
        metric(
            &base,
            "graphql_operations_total{operation=\"Shaped\",outcome=\"ok\"}"
        )
        .await,
        3,
        "repeated operations are counted under their name"
    );

    // Other variables are another request: checked in full first.
    let with_total = json!({"first": 3, "withTotal": true});
    let body = run(&base, SHAPED, with_total.clone()).await;
    assert!(body["data"]["customers"]["totalCount"].is_i64(), "{body}");
    assert_eq!(metric(&base, REPEATED).await, 2);
    assert_eq!(run(&base, SHAPED, with_total).await, body);
    assert_eq!(metric(&base, REPEATED).await, 3);

    // A persisted-query hash always meets the store.
    let hashed = json!({
        "query": SHAPED,
        "variables": variables,
        "extensions": {"persistedQuery": {"version": 1, "sha256Hash": "0".repeat(64)}},
    });
    for _ in 0..2 {
        let (_, body) = testkit::http::post_json(&format!("{base}/graphql"), &hashed).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "PERSISTED_QUERY_HASH_MISMATCH",
            "{body}"
        );
    }
    assert_eq!(metric(&base, REPEATED).await, 3);
}

#[sqlx::test(migrations = "../migrations")]
async fn settings_that_need_every_extension_each_time_turn_the_repeated_path_off(pool: PgPool) {
    let url = testkit::database_url(&pool).await;
    for setting in [
        ("GRAPHQL_FIELD_SPANS", "true"),
        ("GRAPHQL_LIMITS_MODE", "measure"),
        ("GRAPHQL_DOCUMENT_CACHE_BYTES", "0"),
    ] {
        let gateway = testkit::spawn_gateway(&url, &[setting]).await;
        let base = gateway.base();
        run_page(&base, 3).await;
        assert_eq!(metric(&base, REPEATED).await, 0, "{setting:?}");
    }
}
