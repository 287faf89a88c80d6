//! Cooperative shutdown for worker loops: SIGTERM or ctrl-c raises a flag that loops check
//! between units of work (so a batch in flight finishes or is released) and wait on.

/// A flag the signal handler raises; loops check it between units of work and wait on it.
#[derive(Clone)]
pub struct Stop(tokio::sync::watch::Receiver<bool>);

impl Stop {
    /// Raised on SIGTERM or ctrl-c.
    pub fn on_signal() -> Self {
        let (sender, receiver) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            domain::shutdown::signal().await;
            let _ = sender.send(true);
        });
        Self(receiver)
    }

    /// Raised by the returned sender (tests stop workers with it).
    pub fn manual() -> (tokio::sync::watch::Sender<bool>, Self) {
        let (sender, receiver) = tokio::sync::watch::channel(false);
        (sender, Self(receiver))
    }

    /// Never raised (tests drive workers directly).
    pub fn never() -> Self {
        let (sender, receiver) = tokio::sync::watch::channel(false);
        std::mem::forget(sender);
        Self(receiver)
    }

    /// Whether the stop was asked for.
    pub fn requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when the stop is asked for.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    /// Sleeps for `duration`; false when the stop came first.
    pub async fn sleep(&mut self, duration: std::time::Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(duration) => true,
            () = self.wait() => false,
        }
    }
}
