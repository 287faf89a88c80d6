//! The gateway in this process (its `AppState` within reach) on an ephemeral port over a
//! test database, and the shipped accounts customers as seed data. Everything else tests
//! share comes from `testkit`.

use gateway::config::GatewayConfig;
use gateway::AppState;
use serde_json::Value;
use sqlx::PgPool;

/// The 25 customers the accounts simulator ships with.
pub const ACCOUNTS_DATA: &str = include_str!("../../../workers/data/accounts_customers.json");

pub struct TestGateway {
    pub base: String,
    pub client: reqwest::Client,
    pub state: AppState,
}

impl TestGateway {
    pub async fn start(pool: PgPool) -> Self {
        Self::start_with(pool, GatewayConfig::defaults()).await
    }

    pub async fn start_with(pool: PgPool, config: GatewayConfig) -> Self {
        let state = AppState::new(pool, config);
        // Served as the binary serves it: sockets its subscriptions can write to directly.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let serving = gateway::serve(listener, state.clone(), std::future::pending());
        tokio::spawn(async move { serving.await.unwrap() });
        Self {
            base,
            client: reqwest::Client::new(),
            state,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A GET, as it came back.
    pub async fn fetch(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// A GET whose body is JSON: its status and body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        testkit::http::get_json(&self.url(path)).await
    }

    /// Runs a GraphQL operation and returns the whole response body.
    pub async fn graphql(&self, query: &str, variables: Value) -> Value {
        testkit::http::graphql(&self.base, query, variables).await
    }
}

/// Stores the shipped accounts customers directly (no upstream involved).
pub async fn seed_accounts(pool: &PgPool) -> Vec<domain::accounts::AccountRecord> {
    let records: Vec<domain::accounts::AccountRecord> =
        serde_json::from_str(ACCOUNTS_DATA).unwrap();
    domain::accounts::store(pool, records.clone())
        .await
        .unwrap();
    records
}

/// A page the gateway serves with files `make graphiql` built (GraphiQL, `/docs`): served
/// from `web/graphiql/dist` with nothing from elsewhere, each file with its content type
/// and no other file; and from a directory without them, a page naming `make graphiql`
/// and 404 for the files. Returns the built page's text.
pub async fn assert_built_page(
    pool: PgPool,
    page: &str,
    files: &[(&str, &str)],
    unknown_file: &str,
) -> String {
    let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/graphiql/dist");
    let mut config = GatewayConfig::defaults();
    config.http.graphiql_assets_dir = built;
    let gateway = TestGateway::start_with(pool.clone(), config).await;
    let response = gateway.fetch(page).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let text = response.text().await.unwrap();
    assert!(
        !text.contains("https://"),
        "nothing may come from elsewhere: {text}"
    );
    for (file, content_type) in files {
        let response = gateway.fetch(file).await;
        assert_eq!(response.status(), 200, "{file}");
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(content_type));
    }
    assert_eq!(gateway.fetch(unknown_file).await.status(), 404);

    let mut config = GatewayConfig::defaults();
    config.http.graphiql_assets_dir = "/nonexistent/graphiql".into();
    let unbuilt = TestGateway::start_with(pool, config).await;
    let unbuilt_page = unbuilt.fetch(page).await.text().await.unwrap();
    assert!(unbuilt_page.contains("make graphiql"), "{unbuilt_page}");
    for (file, _) in files {
        assert_eq!(unbuilt.fetch(file).await.status(), 404, "{file}");
    }
    text
}

/// Starts the gateway binary with `variable` set to `value` (and `DATABASE_URL` to the test
/// server), expecting it to refuse the setting: asserts it exits with an error and returns
/// what it wrote to stderr.
pub async fn refused_start(variable: &str, value: &str) -> String {
    let output = testkit::Launch::binary("gateway")
        .env("DATABASE_URL", testkit::db::server_url())
        .env(variable, value)
        .start()
        .await
        .wait()
        .await;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_ne!(output.status.code(), Some(0), "{variable}: {stderr}");
    stderr
}
