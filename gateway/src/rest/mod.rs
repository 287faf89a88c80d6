//! The REST routes of the absorbed systems, one module per system, each answering exactly
//! as its original did, except where the README's compatibility notes say otherwise
//! (see README, Compatibility notes). Each module registers its handlers with their
//! `#[utoipa::path]` descriptions, so the OpenAPI document ([`crate::docs`]) is made from
//! the same code as the router.

pub mod accounts;
pub mod crm;
pub mod orders;
pub mod purchases;

use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

/// A query parameter's value; when it is repeated, the last one counts, as in Starlette
/// and Rails (the accounts and order services' originals).
fn last_param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// Every system's routes, with their descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(accounts::routes())
        .merge(crm::routes())
        .merge(orders::routes())
        .merge(purchases::routes())
}
