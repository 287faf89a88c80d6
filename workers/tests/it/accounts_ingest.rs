//! The accounts ingest end to end against the real simulator and a real database: exact
//! contents, idempotence, all-or-nothing on upstream failure, concurrent ingests, the
//! values the original accepted leniently (and the records it refused), and the three ways
//! to start it (REST, GraphQL, `workers ingest`).

use std::process::Command;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use domain::accounts::{self, AccountRecord};
use domain::customers::{self, CustomerKey, CustomerSource};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgPool;
use testkit::http::{get_json, graphql};
use testkit::{database_url, serve, spawn_gateway, Process};
use workers::simulate::accounts::{self as simulator, AccountsDataset};

fn shipped_records() -> Vec<Value> {
    serde_json::from_str(simulator::DEFAULT_DATA).unwrap()
}

async fn start_simulator(records: Vec<Value>) -> String {
    serve(simulator::router(Arc::new(
        AccountsDataset::from_records(records).unwrap(),
    )))
    .await
}

/// The simulator, except that page 2 of the customer list answers 500.
async fn start_simulator_failing_on_page_2(records: Vec<Value>) -> String {
    async fn fail_page_2(request: Request, next: Next) -> Response {
        let query = request.uri().query().unwrap_or_default().to_owned();
        if query.split('&').any(|pair| pair == "page=2") {
            return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
        }
        next.run(request).await
    }
    let dataset = Arc::new(AccountsDataset::from_records(records).unwrap());
    serve(simulator::router(dataset).layer(axum::middleware::from_fn(fail_page_2))).await
}

/// An upstream serving `records` verbatim as its only page, even records the simulator
/// refuses to load (one without a `customer_id`).
async fn start_upstream_serving(records: Vec<Value>) -> String {
    let page = json!({
        "data": records, "total": records.len(), "page": 1, "limit": 100, "total_pages": 1,
    });
    serve(Router::new().route(
        "/api/customers",
        get(move || async move { Json(page.clone()) }),
    ))
    .await
}

/// Every column of every accounts customer row, in id order.
async fn snapshot(pool: &PgPool) -> Vec<Value> {
    sqlx::query_scalar("SELECT to_jsonb(c) FROM customers c WHERE source = 'ACCOUNTS' ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

fn with_balance(records: &[Value], balance: f64) -> Vec<Value> {
    records
        .iter()
        .map(|record| {
            let mut record = record.clone();
            record["account_balance"] = json!(balance);
            record
        })
        .collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn ingest_stores_all_25_records_exactly_as_served(pool: PgPool) {
    let base = start_simulator(shipped_records()).await;
    let report = accounts::ingest(&pool, &accounts::upstream_client(), &base)
        .await
        .unwrap();
    assert_eq!(report.records_processed, 25);
    assert_eq!(report.pages_fetched, 1);
    assert_eq!(
        customers::count(&pool, Some(CustomerSource::Accounts))
            .await
            .unwrap(),
        25
    );

    for raw in shipped_records() {
        let served: AccountRecord = serde_json::from_value(raw.clone()).unwrap();
        let key = CustomerKey {
            source: CustomerSource::Accounts,
            external_id: served.customer_id.clone(),
        };
        let stored = customers::find(&pool, &key).await.unwrap().unwrap();
        assert_eq!(
            stored.first_name.as_deref(),
            Some(served.first_name.as_str())
        );
        assert_eq!(stored.last_name.as_deref(), Some(served.last_name.as_str()));
        assert_eq!(stored.emails, vec![served.email.clone()]);
        assert_eq!(stored.phone, served.phone);
        assert_eq!(stored.address, served.address);
        assert_eq!(
            stored.date_of_birth.map(|d| d.to_string()).as_deref(),
            raw["date_of_birth"].as_str()
        );
        // Cents exactly as the file writes them (the file has 1250.50, 0.00, 0.01...).
        let served_text = raw["account_balance"].to_string();
        assert_eq!(
            stored.account_balance,
            Some(Decimal::from_str(&served_text).unwrap())
        );
        assert_eq!(stored.account_balance.unwrap().scale(), 2);
        let created =
            NaiveDateTime::parse_from_str(raw["created_at"].as_str().unwrap(), "%Y-%m-%dT%H:%M:%S")
                .unwrap();
        assert_eq!(stored.created_at, Some(Utc.from_utc_datetime(&created)));
    }
    let zero = customers::find(
        &pool,
        &CustomerKey {
            source: CustomerSource::Accounts,
            external_id: "CUST003".into(),
        },
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        zero.account_balance,
        Some(Decimal::from_str("0.00").unwrap())
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn reingest_is_idempotent(pool: PgPool) {
    let base = start_simulator(shipped_records()).await;
    let client = accounts::upstream_client();
    accounts::ingest(&pool, &client, &base).await.unwrap();
    let before = snapshot(&pool).await;
    let again = accounts::ingest(&pool, &client, &base).await.unwrap();
    assert_eq!(again.records_processed, 25);
    assert_eq!(
        snapshot(&pool).await,
        before,
        "a re-ingest of the same data changed rows"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_large_upstream_is_read_across_many_pages(pool: PgPool) {
    let base = start_simulator(simulator::generate(1_234)).await;
    let report = accounts::ingest(&pool, &accounts::upstream_client(), &base)
        .await
        .unwrap();
    assert_eq!(report.records_processed, 1_234);
    assert_eq!(report.pages_fetched, 13);
    assert_eq!(
        customers::count(&pool, Some(CustomerSource::Accounts))
            .await
            .unwrap(),
        1_234
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn an_upstream_failing_on_page_2_leaves_the_table_unchanged(pool: PgPool) {
    let client = accounts::upstream_client();
    let healthy = start_simulator(shipped_records()).await;
    accounts::ingest(&pool, &client, &healthy).await.unwrap();
    let before = snapshot(&pool).await;

    // 250 changed records: page 1 (100 records) is fine, page 2 fails every attempt.
    let changed = with_balance(&simulator::generate(250), 1.0);
    let failing = start_simulator_failing_on_page_2(changed).await;
    let error = accounts::ingest(&pool, &client, &failing)
        .await
        .unwrap_err();
    assert!(matches!(error, domain::Error::Upstream(_)), "{error}");
    assert!(error.to_string().contains("page 2"), "{error}");
    assert_eq!(snapshot(&pool).await, before);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_bad_record_aborts_the_ingest_and_changes_nothing(pool: PgPool) {
    let client = accounts::upstream_client();
    let mut records = simulator::generate(150);
    records[120]["first_name"] = Value::Null;
    let base = start_simulator(records).await;
    let error = accounts::ingest(&pool, &client, &base).await.unwrap_err();
    assert!(matches!(error, domain::Error::InvalidRecord(_)), "{error}");
    assert!(
        error.to_string().contains("bad record 21 on page 2"),
        "{error}"
    );
    assert!(snapshot(&pool).await.is_empty());
}

/// `generate(values.len())` with record n's `field` set to value n (removed when `None`).
fn with_field(field: &str, values: &[Option<Value>]) -> Vec<Value> {
    let mut records = simulator::generate(values.len());
    for (record, value) in records.iter_mut().zip(values) {
        match value {
            Some(value) => record[field] = value.clone(),
            None => {
                record.as_object_mut().unwrap().remove(field);
            }
        }
    }
    records
}

/// Ingests `records` through the gateway's `POST /api/ingest` (which must succeed), then
/// returns each record's `created_at` in `customer_id` order: as stored, as
/// `GET /api/customers` answers it and as GraphQL's `createdAt` answers it.
async fn created_at_stored_and_answered(
    pool: &PgPool,
    records: Vec<Value>,
) -> Vec<(Option<DateTime<Utc>>, Value, Value)> {
    let count = records.len();
    let upstream = start_simulator(records).await;
    let gateway = start_gateway(pool, &upstream).await;
    let base = gateway.base();
    let response = reqwest::Client::new()
        .post(format!("{base}/api/ingest"))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        format!(r#"{{"status":"success","records_processed":{count}}}"#)
    );
    let stored: Vec<Option<DateTime<Utc>>> = sqlx::query_scalar(
        "SELECT created_at FROM customers WHERE source = 'ACCOUNTS' ORDER BY external_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let (_, listed) = get_json(&format!("{base}/api/customers?limit=100")).await;
    let rest = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|customer| customer["created_at"].clone());
    let body = graphql(
        &base,
        "{ customers(source: ACCOUNTS, first: 100) { edges { node { createdAt } } } }",
        json!({}),
    )
    .await;
    assert!(body.get("errors").is_none(), "{body}");
    let graphql = body["data"]["customers"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| edge["node"]["createdAt"].clone());
    let answered: Vec<_> = stored
        .into_iter()
        .zip(rest)
        .zip(graphql)
        .map(|((stored, rest), graphql)| (stored, rest, graphql))
        .collect();
    assert_eq!(answered.len(), count);
    answered
}

#[sqlx::test(migrations = "../migrations")]
async fn every_created_at_form_the_original_accepts_is_stored_as_its_instant(pool: PgPool) {
    // (served, the instant and GraphQL's createdAt, GET /api/customers' created_at)
    let forms = [
        (
            "2023-01-15T10:30:00",
            "2023-01-15T10:30:00+00:00",
            "2023-01-15 10:30:00",
        ),
        (
            "2023-01-15T10:30:00Z",
            "2023-01-15T10:30:00+00:00",
            "2023-01-15 10:30:00",
        ),
        (
            "2023-01-15T10:30:00+02:00",
            "2023-01-15T08:30:00+00:00",
            "2023-01-15 08:30:00",
        ),
        (
            "2023-01-15T23:30:00-05:00",
            "2023-01-16T04:30:00+00:00",
            "2023-01-16 04:30:00",
        ),
        (
            "2023-01-15T10:30:00.123Z",
            "2023-01-15T10:30:00.123+00:00",
            "2023-01-15 10:30:00",
        ),
        (
            "2023-01-15 10:30:00",
            "2023-01-15T10:30:00+00:00",
            "2023-01-15 10:30:00",
        ),
        (
            "2023-01-15 10:30:00.5+01:00",
            "2023-01-15T09:30:00.500+00:00",
            "2023-01-15 09:30:00",
        ),
        (
            "2023-01-15T10:30",
            "2023-01-15T10:30:00+00:00",
            "2023-01-15 10:30:00",
        ),
    ];
    let served: Vec<Option<Value>> = forms.iter().map(|(form, ..)| Some(json!(form))).collect();
    let answered = created_at_stored_and_answered(&pool, with_field("created_at", &served)).await;
    for ((form, instant, rest), (stored, rest_answer, graphql_answer)) in forms.iter().zip(answered)
    {
        let expected = DateTime::parse_from_rfc3339(instant).unwrap().to_utc();
        assert_eq!(stored, Some(expected), "{form}");
        assert_eq!(rest_answer, json!(rest), "{form}");
        assert_eq!(graphql_answer, json!(instant), "{form}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_created_at_the_original_stores_as_null_is_stored_and_answered_as_null(pool: PgPool) {
    let served = [
        Some(json!("")),
        Some(json!("2023-01-15")),
        Some(json!("not a date")),
        Some(json!("2023-01-15T25:00:00")),
        Some(Value::Null),
        None,
    ];
    let answered = created_at_stored_and_answered(&pool, with_field("created_at", &served)).await;
    for (served, answered) in served.iter().zip(answered) {
        assert_eq!(answered, (None, Value::Null, Value::Null), "{served:?}");
    }
    // Every other source still gets a creation time.
    sqlx::query("INSERT INTO customers (source, external_id) VALUES ('CRM', '1')")
        .execute(&pool)
        .await
        .unwrap();
    let refused = sqlx::query(
        "INSERT INTO customers (source, external_id, created_at) VALUES ('SHOP', '1', NULL)",
    )
    .execute(&pool)
    .await;
    assert!(refused.is_err(), "a shop customer without created_at");
}

/// The stored accounts customer `CUST00000n`.
async fn stored(pool: &PgPool, n: usize) -> customers::Customer {
    let key = CustomerKey {
        source: CustomerSource::Accounts,
        external_id: format!("CUST{n:06}"),
    };
    customers::find(pool, &key).await.unwrap().unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_balance_written_as_a_numeric_string_is_stored_exactly(pool: PgPool) {
    let served = [
        Some(json!("15000.50")),
        Some(json!("-12.5")),
        Some(json!(" 0.01 ")),
        Some(json!(7.25)),
    ];
    let base = start_simulator(with_field("account_balance", &served)).await;
    accounts::ingest(&pool, &accounts::upstream_client(), &base)
        .await
        .unwrap();
    for (n, expected) in [(1, "15000.50"), (2, "-12.50"), (3, "0.01"), (4, "7.25")] {
        let balance = stored(&pool, n).await.account_balance.unwrap();
        assert_eq!(balance.to_string(), expected);
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_date_of_birth_with_a_time_part_is_stored_as_its_date(pool: PgPool) {
    let served = [
        Some(json!("1990-05-15")),
        Some(json!("1990-05-15T00:00:00")),
        Some(json!("1990-05-15 10:00:00")),
        Some(json!("1990-05-15T23:30:00-05:00")),
    ];
    let base = start_simulator(with_field("date_of_birth", &served)).await;
    accounts::ingest(&pool, &accounts::upstream_client(), &base)
        .await
        .unwrap();
    for n in 1..=served.len() {
        assert_eq!(
            stored(&pool, n).await.date_of_birth,
            NaiveDate::from_ymd_opt(1990, 5, 15),
            "record {n}"
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_record_the_original_refuses_fails_the_ingest_naming_record_and_field(pool: PgPool) {
    let client = accounts::upstream_client();
    let healthy = start_simulator(shipped_records()).await;
    accounts::ingest(&pool, &client, &healthy).await.unwrap();
    let before = snapshot(&pool).await;

    let mut no_id = simulator::generate(3);
    no_id[1].as_object_mut().unwrap().remove("customer_id");
    let mut not_a_number = simulator::generate(3);
    not_a_number[1]["account_balance"] = json!("twelve");
    for (upstream, expected) in [
        (
            start_upstream_serving(no_id).await,
            "bad record 2 on page 1: missing field `customer_id`",
        ),
        (
            start_simulator(not_a_number).await,
            r#"bad record 2 on page 1 (customer_id "CUST000002"): account_balance "twelve" is not a number"#,
        ),
    ] {
        let error = accounts::ingest(&pool, &client, &upstream)
            .await
            .unwrap_err();
        assert!(matches!(error, domain::Error::InvalidRecord(_)), "{error}");
        assert_eq!(error.to_string(), expected);
        assert_eq!(snapshot(&pool).await, before, "{expected}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn two_concurrent_ingests_end_consistent(pool: PgPool) {
    let client = accounts::upstream_client();
    let records = simulator::generate(3_000);
    let one = start_simulator(with_balance(&records, 1.0)).await;
    let two = start_simulator(with_balance(&records, 2.0)).await;
    for _ in 0..3 {
        let (a, b) = tokio::join!(
            accounts::ingest(&pool, &client, &one),
            accounts::ingest(&pool, &client, &two)
        );
        assert_eq!(a.unwrap().records_processed, 3_000);
        assert_eq!(b.unwrap().records_processed, 3_000);
        let balances: Vec<Decimal> = sqlx::query_scalar(
            "SELECT DISTINCT account_balance FROM customers WHERE source = 'ACCOUNTS'",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(
            balances.len(),
            1,
            "rows from both ingests mixed: {balances:?}"
        );
        assert_eq!(
            customers::count(&pool, Some(CustomerSource::Accounts))
                .await
                .unwrap(),
            3_000
        );
    }
}

/// The real gateway binary over the test's database, reading its accounts from `upstream`.
async fn start_gateway(pool: &PgPool, upstream: &str) -> Process {
    let database = database_url(pool).await;
    spawn_gateway(&database, &[("MOCK_SERVER_URL", upstream)]).await
}

#[sqlx::test(migrations = "../migrations")]
async fn post_api_ingest_answers_like_the_pipeline_service(pool: PgPool) {
    let upstream = start_simulator(shipped_records()).await;
    let gateway = start_gateway(&pool, &upstream).await;
    let base = gateway.base();
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{base}/api/ingest"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        r#"{"status":"success","records_processed":25}"#
    );
    let (_, listed) = get_json(&format!("{base}/api/customers?limit=100")).await;
    assert_eq!(listed["total"], 25);
}

#[sqlx::test(migrations = "../migrations")]
async fn post_api_ingest_with_a_failing_upstream_is_502_with_the_reason(pool: PgPool) {
    let failing = start_simulator_failing_on_page_2(simulator::generate(150)).await;
    let gateway = start_gateway(&pool, &failing).await;
    let base = gateway.base();
    let response = reqwest::Client::new()
        .post(format!("{base}/api/ingest"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.starts_with("Ingestion failed: page 2"), "{detail}");
    assert!(detail.contains("500"), "{detail}");
    assert!(snapshot(&pool).await.is_empty());
}

#[sqlx::test(migrations = "../migrations")]
async fn the_graphql_mutation_ingests(pool: PgPool) {
    let upstream = start_simulator(shipped_records()).await;
    let gateway = start_gateway(&pool, &upstream).await;
    let base = gateway.base();
    let body = graphql(
        &base,
        "mutation { ingestCustomers { recordsProcessed pagesFetched } }",
        json!({}),
    )
    .await;
    assert_eq!(
        body,
        json!({"data": {"ingestCustomers": {"recordsProcessed": 25, "pagesFetched": 1}}})
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn workers_ingest_runs_the_same_ingest_from_the_command_line(pool: PgPool) {
    let upstream = start_simulator(shipped_records()).await;
    let url = database_url(&pool).await;
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_workers"))
            .args(["ingest", "--mock-server-url", &upstream])
            .env("DATABASE_URL", url)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8(output.stdout).unwrap().trim(),
        r#"{"status": "success", "records_processed": 25}"#
    );
    assert_eq!(
        customers::count(&pool, Some(CustomerSource::Accounts))
            .await
            .unwrap(),
        25
    );
}

#[test]
fn workers_refuse_a_bad_value_in_one_line_naming_the_variable() {
    for (args, variable, value) in [
        (vec!["simulate"], "ACCOUNTS_ADDR", "nowhere"),
        (vec!["ingest"], "MOCK_SERVER_URL", "ftp://x"),
        (vec!["ingest"], "DATABASE_URL", "sqlite://x"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_workers"))
            .args(&args)
            .env(variable, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{variable}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(variable), "{stderr}");
    }
}
