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

/// A TCP proxy on an ephemeral loopback port to `target` that can be frozen: once
/// [`FreezableProxy::freeze`] is called, it stops passing bytes either way while keeping
/// every connection open (a broker or database that stops answering mid-connection).
#[derive(Debug)]
pub struct FreezableProxy {
    /// The port to connect to instead of `target`'s.
    pub port: u16,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FreezableProxy {
    /// Starts proxying to `target` (`127.0.0.1:5672`).
    pub async fn start(target: &str) -> Self {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral port on 127.0.0.1");
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let target = target.to_owned();
        let shared = frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pass(client_read, server_write, shared.clone()));
                tokio::spawn(pass(server_read, client_write, shared.clone()));
            }
        });
        Self { port, frozen }
    }

    /// From now on nothing passes; connections stay open.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until the proxy freezes, then holds both ends open in silence.
async fn pass(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let Ok(read) = from.read(&mut buffer).await else {
            return;
        };
        if read == 0 {
            return;
        }
        if frozen.load(Ordering::SeqCst) {
            // Keep both halves (and so the connection) until the test ends.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
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
