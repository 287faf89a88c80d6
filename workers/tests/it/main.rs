//! The workers' integration tests, one binary: each module is one area (see its own `//!`).

mod accounts_ingest;
mod accounts_upstream;
mod crm_index;
mod crm_meili;
mod crm_upstream;
mod kafka_support;
mod orders_pipeline;
mod orders_reliability;
mod outbox_upgrade;
mod profiles_sync;
mod purchases_pipeline;
mod purchases_reliability;
mod request_trace;
