//! Liveness, readiness and metrics for operators: `/healthz`, `/readyz`, `/metrics`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::AppState;

/// How long `/readyz` waits for the database before answering 503.
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// The process is alive. The body is `Success`, as the shop server's `/healthz` answered.
async fn healthz() -> &'static str {
    "Success"
}

/// Ready when the database answers; 503 with the reason otherwise (within two seconds).
async fn readyz(State(state): State<AppState>) -> Response {
    match domain::db::ping(&state.pool, READINESS_TIMEOUT).await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "reason": reason})),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let running = &state.subscriptions;
    state
        .metrics
        .record_subscriptions(running.executions(), running.subscribers());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
