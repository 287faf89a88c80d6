//! One-line HTTP calls for tests: GET or POST JSON and get the status and JSON body back,
//! run a GraphQL operation, or read a Prometheus series. Each call uses a fresh client, so
//! nothing pooled outlives the test's runtime.

use serde_json::{json, Value};

/// GET `url`: the status and the body as JSON (`Value::Null` when the body is not JSON).
pub async fn get_json(url: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}"));
    status_and_json(response).await
}

/// POST `body` as JSON to `url`: the status and the body as JSON (`Value::Null` when the
/// body is not JSON).
pub async fn post_json(url: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap_or_else(|error| panic!("POST {url}: {error}"));
    status_and_json(response).await
}

/// Runs a GraphQL operation against `<base>/graphql` and returns the whole response body
/// (`data` and `errors`); panics unless the HTTP status is 200.
pub async fn graphql(base: &str, query: &str, variables: Value) -> Value {
    let url = format!("{base}/graphql");
    let (status, body) = post_json(&url, &json!({"query": query, "variables": variables})).await;
    assert_eq!(status, 200, "POST {url}: {body}");
    body
}

async fn status_and_json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("a response body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The value of one series (`name` or `name{labels}`) in Prometheus text, if present.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
}

/// GET `url` (a `/metrics` page) as text.
pub async fn get_text(url: &str) -> String {
    reqwest::get(url)
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}"))
        .text()
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}"))
}
