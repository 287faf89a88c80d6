//! A CRM record as the API's pages and the feed carry it, and a change to one.

use serde::{Deserialize, Serialize};

/// A CRM record as the API serves it. Field order is the sorted order Flask's `jsonify`
/// writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmRecord {
    /// Email addresses (none for id-only records).
    #[serde(default)]
    pub email: Vec<String>,
    /// First name, or null.
    #[serde(rename = "firstName", default)]
    pub first_name: Option<String>,
    /// Record id.
    pub id: u64,
    /// Last name, or null.
    #[serde(rename = "lastName", default)]
    pub last_name: Option<String>,
}

/// What a feed event does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// CREATE or UPDATE: the record's full new state.
    Upsert(CrmRecord),
    /// DELETE: only the id.
    Delete(u64),
}

impl Change {
    /// The record id the change is about.
    pub fn id(&self) -> u64 {
        match self {
            Self::Upsert(record) => record.id,
            Self::Delete(id) => *id,
        }
    }
}
