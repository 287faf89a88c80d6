//! The accounts mock server answers as the original did (see README, Compatibility notes:
//! accounts), byte for byte where the original was a Flask app: sorted keys, compact JSON,
//! trailing newline.

use std::sync::Arc;

use serde_json::{json, Value};
use workers::simulate::accounts::{self, AccountsDataset};

async fn start() -> String {
    let dataset = Arc::new(AccountsDataset::from_json(accounts::DEFAULT_DATA).unwrap());
    testkit::serve(accounts::router(dataset)).await
}

async fn get(base: &str, path: &str) -> (u16, String, String) {
    let response = reqwest::get(format!("{base}{path}")).await.unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    (status, content_type, response.text().await.unwrap())
}

fn page_ids(body: &str) -> Vec<String> {
    let value: Value = serde_json::from_str(body).unwrap();
    value["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["customer_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn health_is_byte_compatible() {
    let base = start().await;
    let (status, content_type, body) = get(&base, "/api/health").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/json");
    assert_eq!(
        body,
        "{\"service\":\"mock-server\",\"status\":\"healthy\",\"total_customers\":25}\n"
    );
}

#[tokio::test]
async fn a_page_is_byte_compatible_with_flask_jsonify() {
    let base = start().await;
    let (status, _, body) = get(&base, "/api/customers?page=1&limit=1").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        concat!(
            r#"{"data":[{"account_balance":1250.5,"address":"107 Oak Ave, Springfield, ST 10137","#,
            r#""created_at":"2023-02-04T09:13:00","customer_id":"CUST001","date_of_birth":"1963-06-08","#,
            r#""email":"john.smith@example.com","first_name":"John","last_name":"Smith","phone":"+1-555-0101"}],"#,
            r#""limit":1,"page":1,"total":25,"total_pages":25}"#,
            "\n"
        )
    );
}

#[tokio::test]
async fn defaults_are_page_1_limit_10() {
    let base = start().await;
    let (_, _, body) = get(&base, "/api/customers").await;
    let value: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            value["page"].clone(),
            value["limit"].clone(),
            value["total"].clone(),
            value["total_pages"].clone()
        ),
        (json!(1), json!(10), json!(25), json!(3))
    );
    assert_eq!(page_ids(&body).first().map(String::as_str), Some("CUST001"));
    assert_eq!(page_ids(&body).len(), 10);
}

#[tokio::test]
async fn bad_values_are_clamped_never_rejected() {
    let base = start().await;
    let cases = [
        ("page=abc&limit=xyz", 1, 10),
        ("page=0&limit=0", 1, 1),
        ("page=-5&limit=-5", 1, 1),
        ("page=1&limit=1000", 1, 100),
        ("page=2.5&limit=7", 1, 7),
        ("page=&limit=", 1, 10),
    ];
    for (query, page, limit) in cases {
        let (status, _, body) = get(&base, &format!("/api/customers?{query}")).await;
        assert_eq!(status, 200, "{query}");
        let value: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["page"], page, "{query}");
        assert_eq!(value["limit"], limit, "{query}");
        assert_eq!(value["total_pages"], (25 + limit - 1) / limit, "{query}");
    }
}

#[tokio::test]
async fn pages_partition_the_data_and_past_the_end_is_empty() {
    let base = start().await;
    let mut all = Vec::new();
    for page in 1..=3 {
        let (_, _, body) = get(&base, &format!("/api/customers?page={page}&limit=10")).await;
        all.extend(page_ids(&body));
    }
    let expected: Vec<String> = (1..=25).map(|n| format!("CUST{n:03}")).collect();
    assert_eq!(all, expected);
    let (status, _, body) = get(&base, "/api/customers?page=4&limit=10").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        "{\"data\":[],\"limit\":10,\"page\":4,\"total\":25,\"total_pages\":3}\n"
    );
    let (status, _, _) = get(&base, "/api/customers?page=99999999999999999999&limit=100").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn one_customer_is_wrapped_in_data() {
    let base = start().await;
    let (status, _, body) = get(&base, "/api/customers/CUST025").await;
    assert_eq!(status, 200);
    let value: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(value.as_object().unwrap().len(), 1);
    assert_eq!(value["data"]["customer_id"], "CUST025");
    assert_eq!(value["data"]["first_name"], "William");
    assert!(body.ends_with("}\n"));
}

#[tokio::test]
async fn a_missing_customer_is_the_original_404_body() {
    let base = start().await;
    let (status, content_type, body) = get(&base, "/api/customers/NOPE").await;
    assert_eq!(status, 404);
    assert_eq!(content_type, "application/json");
    assert_eq!(
        body,
        "{\"customer_id\":\"NOPE\",\"error\":\"Customer not found\"}\n"
    );
}
