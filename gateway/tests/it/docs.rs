//! The REST routes' OpenAPI document (`/openapi.json`) and its page (`/docs`). The document
//! is fuzzed against the running gateway by schemathesis in `make test`
//! (tests/python/test_openapi_fuzz.py), and the page is driven in headless Chromium
//! (tests/python/test_graphiql_browser.py).

use crate::common;

use std::collections::BTreeSet;

use common::TestGateway;
use gateway::config::GatewayConfig;
use serde_json::Value;
use sqlx::PgPool;

/// Every REST route the gateway serves, by method and path.
const REST_ROUTES: [(&str, &str); 16] = [
    ("get", "/"),
    ("get", "/api/customers"),
    ("get", "/api/customers/{customer_id}"),
    ("get", "/api/health"),
    ("post", "/api/ingest"),
    ("get", "/api/v1/orders"),
    ("post", "/api/v1/orders"),
    ("get", "/api/v1/orders/{id}"),
    ("post", "/buy"),
    ("get", "/buyList/{username}"),
    ("get", "/customers/{id}"),
    ("get", "/getAllUserBuys/{username}"),
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/readyz"),
    ("get", "/search"),
];

fn operations(document: &Value) -> BTreeSet<(String, String)> {
    document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect()
}

/// The schema a response's JSON body refers to.
fn body_ref<'a>(document: &'a Value, method: &str, path: &str, status: &str) -> &'a str {
    document["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
        ["$ref"]
        .as_str()
        .unwrap_or_else(|| panic!("{method} {path}: no JSON body for {status}"))
}

#[sqlx::test(migrations = "../migrations")]
async fn the_document_describes_every_rest_route_and_every_error_in_its_owners_shape(pool: PgPool) {
    let gateway = TestGateway::start(pool).await;
    let response = gateway.fetch("/openapi.json").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let document: Value = response.json().await.unwrap();
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        document["openapi"]
    );
    let expected: BTreeSet<(String, String)> = REST_ROUTES
        .iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();
    assert_eq!(operations(&document), expected);

    // Each system's own error shape, for its own errors and for the edge's.
    for (method, path, own_status, schema) in [
        ("get", "/api/customers", "422", "AccountsError"),
        ("post", "/api/ingest", "502", "AccountsError"),
        ("post", "/api/v1/orders", "422", "OrderServiceError"),
        ("get", "/customers/{id}", "401", "OrderServiceError"),
        ("post", "/buy", "400", "PurchasesError"),
        ("get", "/search", "400", "CrmSearchError"),
    ] {
        let reference = format!("#/components/schemas/{schema}");
        assert_eq!(body_ref(&document, method, path, own_status), reference);
        for edge_status in ["401", "403", "413", "429", "504"] {
            assert_eq!(
                body_ref(&document, method, path, edge_status),
                reference,
                "{method} {path} {edge_status}"
            );
        }
    }
    // A NUL in a path parameter is a 404, in the owner's shape.
    assert_eq!(
        body_ref(&document, "get", "/buyList/{username}", "404"),
        "#/components/schemas/PurchasesError"
    );
    let schemas = &document["components"]["schemas"];
    assert_eq!(
        schemas["PurchasesError"]["required"],
        serde_json::json!(["status", "message"])
    );
    // The request bodies the handlers read, and the headers they look at.
    let create = &document["paths"]["/api/v1/orders"]["post"];
    assert_eq!(
        create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/NewOrderBody"
    );
    assert_eq!(create["parameters"][0]["name"], "Idempotency-Key");
    assert_eq!(create["parameters"][0]["in"], "header");
    assert!(document["components"]["securitySchemes"]["apiKey"].is_object());
}

#[sqlx::test(migrations = "../migrations")]
async fn the_docs_page_is_served_from_the_gateway_itself_or_says_how_to_build_it(pool: PgPool) {
    // `make graphiql` (run by `make test`) has built Swagger UI beside GraphiQL.
    let page = common::assert_built_page(
        pool.clone(),
        "/docs",
        &[
            ("/docs/swagger-ui.js", "text/javascript"),
            ("/docs/swagger-ui.css", "text/css"),
        ],
        "/docs/other.js",
    )
    .await;
    assert!(page.contains(r#"src="/docs/swagger-ui.js""#), "{page}");
    assert!(page.contains(r#"url: "/openapi.json""#), "{page}");
    // The document itself needs nothing built.
    let mut config = GatewayConfig::defaults();
    config.http.graphiql_assets_dir = "/nonexistent/graphiql".into();
    let unbuilt = TestGateway::start_with(pool, config).await;
    assert_eq!(unbuilt.fetch("/openapi.json").await.status(), 200);
}
