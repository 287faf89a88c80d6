//! Applying a planned batch to PostgreSQL (profiles, their customer mirror, the run and
//! every outcome, in one statement: all or nothing) through the sync's [`SyncWriter`], and
//! reading profiles back.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::change::ProfileChange;
use super::plan::{plan, Decision, Outcome, StoredProfile, Write};
use crate::customers::CustomerSource;
use crate::pipelines::{self, PipelineEvent, Run, PROFILES_SYNC};
use crate::Result;

/// What one batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// The run's id.
    pub run_id: i64,
    /// Changes received.
    pub fetched: u64,
    /// Stored as their profile's data.
    pub synced: u64,
    /// Skipped (status, or not newer) and failed validation, as the original counts them.
    pub skipped: u64,
    /// Of those, failed validation.
    pub failed_validation: u64,
    /// Email or mobile held by another profile.
    pub conflicts: u64,
    /// Replaced by a newer change of the same profile in the batch.
    pub superseded: u64,
}

impl BatchReport {
    fn count(run_id: i64, decisions: &[Decision]) -> Self {
        let mut report = Self {
            run_id,
            fetched: decisions.len() as u64,
            ..Self::default()
        };
        for decision in decisions {
            match &decision.outcome {
                Outcome::Synced => report.synced += 1,
                Outcome::Conflict(_) => report.conflicts += 1,
                Outcome::Superseded => report.superseded += 1,
                Outcome::FailedValidation(_) => report.failed_validation += 1,
                Outcome::SkippedStatus | Outcome::SkippedNotNewer => {}
            }
            if decision.outcome.counts_as_skipped() {
                report.skipped += 1;
            }
        }
        report
    }

    fn counts_json(&self) -> serde_json::Value {
        json!({
            "fetched": self.fetched,
            "synced": self.synced,
            "skipped": self.skipped,
            "failed_validation": self.failed_validation,
            "conflicts": self.conflicts,
            "superseded": self.superseded,
        })
    }
}

/// The profile sync's writer: a connection of its own that holds the sync's lock for as
/// long as it lives, so no other sync writes meanwhile (a second `workers sync` waits, a
/// standby). With the lock held, a batch is two statements, each its own transaction: the
/// read of the stored rows it touches, then one statement writing everything the plan
/// decided (so a batch is written whole or not at all). No BEGIN, no separate COMMIT.
pub struct SyncWriter {
    connection: PgConnection,
}

impl std::fmt::Debug for SyncWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncWriter").finish_non_exhaustive()
    }
}

impl SyncWriter {
    /// Opens a connection of its own (out of `pool`, which replaces it) and takes the lock,
    /// waiting while another sync holds it. Its statements use generic plans: with array
    /// parameters PostgreSQL would otherwise plan every execution anew, about 1 ms each on
    /// this machine, more than running them. The wait for the lock is exempt from the
    /// statement timeout. Dropping the writer closes the connection, which releases the
    /// lock.
    pub async fn acquire(pool: &PgPool) -> Result<Self> {
        let mut connection = pool.acquire().await?.detach();
        sqlx::raw_sql(
            "SET plan_cache_mode = force_generic_plan;
             SET statement_timeout = 0;
             SELECT pg_advisory_lock(hashtext('hub.sync.profiles'));
             RESET statement_timeout",
        )
        .execute(&mut connection)
        .await?;
        Ok(Self { connection })
    }

    /// Plans and writes one decoded batch, recording the run and every outcome.
    pub async fn apply(
        &mut self,
        started_at: DateTime<Utc>,
        batch: &[ProfileChange],
    ) -> Result<BatchReport> {
        let stored: Vec<StoredProfile> = sqlx::query_as(
            "SELECT id, name, email, mobile, status, last_updated_at, accepted, sync_status,
                    sync_message
             FROM user_profiles WHERE id = ANY($1)
             UNION
             SELECT id, name, email, mobile, status, last_updated_at, accepted, sync_status,
                    sync_message
             FROM user_profiles WHERE accepted AND email = ANY($2)
             UNION
             SELECT id, name, email, mobile, status, last_updated_at, accepted, sync_status,
                    sync_message
             FROM user_profiles WHERE accepted AND mobile = ANY($3)",
        )
        .bind(batch.iter().map(|change| change.id).collect::<Vec<_>>())
        .bind(
            batch
                .iter()
                .map(|change| change.email.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            batch
                .iter()
                .map(|change| change.mobile.as_str())
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut self.connection)
        .await?;
        let decisions = plan(batch, stored);

        let mut report = BatchReport::count(0, &decisions);
        let run = Run {
            pipeline: PROFILES_SYNC,
            started_at,
            ok: true,
            counts: report.counts_json(),
            error: None,
        };
        report.run_id = write_batch(&mut self.connection, &run, batch, &decisions).await?;
        Ok(report)
    }
}

/// Applies one decoded batch with a writer of its own (tests and one-off tools; `workers
/// sync` keeps one [`SyncWriter`] across batches).
pub async fn apply_batch(
    pool: &PgPool,
    started_at: DateTime<Utc>,
    batch: &[ProfileChange],
) -> Result<BatchReport> {
    SyncWriter::acquire(pool)
        .await?
        .apply(started_at, batch)
        .await
}

/// Writes what the decisions say, in one statement: changes stored as rows (their data and
/// outcome), outcomes alone (the stored data stays), the synced profiles as customers of
/// source `PROFILES` (external id: the UUID; the name as first name; the email; the mobile
/// as phone), every outcome of run `run_id` with the change as received, and the
/// announcements of each outcome and then of the run (delivered at the commit).
async fn write_batch(
    connection: &mut PgConnection,
    run: &Run,
    batch: &[ProfileChange],
    decisions: &[Decision],
) -> Result<i64> {
    let rows: Vec<(&ProfileChange, &Decision, bool)> = decisions
        .iter()
        .filter_map(|decision| match decision.write {
            Write::Row { accepted } => Some((&batch[decision.position], decision, accepted)),
            _ => None,
        })
        .collect();
    let outcome_only: Vec<&Decision> = decisions
        .iter()
        .filter(|decision| decision.write == Write::OutcomeOnly)
        .collect();
    let text = |field: fn(&ProfileChange) -> &str| {
        rows.iter()
            .map(|(change, _, _)| field(change))
            .collect::<Vec<_>>()
    };
    let at = Utc::now();
    let events: Vec<String> = decisions
        .iter()
        .map(|decision| PipelineEvent {
            pipeline: PROFILES_SYNC.to_owned(),
            outcome: decision.outcome.sync_status().to_owned(),
            detail: format!(
                "{}: {}",
                batch[decision.position].id,
                decision.outcome.message()
            ),
            at,
        })
        .chain([run.event(at)])
        .map(|event| serde_json::to_string(&event).expect("an event always serializes"))
        .collect();
    let sql = format!(
        "WITH {run}, changes AS (
             SELECT * FROM UNNEST($6::uuid[], $7::text[], $8::text[], $9::text[], $10::text[],
                                  $11::timestamptz[], $12::bool[], $13::text[], $14::text[])
                 AS r(id, name, email, mobile, status, last_updated_at, accepted,
                      sync_status, sync_message)
         ), profiles AS (
             INSERT INTO user_profiles AS p (id, name, email, mobile, status, last_updated_at,
                                             accepted, sync_status, sync_message, synced_at)
             SELECT id, name, email, mobile, status, last_updated_at, accepted, sync_status,
                    sync_message, now()
             FROM changes
             ON CONFLICT (id) DO UPDATE SET
                 name = EXCLUDED.name,
                 email = EXCLUDED.email,
                 mobile = EXCLUDED.mobile,
                 status = EXCLUDED.status,
                 last_updated_at = EXCLUDED.last_updated_at,
                 accepted = EXCLUDED.accepted,
                 sync_status = EXCLUDED.sync_status,
                 sync_message = EXCLUDED.sync_message,
                 synced_at = now()
         ), outcomes_only AS (
             -- Rows found by `= ANY` (an index scan): a join with the UNNEST is planned, in
             -- the generic plan, as a hash join over a scan of the whole table.
             UPDATE user_profiles AS p
             SET (sync_status, sync_message) =
                     (SELECT o.sync_status, o.sync_message
                      FROM UNNEST($15::uuid[], $16::text[], $17::text[])
                           AS o(id, sync_status, sync_message)
                      WHERE o.id = p.id),
                 synced_at = now()
             WHERE p.id = ANY($15)
         ), customers_mirrored AS (
             INSERT INTO customers AS c (source, external_id, first_name, emails, phone)
             SELECT $18, id::text, name, ARRAY[email], mobile FROM changes WHERE accepted
             ON CONFLICT (source, external_id) DO UPDATE SET
                 first_name = EXCLUDED.first_name,
                 emails = EXCLUDED.emails,
                 phone = EXCLUDED.phone,
                 updated_at = now()
             WHERE (c.first_name, c.emails, c.phone)
                   IS DISTINCT FROM (EXCLUDED.first_name, EXCLUDED.emails, EXCLUDED.phone)
         ), recorded AS (
             INSERT INTO profile_sync_outcomes (run_id, position, profile_id, outcome, message,
                                                received)
             SELECT run.id, r.position, r.profile_id, r.outcome, r.message, r.received
             FROM run, UNNEST($19::int4[], $20::uuid[], $21::text[], $22::text[], $23::jsonb[])
                  AS r(position, profile_id, outcome, message, received)
         )
         SELECT run.id,
                (SELECT count(*) FROM (SELECT pg_notify($24, payload)
                                       FROM unnest($25::text[]) AS e(payload)) AS sent)
         FROM run",
        run = pipelines::run_ctes(1)
    );
    let written = pipelines::bind_run(sqlx::query(&sql), run)
        .bind(
            rows.iter()
                .map(|(change, _, _)| change.id)
                .collect::<Vec<_>>(),
        )
        .bind(text(|change| &change.name))
        .bind(text(|change| &change.email))
        .bind(text(|change| &change.mobile))
        .bind(text(|change| &change.status))
        .bind(
            rows.iter()
                .map(|(change, _, _)| change.last_updated_at)
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|(_, _, accepted)| *accepted)
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|(_, decision, _)| decision.outcome.sync_status())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|(_, decision, _)| decision.outcome.message())
                .collect::<Vec<_>>(),
        )
        .bind(
            outcome_only
                .iter()
                .map(|d| batch[d.position].id)
                .collect::<Vec<_>>(),
        )
        .bind(
            outcome_only
                .iter()
                .map(|d| d.outcome.sync_status())
                .collect::<Vec<_>>(),
        )
        .bind(
            outcome_only
                .iter()
                .map(|d| d.outcome.message())
                .collect::<Vec<_>>(),
        )
        .bind(CustomerSource::Profiles.as_str())
        .bind(
            decisions
                .iter()
                .map(|d| d.position as i32)
                .collect::<Vec<_>>(),
        )
        .bind(
            decisions
                .iter()
                .map(|d| batch[d.position].id)
                .collect::<Vec<_>>(),
        )
        .bind(
            decisions
                .iter()
                .map(|d| d.outcome.sync_status())
                .collect::<Vec<_>>(),
        )
        .bind(
            decisions
                .iter()
                .map(|d| d.outcome.message())
                .collect::<Vec<_>>(),
        )
        .bind(
            decisions
                .iter()
                .map(|d| batch[d.position].received.clone())
                .collect::<Vec<_>>(),
        )
        .bind(pipelines::EVENTS_CHANNEL)
        .bind(events)
        .fetch_one(connection)
        .await?;
    Ok(sqlx::Row::try_get(&written, 0)?)
}

/// A stored profile with when its last outcome was recorded.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct UserProfile {
    /// The profile.
    #[sqlx(flatten)]
    pub profile: StoredProfile,
    /// When its last outcome was recorded.
    pub synced_at: DateTime<Utc>,
}

/// Filters of [`page`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileFilter {
    /// Only this `status` (`active`...).
    pub status: Option<String>,
    /// Only this `sync_status` (`synced`, `skipped`, `failed_validation`, `conflict`).
    pub sync_status: Option<String>,
}

const PROFILE_COLUMNS: &str = "id, name, email, mobile, status, last_updated_at, accepted, \
                               sync_status, sync_message, synced_at";

/// Up to `limit` profiles ordered by id, strictly after `after`.
pub async fn page(
    pool: &PgPool,
    filter: &ProfileFilter,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<UserProfile>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {PROFILE_COLUMNS} FROM user_profiles
         WHERE ($1::text IS NULL OR status = $1)
           AND ($2::text IS NULL OR sync_status = $2)
           AND ($3::uuid IS NULL OR id > $3)
         ORDER BY id LIMIT $4"
    ))
    .bind(&filter.status)
    .bind(&filter.sync_status)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// How many profiles match `filter`.
pub async fn count(pool: &PgPool, filter: &ProfileFilter) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM user_profiles
         WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR sync_status = $2)",
    )
    .bind(&filter.status)
    .bind(&filter.sync_status)
    .fetch_one(pool)
    .await?)
}

/// One profile by id.
pub async fn find(pool: &PgPool, id: Uuid) -> Result<Option<UserProfile>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {PROFILE_COLUMNS} FROM user_profiles WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}
