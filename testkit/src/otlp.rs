//! A minimal OTLP/HTTP collector for tests: it accepts `POST /v1/traces` and keeps every
//! body (protobuf, undecoded), so a test can look for a trace id's bytes or a span's name
//! in what a process exported.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;

/// A running collector; point `OTEL_EXPORTER_OTLP_ENDPOINT` at [`Collector::url`].
#[derive(Debug, Clone)]
pub struct Collector {
    /// Its base URL (`http://127.0.0.1:<port>`).
    pub url: String,
    received: Arc<Mutex<Vec<(String, Bytes)>>>,
}

type Received = Arc<Mutex<Vec<(String, Bytes)>>>;

impl Collector {
    /// Starts one on an ephemeral loopback port.
    pub async fn start() -> Self {
        async fn record(
            State(received): State<Received>,
            uri: axum::http::Uri,
            body: Bytes,
        ) -> &'static str {
            received.lock().unwrap().push((uri.path().to_owned(), body));
            ""
        }
        let received = Received::default();
        let router = Router::new()
            .route("/v1/traces", post(record))
            .with_state(received.clone());
        Self {
            url: crate::serve(router).await,
            received,
        }
    }

    /// The paths requests were sent to, in order.
    pub fn paths(&self) -> Vec<String> {
        let received = self.received.lock().unwrap();
        received.iter().map(|(path, _)| path.clone()).collect()
    }

    /// Whether any export holds `needle` (a span name, a service name, raw id bytes).
    pub fn holds(&self, needle: &[u8]) -> bool {
        self.count(needle) > 0
    }

    /// How many times `needle` appears in the exports, all together.
    pub fn count(&self, needle: &[u8]) -> usize {
        let received = self.received.lock().unwrap();
        received
            .iter()
            .map(|(_, body)| {
                body.windows(needle.len())
                    .filter(|window| *window == needle)
                    .count()
            })
            .sum()
    }
}

/// A W3C `traceparent` for tests that write events as a traced request would.
pub const SAMPLE_TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
