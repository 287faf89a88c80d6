//! The health of every pipeline, kept in PostgreSQL so any gateway can answer
//! `syncStatus`: the workers write a heartbeat row per pipeline (`pipeline_status`) and a
//! row per run of the pipelines that work in runs (`pipeline_runs`); events worth watching
//! (a run's end, a profile's outcome, a new error) are announced on [`EVENTS_CHANNEL`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgExecutor, PgPool};

use crate::Result;

/// `NOTIFY` channel of [`PipelineEvent`]s (JSON payloads).
pub const EVENTS_CHANNEL: &str = "hub_pipeline_events";

/// The CRM indexer (`workers index`).
pub const CRM_INDEX: &str = "crm-index";
/// Accounts ingests (`POST /api/ingest`, `ingestCustomers`, `workers ingest`).
pub const ACCOUNTS_INGEST: &str = "accounts-ingest";
/// The profile sync (`workers sync`).
pub const PROFILES_SYNC: &str = "profiles-sync";
/// The relay's RabbitMQ loop, which carries the orders.
pub const ORDERS_RELAY: &str = "orders-relay";
/// The orders consumer (`workers consume orders`).
pub const ORDERS_CONSUMER: &str = "orders-consumer";
/// The relay's Kafka loop, which carries the purchases.
pub const PURCHASES_RELAY: &str = "purchases-relay";
/// The purchases consumer (`workers consume purchases`).
pub const PURCHASES_CONSUMER: &str = "purchases-consumer";

/// Seconds between heartbeats of a running worker.
pub const HEARTBEAT_SECS: u64 = 5;
/// A worker silent this long is taken as stopped (three missed heartbeats).
pub const STALE_AFTER_SECS: i64 = 3 * HEARTBEAT_SECS as i64;

/// Something that happened in a pipeline, as `syncEvents` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineEvent {
    /// The pipeline (`profiles-sync`...).
    pub pipeline: String,
    /// What happened: a profile outcome (`synced`, `skipped`, `conflict`...), `run_ok`,
    /// `run_failed` or `error`.
    pub outcome: String,
    /// The profile id and message, the run's counts, or the error.
    pub detail: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// Announces `events`, in order, in one statement (delivered when the surrounding
/// transaction commits).
pub async fn notify<'e>(executor: impl PgExecutor<'e>, events: &[PipelineEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let payloads: Vec<String> = events
        .iter()
        .map(|event| serde_json::to_string(event).expect("an event always serializes"))
        .collect();
    sqlx::query("SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS e(payload)")
        .bind(EVENTS_CHANNEL)
        .bind(payloads)
        .execute(executor)
        .await?;
    Ok(())
}

/// One finished run, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The pipeline.
    pub pipeline: &'static str,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Whether it succeeded.
    pub ok: bool,
    /// What it counted (`{"fetched": 8, "synced": 5, ...}`).
    pub counts: serde_json::Value,
    /// Why it failed.
    pub error: Option<String>,
}

impl Run {
    /// The `run_ok` / `run_failed` event announcing it.
    pub fn event(&self, at: DateTime<Utc>) -> PipelineEvent {
        PipelineEvent {
            pipeline: self.pipeline.to_owned(),
            outcome: if self.ok { "run_ok" } else { "run_failed" }.to_owned(),
            detail: match &self.error {
                Some(error) => error.clone(),
                None => self.counts.to_string(),
            },
            at,
        }
    }
}

/// SQL of two CTEs, `run` (columns `id`, `finished_at`) and `run_status`, that record a
/// finished run and update its pipeline's status row, reading the run's fields from
/// parameters `$first` to `$first + 4` (bound by [`bind_run`]). For callers that record a
/// run within a statement of their own; [`record_run`] is the statement on its own.
pub fn run_ctes(first: usize) -> String {
    let [pipeline, started_at, ok, counts, error] =
        [0, 1, 2, 3, 4].map(|i| format!("${}", first + i));
    format!(
        "run AS (
             INSERT INTO pipeline_runs (pipeline, started_at, finished_at, ok, counts, error)
             VALUES ({pipeline}, {started_at}, clock_timestamp(), {ok}, {counts}, {error})
             RETURNING id, finished_at
         ), run_status AS (
             INSERT INTO pipeline_status AS s (pipeline, heartbeat_at, last_run_at,
                                               last_success_at, last_error, last_error_at,
                                               errors_total)
             SELECT {pipeline}, run.finished_at, run.finished_at,
                    CASE WHEN {ok} THEN run.finished_at END, {error},
                    CASE WHEN {ok} THEN NULL ELSE run.finished_at END,
                    CASE WHEN {ok} THEN 0 ELSE 1 END
             FROM run
             ON CONFLICT (pipeline) DO UPDATE SET
                 last_run_at = EXCLUDED.last_run_at,
                 last_success_at = COALESCE(EXCLUDED.last_success_at, s.last_success_at),
                 last_error = COALESCE(EXCLUDED.last_error, s.last_error),
                 last_error_at = COALESCE(EXCLUDED.last_error_at, s.last_error_at),
                 errors_total = s.errors_total + EXCLUDED.errors_total
         )"
    )
}

/// Binds `run`'s fields in the order [`run_ctes`] reads them.
pub fn bind_run<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    run: &'q Run,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(run.pipeline)
        .bind(run.started_at)
        .bind(run.ok)
        .bind(&run.counts)
        .bind(&run.error)
}

/// Records a finished run (in the caller's transaction, so the run and its effect commit
/// together) and updates the pipeline's status row, in one statement. Returns the run's id
/// and its event, which the caller announces (with [`notify`]).
pub async fn record_run(
    connection: &mut sqlx::PgConnection,
    run: &Run,
) -> Result<(i64, PipelineEvent)> {
    let sql = format!("WITH {} SELECT id, finished_at FROM run", run_ctes(1));
    let recorded = bind_run(sqlx::query(&sql), run)
        .fetch_one(connection)
        .await?;
    let finished_at: DateTime<Utc> = sqlx::Row::try_get(&recorded, 1)?;
    Ok((sqlx::Row::try_get(&recorded, 0)?, run.event(finished_at)))
}

/// Records a run that failed before it could write anything, in a transaction of its own
/// (best effort: the database may be what failed; then it is only logged).
pub async fn record_failed_run(
    pool: &PgPool,
    pipeline: &'static str,
    started_at: DateTime<Utc>,
    error: &(dyn std::fmt::Display + Sync),
) {
    let recorded = async {
        let mut connection = pool.acquire().await?;
        let run = Run {
            pipeline,
            started_at,
            ok: false,
            counts: serde_json::json!({}),
            error: Some(error.to_string()),
        };
        let (_, event) = record_run(&mut connection, &run).await?;
        notify(&mut *connection, &[event]).await
    };
    if let Err(record_error) = recorded.await {
        tracing::warn!(pipeline, error = %record_error, "cannot record the failed run");
    }
}

/// What a running worker reports with each heartbeat.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Heartbeat {
    /// When it last did its work successfully.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Its newest error.
    pub last_error: Option<String>,
    /// When that error happened.
    pub last_error_at: Option<DateTime<Utc>>,
    /// Errors since it started.
    pub errors_total: u64,
    /// How far behind it is.
    pub lag: Option<Lag>,
    /// Messages dead-lettered since it started (consumers).
    pub dead_lettered: u64,
}

/// How far behind a pipeline is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Lag {
    /// Events not yet processed.
    Events(f64),
    /// Seconds behind.
    Seconds(f64),
}

impl Lag {
    fn parts(lag: Option<Self>) -> (Option<f64>, Option<&'static str>) {
        match lag {
            Some(Self::Events(value)) => (Some(value), Some("events")),
            Some(Self::Seconds(value)) => (Some(value), Some("seconds")),
            None => (None, None),
        }
    }
}

/// Writes a running worker's heartbeat: its status row as of now. Counters are the
/// process's own since it started, so the row keeps the larger of stored and reported
/// (a restarted worker does not reset what operators saw).
pub async fn beat(pool: &PgPool, pipeline: &str, heartbeat: &Heartbeat) -> Result<()> {
    let (lag, lag_unit) = Lag::parts(heartbeat.lag);
    sqlx::query(
        "INSERT INTO pipeline_status AS s (pipeline, heartbeat_at, stopped_at, last_success_at,
                                           last_error, last_error_at, errors_total, lag, lag_unit,
                                           dead_lettered)
         VALUES ($1, now(), NULL, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (pipeline) DO UPDATE SET
             heartbeat_at = now(),
             stopped_at = NULL,
             last_success_at = GREATEST(s.last_success_at, EXCLUDED.last_success_at),
             last_error = CASE WHEN EXCLUDED.last_error_at > s.last_error_at
                                 OR s.last_error_at IS NULL
                               THEN COALESCE(EXCLUDED.last_error, s.last_error)
                               ELSE s.last_error END,
             last_error_at = GREATEST(s.last_error_at, EXCLUDED.last_error_at),
             errors_total = GREATEST(s.errors_total, EXCLUDED.errors_total),
             lag = EXCLUDED.lag,
             lag_unit = EXCLUDED.lag_unit,
             dead_lettered = GREATEST(s.dead_lettered, EXCLUDED.dead_lettered)",
    )
    .bind(pipeline)
    .bind(heartbeat.last_success_at)
    .bind(&heartbeat.last_error)
    .bind(heartbeat.last_error_at)
    .bind(i64::try_from(heartbeat.errors_total).unwrap_or(i64::MAX))
    .bind(lag)
    .bind(lag_unit)
    .bind(i64::try_from(heartbeat.dead_lettered).unwrap_or(i64::MAX))
    .execute(pool)
    .await?;
    Ok(())
}

/// Marks a pipeline cleanly stopped (SIGTERM), so it reads `stopped` at once.
pub async fn mark_stopped(pool: &PgPool, pipeline: &str) -> Result<()> {
    sqlx::query("UPDATE pipeline_status SET stopped_at = now() WHERE pipeline = $1")
        .bind(pipeline)
        .execute(pool)
        .await?;
    Ok(())
}

/// A pipeline's stored status row.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StatusRow {
    /// The pipeline.
    pub pipeline: String,
    /// Its newest heartbeat (or run).
    pub heartbeat_at: DateTime<Utc>,
    /// Set by a clean stop.
    pub stopped_at: Option<DateTime<Utc>>,
    /// Its newest run (run-based pipelines).
    pub last_run_at: Option<DateTime<Utc>>,
    /// Its newest success.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Its newest error.
    pub last_error: Option<String>,
    /// When.
    pub last_error_at: Option<DateTime<Utc>>,
    /// Errors counted.
    pub errors_total: i64,
    /// How far behind.
    pub lag: Option<f64>,
    /// `events` or `seconds`.
    pub lag_unit: Option<String>,
    /// Messages dead-lettered.
    pub dead_lettered: i64,
    /// Seconds since the heartbeat, by the database's clock.
    pub heartbeat_age_secs: f64,
}

/// Every pipeline's status row.
pub async fn status_rows(pool: &PgPool) -> Result<Vec<StatusRow>> {
    Ok(sqlx::query_as(
        "SELECT pipeline, heartbeat_at, stopped_at, last_run_at, last_success_at, last_error,
                last_error_at, errors_total, lag, lag_unit, dead_lettered,
                EXTRACT(EPOCH FROM now() - heartbeat_at)::float8 AS heartbeat_age_secs
         FROM pipeline_status ORDER BY pipeline",
    )
    .fetch_all(pool)
    .await?)
}

/// A pipeline shows `lagging` when it is this many events behind...
pub const LAGGING_EVENTS: f64 = 1_000.0;
/// ...or this many seconds (its own lag, or its oldest unpublished outbox event).
pub const LAGGING_SECONDS: f64 = 30.0;

/// Pipelines that run on demand (no process to be stopped): their state is their last run's.
const ON_DEMAND: [&str; 1] = [ACCOUNTS_INGEST];

/// The relay loops and the broker each carries.
const RELAYS: [(&str, crate::outbox::Broker); 2] = [
    (ORDERS_RELAY, crate::outbox::Broker::RabbitMq),
    (PURCHASES_RELAY, crate::outbox::Broker::Kafka),
];

/// How a pipeline is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineState {
    /// Running and keeping up.
    Ok,
    /// Running but behind.
    Lagging,
    /// Its newest attempt failed and nothing has succeeded since.
    Failing,
    /// Not running: a clean stop, or no heartbeat for [`STALE_AFTER_SECS`].
    Stopped,
}

/// The outbox backlog a relay has to publish.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RelayBacklog {
    /// Events waiting (including those backing off).
    pub pending: i64,
    /// Events given up on (dead).
    pub failed: i64,
    /// Age of the oldest waiting event, in seconds.
    pub oldest_pending_secs: f64,
}

/// One pipeline as `syncStatus` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineOverview {
    /// The pipeline's name.
    pub pipeline: String,
    /// Its state.
    pub state: PipelineState,
    /// What its workers recorded (None: a relay with a backlog that never ran).
    pub status: Option<StatusRow>,
    /// The outbox backlog (relays).
    pub backlog: Option<RelayBacklog>,
}

/// The state of a pipeline from what was recorded.
pub fn assess(
    pipeline: &str,
    status: Option<&StatusRow>,
    backlog: Option<&RelayBacklog>,
) -> PipelineState {
    let Some(status) = status else {
        return PipelineState::Stopped;
    };
    let running = ON_DEMAND.contains(&pipeline)
        || (status.stopped_at.is_none() && status.heartbeat_age_secs <= STALE_AFTER_SECS as f64);
    if !running {
        return PipelineState::Stopped;
    }
    let failing = match (status.last_error_at, status.last_success_at) {
        (Some(error), Some(success)) => error > success,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if failing {
        return PipelineState::Failing;
    }
    let lag_too_high = match (status.lag, status.lag_unit.as_deref()) {
        (Some(lag), Some("events")) => lag > LAGGING_EVENTS,
        (Some(lag), Some("seconds")) => lag > LAGGING_SECONDS,
        _ => false,
    };
    let outbox_behind =
        backlog.is_some_and(|backlog| backlog.oldest_pending_secs > LAGGING_SECONDS);
    if lag_too_high || outbox_behind {
        PipelineState::Lagging
    } else {
        PipelineState::Ok
    }
}

/// Every pipeline that exists: each one a worker recorded, and each relay with a backlog.
pub async fn overview(pool: &PgPool) -> Result<Vec<PipelineOverview>> {
    let mut rows = status_rows(pool).await?;
    let mut overviews = Vec::with_capacity(rows.len() + RELAYS.len());
    for (pipeline, broker) in RELAYS {
        let pending = crate::outbox::backlog(pool, broker).await?;
        let backlog = RelayBacklog {
            pending: pending.iter().map(|destination| destination.pending).sum(),
            failed: crate::outbox::dead_count(pool, broker).await?,
            oldest_pending_secs: pending
                .iter()
                .map(|destination| destination.oldest_pending_seconds)
                .fold(0.0, f64::max),
        };
        let status = rows
            .iter()
            .position(|row| row.pipeline == pipeline)
            .map(|index| rows.remove(index));
        if status.is_none() && backlog == RelayBacklog::default() {
            continue;
        }
        overviews.push(PipelineOverview {
            pipeline: pipeline.to_owned(),
            state: assess(pipeline, status.as_ref(), Some(&backlog)),
            status,
            backlog: Some(backlog),
        });
    }
    overviews.extend(rows.into_iter().map(|row| PipelineOverview {
        pipeline: row.pipeline.clone(),
        state: assess(&row.pipeline, Some(&row), None),
        status: Some(row),
        backlog: None,
    }));
    overviews.sort_by(|a, b| a.pipeline.cmp(&b.pipeline));
    Ok(overviews)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> StatusRow {
        StatusRow {
            pipeline: ORDERS_CONSUMER.into(),
            heartbeat_at: Utc::now(),
            stopped_at: None,
            last_run_at: None,
            last_success_at: Some(Utc::now()),
            last_error: None,
            last_error_at: None,
            errors_total: 0,
            lag: Some(3.0),
            lag_unit: Some("events".into()),
            dead_lettered: 0,
            heartbeat_age_secs: 1.0,
        }
    }

    #[test]
    fn states_follow_heartbeat_errors_and_lag() {
        let ok = running();
        assert_eq!(assess(ORDERS_CONSUMER, Some(&ok), None), PipelineState::Ok);
        assert_eq!(assess(ORDERS_CONSUMER, None, None), PipelineState::Stopped);
        let silent = StatusRow {
            heartbeat_age_secs: 60.0,
            ..running()
        };
        assert_eq!(
            assess(ORDERS_CONSUMER, Some(&silent), None),
            PipelineState::Stopped
        );
        let stopped = StatusRow {
            stopped_at: Some(Utc::now()),
            ..running()
        };
        assert_eq!(
            assess(ORDERS_CONSUMER, Some(&stopped), None),
            PipelineState::Stopped
        );
        let failing = StatusRow {
            last_error_at: Some(Utc::now() + chrono::Duration::seconds(1)),
            ..running()
        };
        assert_eq!(
            assess(ORDERS_CONSUMER, Some(&failing), None),
            PipelineState::Failing
        );
        let behind = StatusRow {
            lag: Some(5_000.0),
            ..running()
        };
        assert_eq!(
            assess(ORDERS_CONSUMER, Some(&behind), None),
            PipelineState::Lagging
        );
        let backlog = RelayBacklog {
            pending: 10,
            failed: 0,
            oldest_pending_secs: 120.0,
        };
        assert_eq!(
            assess(ORDERS_RELAY, Some(&ok), Some(&backlog)),
            PipelineState::Lagging
        );
        // An on-demand pipeline is never stopped for lack of heartbeats.
        let last_ingest = StatusRow {
            heartbeat_age_secs: 3_600.0,
            ..running()
        };
        assert_eq!(
            assess(ACCOUNTS_INGEST, Some(&last_ingest), None),
            PipelineState::Ok
        );
    }
}
