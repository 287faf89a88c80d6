//! The REST routes of the absorbed systems, one module per system, each answering exactly
//! as CONTRACTS.md describes its original.

pub mod accounts;
pub mod orders;
