//! The accounts pipeline's REST routes on the gateway, compared field by field with the
//! original accounts pipeline service (see README, Compatibility notes: accounts).

use crate::common;

use common::{seed_accounts, TestGateway};
use serde_json::{json, Value};
use sqlx::PgPool;

#[sqlx::test(migrations = "../migrations")]
async fn health_answers_like_the_pipeline_service(pool: PgPool) {
    let gateway = TestGateway::start(pool).await;
    let (status, body) = gateway.get("/api/health").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"status": "healthy", "service": "pipeline-service"})
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn customer_list_has_the_contract_envelope_ordered_by_customer_id(pool: PgPool) {
    seed_accounts(&pool).await;
    let gateway = TestGateway::start(pool).await;
    let (status, body) = gateway.get("/api/customers?page=2&limit=10").await;
    assert_eq!(status, 200);
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 5, "{body}");
    assert_eq!(body["total"], 25);
    assert_eq!(body["page"], 2);
    assert_eq!(body["limit"], 10);
    assert_eq!(body["total_pages"], 3);
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["customer_id"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (11..=20).map(|n| format!("CUST{n:03}")).collect();
    assert_eq!(ids, expected);

    let (_, defaults) = gateway.get("/api/customers").await;
    assert_eq!(
        (defaults["page"].clone(), defaults["limit"].clone()),
        (json!(1), json!(10))
    );
    let (_, last) = gateway.get("/api/customers?page=3&limit=10").await;
    assert_eq!(last["data"].as_array().unwrap().len(), 5);
    let (status, past) = gateway.get("/api/customers?page=9&limit=10").await;
    assert_eq!(status, 200);
    assert_eq!(past["data"], json!([]));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_customer_is_served_with_every_field_in_the_pipeline_format(pool: PgPool) {
    seed_accounts(&pool).await;
    let gateway = TestGateway::start(pool).await;
    let (status, body) = gateway.get("/api/customers/CUST001").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"data": {
            "customer_id": "CUST001",
            "first_name": "John",
            "last_name": "Smith",
            "email": "john.smith@example.com",
            "phone": "+1-555-0101",
            "address": "107 Oak Ave, Springfield, ST 10137",
            "date_of_birth": "1963-06-08",
            "account_balance": 1250.5,
            "created_at": "2023-02-04 09:13:00",
        }})
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_zero_balance_stays_zero_not_null(pool: PgPool) {
    seed_accounts(&pool).await;
    let gateway = TestGateway::start(pool).await;
    let (_, body) = gateway.get("/api/customers/CUST003").await;
    assert_eq!(body["data"]["account_balance"], json!(0.0));
    let (_, body) = gateway.get("/api/customers/CUST009").await;
    assert_eq!(body["data"]["account_balance"], json!(0.01));
}

#[sqlx::test(migrations = "../migrations")]
async fn an_unknown_customer_is_a_404_with_the_original_detail(pool: PgPool) {
    let gateway = TestGateway::start(pool).await;
    let (status, body) = gateway.get("/api/customers/CUST999").await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"detail": "Customer with ID 'CUST999' not found"})
    );
}

fn problem_fields(body: &Value) -> Vec<(String, String)> {
    body["detail"]
        .as_array()
        .expect("422 detail is a list")
        .iter()
        .map(|p| {
            (
                p["loc"][1].as_str().unwrap().to_owned(),
                p["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn bad_page_or_limit_is_a_422_naming_the_parameter(pool: PgPool) {
    let gateway = TestGateway::start(pool).await;
    let cases = [
        ("page=0", vec![("page", "greater_than_equal")]),
        ("page=-1", vec![("page", "greater_than_equal")]),
        ("page=abc", vec![("page", "int_parsing")]),
        ("limit=0", vec![("limit", "greater_than_equal")]),
        ("limit=101", vec![("limit", "less_than_equal")]),
        ("limit=1.5", vec![("limit", "int_parsing")]),
        (
            "page=0&limit=500",
            vec![("page", "greater_than_equal"), ("limit", "less_than_equal")],
        ),
    ];
    for (query, expected) in cases {
        let (status, body) = gateway.get(&format!("/api/customers?{query}")).await;
        assert_eq!(status, 422, "{query}: {body}");
        let expected: Vec<(String, String)> = expected
            .into_iter()
            .map(|(field, kind)| (field.to_owned(), kind.to_owned()))
            .collect();
        assert_eq!(problem_fields(&body), expected, "{query}");
    }
    let (status, _) = gateway.get("/api/customers?page=1&limit=100").await;
    assert_eq!(status, 200);
}

async fn raw(gateway: &TestGateway, path: &str) -> String {
    gateway.fetch(path).await.text().await.unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn bodies_keep_the_pipeline_services_key_order(pool: PgPool) {
    seed_accounts(&pool).await;
    let gateway = TestGateway::start(pool).await;
    assert_eq!(
        raw(&gateway, "/api/health").await,
        r#"{"status":"healthy","service":"pipeline-service"}"#
    );
    assert_eq!(
        raw(&gateway, "/api/customers?page=9").await,
        r#"{"data":[],"total":25,"page":9,"limit":10,"total_pages":3}"#
    );
    let one = raw(&gateway, "/api/customers/CUST002").await;
    assert!(
        one.starts_with(
            r#"{"data":{"customer_id":"CUST002","first_name":"Emma","last_name":"Johnson","email":"#
        ),
        "{one}"
    );
    assert_eq!(
        raw(&gateway, "/api/customers?limit=0").await,
        concat!(
            r#"{"detail":[{"type":"greater_than_equal","loc":["query","limit"],"#,
            r#""msg":"Input should be greater than or equal to 1","input":"0","ctx":{"ge":1}}]}"#
        )
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn unknown_routes_and_wrong_methods_answer_in_the_pipeline_services_shape(pool: PgPool) {
    let gateway = TestGateway::start(pool).await;
    for path in ["/api/nope", "/api/customers/CUST001/orders", "/api/"] {
        let response = gateway.fetch(path).await;
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, json!({"detail": "Not Found"}), "{path}");
    }
    let cases = [
        ("DELETE", "/api/customers", "GET,HEAD"),
        ("POST", "/api/customers", "GET,HEAD"),
        ("PUT", "/api/customers/CUST001", "GET,HEAD"),
        ("POST", "/api/health", "GET,HEAD"),
        ("GET", "/api/ingest", "POST"),
        ("DELETE", "/api/ingest", "POST"),
    ];
    for (method, path, allow) in cases {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = gateway
            .client
            .request(method.clone(), gateway.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(response.headers()["allow"], allow, "{method} {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body,
            json!({"detail": "Method Not Allowed"}),
            "{method} {path}"
        );
    }
}
