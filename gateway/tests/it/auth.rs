//! Authentication and roles against the real gateway binary, every setting through the
//! process: API keys (`AUTH_API_KEYS_FILE`), HS256 JWTs (`AUTH_JWT_HS256_SECRET`, with
//! `AUTH_JWT_ISSUER`), the anonymous roles (`AUTH_ANONYMOUS_ROLES`), WebSocket clients in
//! `connection_init` (close 4403), rate limits per key, and refused configurations at
//! start. RS256 with a re-read JWKS file is tested with PyJWT (tests/python/test_jwt_rs256.py).

use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use testkit::ws::{self, Protocol};

const WRITER_KEY: &str = "writer-key-0a1b2c3d";
const ADMIN_KEY: &str = "admin-key-4e5f6a7b";
const SERVICE_KEY: &str = "service-key-8c9d0e1f";
const READER_KEY: &str = "reader-key-2a3b4c5d";
const SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!";

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A keys file in a directory of its own: writer (read, write), admin (admin, introspect),
/// service (customer-service), reader (read).
fn keys_file() -> PathBuf {
    let dir = std::env::temp_dir().join(testkit::unique("hub-auth"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keys.json");
    let entry = |name: &str, key: &str, roles: &[&str]| json!({"name": name, "sha256": sha256_hex(key), "roles": roles});
    let keys = json!({"keys": [
        entry("writer", WRITER_KEY, &["read", "write"]),
        entry("admin", ADMIN_KEY, &["admin", "introspect"]),
        entry("service", SERVICE_KEY, &["customer-service"]),
        entry("reader", READER_KEY, &["read"]),
    ]});
    std::fs::write(&path, keys.to_string()).unwrap();
    path
}

/// `POST /graphql` with these headers: status, `WWW-Authenticate`, body.
async fn graphql_as(
    base: &str,
    headers: &[(&str, &str)],
    query: &str,
) -> (u16, Option<String>, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .json(&json!({ "query": query }));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|value| value.to_str().unwrap().to_owned());
    (status, challenge, response.json().await.unwrap())
}

fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("none")
}

async fn rest(
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The gateway over `pool`'s database, with the keys of [`keys_file`].
async fn gateway_with_api_keys(pool: &PgPool) -> testkit::Process {
    let database = testkit::database_url(pool).await;
    let keys = keys_file();
    testkit::spawn_gateway(&database, &[("AUTH_API_KEYS_FILE", keys.to_str().unwrap())]).await
}

const READ: &str = "{ customers(first: 1) { totalCount } }";
const RETRY: &str = "mutation { retryFailedEvents }";
const INTROSPECT: &str = "{ __schema { queryType { name } } }";

#[sqlx::test(migrations = "../migrations")]
async fn with_api_keys_anonymous_callers_read_and_each_key_does_what_its_roles_allow(pool: PgPool) {
    let gateway = gateway_with_api_keys(&pool).await;
    let base = gateway.base();

    // Anonymous: reads, nothing more.
    let (status, _, body) = graphql_as(&base, &[], READ).await;
    assert_eq!(status, 200);
    assert!(body["data"]["customers"]["totalCount"].is_u64(), "{body}");
    for (query, role) in [(RETRY, "admin"), (INTROSPECT, "introspect")] {
        let (_, _, body) = graphql_as(&base, &[], query).await;
        assert_eq!(error_code(&body), "UNAUTHENTICATED", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["role"], role, "{body}");
        assert!(body["data"].is_null(), "nothing ran: {body}");
    }

    // A key has its roles and no others.
    let writer = [("x-api-key", WRITER_KEY)];
    let (_, _, body) = graphql_as(&base, &writer, RETRY).await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("admin") && message.contains("\"writer\""),
        "{message}"
    );
    let admin = [("x-api-key", ADMIN_KEY)];
    let (_, _, body) = graphql_as(&base, &admin, RETRY).await;
    assert_eq!(body["data"]["retryFailedEvents"], 0, "{body}");
    let (_, _, body) = graphql_as(&base, &admin, INTROSPECT).await;
    assert_eq!(
        body["data"]["__schema"]["queryType"]["name"], "Query",
        "{body}"
    );

    // REST writes need `write`; reads stay open.
    let order = json!({"customer_id": 3, "product_name": "Widget", "quantity": 1, "price": 5, "status": "pending"});
    let orders = format!("{base}/api/v1/orders");
    let (status, body) = rest(reqwest::Method::POST, &orders, &[], Some(order.clone())).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "unauthorized", "{body}");
    let (status, body) = rest(reqwest::Method::POST, &orders, &writer, Some(order)).await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = rest(reqwest::Method::GET, &orders, &[], None).await;
    assert_eq!(status, 200);
    let ingest = format!("{base}/api/ingest");
    let (status, body) = rest(reqwest::Method::POST, &ingest, &writer, None).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("admin"), "{body}");

    // A wrong key is 401 everywhere but the probes, and never echoed.
    let wrong = [("x-api-key", "not-a-key-of-ours-123")];
    let (status, challenge, body) = graphql_as(&base, &wrong, READ).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(challenge.as_deref(), Some("Bearer"));
    assert_eq!(error_code(&body), "UNAUTHORIZED", "{body}");
    let (status, _) = rest(reqwest::Method::GET, &orders, &wrong, None).await;
    assert_eq!(status, 401);
    let healthz = reqwest::Client::new()
        .get(format!("{base}/healthz"))
        .header("x-api-key", "not-a-key-of-ours-123")
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status().as_u16(), 200);

    // The customer service route: its own key is not configured, the role lets a key in.
    let customer = format!("{base}/customers/3");
    let (status, _) = rest(reqwest::Method::GET, &customer, &[], None).await;
    assert_eq!(status, 401);
    let (status, _) = rest(reqwest::Method::GET, &customer, &writer, None).await;
    assert_eq!(status, 401, "write is not customer-service");
    let service = [("x-api-key", SERVICE_KEY)];
    let (status, body) = rest(reqwest::Method::GET, &customer, &service, None).await;
    assert!(status == 200 || status == 404, "{status} {body}");

    let logs = gateway.stderr();
    for secret in [WRITER_KEY, ADMIN_KEY, SERVICE_KEY, "not-a-key-of-ours-123"] {
        assert!(!logs.contains(secret), "a key reached the logs: {logs}");
    }
}

fn token(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn in_an_hour() -> i64 {
    chrono::Utc::now().timestamp() + 3600
}

#[sqlx::test(migrations = "../migrations")]
async fn a_request_sent_again_by_another_caller_meets_that_callers_roles(pool: PgPool) {
    let gateway = gateway_with_api_keys(&pool).await;
    let base = gateway.base();
    // The admin's requests pass every check, twice: the second runs on the repeated path.
    let admin = [("x-api-key", ADMIN_KEY)];
    for _ in 0..2 {
        let (_, _, body) = graphql_as(&base, &admin, RETRY).await;
        assert_eq!(body["data"]["retryFailedEvents"], 0, "{body}");
        let (_, _, body) = graphql_as(&base, &admin, INTROSPECT).await;
        assert_eq!(body["data"]["__schema"]["queryType"]["name"], "Query");
    }
    // The same requests from callers without the roles are refused as before, every time.
    for _ in 0..2 {
        for (query, role) in [(RETRY, "admin"), (INTROSPECT, "introspect")] {
            let (_, _, body) = graphql_as(&base, &[], query).await;
            assert_eq!(error_code(&body), "UNAUTHENTICATED", "{body}");
            assert_eq!(body["errors"][0]["extensions"]["role"], role, "{body}");
            assert!(body["data"].is_null(), "nothing ran: {body}");
        }
        let (_, _, body) = graphql_as(&base, &[("x-api-key", WRITER_KEY)], RETRY).await;
        assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
        assert!(body["data"].is_null(), "nothing ran: {body}");
    }
    let metrics = testkit::http::get_text(&format!("{base}/metrics")).await;
    assert_eq!(
        testkit::http::metric(&metrics, "graphql_repeated_operations_total"),
        Some(2.0),
        "only the admin's second requests ran on the repeated path:\n{metrics}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn hs256_tokens_carry_their_roles_and_bad_tokens_are_refused_saying_why(pool: PgPool) {
    let database = testkit::database_url(&pool).await;
    let gateway = testkit::spawn_gateway(
        &database,
        &[
            ("AUTH_JWT_HS256_SECRET", SECRET),
            ("AUTH_JWT_ISSUER", "https://id.example"),
            ("AUTH_ANONYMOUS_ROLES", "none"),
        ],
    )
    .await;
    let base = gateway.base();
    let (_, _, body) = graphql_as(&base, &[], READ).await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED", "{body}");

    let claims = |roles: Value| json!({"sub": "ann", "iss": "https://id.example", "exp": in_an_hour(), "roles": roles});
    let bearer = |token: &str| format!("Bearer {token}");
    let reader = bearer(&token(SECRET, claims(json!(["read"]))));
    let (_, _, body) = graphql_as(&base, &[("authorization", &reader)], READ).await;
    assert!(body["data"]["customers"].is_object(), "{body}");
    let (_, _, body) = graphql_as(&base, &[("authorization", &reader)], RETRY).await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    // Roles as a space-separated string, as scopes are written.
    let operator = bearer(&token(SECRET, claims(json!("read admin"))));
    let (_, _, body) = graphql_as(&base, &[("authorization", &operator)], RETRY).await;
    assert_eq!(body["data"]["retryFailedEvents"], 0, "{body}");

    let expired = json!({"sub": "ann", "iss": "https://id.example", "exp": chrono::Utc::now().timestamp() - 3600, "roles": ["read"]});
    let other_issuer = json!({"sub": "ann", "iss": "https://evil.example", "exp": in_an_hour(), "roles": ["read"]});
    // `alg: none`, unsigned: header {"alg":"none","typ":"JWT"}.
    let unsigned = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        base64_url(&claims(json!(["read"])).to_string())
    );
    let cases = [
        (token(SECRET, expired), "expired"),
        (token(SECRET, other_issuer), "issuer"),
        (
            token(
                "another-secret-of-at-least-32-bytes!!",
                claims(json!(["read"])),
            ),
            "signature",
        ),
        (unsigned, "not a JWT"),
        ("garbage".to_owned(), "not a JWT"),
    ];
    for (token, says) in cases {
        let (status, challenge, body) =
            graphql_as(&base, &[("authorization", &bearer(&token))], READ).await;
        assert_eq!(status, 401, "{says}: {body}");
        assert_eq!(challenge.as_deref(), Some("Bearer"));
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(says), "{says}: {message}");
    }
    let (status, _, body) =
        graphql_as(&base, &[("authorization", "Basic YWxhZGRpbjpvcGVu")], READ).await;
    assert_eq!(status, 401, "{body}");
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// Sends `connection_init` with `payload` and returns the close code, or 0 for an ack.
async fn init(base: &str, protocol: Protocol, headers: &[(&str, &str)], payload: Value) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = ws::ws_url(base).into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", protocol.name().parse().unwrap());
    for (name, value) in headers {
        let name =
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws::send_json(
        &mut socket,
        &json!({"type": "connection_init", "payload": payload}),
    )
    .await;
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let next = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("an answer to connection_init within 5 s");
    match next.expect("a frame").expect("a readable socket") {
        Message::Text(text) if text.contains("connection_ack") => 0,
        Message::Close(frame) => frame.map_or(0, |frame| u16::from(frame.code)),
        other => panic!("neither an ack nor a close: {other:?}"),
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn websocket_clients_authenticate_in_connection_init_or_are_closed_with_4403(pool: PgPool) {
    let database = testkit::database_url(&pool).await;
    let keys = keys_file();
    let gateway = testkit::spawn_gateway(
        &database,
        &[
            ("AUTH_API_KEYS_FILE", keys.to_str().unwrap()),
            ("AUTH_ANONYMOUS_ROLES", "none"),
        ],
    )
    .await;
    let base = gateway.base();
    for protocol in [Protocol::TransportWs, Protocol::LegacyWs] {
        let name = protocol.name();
        assert_eq!(
            init(&base, protocol, &[], json!({})).await,
            4403,
            "{name}: anonymous"
        );
        let wrong = json!({"x-api-key": "not-a-key-of-ours-123"});
        assert_eq!(
            init(&base, protocol, &[], wrong).await,
            4403,
            "{name}: wrong key"
        );
        let admin_only = json!({"x-api-key": ADMIN_KEY});
        assert_eq!(
            init(&base, protocol, &[], admin_only).await,
            4403,
            "{name}: no read"
        );
        let reader = json!({"x-api-key": READER_KEY});
        assert_eq!(
            init(&base, protocol, &[], reader).await,
            0,
            "{name}: reader"
        );
        let under_headers = json!({"headers": {"X-Api-Key": READER_KEY}});
        assert_eq!(
            init(&base, protocol, &[], under_headers).await,
            0,
            "{name}: headers"
        );
        let upgrade = [("x-api-key", READER_KEY)];
        assert_eq!(
            init(&base, protocol, &upgrade, json!({})).await,
            0,
            "{name}: upgrade"
        );
    }

    // An acknowledged reader runs as itself: introspection over the socket needs its role.
    let mut client = ws::GraphqlWs::connect_with(
        &base,
        Protocol::TransportWs,
        json!({"x-api-key": READER_KEY}),
    )
    .await;
    client
        .subscribe("2", "query { __schema { queryType { name } } }", json!({}))
        .await;
    let mut refused = None;
    while let Some(message) = client.next(Duration::from_secs(5)).await {
        if message["id"] == "2" && message["type"] == "error" {
            refused = Some(message);
            break;
        }
    }
    let refused = refused.expect("an error for the introspection");
    assert_eq!(
        refused["payload"][0]["extensions"]["code"], "FORBIDDEN",
        "{refused}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn rate_limits_keep_a_bucket_per_key_and_one_per_address_for_the_rest(pool: PgPool) {
    let database = testkit::database_url(&pool).await;
    let keys = keys_file();
    let gateway = testkit::spawn_gateway(
        &database,
        &[
            ("AUTH_API_KEYS_FILE", keys.to_str().unwrap()),
            ("RATE_LIMIT_PER_SECOND", "0.01"),
            ("RATE_LIMIT_BURST", "2"),
        ],
    )
    .await;
    let base = gateway.base();
    let orders = format!("{base}/api/v1/orders");
    let statuses = |headers: &'static [(&'static str, &'static str)]| {
        let orders = orders.clone();
        async move {
            let mut statuses = Vec::new();
            for _ in 0..3 {
                statuses.push(rest(reqwest::Method::GET, &orders, headers, None).await.0);
            }
            statuses
        }
    };
    assert_eq!(
        statuses(&[("x-api-key", READER_KEY)]).await,
        [200, 200, 429]
    );
    assert_eq!(
        statuses(&[("x-api-key", WRITER_KEY)]).await,
        [200, 200, 429]
    );
    assert_eq!(statuses(&[]).await, [200, 200, 429]);
}

#[tokio::test]
async fn unusable_auth_settings_stop_the_start_naming_the_variable() {
    let dir = std::env::temp_dir().join(testkit::unique("hub-auth-bad"));
    std::fs::create_dir_all(&dir).unwrap();
    let bad_keys = dir.join("keys.json");
    std::fs::write(
        &bad_keys,
        r#"{"keys": [{"name": "x", "sha256": "abc", "roles": []}]}"#,
    )
    .unwrap();
    let not_a_jwks = dir.join("jwks.json");
    std::fs::write(&not_a_jwks, r#"{"keys": []}"#).unwrap();
    let cases = [
        (
            "AUTH_API_KEYS_FILE",
            bad_keys.to_str().unwrap(),
            "64 hex digits",
        ),
        ("AUTH_JWT_HS256_SECRET", "short", "at least 32 bytes"),
        (
            "AUTH_JWT_JWKS_FILE",
            not_a_jwks.to_str().unwrap(),
            "no RSA signing key",
        ),
        ("AUTH_ANONYMOUS_ROLES", "read,root", "unknown role"),
    ];
    for (variable, value, says) in cases {
        let stderr = crate::common::refused_start(variable, value).await;
        assert!(stderr.contains(says), "{variable}: {stderr}");
        if variable == "AUTH_JWT_HS256_SECRET" {
            assert!(
                !stderr.contains("short'") && !stderr.contains("\"short\""),
                "{stderr}"
            );
        }
    }
}
