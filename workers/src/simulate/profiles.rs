//! The profile source (seed 002's SourceService): `/users/changes`, any method, answers a
//! bare JSON array of profile changes. Faithful to the original's generator: each call
//! creates 2-5 profiles (status uniform over active, inactive, pending), then gives 2-5
//! random stored profiles (possibly ones just created, possibly the same one twice) a new
//! status and `last_updated_at = now`. Emails come from a small space (`user0` to
//! `user9999`), so they collide across profiles; mobiles are `+91` and 1-9 digits, not
//! zero-padded; times are RFC 3339 to the second.
//!
//! Our knobs: a seed (the same seed, the same sequence of batches), a rate of invalid
//! emails, and a rate of failed calls (500, a stall, or truncated JSON).

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use chrono::{SecondsFormat, Utc};
use serde::Serialize;

use super::random::{Failure, Failures, Random, STALL};

/// The route, as the original's.
pub const PATH: &str = "/users/changes";

const STATUSES: [&str; 3] = ["active", "inactive", "pending"];

/// The profile source's knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProfilesSettings {
    /// Seed of the generated profiles and changes.
    pub seed: u64,
    /// Fraction of new profiles given an invalid email (`user12.example.com`).
    pub invalid_email_rate: f64,
    /// Fraction of calls answered 500, stalled or truncated.
    pub error_rate: f64,
}

/// One profile, in the original's JSON shape (all strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Profile {
    /// UUID v4.
    pub id: String,
    /// `User<n>`.
    pub name: String,
    /// `user<n>@example.com`.
    pub email: String,
    /// `+91<digits>`.
    pub mobile: String,
    /// `active`, `inactive` or `pending`.
    pub status: String,
    /// RFC 3339, seconds.
    pub last_updated_at: String,
}

/// The source's state: every profile made so far.
#[derive(Debug)]
pub struct ProfileSource {
    settings: ProfilesSettings,
    state: Mutex<(Random, Vec<Profile>)>,
    failures: Failures,
}

impl ProfileSource {
    /// A source with no profiles yet.
    pub fn new(settings: ProfilesSettings) -> Self {
        Self {
            settings,
            state: Mutex::new((Random(settings.seed), Vec::new())),
            failures: Failures::new(
                settings.error_rate,
                &[Failure::ServerError, Failure::Stall, Failure::Truncate],
                settings.seed,
            ),
        }
    }

    /// The next batch: 2-5 creates, then 2-5 updates of stored profiles.
    pub fn next_batch(&self) -> Vec<Profile> {
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        let mut state = self
            .state
            .lock()
            .expect("never poisoned: no panics while held");
        let (random, profiles) = &mut *state;
        let mut batch = Vec::with_capacity(10);
        for _ in 0..2 + random.below(4) {
            let profile = self.new_profile(random, &now);
            profiles.push(profile.clone());
            batch.push(profile);
        }
        for _ in 0..2 + random.below(4) {
            let index = random.below(profiles.len() as u64) as usize;
            let profile = &mut profiles[index];
            profile.status = random.pick(&STATUSES).to_owned();
            profile.last_updated_at.clone_from(&now);
            batch.push(profile.clone());
        }
        batch
    }

    fn new_profile(&self, random: &mut Random, now: &str) -> Profile {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&random.next().to_le_bytes());
        bytes[8..].copy_from_slice(&random.next().to_le_bytes());
        let n = random.below(10_000);
        let email = if random.fraction() < self.settings.invalid_email_rate {
            format!("user{n}.example.com")
        } else {
            format!("user{n}@example.com")
        };
        Profile {
            id: uuid::Builder::from_random_bytes(bytes)
                .into_uuid()
                .to_string(),
            name: format!("User{n}"),
            email,
            mobile: format!("+91{}", 1 + random.below(999_999_999)),
            status: random.pick(&STATUSES).to_owned(),
            last_updated_at: now.to_owned(),
        }
    }
}

/// The source's routes: `/users/changes`, any method.
pub fn router(source: Arc<ProfileSource>) -> Router {
    Router::new().route(PATH, any(changes)).with_state(source)
}

async fn changes(State(source): State<Arc<ProfileSource>>) -> Response {
    let failure = source.failures.next();
    match failure {
        Some(Failure::ServerError) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "injected failure\n").into_response()
        }
        Some(Failure::Stall) => tokio::time::sleep(STALL).await,
        _ => {}
    }
    let mut body = serde_json::to_string(&source.next_batch()).expect("profiles serialize");
    if failure == Some(Failure::Truncate) {
        body.truncate(body.len() / 2);
    }
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(seed: u64, invalid_email_rate: f64) -> ProfileSource {
        ProfileSource::new(ProfilesSettings {
            seed,
            invalid_email_rate,
            error_rate: 0.0,
        })
    }

    #[test]
    fn batches_have_the_originals_shape() {
        let source = source(7, 0.0);
        for _ in 0..200 {
            let batch = source.next_batch();
            assert!((4..=10).contains(&batch.len()), "{}", batch.len());
            for profile in &batch {
                assert!(uuid::Uuid::parse_str(&profile.id).is_ok());
                assert!(STATUSES.contains(&profile.status.as_str()));
                let digits = profile.mobile.strip_prefix("+91").unwrap();
                assert!((1..=9).contains(&digits.len()) && !digits.starts_with('0'));
                assert!(domain::profiles::change::is_valid_email(&profile.email));
                assert!(chrono::DateTime::parse_from_rfc3339(&profile.last_updated_at).is_ok());
            }
        }
    }

    #[test]
    fn the_same_seed_makes_the_same_profiles() {
        let ids = |source: &ProfileSource| -> Vec<String> {
            (0..20)
                .flat_map(|_| source.next_batch())
                .map(|profile| format!("{} {} {}", profile.id, profile.email, profile.status))
                .collect()
        };
        assert_eq!(ids(&source(3, 0.0)), ids(&source(3, 0.0)));
        assert_ne!(ids(&source(3, 0.0)), ids(&source(4, 0.0)));
    }

    #[test]
    fn emails_collide_and_ids_repeat_within_batches_over_a_run() {
        let source = source(11, 0.0);
        let batches: Vec<Vec<Profile>> = (0..2_000).map(|_| source.next_batch()).collect();
        let repeated_in_a_batch = batches.iter().any(|batch| {
            let mut ids: Vec<&str> = batch.iter().map(|p| p.id.as_str()).collect();
            ids.sort_unstable();
            ids.windows(2).any(|pair| pair[0] == pair[1])
        });
        assert!(repeated_in_a_batch);
        let mut emails = std::collections::HashMap::new();
        for profile in batches.iter().flatten() {
            emails
                .entry(profile.email.clone())
                .or_insert_with(Vec::new)
                .push(profile.id.clone());
        }
        assert!(emails
            .values()
            .any(|ids| ids.iter().any(|id| id != &ids[0])));
    }

    #[test]
    fn the_invalid_email_rate_makes_invalid_emails() {
        let source = source(5, 1.0);
        let batch = source.next_batch();
        assert!(batch
            .iter()
            .all(|profile| !domain::profiles::change::is_valid_email(&profile.email)));
    }
}
