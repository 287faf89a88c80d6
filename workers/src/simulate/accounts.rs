//! The accounts upstream: the original Flask mock server on port 5000, byte for byte (see
//! README, Compatibility notes: accounts). Records are served exactly as the data file
//! holds them (bad query values are clamped, never rejected).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::flask::{self, query_int};

/// The 25 customers shipped with the repository, served when no file is given.
pub const DEFAULT_DATA: &str = include_str!("../../data/accounts_customers.json");

const DEFAULT_PAGE: i64 = 1;
const DEFAULT_LIMIT: i64 = 10;
const MAX_LIMIT: i64 = 100;

/// The customers the mock server serves, each pre-rendered in Flask's JSON form.
#[derive(Debug)]
pub struct AccountsDataset {
    rendered: Vec<String>,
    position_by_id: HashMap<String, usize>,
}

/// Why a data file was refused.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a JSON array of customer objects.
    #[error("invalid accounts data: {0}")]
    Invalid(String),
}

impl AccountsDataset {
    /// Parses a JSON array of customer objects, each with a string `customer_id`.
    pub fn from_json(text: &str) -> Result<Self, DatasetError> {
        let records: Vec<Value> = serde_json::from_str(text).map_err(|error| {
            DatasetError::Invalid(format!("expected a JSON array of objects: {error}"))
        })?;
        Self::from_records(records)
    }

    /// Reads a data file.
    pub fn from_file(path: &Path) -> Result<Self, DatasetError> {
        let text = std::fs::read_to_string(path).map_err(|source| DatasetError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text)
    }

    /// Builds a dataset from records already in memory.
    pub fn from_records(records: Vec<Value>) -> Result<Self, DatasetError> {
        let mut position_by_id = HashMap::with_capacity(records.len());
        let mut rendered = Vec::with_capacity(records.len());
        for (index, record) in records.iter().enumerate() {
            let id = record
                .get("customer_id")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    DatasetError::Invalid(format!("record {} has no string customer_id", index + 1))
                })?;
            // Like the original's linear search, the first record with an id wins.
            position_by_id.entry(id.to_owned()).or_insert(index);
            rendered.push(flask::to_string(record));
        }
        Ok(Self {
            rendered,
            position_by_id,
        })
    }

    /// How many customers are served.
    pub fn len(&self) -> usize {
        self.rendered.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rendered.is_empty()
    }
}

/// `count` synthetic customers in the data file's format (`CUST000001`...), for
/// benchmarks and load tests. Deterministic: the same count gives the same data.
pub fn generate(count: usize) -> Vec<Value> {
    const FIRST: [&str; 8] = [
        "John", "Emma", "Liam", "Olivia", "Noah", "Ava", "Ethan", "Mia",
    ];
    const LAST: [&str; 8] = [
        "Smith", "Brown", "Jones", "Garcia", "Miller", "Davis", "Lopez", "Lee",
    ];
    (1..=count)
        .map(|n| {
            let first = FIRST[n % FIRST.len()];
            let last = LAST[(n / FIRST.len()) % LAST.len()];
            let cents = (n * 7919) % 10_000_000;
            json!({
                "customer_id": format!("CUST{n:06}"),
                "first_name": first,
                "last_name": last,
                "email": format!("{}.{}.{n}@example.com", first.to_lowercase(), last.to_lowercase()),
                "phone": format!("+1-555-{:04}", n % 10_000),
                "address": format!("{} Main St, Springfield, ST {:05}", n % 9_999 + 1, n % 100_000),
                "date_of_birth": format!("{}-{:02}-{:02}", 1950 + n % 50, n % 12 + 1, n % 28 + 1),
                "account_balance": cents as f64 / 100.0,
                "created_at": format!("2023-{:02}-{:02}T{:02}:{:02}:00", n % 12 + 1, n % 28 + 1, n % 24, n % 60),
            })
        })
        .collect()
}

/// The mock server's routes.
pub fn router(dataset: Arc<AccountsDataset>) -> Router {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/customers", get(list_customers))
        .route("/api/customers/{customer_id}", get(get_customer))
        .with_state(dataset)
}

async fn health(State(dataset): State<Arc<AccountsDataset>>) -> Response {
    let body =
        json!({"status": "healthy", "service": "mock-server", "total_customers": dataset.len()});
    flask::response(StatusCode::OK, flask::to_string(&body))
}

async fn list_customers(
    State(dataset): State<Arc<AccountsDataset>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let page = query_int(&params, "page").unwrap_or(DEFAULT_PAGE).max(1);
    let limit = query_int(&params, "limit")
        .unwrap_or(DEFAULT_LIMIT)
        .clamp(1, MAX_LIMIT);
    let total = dataset.len() as i64;
    let start = (page - 1).saturating_mul(limit).min(total) as usize;
    let end = (start + limit as usize).min(dataset.len());
    let total_pages = (total + limit - 1) / limit;
    let body = format!(
        r#"{{"data":[{}],"limit":{limit},"page":{page},"total":{total},"total_pages":{total_pages}}}"#,
        dataset.rendered[start..end].join(",")
    );
    flask::response(StatusCode::OK, body)
}

async fn get_customer(
    State(dataset): State<Arc<AccountsDataset>>,
    UrlPath(customer_id): UrlPath<String>,
) -> Response {
    match dataset.position_by_id.get(&customer_id) {
        Some(&index) => flask::response(
            StatusCode::OK,
            format!(r#"{{"data":{}}}"#, dataset.rendered[index]),
        ),
        None => {
            let body = json!({"error": "Customer not found", "customer_id": customer_id});
            flask::response(StatusCode::NOT_FOUND, flask::to_string(&body))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_data_file_holds_25_customers() {
        let dataset = AccountsDataset::from_json(DEFAULT_DATA).unwrap();
        assert_eq!(dataset.len(), 25);
    }

    #[test]
    fn generated_data_is_deterministic_and_unique() {
        let first = generate(1_000);
        assert_eq!(first, generate(1_000));
        let ids: std::collections::HashSet<_> =
            first.iter().map(|r| r["customer_id"].clone()).collect();
        assert_eq!(ids.len(), 1_000);
    }
}
