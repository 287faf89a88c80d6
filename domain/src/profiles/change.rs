//! One profile change as the profile source sends it (`GET /users/changes`, a bare JSON
//! array), decoded strictly, and the original TargetService's validation rules.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use crate::{Error, Result};

/// Longest name, email and mobile the table holds (the original's column sizes).
pub const MAX_NAME_CHARS: usize = 255;
/// See [`MAX_NAME_CHARS`].
pub const MAX_EMAIL_CHARS: usize = 255;
/// See [`MAX_NAME_CHARS`].
pub const MAX_MOBILE_CHARS: usize = 20;
/// Longest status the table holds.
pub const MAX_STATUS_CHARS: usize = 50;

/// A profile change from the source.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileChange {
    /// The profile's id (a UUID).
    pub id: Uuid,
    /// Display name (`User123`).
    pub name: String,
    /// Email address as sent (validated by the sync, not here).
    pub email: String,
    /// Mobile number as sent (`+91` and 1-10 digits, not zero-padded).
    pub mobile: String,
    /// `active`, `inactive`, `pending` or anything else the source sends.
    pub status: String,
    /// When the source changed the profile, compared as an instant.
    pub last_updated_at: DateTime<Utc>,
    /// The item exactly as received, kept with its outcome.
    pub received: serde_json::Value,
}

/// The wire shape: six strings, as the original's Go struct.
#[derive(Deserialize)]
struct WireProfile {
    id: String,
    name: String,
    email: String,
    mobile: String,
    status: String,
    last_updated_at: String,
}

/// Decodes a whole batch, or refuses it naming the first bad item: the body must be a JSON
/// array of objects with the six string fields, a UUID `id` and an RFC 3339
/// `last_updated_at` (unknown fields are ignored). A batch is all or nothing: a refused
/// batch writes nothing.
pub fn decode_batch(body: &[u8]) -> Result<Vec<ProfileChange>> {
    let items: Vec<serde_json::Value> = serde_json::from_slice(body).map_err(|error| {
        Error::Upstream(format!("the profile source sent no JSON array: {error}"))
    })?;
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            decode_item(item).map_err(|why| {
                Error::Upstream(format!("profile {} of the batch: {why}", index + 1))
            })
        })
        .collect()
}

fn decode_item(received: serde_json::Value) -> Result<ProfileChange, String> {
    let wire = WireProfile::deserialize(&received).map_err(|error| error.to_string())?;
    let id = Uuid::parse_str(&wire.id).map_err(|_| format!("id {:?} is not a UUID", wire.id))?;
    let last_updated_at = DateTime::parse_from_rfc3339(&wire.last_updated_at)
        .map_err(|_| {
            format!(
                "last_updated_at {:?} is not an RFC 3339 time",
                wire.last_updated_at
            )
        })?
        .with_timezone(&Utc);
    Ok(ProfileChange {
        id,
        name: wire.name,
        email: wire.email,
        mobile: wire.mobile,
        status: wire.status,
        last_updated_at,
        received,
    })
}

/// The original's email rule, `^[a-zA-Z0-9._%+\-]+@[a-zA-Z0-9.\-]+\.[a-zA-Z]{2,}$`, without
/// a regex engine: one `@`, a non-empty local part of the allowed characters, and a domain
/// of letters, digits, dots and hyphens whose part after the last dot is two or more
/// letters (with something before that dot).
pub fn is_valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._%+-".contains(&b));
    let domain_chars_ok = domain
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    let Some((host, top_level)) = domain.rsplit_once('.') else {
        return false;
    };
    local_ok
        && domain_chars_ok
        && !host.is_empty()
        && top_level.len() >= 2
        && top_level.bytes().all(|b| b.is_ascii_alphabetic())
}

/// Whether the original syncs a profile of this status.
pub fn is_syncable_status(status: &str) -> bool {
    matches!(status, "active" | "pending")
}

/// Why a change cannot be stored at all (the original would have failed on the column
/// size); checked right after the email rule.
pub fn oversized_field(change: &ProfileChange) -> Option<String> {
    [
        ("Name", &change.name, MAX_NAME_CHARS),
        ("Email", &change.email, MAX_EMAIL_CHARS),
        ("Mobile", &change.mobile, MAX_MOBILE_CHARS),
        ("Status", &change.status, MAX_STATUS_CHARS),
    ]
    .into_iter()
    .find(|(_, value, limit)| value.chars().count() > *limit)
    .map(|(field, _, limit)| format!("{field} longer than {limit} characters"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_rule_matches_the_originals_regex() {
        for valid in [
            "user1@example.com",
            "a.b_c%d+e-f@sub.example.co",
            "x@a-b.io",
            "x@a..bc",
            "x@.a.bc",
        ] {
            assert!(is_valid_email(valid), "{valid} should pass");
        }
        for invalid in [
            "",
            "user1example.com",
            "@example.com",
            "user@",
            "user@example",
            "user@example.c",
            "user@.com",
            "user@exa mple.com",
            "us er@example.com",
            "user@@example.com",
            "user@example.c0m",
            "üser@example.com",
            "user@example.com ",
        ] {
            assert!(!is_valid_email(invalid), "{invalid:?} should fail");
        }
    }

    #[test]
    fn a_batch_with_one_bad_item_is_refused_naming_it() {
        let body = br#"[{"id":"6f1c8a52-4a5e-4a8e-9f6e-0c7b1d2e3f40","name":"User1","email":"user1@example.com","mobile":"+911","status":"active","last_updated_at":"2025-07-01T15:43:04+05:30"},
                        {"id":"not-a-uuid","name":"User2","email":"user2@example.com","mobile":"+912","status":"active","last_updated_at":"2025-07-01T15:43:04Z"}]"#;
        let error = decode_batch(body).unwrap_err().to_string();
        assert!(error.contains("profile 2 of the batch"), "{error}");
        assert!(error.contains("not a UUID"), "{error}");
    }

    #[test]
    fn times_with_offsets_decode_to_the_same_instant() {
        let body = br#"[{"id":"6f1c8a52-4a5e-4a8e-9f6e-0c7b1d2e3f40","name":"User1","email":"user1@example.com","mobile":"+911","status":"active","last_updated_at":"2025-07-01T15:43:04+05:30","extra":1}]"#;
        let batch = decode_batch(body).unwrap();
        assert_eq!(
            batch[0].last_updated_at,
            DateTime::parse_from_rfc3339("2025-07-01T10:13:04Z").unwrap()
        );
    }

    #[test]
    fn truncated_json_and_non_string_fields_are_refused() {
        assert!(decode_batch(br#"[{"id":"#).is_err());
        assert!(decode_batch(br#"{"id":"x"}"#).is_err());
        let numeric = br#"[{"id":"6f1c8a52-4a5e-4a8e-9f6e-0c7b1d2e3f40","name":"User1","email":"user1@example.com","mobile":911,"status":"active","last_updated_at":"2025-07-01T15:43:04Z"}]"#;
        assert!(decode_batch(numeric).is_err());
    }
}
