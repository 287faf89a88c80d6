//! Waiting for the signal to stop (SIGTERM or ctrl-c), and the deadline after it: a process
//! that has not finished stopping [`GRACE`] after the first signal exits anyway. The
//! deadline runs on a thread of its own, outside the async runtime, so it fires even when
//! every runtime thread is busy or a connection never closes; a second signal exits at
//! once.

use std::time::Duration;

/// How long a process may take to stop after SIGTERM before it exits regardless. Below the
/// 10 s that container runtimes wait before SIGKILL, so the exit is ours and logged.
pub const GRACE: Duration = Duration::from_secs(8);

/// Exit status of a process that did not stop within [`GRACE`].
const DEADLINE_EXIT_CODE: i32 = 124;

/// Starts the deadline thread, once per process: on the first SIGTERM or SIGINT it gives
/// the process [`GRACE`] to stop, then exits with status 124; a second signal exits at once.
fn arm_deadline() {
    static ARMED: std::sync::Once = std::sync::Once::new();
    ARMED.call_once(|| {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = match signal_hook::iterator::Signals::new([SIGTERM, SIGINT]) {
            Ok(signals) => signals,
            Err(error) => {
                tracing::warn!(%error, "cannot watch for signals; no shutdown deadline");
                return;
            }
        };
        let spawned = std::thread::Builder::new()
            .name("shutdown-deadline".into())
            .spawn(move || {
                let mut seen = 0;
                for _ in signals.forever() {
                    seen += 1;
                    if seen > 1 {
                        eprintln!("second signal received: exiting now");
                        std::process::exit(DEADLINE_EXIT_CODE);
                    }
                    std::thread::spawn(|| {
                        std::thread::sleep(GRACE);
                        eprintln!(
                            "still stopping {} s after the signal: exiting now",
                            GRACE.as_secs()
                        );
                        std::process::exit(DEADLINE_EXIT_CODE);
                    });
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start the shutdown deadline thread");
        }
    });
}

/// Resolves on ctrl-c or SIGTERM, whichever comes first. Calling it arms the deadline: the
/// process then exits at the latest [`GRACE`] after the signal.
pub async fn signal() {
    arm_deadline();
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("ctrl-c received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}
