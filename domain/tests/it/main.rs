//! The domain crate's integration tests, one binary: each module is one area (see its own `//!`).

mod customer_counts;
mod search;
mod warm;
