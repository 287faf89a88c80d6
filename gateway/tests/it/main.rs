//! The gateway's integration tests, one binary: each module is one area (see its own `//!`).

mod abuse;
mod auth;
#[allow(dead_code)]
mod common;
mod crm_live;
mod crm_search;
mod docs;
mod documents;
mod fanout;
mod graphql_customers;
mod operations;
mod orders;
mod persisted_queries;
mod process;
mod profiles;
mod purchase_made;
mod purchases;
mod query_batching;
mod rest_accounts;
mod statements;
mod subscription_protocol;
mod sync_status;
