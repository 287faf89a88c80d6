//! What the tests and benchmarks of every crate share, so that none of them keeps a copy:
//! ports and throwaway HTTP servers, per-test and per-bench databases, our binaries started
//! as child processes (and found in the target directory), GraphQL-over-WebSocket clients,
//! GraphQL global ids, small HTTP helpers, polling, and RabbitMQ helpers.
//!
//! Dev-only: used as a dev-dependency, never published, and independent of `gateway` and
//! `workers` (it drives their binaries instead of linking them). Every helper panics with a
//! clear message instead of returning errors: a failed helper is a failed test.

pub mod binaries;
pub mod db;
pub mod documents;
pub mod http;
pub mod ids;
pub mod load;
pub mod measure;
pub mod net;
pub mod otlp;
pub mod process;
pub mod rabbit;
pub mod statements;
pub mod wait;
pub mod ws;

pub use binaries::{gateway_launch, spawn_gateway, spawn_workers, workers_launch};
pub use db::{database_url, fresh_database, FreshDatabase};
pub use ids::{customer_id, global_id, order_id};
pub use net::{free_port, serve, unique};
pub use process::{target_binary, Launch, Process};
pub use wait::{wait_until, wait_until_within};
pub use ws::{GraphqlWs, Protocol};
