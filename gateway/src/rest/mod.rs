//! The REST routes of the absorbed systems, one module per system, each answering exactly
//! as its original did, except where the README's compatibility notes say otherwise
//! (see README, Compatibility notes).

pub mod accounts;
pub mod crm;
pub mod orders;
pub mod purchases;
