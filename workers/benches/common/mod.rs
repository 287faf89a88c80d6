//! Shared by the benchmarks: a closed-loop HTTP load generator and percentiles. Each bench
//! uses part of it.
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a load run measured.
pub struct LoadReport {
    /// Successful requests per second.
    pub requests_per_second: f64,
    /// Latency percentiles of successful requests, in milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Requests that failed or answered an unexpected status.
    pub errors: u64,
}

/// Runs `connections` workers, each sending `request(worker)` back to back for `duration`.
/// `request` resolves to whether the request succeeded.
pub async fn closed_loop<F, Fut>(connections: usize, duration: Duration, request: F) -> LoadReport
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let (failed, stop) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..connections {
        let (request, failed, stop) = (request.clone(), failed.clone(), stop.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                if request(worker).await {
                    latencies.push(started.elapsed());
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            latencies
        });
    }
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    while let Some(own) = tasks.join_next().await {
        latencies.extend(own.expect("a load worker panicked"));
    }
    latencies.sort();
    LoadReport {
        requests_per_second: latencies.len() as f64 / started.elapsed().as_secs_f64(),
        p50_ms: percentile_ms(&latencies, 0.50),
        p99_ms: percentile_ms(&latencies, 0.99),
        errors: failed.load(Ordering::Relaxed),
    }
}

/// [`closed_loop`] over HTTP: each of `connections` workers sends `request(client, worker)`
/// back to back on one shared client; a request succeeds when it answers `expected` and its
/// body reads in full.
pub async fn http_load<F>(
    connections: usize,
    duration: Duration,
    expected: u16,
    request: F,
) -> LoadReport
where
    F: Fn(&reqwest::Client, usize) -> reqwest::RequestBuilder + Clone + Send + Sync + 'static,
{
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .unwrap();
    closed_loop(connections, duration, move |worker| {
        let sent = request(&client, worker).send();
        async move {
            match sent.await {
                Ok(response) if response.status() == expected => response.bytes().await.is_ok(),
                _ => false,
            }
        }
    })
    .await
}

pub use testkit::measure::{percentile_ms, verdict};
