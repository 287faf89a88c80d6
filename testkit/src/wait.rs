//! Polling until a condition holds, for effects that happen in another task or process.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it is true; panics naming `what` after 20 s.
pub async fn wait_until<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_until_within(what, Duration::from_secs(20), check).await;
}

/// Polls `check` every 50 ms until it is true; panics naming `what` after `limit`.
pub async fn wait_until_within<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
