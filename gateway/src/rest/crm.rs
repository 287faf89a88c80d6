//! The CRM apps' own search route, `GET /search?q=&page=`, as its web and mobile apps call
//! it: `{"query", "page", "results"}`, 100 index documents a page, id descending among the
//! matches (every record for an empty `q`), on Meilisearch when `MEILI_URL` is set and on
//! PostgreSQL otherwise. Errors are `{"error", "detail"}` as the original's. Where we differ
//! from the original, and why: see README, Compatibility notes: CRM.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::meili::MeiliDocument;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

/// The routes with their OpenAPI descriptions, to merge into the gateway's router.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(search))
}

/// Every error of the CRM search route: `{"error", "detail"}`.
#[derive(Serialize, ToSchema)]
pub struct CrmSearchError {
    /// What failed (`Bad query`, `Search error`, `Meilisearch error`, or the status's
    /// reason phrase).
    error: String,
    detail: String,
}

/// One hit: the index document's displayed attributes (null names as `""`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CrmHit)]
struct Hit {
    id: u64,
    #[serde(rename = "firstName")]
    first_name: String,
    #[serde(rename = "lastName")]
    last_name: String,
    email: Vec<String>,
}

impl From<MeiliDocument> for Hit {
    fn from(document: MeiliDocument) -> Self {
        Self {
            id: document.id,
            first_name: document.first_name,
            last_name: document.last_name,
            email: document.email,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct SearchBody {
    query: String,
    page: u64,
    results: Vec<Hit>,
}

/// `page` as the original read it: a positive integer, anything else is 1.
fn page_number(text: Option<&str>) -> u64 {
    text.and_then(|text| text.trim().parse::<u64>().ok())
        .filter(|page| *page >= 1)
        .unwrap_or(1)
}

/// An error answer in the search API's shape ([`CrmSearchError`]).
pub(crate) fn failure(status: StatusCode, error: &str, detail: impl std::fmt::Display) -> Response {
    let body = CrmSearchError {
        error: error.to_owned(),
        detail: detail.to_string(),
    };
    (status, Json(body)).into_response()
}

/// CRM records matching `q` (every record when it is empty), 100 a page, newest id first.
#[utoipa::path(get, path = "/search", tag = "crm",
    params(
        ("q" = Option<String>, Query, description = "Words to find, typos forgiven"),
        ("page" = Option<String>, Query, description = "Page number from 1; anything that is no positive integer is page 1"),
    ),
    responses(
        (status = 200, description = "One page of hits", body = SearchBody),
        (status = 400, description = "The query cannot be searched (`Bad query`)", body = CrmSearchError),
        (status = 500, description = "The search engine failed (`Search error`, `Meilisearch error`)", body = CrmSearchError),
    ))]
async fn search(
    State(state): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let value = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let query = value("q").unwrap_or_default().to_owned();
    let page = page_number(value("page"));
    let results: Result<Vec<Hit>, Response> = match &state.search {
        Some(meili) => meili
            .crm_page(&query, page, domain::search::CRM_PAGE_SIZE)
            .await
            .map(|documents| documents.into_iter().map(Hit::from).collect())
            .map_err(|error| {
                failure(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Meilisearch error",
                    error,
                )
            }),
        None => match domain::search::crm_page(&state.pool, &query, page).await {
            Ok(records) => Ok(records
                .iter()
                .filter_map(MeiliDocument::from_record)
                .map(Hit::from)
                .collect()),
            Err(domain::Error::InvalidInput { message, .. }) => {
                Err(failure(StatusCode::BAD_REQUEST, "Bad query", message))
            }
            Err(error) => {
                tracing::error!(%error, "CRM search failed");
                Err(failure(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Search error",
                    "the search could not run; see the gateway's log",
                ))
            }
        },
    };
    match results {
        Ok(results) => Json(SearchBody {
            query,
            page,
            results,
        })
        .into_response(),
        Err(response) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_that_is_no_positive_integer_is_page_one() {
        assert_eq!(page_number(None), 1);
        assert_eq!(page_number(Some("3")), 3);
        for text in ["0", "-2", "two", "", "1.5"] {
            assert_eq!(page_number(Some(text)), 1, "{text:?}");
        }
    }
}
