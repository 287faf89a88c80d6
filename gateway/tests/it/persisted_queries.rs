//! Persisted queries against the real gateway binary: Apollo's automatic protocol (unknown
//! hash, then registered, then sent by hash alone), hashes checked, documents over the
//! limits never registered, APQ turned off, and the trusted-documents mode where only a
//! manifest's documents run. Every variable is set through the process.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

fn sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn persisted(hash: &str) -> Value {
    json!({"persistedQuery": {"version": 1, "sha256Hash": hash}})
}

async fn post(base: &str, body: &Value) -> Value {
    reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

const QUERY: &str = "{ customers(first: 2) { totalCount } }";

#[sqlx::test(migrations = "../migrations")]
async fn automatic_persisted_queries_follow_apollos_protocol(pool: PgPool) {
    let database = testkit::database_url(&pool).await;
    let gateway = testkit::spawn_gateway(&database, &[("GRAPHQL_MAX_DEPTH", "4")]).await;
    let base = gateway.base();
    let hash = sha256(QUERY);

    let unknown = post(&base, &json!({"extensions": persisted(&hash)})).await;
    assert_eq!(code(&unknown), "PERSISTED_QUERY_NOT_FOUND", "{unknown}");
    assert_eq!(unknown["errors"][0]["message"], "PersistedQueryNotFound");

    let registered = post(
        &base,
        &json!({"query": QUERY, "extensions": persisted(&hash)}),
    )
    .await;
    assert!(
        registered["data"]["customers"]["totalCount"].is_u64(),
        "{registered}"
    );
    let by_hash = post(&base, &json!({"extensions": persisted(&hash)})).await;
    assert_eq!(by_hash, registered);

    let mismatch = post(
        &base,
        &json!({"query": "{ customers { totalCount } }", "extensions": persisted(&hash)}),
    )
    .await;
    assert_eq!(
        code(&mismatch),
        "PERSISTED_QUERY_HASH_MISMATCH",
        "{mismatch}"
    );
    let malformed = post(
        &base,
        &json!({"extensions": {"persistedQuery": {"version": 2, "sha256Hash": hash}}}),
    )
    .await;
    assert_eq!(code(&malformed), "BAD_USER_INPUT", "{malformed}");

    // A document over the limits is refused and never registered: by hash it stays unknown.
    let deep = "{ customers { edges { node { purchases { edges { node { id } } } } } } }";
    let deep_hash = sha256(deep);
    let refused = post(
        &base,
        &json!({"query": deep, "extensions": persisted(&deep_hash)}),
    )
    .await;
    assert_eq!(code(&refused), "DEPTH_LIMIT_EXCEEDED", "{refused}");
    let still_unknown = post(&base, &json!({"extensions": persisted(&deep_hash)})).await;
    assert_eq!(code(&still_unknown), "PERSISTED_QUERY_NOT_FOUND");
}

#[sqlx::test(migrations = "../migrations")]
async fn apq_cache_bytes_zero_turns_persisted_queries_off(pool: PgPool) {
    let database = testkit::database_url(&pool).await;
    let gateway = testkit::spawn_gateway(&database, &[("GRAPHQL_APQ_CACHE_BYTES", "0")]).await;
    let body = post(
        &gateway.base(),
        &json!({"query": QUERY, "extensions": persisted(&sha256(QUERY))}),
    )
    .await;
    assert_eq!(code(&body), "PERSISTED_QUERY_NOT_SUPPORTED", "{body}");
    let plain = post(&gateway.base(), &json!({ "query": QUERY })).await;
    assert!(plain["data"]["customers"]["totalCount"].is_u64(), "{plain}");
}

#[sqlx::test(migrations = "../migrations")]
async fn trusted_documents_run_only_the_manifests_documents(pool: PgPool) {
    let directory = std::env::temp_dir().join(testkit::unique("trusted"));
    std::fs::create_dir_all(&directory).unwrap();
    let manifest = directory.join("manifest.json");
    let manifest_json = json!({
        "format": "apollo-persisted-query-manifest",
        "version": 1,
        "operations": [{"id": sha256(QUERY), "name": "Two", "type": "query", "body": QUERY}],
    });
    std::fs::write(&manifest, manifest_json.to_string()).unwrap();
    let database = testkit::database_url(&pool).await;
    let gateway = testkit::spawn_gateway(
        &database,
        &[("GRAPHQL_TRUSTED_DOCUMENTS", manifest.to_str().unwrap())],
    )
    .await;
    let base = gateway.base();
    let by_hash = post(&base, &json!({"extensions": persisted(&sha256(QUERY))})).await;
    assert!(
        by_hash["data"]["customers"]["totalCount"].is_u64(),
        "{by_hash}"
    );
    let by_text = post(&base, &json!({ "query": QUERY })).await;
    assert_eq!(by_text, by_hash);
    let other = "{ customers(first: 3) { totalCount } }";
    let refused = post(&base, &json!({ "query": other })).await;
    assert_eq!(code(&refused), "PERSISTED_QUERY_NOT_IN_LIST", "{refused}");
    let registering = post(
        &base,
        &json!({"query": other, "extensions": persisted(&sha256(other))}),
    )
    .await;
    assert_eq!(
        code(&registering),
        "PERSISTED_QUERY_NOT_IN_LIST",
        "{registering}"
    );
    drop(gateway);

    // A manifest whose id is not its body's hash stops the start, naming the variable.
    std::fs::write(
        &manifest,
        json!({"format": "apollo-persisted-query-manifest", "version": 1,
               "operations": [{"id": "0".repeat(64), "body": QUERY}]})
        .to_string(),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .env("DATABASE_URL", &database)
        .env("GRAPHQL_TRUSTED_DOCUMENTS", &manifest)
        .output()
        .unwrap();
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{logs}");
    assert!(
        logs.contains("GRAPHQL_TRUSTED_DOCUMENTS")
            && logs.contains("is not the SHA-256 of its body"),
        "{logs}"
    );
    std::fs::remove_dir_all(&directory).unwrap();
}
