//! The health of every pipeline in GraphQL: `syncStatus` (one entry per pipeline that
//! exists, read from what the workers record in PostgreSQL, so any gateway answers it) and
//! the `syncEvents` subscription (run ends, profile outcomes, new errors).

use async_graphql::{Context, Enum, Object, SimpleObject, Subscription};
use chrono::{DateTime, Utc};
use domain::pipelines::PipelineOverview;
use futures_util::{Stream, StreamExt};

use crate::errors::IntoGraphql;
use crate::AppState;

/// How a pipeline is doing.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "domain::pipelines::PipelineState")]
pub enum PipelineState {
    /// Running and keeping up.
    Ok,
    /// Running but behind (over 1,000 events, or 30 s, or an outbox event waiting 30 s).
    Lagging,
    /// Its newest attempt failed and nothing succeeded since.
    Failing,
    /// Not running: stopped cleanly, or silent for 15 s (three missed heartbeats).
    Stopped,
}

/// What a pipeline has still to do.
#[derive(SimpleObject, Debug, Clone, Default)]
pub struct PipelineBacklog {
    /// Outbox events waiting to be published (relays).
    outbox_pending: Option<i64>,
    /// Outbox events given up on (relays; `workers relay --retry-failed` sends them again).
    outbox_failed: Option<i64>,
    /// Age of the oldest waiting outbox event, in seconds (relays).
    oldest_pending_seconds: Option<f64>,
    /// Messages not yet consumed (Kafka consumers: partition lag).
    consumer_lag: Option<f64>,
    /// Messages a consumer dead-lettered since its workers started.
    dead_lettered: Option<i64>,
}

/// One pipeline's status.
pub struct PipelineStatus(PipelineOverview);

#[Object]
impl PipelineStatus {
    /// `crm-index`, `accounts-ingest`, `profiles-sync`, `orders-relay`, `orders-consumer`,
    /// `purchases-relay`, `purchases-consumer`.
    async fn pipeline(&self) -> &str {
        &self.0.pipeline
    }

    /// Its state.
    async fn state(&self) -> PipelineState {
        self.0.state.into()
    }

    /// Its workers' newest heartbeat (or run, for on-demand pipelines).
    async fn last_heartbeat_at(&self) -> Option<DateTime<Utc>> {
        self.0.status.as_ref().map(|status| status.heartbeat_at)
    }

    /// Its newest run (pipelines that work in runs: the profile sync, accounts ingests).
    async fn last_run_at(&self) -> Option<DateTime<Utc>> {
        self.0.status.as_ref()?.last_run_at
    }

    /// Its newest success.
    async fn last_success_at(&self) -> Option<DateTime<Utc>> {
        self.0.status.as_ref()?.last_success_at
    }

    /// How far behind it is, in `lagUnit`.
    async fn lag(&self) -> Option<f64> {
        self.0.status.as_ref()?.lag
    }

    /// `events` or `seconds`.
    async fn lag_unit(&self) -> Option<&str> {
        self.0.status.as_ref()?.lag_unit.as_deref()
    }

    /// What it has still to do.
    async fn backlog(&self) -> PipelineBacklog {
        let status = self.0.status.as_ref();
        let consumer = status.filter(|status| status.pipeline.ends_with("-consumer"));
        PipelineBacklog {
            outbox_pending: self.0.backlog.map(|backlog| backlog.pending),
            outbox_failed: self.0.backlog.map(|backlog| backlog.failed),
            oldest_pending_seconds: self.0.backlog.map(|backlog| backlog.oldest_pending_secs),
            consumer_lag: consumer
                .filter(|status| status.lag_unit.as_deref() == Some("events"))
                .and_then(|status| status.lag),
            dead_lettered: consumer.map(|status| status.dead_lettered),
        }
    }

    /// Errors counted (failed runs, failed batches, lost connections).
    async fn errors_total(&self) -> i64 {
        self.0
            .status
            .as_ref()
            .map_or(0, |status| status.errors_total)
    }

    /// Its newest error.
    async fn last_error(&self) -> Option<&str> {
        self.0.status.as_ref()?.last_error.as_deref()
    }

    /// When that error happened.
    async fn last_error_at(&self) -> Option<DateTime<Utc>> {
        self.0.status.as_ref()?.last_error_at
    }
}

#[derive(Default)]
pub struct PipelineQuery;

#[Object]
impl PipelineQuery {
    /// Every pipeline that exists, by name: state, last run and success, lag, backlog and
    /// errors.
    async fn sync_status(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<PipelineStatus>> {
        let state = ctx.data_unchecked::<AppState>();
        Ok(domain::pipelines::overview(&state.pool)
            .await
            .graphql()?
            .into_iter()
            .map(PipelineStatus)
            .collect())
    }
}

/// Something that happened in a pipeline.
#[derive(SimpleObject, Debug, Clone)]
pub struct SyncEvent {
    /// The pipeline.
    pipeline: String,
    /// A profile's outcome (`synced`, `skipped`, `failed_validation`, `conflict`,
    /// `superseded`), `run_ok`, `run_failed` or `error`.
    outcome: String,
    /// The profile id and message, the run's counts, or the error.
    detail: String,
    /// When.
    at: DateTime<Utc>,
}

#[derive(Default)]
pub struct PipelineSubscription;

#[Subscription]
impl PipelineSubscription {
    /// Pipeline events as they happen, optionally of one pipeline only.
    async fn sync_events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only this pipeline's events (`profiles-sync`...).")] pipeline: Option<
            String,
        >,
    ) -> impl Stream<Item = SyncEvent> {
        let state = ctx.data_unchecked::<AppState>();
        state
            .live
            .pipeline_events()
            .filter(move |event| {
                let wanted = pipeline.as_ref().is_none_or(|name| *name == event.pipeline);
                async move { wanted }
            })
            .map(|event| SyncEvent {
                pipeline: event.pipeline,
                outcome: event.outcome,
                detail: event.detail,
                at: event.at,
            })
    }
}
