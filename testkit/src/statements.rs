//! A proxy in front of the local PostgreSQL that counts the statements its clients run
//! (every `Execute` of the extended protocol and every simple `Query` message) and the
//! round trips they wait for (every `Sync` and `Query`, each answered by one
//! `ReadyForQuery`), read off the wire (the client side of each connection is parsed;
//! nothing is changed). Point a process's `DATABASE_URL` at [`StatementCounter::url`] to
//! see what a request costs. TLS is refused (`sslmode=disable` in the URL), so the bytes
//! stay readable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The local server the proxy forwards to.
const POSTGRES: &str = "127.0.0.1:5432";
/// What the protocol's untyped start-up requests ask for instead of a session.
const SSL_REQUEST: u32 = 80_877_103;
const GSS_REQUEST: u32 = 80_877_104;

/// A counting proxy to the local PostgreSQL.
#[derive(Debug, Clone)]
pub struct StatementCounter {
    port: u16,
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    statements: AtomicU64,
    round_trips: AtomicU64,
}

impl StatementCounter {
    /// Starts the proxy on an ephemeral loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral port on 127.0.0.1");
        let port = listener.local_addr().unwrap().port();
        let counts = Arc::new(Counts::default());
        let counted = counts.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(POSTGRES).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(count_client_messages(
                    client_read,
                    server_write,
                    counted.clone(),
                ));
                tokio::spawn(async move {
                    let (mut from, mut to) = (server_read, client_write);
                    let _ = tokio::io::copy(&mut from, &mut to).await;
                });
            }
        });
        Self { port, counts }
    }

    /// `database_url` (a `postgres://` URL of the local server) through the proxy.
    pub fn url(&self, database_url: &str) -> String {
        let (scheme, rest) = database_url.split_once("://").expect("a postgres:// URL");
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let credentials = authority
            .rsplit_once('@')
            .map(|(credentials, _)| format!("{credentials}@"))
            .unwrap_or_default();
        let separator = if path.contains('?') { '&' } else { '?' };
        format!(
            "{scheme}://{credentials}127.0.0.1:{}/{path}{separator}sslmode=disable",
            self.port
        )
    }

    /// Statements run through the proxy so far.
    pub fn count(&self) -> u64 {
        self.counts.statements.load(Ordering::SeqCst)
    }

    /// Round trips waited for through the proxy so far (a statement sent with its `Sync`
    /// is one; so is a lone `Sync`, the ping sqlx sends to check a connection).
    pub fn round_trips(&self) -> u64 {
        self.counts.round_trips.load(Ordering::SeqCst)
    }
}

/// Passes the client's bytes on to the server, counting statements and round trips.
async fn count_client_messages(
    mut client: tokio::net::tcp::OwnedReadHalf,
    mut server: tokio::net::tcp::OwnedWriteHalf,
    counts: Arc<Counts>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut started = false;
    loop {
        let read = match client.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if server.write_all(&buffer[..read]).await.is_err() {
            return;
        }
        pending.extend_from_slice(&buffer[..read]);
        loop {
            let length = |at: usize| {
                pending
                    .get(at..at + 4)
                    .map(|bytes| u32::from_be_bytes(bytes.try_into().unwrap()) as usize)
            };
            if !started {
                // Untyped: length (itself included), then a request code.
                let Some(size) = length(0) else { break };
                if pending.len() < size.max(8) {
                    break;
                }
                let code = length(4).unwrap_or_default() as u32;
                started = code != SSL_REQUEST && code != GSS_REQUEST;
                pending.drain(..size.max(8));
            } else {
                // Typed: one byte of type, then the length (itself included).
                let Some(size) = length(1) else { break };
                if pending.len() < 1 + size {
                    break;
                }
                if matches!(pending[0], b'E' | b'Q') {
                    counts.statements.fetch_add(1, Ordering::SeqCst);
                }
                if matches!(pending[0], b'S' | b'Q') {
                    counts.round_trips.fetch_add(1, Ordering::SeqCst);
                }
                pending.drain(..1 + size);
            }
        }
    }
}
