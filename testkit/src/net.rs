//! Loopback networking for tests: free ports, throwaway HTTP servers for axum routers
//! (simulators, fake upstreams, collectors), and names no other test run uses.

use std::sync::atomic::{AtomicU64, Ordering};

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it; another process
/// could take it before it is used, which is rare enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port on 127.0.0.1")
        .local_addr()
        .expect("the ephemeral port")
        .port()
}

/// Serves `router` on an ephemeral loopback port for the rest of the runtime's life and
/// returns its base URL (`http://127.0.0.1:<port>`, no trailing slash).
pub async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an ephemeral port on 127.0.0.1");
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    base
}

/// A dependency that accepts TCP connections and never says a word (a stuck database or
/// broker): its port, and the task holding the connections (abort it to close them).
pub async fn silent_listener() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an ephemeral port on 127.0.0.1");
    let port = listener.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (port, holder)
}

/// A name no other test (in this run or a concurrent one) uses: `test_<prefix>_<pid>_<n>_<nanos>`.
/// Only letters, digits and `_`, so it is a valid queue, exchange, Meilisearch index or
/// PostgreSQL database name as it is.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("test_{prefix}_{}_{n}_{nanos}", std::process::id())
}
