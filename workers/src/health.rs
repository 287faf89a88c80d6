//! A long-running worker's health as `syncStatus` and `/healthz` show it: the worker notes
//! successes, errors and lag as they happen ([`Health`]), and a heartbeat task writes them
//! to its pipeline's status row every few seconds (see `domain::pipelines`), then marks the
//! pipeline stopped when the worker stops cleanly. While the worker cannot do its job (its
//! last attempt failed: [`Health::error`], until the next [`Health::success`]; or it said
//! so: [`Health::unable`], before its first session, a refused queue), its admin server's
//! `/healthz` answers 503 with the reason ([`healthz`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use domain::pipelines::{self, Heartbeat, Lag, HEARTBEAT_SECS};
use serde_json::json;
use sqlx::PgPool;

use crate::stop::Stop;

/// Longest error message kept (the rest is cut).
const MAX_ERROR_CHARS: usize = 500;

#[derive(Debug, Default)]
struct State {
    heartbeat: Heartbeat,
    /// Why the worker cannot do its job now; `None` while it can.
    unable: Option<String>,
}

/// What a worker reports about itself; cheap to clone and to update. A new one is able
/// to work until told otherwise.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<State>>);

impl Health {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().expect("never poisoned: no panics while held")
    }

    fn update(&self, change: impl FnOnce(&mut Heartbeat)) {
        change(&mut self.state().heartbeat);
    }

    /// The worker cannot do its job until [`Health::able`], for this reason (its broker
    /// unreachable, its topology refused): `/healthz` answers 503.
    pub fn unable(&self, reason: &dyn std::fmt::Display) {
        self.state().unable = Some(cut(reason));
    }

    /// The worker can do its job again: `/healthz` answers 200.
    pub fn able(&self) {
        self.state().unable = None;
    }

    /// The work succeeded just now: the worker can do its job.
    pub fn success(&self) {
        let mut state = self.state();
        state.heartbeat.last_success_at = Some(Utc::now());
        state.unable = None;
    }

    /// The work failed just now (a lost broker, a database outage, a failed fetch, not a
    /// poison message): the worker cannot do its job until its next success.
    pub fn error(&self, error: &dyn std::fmt::Display) {
        let message = cut(error);
        let mut state = self.state();
        state.unable = Some(message.clone());
        state.heartbeat.last_error = Some(message);
        state.heartbeat.last_error_at = Some(Utc::now());
        state.heartbeat.errors_total += 1;
    }

    /// How far behind the worker is now.
    pub fn lag(&self, lag: Lag) {
        self.update(|heartbeat| heartbeat.lag = Some(lag));
    }

    /// One more message dead-lettered.
    pub fn dead_lettered(&self) {
        self.update(|heartbeat| heartbeat.dead_lettered += 1);
    }

    fn snapshot(&self) -> Heartbeat {
        self.state().heartbeat.clone()
    }
}

/// A message as kept: at most [`MAX_ERROR_CHARS`] characters.
fn cut(message: &dyn std::fmt::Display) -> String {
    message.to_string().chars().take(MAX_ERROR_CHARS).collect()
}

/// `/healthz`: 200 `ok` while each of the worker's loops can do its job, else 503
/// `{"status": "unavailable", "reason": "..."}` (the gateway's `/readyz` shape; the reasons
/// of every loop that cannot, joined by `; `).
pub fn healthz(healths: &[Health]) -> Response {
    let reasons: Vec<String> = healths
        .iter()
        .filter_map(|health| health.state().unable.clone())
        .collect();
    match reasons.is_empty() {
        true => "ok".into_response(),
        false => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "reason": reasons.join("; ")})),
        )
            .into_response(),
    }
}

/// Announces the newest error on `syncEvents` (once per heartbeat that saw new errors).
async fn announce_error(pool: &PgPool, pipeline: &'static str, heartbeat: &Heartbeat) {
    let event = pipelines::PipelineEvent {
        pipeline: pipeline.to_owned(),
        outcome: "error".to_owned(),
        detail: heartbeat.last_error.clone().unwrap_or_default(),
        at: heartbeat.last_error_at.unwrap_or_else(Utc::now),
    };
    if let Err(error) = pipelines::notify(pool, std::slice::from_ref(&event)).await {
        tracing::debug!(pipeline, %error, "cannot announce the error");
    }
}

/// Writes `health` as `pipeline`'s heartbeat every few seconds until `stop`, then marks
/// the pipeline stopped. A database outage only delays heartbeats (the gateway then shows
/// the pipeline as stopped, which is what an operator should see).
pub fn spawn_heartbeat(
    pool: PgPool,
    pipeline: &'static str,
    health: Health,
    mut stop: Stop,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut errors_announced = 0;
        loop {
            let heartbeat = health.snapshot();
            if let Err(error) = pipelines::beat(&pool, pipeline, &heartbeat).await {
                tracing::warn!(pipeline, %error, "cannot write the heartbeat");
            }
            if heartbeat.errors_total > errors_announced {
                errors_announced = heartbeat.errors_total;
                announce_error(&pool, pipeline, &heartbeat).await;
            }
            if !stop.sleep(Duration::from_secs(HEARTBEAT_SECS)).await {
                break;
            }
        }
        if let Err(error) = pipelines::mark_stopped(&pool, pipeline).await {
            tracing::warn!(pipeline, %error, "cannot mark the pipeline stopped");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(healths: &[Health]) -> u16 {
        healthz(healths).status().as_u16()
    }

    #[test]
    fn a_failure_is_unhealthy_until_the_next_success_and_any_loop_counts() {
        let (rabbit, kafka) = (Health::default(), Health::default());
        let both = [rabbit.clone(), kafka.clone()];
        assert_eq!(status(&both), 200);
        kafka.error(&"KAFKA_BROKERS: no answer within 10 s");
        assert_eq!(status(&both), 503);
        rabbit.unable(&"not consuming yet");
        assert_eq!(status(&both), 503);
        kafka.success();
        rabbit.able();
        assert_eq!(status(&both), 200);
        assert_eq!(kafka.snapshot().errors_total, 1);
        assert!(kafka.snapshot().last_success_at.is_some());
    }
}
