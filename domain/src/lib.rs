//! The hub's shared core: model types, database access, upstream clients, configuration
//! pieces and telemetry. The gateway and the workers are thin layers over this crate.

pub mod accounts;
pub mod amqp;
pub mod backoff;
pub mod config;
pub mod crm;
pub mod customers;
pub mod db;
pub mod error;
pub mod kafka;
pub mod meili;
pub mod orders;
pub mod outbox;
pub mod pipelines;
pub mod profiles;
pub mod purchases;
pub mod search;
pub mod shutdown;
pub mod telemetry;
pub mod warm;

pub use error::{Error, Result};
