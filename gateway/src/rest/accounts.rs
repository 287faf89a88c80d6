//! The original accounts pipeline service: `/api/health`, `POST /api/ingest`,
//! `/api/customers` and `/api/customers/{customer_id}`, with FastAPI's body shapes
//! (`{"detail": ...}` errors, a list of problems on 422) and field order (bodies are
//! structs, so keys come out in the order FastAPI wrote them). Where we differ from the
//! original, and why: see README, Compatibility notes: accounts.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::customers::{Customer, CustomerKey, CustomerSource};
use rust_decimal::prelude::ToPrimitive;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::errors::ApiError;
use crate::AppState;

/// The routes with their OpenAPI descriptions, to merge into the gateway's router.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ingest))
        .routes(routes!(list_customers))
        .routes(routes!(get_customer))
}

/// A customer as the pipeline service printed it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AccountsCustomer)]
struct CustomerBody {
    customer_id: String,
    first_name: Option<String>,
    last_name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    address: Option<String>,
    date_of_birth: Option<String>,
    account_balance: Option<f64>,
    created_at: Option<String>,
}

impl From<Customer> for CustomerBody {
    fn from(customer: Customer) -> Self {
        Self {
            customer_id: customer.key.external_id,
            first_name: customer.first_name,
            last_name: customer.last_name,
            email: customer.emails.into_iter().next(),
            phone: customer.phone,
            address: customer.address,
            date_of_birth: customer
                .date_of_birth
                .map(|date| date.format("%Y-%m-%d").to_string()),
            account_balance: customer
                .account_balance
                .and_then(|balance| balance.to_f64()),
            created_at: customer
                .created_at
                .map(|instant| instant.format("%Y-%m-%d %H:%M:%S").to_string()),
        }
    }
}

/// Every error of the pipeline service's routes: `{"detail": ...}`, a message, or on 422
/// from the list route FastAPI's list of validation problems.
#[derive(Serialize, ToSchema)]
pub struct AccountsError {
    detail: ErrorDetail,
}

/// What an [`AccountsError`] holds.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
enum ErrorDetail {
    /// What went wrong, in words.
    Message(String),
    /// Each query parameter that broke its rule (422 from `GET /api/customers`).
    Problems(Vec<Problem>),
}

/// One customer: `{"data": <customer>}`.
#[derive(Serialize, ToSchema)]
struct CustomerData {
    data: CustomerBody,
}

#[derive(Serialize, ToSchema)]
struct Health {
    /// Always `healthy`.
    status: &'static str,
    /// Always `pipeline-service`.
    service: &'static str,
}

#[derive(Serialize, ToSchema)]
struct Ingested {
    /// Always `success`.
    status: &'static str,
    /// Customers read from the upstream and stored.
    records_processed: u64,
}

#[derive(Serialize, ToSchema)]
struct CustomerPage {
    data: Vec<CustomerBody>,
    /// Customers stored from the accounts service.
    total: i64,
    page: i64,
    limit: i64,
    total_pages: i64,
}

/// One FastAPI-style validation problem.
#[derive(Serialize, ToSchema)]
struct Problem {
    /// `int_parsing`, `greater_than_equal` or `less_than_equal`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// `["query", "<parameter>"]`.
    loc: [&'static str; 2],
    msg: String,
    /// The value as sent.
    input: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ctx: Option<Bound>,
}

/// The bound a value broke, serialized as FastAPI's `{"ge": 1}` / `{"le": 100}`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum Bound {
    Ge(i64),
    Le(i64),
}

/// An error answer in the pipeline service's shape ([`AccountsError`]).
pub(crate) fn failure(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(AccountsError {
            detail: ErrorDetail::Message(message.into()),
        }),
    )
        .into_response()
}

/// Errors in the pipeline service's shape: `{"detail": "<message>"}`.
struct PipelineError(ApiError);

impl<E: Into<ApiError>> From<E> for PipelineError {
    fn from(error: E) -> Self {
        Self(error.into())
    }
}

impl IntoResponse for PipelineError {
    fn into_response(self) -> Response {
        failure(self.0.kind.status(), self.0.message)
    }
}

/// The pipeline service's own health answer (the gateway's probes are `/healthz` and
/// `/readyz`).
#[utoipa::path(get, path = "/api/health", tag = "accounts",
    responses((status = 200, description = "Always healthy", body = Health)))]
async fn health() -> Json<Health> {
    Json(Health {
        status: "healthy",
        service: "pipeline-service",
    })
}

/// Reads every customer from the accounts upstream (`MOCK_SERVER_URL`) and stores them, all
/// or nothing.
#[utoipa::path(post, path = "/api/ingest", tag = "accounts",
    responses(
        (status = 200, description = "Every customer stored", body = Ingested),
        (status = 502, description = "The upstream failed or sent bad data; nothing was stored (`Ingestion failed: <reason>`)", body = AccountsError),
        (status = 503, description = "The database is unavailable", body = AccountsError),
    ))]
async fn ingest(State(state): State<AppState>) -> Result<Json<Ingested>, PipelineError> {
    let report = state.ingest_accounts().await?;
    Ok(Json(Ingested {
        status: "success",
        records_processed: report.records_processed,
    }))
}

fn problem(
    kind: &'static str,
    field: &'static str,
    msg: String,
    input: &str,
    ctx: Option<Bound>,
) -> Problem {
    Problem {
        kind,
        loc: ["query", field],
        msg,
        input: input.to_owned(),
        ctx,
    }
}

/// Reads an integer query parameter bounded to `min..=max`, as FastAPI's
/// `Query(default, ge=min, le=max)` does.
/// When a parameter is repeated, the last value counts ([`super::last_param`]).
fn bounded_param(
    params: &[(String, String)],
    field: &'static str,
    default: i64,
    min: i64,
    max: Option<i64>,
) -> Result<i64, Problem> {
    let Some(raw) = super::last_param(params, field) else {
        return Ok(default);
    };
    let value: i64 = raw.trim().parse().map_err(|_| {
        problem(
            "int_parsing",
            field,
            "Input should be a valid integer, unable to parse string as an integer".into(),
            raw,
            None,
        )
    })?;
    if value < min {
        return Err(problem(
            "greater_than_equal",
            field,
            format!("Input should be greater than or equal to {min}"),
            raw,
            Some(Bound::Ge(min)),
        ));
    }
    if let Some(max) = max.filter(|max| value > *max) {
        return Err(problem(
            "less_than_equal",
            field,
            format!("Input should be less than or equal to {max}"),
            raw,
            Some(Bound::Le(max)),
        ));
    }
    Ok(value)
}

/// The accounts service's customers, oldest first, a page at a time.
#[utoipa::path(get, path = "/api/customers", tag = "accounts",
    params(
        ("page" = Option<i64>, Query, description = "Page number, from 1 (default 1)", minimum = 1),
        ("limit" = Option<i64>, Query, description = "Customers a page (default 10)", minimum = 1, maximum = 100),
    ),
    responses(
        (status = 200, description = "One page", body = CustomerPage),
        (status = 422, description = "A parameter is no integer or out of bounds: FastAPI's list of problems", body = AccountsError),
        (status = 503, description = "The database is unavailable", body = AccountsError),
    ))]
async fn list_customers(
    State(state): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, PipelineError> {
    let page = bounded_param(&params, "page", 1, 1, None);
    let limit = bounded_param(&params, "limit", 10, 1, Some(100));
    let (page, limit) = match (page, limit) {
        (Ok(page), Ok(limit)) => (page, limit),
        (page, limit) => {
            let problems = [page.err(), limit.err()].into_iter().flatten().collect();
            let body = AccountsError {
                detail: ErrorDetail::Problems(problems),
            };
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response());
        }
    };
    let offset = (page - 1).saturating_mul(limit);
    let (total, rows) = tokio::try_join!(
        domain::customers::count(&state.pool, Some(CustomerSource::Accounts)),
        domain::customers::page_at_offset(&state.pool, CustomerSource::Accounts, offset, limit),
    )?;
    Ok(Json(CustomerPage {
        data: rows.into_iter().map(CustomerBody::from).collect(),
        total,
        page,
        limit,
        total_pages: (total + limit - 1) / limit,
    })
    .into_response())
}

/// One accounts customer by the id the accounts service gave it.
#[utoipa::path(get, path = "/api/customers/{customer_id}", tag = "accounts",
    params(("customer_id" = String, Path, description = "The accounts service's customer id",
        example = "CUST001")),
    responses(
        (status = 200, description = "The customer", body = CustomerData),
        (status = 404, description = "No such customer (`Customer with ID '<id>' not found`)", body = AccountsError),
        (status = 503, description = "The database is unavailable", body = AccountsError),
    ))]
async fn get_customer(
    State(state): State<AppState>,
    Path(customer_id): Path<String>,
) -> Result<Response, PipelineError> {
    let key = CustomerKey {
        source: CustomerSource::Accounts,
        external_id: customer_id,
    };
    Ok(match domain::customers::find(&state.pool, &key).await? {
        Some(customer) => Json(CustomerData {
            data: CustomerBody::from(customer),
        })
        .into_response(),
        None => failure(
            StatusCode::NOT_FOUND,
            format!("Customer with ID '{}' not found", key.external_id),
        ),
    })
}
