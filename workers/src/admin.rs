//! The small admin HTTP server every long-running worker serves: `/metrics` (Prometheus,
//! OpenMetrics text) and `/healthz` (what the worker's [`Health`] says, see
//! [`crate::health::healthz`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;

use crate::health::Health;

/// Binds `addr` and serves the registry until the process ends; `/healthz` answers 503
/// while one of `healths` (one per loop of the worker) says it cannot do its job.
pub async fn spawn(
    addr: SocketAddr,
    registry: Registry,
    healths: Vec<Health>,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|error| {
        anyhow::anyhow!("cannot listen on {addr} for the admin server: {error}")
    })?;
    let bound = listener.local_addr()?;
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route(
            "/healthz",
            get(move || async move { crate::health::healthz(&healths) }),
        )
        .with_state(Arc::new(registry));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::warn!(%error, "admin server stopped");
        }
    });
    tracing::info!(addr = %bound, "admin server listening (/metrics, /healthz)");
    Ok(bound)
}

async fn metrics(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .expect("writing to a String cannot fail");
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}
