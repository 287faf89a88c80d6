//! Per-client rate limits: a token bucket per API key or JWT subject, else per client
//! address (`RATE_LIMIT_PER_SECOND` tokens a second, up to `RATE_LIMIT_BURST`), off unless
//! configured. A request that finds
//! its bucket empty is answered 429 with `Retry-After` (in its route's error shape: REST
//! bodies, or a GraphQL error with `extensions.code = "RATE_LIMITED"`) and counted in
//! `http_rate_limited_total`. Health, readiness and metrics are never limited, so probes
//! and scrapes keep working under load. A caller without valid credentials is the TCP
//! peer's address; behind a proxy, every such caller shares the proxy's bucket.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};

use crate::socket::Peer;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::auth::Identity;
use crate::config::HttpConfig;
use crate::edge::error_answer;
use crate::metrics::Metrics;

/// Most clients whose buckets are remembered; beyond it, full buckets are forgotten (a
/// forgotten client starts again with a full bucket, which is what it would have).
const MAX_TRACKED_CLIENTS: usize = 100_000;

/// Routes that are never limited.
const UNLIMITED: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// Whose bucket a request takes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Client {
    /// A caller with valid credentials: the API key's name or the JWT's subject.
    Principal(String),
    /// Anyone else, by address.
    Address(IpAddr),
}

impl Client {
    /// Who a request comes from, by its [`Identity`] and peer address (both from the
    /// request's extensions); `None` without either (an in-process server).
    pub fn of(extensions: &axum::http::Extensions) -> Option<Self> {
        let principal = extensions
            .get::<Identity>()
            .and_then(Identity::principal)
            .map(|principal| Client::Principal(principal.name.clone()));
        principal.or_else(|| {
            extensions
                .get::<ConnectInfo<Peer>>()
                .map(|ConnectInfo(peer)| Client::Address(peer.address.ip()))
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

/// The buckets of every client, shared by all requests.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<Client, Bucket>>,
}

impl RateLimiter {
    /// A limiter refilling `per_second` tokens a second up to `burst`.
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self {
            per_second,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `client` at `now`: `Ok` when it had one, else how long until it
    /// will.
    pub fn take(&self, client: Client, now: Instant) -> Result<(), Duration> {
        let mut buckets = self
            .buckets
            .lock()
            .expect("never poisoned: no panics while held");
        if buckets.len() >= MAX_TRACKED_CLIENTS && !buckets.contains_key(&client) {
            let (per_second, burst) = (self.per_second, self.burst);
            buckets.retain(|_, bucket| refilled(*bucket, now, per_second, burst).tokens < burst);
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: self.burst,
            refilled_at: now,
        });
        *bucket = refilled(*bucket, now, self.per_second, self.burst);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64(
            (1.0 - bucket.tokens) / self.per_second,
        ))
    }
}

fn refilled(bucket: Bucket, now: Instant, per_second: f64, burst: f64) -> Bucket {
    let elapsed = now
        .saturating_duration_since(bucket.refilled_at)
        .as_secs_f64();
    Bucket {
        tokens: (bucket.tokens + elapsed * per_second).min(burst),
        refilled_at: now,
    }
}

/// What the middleware needs.
#[derive(Clone)]
pub struct RateLimit {
    /// The buckets; `None` when no limit is configured.
    limiter: Option<Arc<RateLimiter>>,
    /// Where refusals are counted.
    metrics: Arc<Metrics>,
}

impl RateLimit {
    /// The limit `RATE_LIMIT_PER_SECOND` and `RATE_LIMIT_BURST` configure (none at 0).
    pub fn new(http: &HttpConfig, metrics: Arc<Metrics>) -> Self {
        let limiter = (http.rate_limit_per_second > 0.0).then(|| {
            Arc::new(RateLimiter::new(
                http.rate_limit_per_second,
                http.rate_limit_burst,
            ))
        });
        Self { limiter, metrics }
    }
}

/// Answers 429 to a client whose bucket is empty; requests without a known peer address
/// (an in-process server without connection info) are not limited.
pub async fn limit(State(limit): State<RateLimit>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let client = Client::of(request.extensions());
    let (Some(limiter), Some(client)) = (
        &limit.limiter,
        client.filter(|_| !UNLIMITED.contains(&path.as_str())),
    ) else {
        return next.run(request).await;
    };
    match limiter.take(client, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            limit.metrics.record_rate_limited();
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            let mut answer = error_answer(
                &path,
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "too many requests from this client (RATE_LIMIT_PER_SECOND); retry in {seconds} s"
                ),
            );
            answer
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            answer
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let limiter = RateLimiter::new(2.0, 3);
        let client = Client::Address("127.0.0.1".parse().unwrap());
        let other = Client::Address("127.0.0.2".parse().unwrap());
        let key = Client::Principal("shop".into());
        let start = Instant::now();
        for _ in 0..3 {
            limiter.take(client.clone(), start).unwrap();
        }
        let wait = limiter.take(client.clone(), start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another client, or a key from the same address, has its own bucket.
        limiter.take(other, start).unwrap();
        limiter.take(key, start).unwrap();
        // Half a second later one token is back, and only one.
        let later = start + Duration::from_millis(500);
        limiter.take(client.clone(), later).unwrap();
        assert!(limiter.take(client.clone(), later).is_err());
        // Never more than the burst, however long the client was away.
        let much_later = start + Duration::from_secs(3600);
        for _ in 0..3 {
            limiter.take(client.clone(), much_later).unwrap();
        }
        assert!(limiter.take(client, much_later).is_err());
    }
}
