//! Paced concurrent load, for tests that keep requests coming while they break things
//! (kill workers, close broker connections) and then count what arrived.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

/// Load under way; [`Load::failures`] waits for it to end.
#[derive(Debug)]
pub struct Load(JoinSet<Vec<String>>);

/// Makes `total` calls `request(0)`..`request(total - 1)` from `concurrency` tasks, each
/// pausing `pause` after every call. A call's `Err` is recorded, not fatal.
pub fn spread<F, Fut>(total: usize, concurrency: usize, pause: Duration, request: F) -> Load
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let (request, next) = (request.clone(), next.clone());
        tasks.spawn(async move {
            let mut failures = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= total {
                    return failures;
                }
                if let Err(error) = request(n).await {
                    failures.push(error);
                }
                tokio::time::sleep(pause).await;
            }
        });
    }
    Load(tasks)
}

impl Load {
    /// Waits until every call was made; what failed, and why.
    pub async fn failures(mut self) -> Vec<String> {
        let mut failures = Vec::new();
        while let Some(task) = self.0.join_next().await {
            failures.extend(task.expect("a load task panicked"));
        }
        failures
    }
}
