//! User profiles in GraphQL: the `UserProfile` type (the profile sync's table, with each
//! profile's last outcome), `userProfiles` (a Relay connection ordered by id, filtered by
//! status and sync status) and `userProfile(id:)`.

use async_graphql::connection::Connection;
use async_graphql::{Context, Enum, Object, ID};
use chrono::{DateTime, Utc};
use domain::customers::{CustomerKey, CustomerSource};
use domain::profiles::{ProfileFilter, UserProfile as StoredUserProfile};
use uuid::Uuid;

use super::customers::Customer;
use crate::errors::{ApiError, ErrorKind, IntoGraphql};
use crate::AppState;

/// The outcome of a profile's last change, as the original TargetService's `sync_status`.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileSyncStatus {
    /// Stored: `Successfully synced`.
    Synced,
    /// Status neither active nor pending, or not newer than the stored change.
    Skipped,
    /// The email failed the original's rule (or a field is too long).
    FailedValidation,
    /// Its email or mobile belongs to another profile (the message names it).
    Conflict,
}

impl ProfileSyncStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Synced => "synced",
            Self::Skipped => "skipped",
            Self::FailedValidation => "failed_validation",
            Self::Conflict => "conflict",
        }
    }

    fn from_stored(value: &str) -> Self {
        match value {
            "synced" => Self::Synced,
            "failed_validation" => Self::FailedValidation,
            "conflict" => Self::Conflict,
            _ => Self::Skipped,
        }
    }
}

/// A profile from the profile source, with the outcome of its last change.
pub struct UserProfile(StoredUserProfile);

#[Object]
impl UserProfile {
    /// The profile's id (the source's UUID).
    async fn id(&self) -> ID {
        ID(self.0.profile.id.to_string())
    }

    /// Display name.
    async fn name(&self) -> &str {
        &self.0.profile.name
    }

    /// Email address.
    async fn email(&self) -> &str {
        &self.0.profile.email
    }

    /// Mobile number as the source wrote it.
    async fn mobile(&self) -> &str {
        &self.0.profile.mobile
    }

    /// `active`, `inactive` or `pending` (as the source sent it).
    async fn status(&self) -> &str {
        &self.0.profile.status
    }

    /// When the source last changed the stored data.
    async fn last_updated_at(&self) -> DateTime<Utc> {
        self.0.profile.last_updated_at
    }

    /// Whether the stored data is a synced change (false: only ever skipped, invalid or
    /// conflicting, kept as received).
    async fn accepted(&self) -> bool {
        self.0.profile.accepted
    }

    /// The outcome of the profile's last change.
    async fn sync_status(&self) -> ProfileSyncStatus {
        ProfileSyncStatus::from_stored(&self.0.profile.sync_status)
    }

    /// The original's message for it (`Successfully synced`, `Invalid email format`...).
    async fn sync_message(&self) -> &str {
        &self.0.profile.sync_message
    }

    /// When that outcome was recorded.
    async fn synced_at(&self) -> DateTime<Utc> {
        self.0.synced_at
    }

    /// The profile as a customer of source `PROFILES` (synced profiles only).
    async fn customer(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Customer>> {
        if !self.0.profile.accepted {
            return Ok(None);
        }
        let state = ctx.data_unchecked::<AppState>();
        let key = CustomerKey {
            source: CustomerSource::Profiles,
            external_id: self.0.profile.id.to_string(),
        };
        Ok(domain::customers::find(&state.pool, &key)
            .await
            .graphql()?
            .map(Customer::from))
    }
}

/// Fields of the profiles connection beside edges and pageInfo.
pub struct UserProfileConnectionFields {
    filter: ProfileFilter,
}

#[Object]
impl UserProfileConnectionFields {
    /// How many profiles match, across all pages.
    async fn total_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i64> {
        let state = ctx.data_unchecked::<AppState>();
        domain::profiles::store::count(&state.pool, &self.filter)
            .await
            .graphql()
    }
}

fn profile_id(text: &str, argument: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| {
        ApiError::new(
            ErrorKind::BadUserInput,
            format!("{argument} must be a profile id (a UUID), got {text:?}"),
        )
    })
}

#[derive(Default)]
pub struct UserProfileQuery;

#[Object]
impl UserProfileQuery {
    /// Profiles of the profile source, ordered by id.
    async fn user_profiles(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only this status (`active`, `inactive`, `pending`).")] status: Option<
            String,
        >,
        #[graphql(desc = "Only profiles whose last change had this outcome.")] sync_status: Option<
            ProfileSyncStatus,
        >,
        #[graphql(desc = "Page size, 0 to 100 (default 20).")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
    ) -> async_graphql::Result<Connection<String, UserProfile, UserProfileConnectionFields>> {
        let first = super::page_size(first)?;
        if status
            .as_ref()
            .is_some_and(|status| status.chars().count() > 50)
        {
            return Err(
                ApiError::new(ErrorKind::BadUserInput, "status is at most 50 characters").into(),
            );
        }
        let after = after
            .as_deref()
            .map(|cursor| profile_id(cursor, "after"))
            .transpose()?;
        let filter = ProfileFilter {
            status,
            sync_status: sync_status.map(|status| status.as_str().to_owned()),
        };
        let state = ctx.data_unchecked::<AppState>();
        let rows = domain::profiles::store::page(&state.pool, &filter, after, first as i64 + 1)
            .await
            .graphql()?;
        Ok(super::page(
            rows,
            first,
            after.is_some(),
            UserProfileConnectionFields { filter },
            |row| (row.profile.id.to_string(), UserProfile(row)),
        ))
    }

    /// One profile by id (the source's UUID); null when the sync never received it.
    async fn user_profile(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<UserProfile>> {
        let id = profile_id(&id, "id")?;
        let state = ctx.data_unchecked::<AppState>();
        Ok(domain::profiles::store::find(&state.pool, id)
            .await
            .graphql()?
            .map(UserProfile))
    }
}
