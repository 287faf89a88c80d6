//! What a batch does, decided before anything is written: a pure function of the batch and
//! the stored rows it touches, so the outcome never depends on scheduling.
//!
//! Per id the newest change of the batch wins (ties: the later one); the others are
//! `superseded`. The survivors are decided in the order of their `last_updated_at` (then
//! their place in the batch), each seeing the effect of the ones before, with the
//! original's four checks in its order, plus a unique email or mobile collision with
//! another accepted profile reported as `conflict`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::change::{is_syncable_status, is_valid_email, oversized_field, ProfileChange};

/// The outcome of one received change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored as the profile's data.
    Synced,
    /// Failed the email rule (or does not fit a column; the message says which).
    FailedValidation(String),
    /// Status neither `active` nor `pending`.
    SkippedStatus,
    /// Not newer than the stored change.
    SkippedNotNewer,
    /// Its email or mobile belongs to another accepted profile.
    Conflict(String),
    /// A newer change of the same profile came in the same batch.
    Superseded,
}

impl Outcome {
    /// The `sync_status` of the original's table (`superseded` is ours and never stored).
    pub fn sync_status(&self) -> &'static str {
        match self {
            Self::Synced => "synced",
            Self::FailedValidation(_) => "failed_validation",
            Self::SkippedStatus | Self::SkippedNotNewer => "skipped",
            Self::Conflict(_) => "conflict",
            Self::Superseded => "superseded",
        }
    }

    /// The `sync_message`, the original's exact strings where it has one.
    pub fn message(&self) -> String {
        match self {
            Self::Synced => "Successfully synced".into(),
            Self::FailedValidation(why) | Self::Conflict(why) => why.clone(),
            Self::SkippedStatus => "Status is neither active nor pending".into(),
            Self::SkippedNotNewer => "Not newer than existing record".into(),
            Self::Superseded => "Superseded by a newer change in the same batch".into(),
        }
    }

    /// Whether the original counts it in `profiles_skipped_total` (every skip or failed
    /// validation).
    pub fn counts_as_skipped(&self) -> bool {
        matches!(
            self,
            Self::FailedValidation(_) | Self::SkippedStatus | Self::SkippedNotNewer
        )
    }
}

/// A profile as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredProfile {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Email.
    pub email: String,
    /// Mobile.
    pub mobile: String,
    /// Status.
    pub status: String,
    /// The stored change's time.
    pub last_updated_at: DateTime<Utc>,
    /// Whether the data is an accepted change (and so holds its email and mobile).
    pub accepted: bool,
    /// The last outcome.
    pub sync_status: String,
    /// Its message.
    pub sync_message: String,
}

impl StoredProfile {
    /// `change` as stored with `outcome`.
    pub fn stored(change: &ProfileChange, accepted: bool, outcome: &Outcome) -> Self {
        Self {
            id: change.id,
            name: change.name.clone(),
            email: change.email.clone(),
            mobile: change.mobile.clone(),
            status: change.status.clone(),
            last_updated_at: change.last_updated_at,
            accepted,
            sync_status: outcome.sync_status().into(),
            sync_message: outcome.message(),
        }
    }
}

/// What to write for one change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Nothing: superseded, an exact replay of the stored change, or a new profile with a
    /// field too long to store (its outcome and the change are kept in the run).
    Nothing,
    /// Only the outcome; the stored data is newer or accepted and stays.
    OutcomeOnly,
    /// The change's data and its outcome (`accepted` when synced).
    Row {
        /// Whether the change was accepted.
        accepted: bool,
    },
}

/// The decision for one change of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Its place in the batch (0-based).
    pub position: usize,
    /// What happened to it.
    pub outcome: Outcome,
    /// What to write.
    pub write: Write,
}

/// Decides every change of `batch` against `stored` (every stored row with an id, or an
/// accepted email or mobile, of the batch). Returns one decision per change, in batch order.
pub fn plan(batch: &[ProfileChange], stored: Vec<StoredProfile>) -> Vec<Decision> {
    let mut decisions: Vec<Option<Decision>> = vec![None; batch.len()];
    let mut newest_by_id: HashMap<Uuid, usize> = HashMap::new();
    for (position, change) in batch.iter().enumerate() {
        match newest_by_id.get(&change.id) {
            Some(&kept) if batch[kept].last_updated_at > change.last_updated_at => {
                decisions[position] = Some(superseded(position));
            }
            Some(&kept) => {
                decisions[kept] = Some(superseded(kept));
                newest_by_id.insert(change.id, position);
            }
            None => {
                newest_by_id.insert(change.id, position);
            }
        }
    }
    let mut survivors: Vec<usize> = newest_by_id.into_values().collect();
    survivors.sort_by_key(|&position| (batch[position].last_updated_at, position));

    let mut view = Contacts::new(stored);
    for position in survivors {
        let change = &batch[position];
        let (outcome, write) = view.decide(change);
        decisions[position] = Some(Decision {
            position,
            outcome,
            write,
        });
    }
    decisions
        .into_iter()
        .map(|decision| decision.expect("every position is decided"))
        .collect()
}

fn superseded(position: usize) -> Decision {
    Decision {
        position,
        outcome: Outcome::Superseded,
        write: Write::Nothing,
    }
}

/// The stored rows as the batch changes them, with who holds each email and mobile.
struct Contacts {
    rows: HashMap<Uuid, StoredProfile>,
    email_owner: HashMap<String, Uuid>,
    mobile_owner: HashMap<String, Uuid>,
}

impl Contacts {
    fn new(stored: Vec<StoredProfile>) -> Self {
        let mut view = Self {
            rows: HashMap::with_capacity(stored.len()),
            email_owner: HashMap::new(),
            mobile_owner: HashMap::new(),
        };
        for row in stored {
            view.put(row);
        }
        view
    }

    fn put(&mut self, row: StoredProfile) {
        if let Some(old) = self.rows.get(&row.id).filter(|old| old.accepted) {
            self.email_owner.remove(&old.email);
            self.mobile_owner.remove(&old.mobile);
        }
        if row.accepted {
            self.email_owner.insert(row.email.clone(), row.id);
            self.mobile_owner.insert(row.mobile.clone(), row.id);
        }
        self.rows.insert(row.id, row);
    }

    fn decide(&mut self, change: &ProfileChange) -> (Outcome, Write) {
        let existing = self.rows.get(&change.id);
        let outcome = if !is_valid_email(&change.email) {
            Outcome::FailedValidation("Invalid email format".into())
        } else if let Some(why) = oversized_field(change) {
            Outcome::FailedValidation(why)
        } else if !is_syncable_status(&change.status) {
            Outcome::SkippedStatus
        } else if existing.is_some_and(|row| change.last_updated_at <= row.last_updated_at) {
            Outcome::SkippedNotNewer
        } else if let Some(other) = self.other_owner(&self.email_owner, &change.email, change.id) {
            Outcome::Conflict(format!(
                "Email {} already belongs to profile {other}",
                change.email
            ))
        } else if let Some(other) = self.other_owner(&self.mobile_owner, &change.mobile, change.id)
        {
            Outcome::Conflict(format!(
                "Mobile {} already belongs to profile {other}",
                change.mobile
            ))
        } else {
            Outcome::Synced
        };
        let accepted = outcome == Outcome::Synced;
        // A field too long for its column cannot be stored whatever the outcome: only the
        // outcome is (and the change, in the run's outcomes).
        let storable = oversized_field(change).is_none();
        let write = match existing {
            Some(row) if is_replay(row, change) => Write::Nothing,
            Some(_) if !storable => Write::OutcomeOnly,
            None if !storable => Write::Nothing,
            Some(row)
                if !accepted && (row.accepted || change.last_updated_at <= row.last_updated_at) =>
            {
                Write::OutcomeOnly
            }
            _ => Write::Row { accepted },
        };
        self.record(change, &outcome, write);
        (outcome, write)
    }

    fn other_owner(&self, owners: &HashMap<String, Uuid>, value: &str, id: Uuid) -> Option<Uuid> {
        owners.get(value).copied().filter(|owner| *owner != id)
    }

    fn record(&mut self, change: &ProfileChange, outcome: &Outcome, write: Write) {
        match write {
            Write::Nothing => {}
            Write::OutcomeOnly => {
                if let Some(row) = self.rows.get_mut(&change.id) {
                    row.sync_status = outcome.sync_status().into();
                    row.sync_message = outcome.message();
                }
            }
            Write::Row { accepted } => self.put(StoredProfile::stored(change, accepted, outcome)),
        }
    }
}

/// The stored change itself, received again: recorded in the run, the row left as it is, so
/// a re-run changes nothing.
fn is_replay(row: &StoredProfile, change: &ProfileChange) -> bool {
    row.last_updated_at == change.last_updated_at
        && row.name == change.name
        && row.email == change.email
        && row.mobile == change.mobile
        && row.status == change.status
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn change(id: u128, email: &str, mobile: &str, status: &str, second: u32) -> ProfileChange {
        ProfileChange {
            id: Uuid::from_u128(id),
            name: format!("User{id}"),
            email: email.into(),
            mobile: mobile.into(),
            status: status.into(),
            last_updated_at: Utc.with_ymd_and_hms(2025, 7, 1, 10, 0, second).unwrap(),
            received: serde_json::Value::Null,
        }
    }

    fn stored_from(change: &ProfileChange, accepted: bool) -> StoredProfile {
        StoredProfile::stored(change, accepted, &Outcome::Synced)
    }

    fn outcomes(decisions: &[Decision]) -> Vec<&'static str> {
        decisions.iter().map(|d| d.outcome.sync_status()).collect()
    }

    #[test]
    fn the_four_checks_apply_in_the_originals_order() {
        let old = change(1, "user1@example.com", "+911", "active", 10);
        let batch = vec![
            // Invalid email and bad status: the email rule comes first.
            change(2, "bad-email", "+912", "inactive", 1),
            change(3, "user3@example.com", "+913", "inactive", 2),
            // Older than the stored change of profile 1.
            change(1, "user1@example.com", "+911", "pending", 5),
            change(4, "user4@example.com", "+914", "pending", 3),
        ];
        let decisions = plan(&batch, vec![stored_from(&old, true)]);
        assert_eq!(
            outcomes(&decisions),
            ["failed_validation", "skipped", "skipped", "synced"]
        );
        assert_eq!(decisions[0].outcome.message(), "Invalid email format");
        assert_eq!(
            decisions[1].outcome.message(),
            "Status is neither active nor pending"
        );
        assert_eq!(
            decisions[2].outcome.message(),
            "Not newer than existing record"
        );
        assert_eq!(decisions[2].write, Write::OutcomeOnly);
        assert_eq!(decisions[3].write, Write::Row { accepted: true });
    }

    #[test]
    fn the_newest_change_of_an_id_wins_whatever_its_place() {
        for batch in [
            vec![
                change(1, "a@example.com", "+911", "active", 9),
                change(1, "b@example.com", "+911", "pending", 3),
            ],
            vec![
                change(1, "b@example.com", "+911", "pending", 3),
                change(1, "a@example.com", "+911", "active", 9),
            ],
        ] {
            let decisions = plan(&batch, Vec::new());
            let winner = decisions
                .iter()
                .find(|d| d.outcome == Outcome::Synced)
                .unwrap();
            assert_eq!(batch[winner.position].email, "a@example.com");
            assert_eq!(
                decisions
                    .iter()
                    .filter(|d| d.outcome == Outcome::Superseded)
                    .count(),
                1
            );
        }
    }

    #[test]
    fn an_email_held_by_another_profile_is_a_conflict_naming_it() {
        let holder = change(1, "same@example.com", "+911", "active", 1);
        let batch = vec![change(2, "same@example.com", "+912", "active", 5)];
        let decisions = plan(&batch, vec![stored_from(&holder, true)]);
        assert_eq!(
            decisions[0].outcome,
            Outcome::Conflict(format!(
                "Email same@example.com already belongs to profile {}",
                Uuid::from_u128(1)
            ))
        );
        // Kept (unaccepted), never lost.
        assert_eq!(decisions[0].write, Write::Row { accepted: false });
    }

    #[test]
    fn a_mobile_collision_inside_one_batch_goes_to_the_older_change() {
        let batch = vec![
            change(2, "two@example.com", "+9100", "active", 8),
            change(1, "one@example.com", "+9100", "active", 4),
        ];
        let decisions = plan(&batch, Vec::new());
        assert_eq!(outcomes(&decisions), ["conflict", "synced"]);
        assert!(decisions[0].outcome.message().starts_with("Mobile +9100"));
    }

    #[test]
    fn an_email_released_earlier_in_the_batch_can_be_taken() {
        let first = change(1, "x@example.com", "+911", "active", 1);
        let batch = vec![
            change(2, "x@example.com", "+912", "active", 9),
            change(1, "y@example.com", "+911", "active", 5),
        ];
        let decisions = plan(&batch, vec![stored_from(&first, true)]);
        assert_eq!(outcomes(&decisions), ["synced", "synced"]);
    }

    #[test]
    fn a_field_too_long_for_its_column_fails_validation_naming_it() {
        let long_mobile = format!("+91{}", "9".repeat(18));
        let decisions = plan(
            &[change(1, "x@example.com", &long_mobile, "active", 1)],
            Vec::new(),
        );
        assert_eq!(
            decisions[0].outcome,
            Outcome::FailedValidation("Mobile longer than 20 characters".into())
        );
        // It cannot be stored: its outcome and the change as received are (in the run).
        assert_eq!(decisions[0].write, Write::Nothing);
        // An invalid email with a status too long for its column: the same.
        let long_status = "s".repeat(60);
        let decisions = plan(&[change(2, "bad", "+912", &long_status, 1)], Vec::new());
        assert_eq!(decisions[0].outcome.message(), "Invalid email format");
        assert_eq!(decisions[0].write, Write::Nothing);
    }

    #[test]
    fn a_replay_of_the_stored_change_writes_nothing() {
        let stored = change(1, "x@example.com", "+911", "active", 1);
        let decisions = plan(
            std::slice::from_ref(&stored),
            vec![stored_from(&stored, true)],
        );
        assert_eq!(decisions[0].outcome, Outcome::SkippedNotNewer);
        assert_eq!(decisions[0].write, Write::Nothing);
    }

    #[test]
    fn a_skipped_change_never_overwrites_accepted_data() {
        let stored = change(1, "x@example.com", "+911", "active", 1);
        let decisions = plan(
            &[change(1, "x@example.com", "+911", "inactive", 9)],
            vec![stored_from(&stored, true)],
        );
        assert_eq!(decisions[0].outcome, Outcome::SkippedStatus);
        assert_eq!(decisions[0].write, Write::OutcomeOnly);
    }
}
