//! User profiles (seed 002): the profile source's changes and the sync that applies them,
//! every outcome right and recorded (see README, Compatibility notes: profiles).
//!
//! - `change.rs`: the wire shape, decoded strictly, and the original's validation rules.
//! - `plan.rs`: what a batch does, decided before anything is written (a pure function).
//! - `store.rs`: the batch applied in one transaction; profiles read back.

pub mod change;
pub mod plan;
pub mod store;

pub use change::{decode_batch, ProfileChange};
pub use plan::{Decision, Outcome, StoredProfile, Write};
pub use store::{apply_batch, BatchReport, ProfileFilter, SyncWriter, UserProfile};
