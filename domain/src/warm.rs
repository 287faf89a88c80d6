//! Warm connections: pooled connections handed from one statement to the next without
//! sqlx's check on release.
//!
//! sqlx gives a pooled connection back by spawning a task that pings the server first (a
//! round trip of its own, `Sync` then `ReadyForQuery`), whatever the connection just did.
//! For the gateway's one-statement reads that doubles the round trips to PostgreSQL and
//! cost an eighth of the CPU a page of customers takes. A [`Lease`] that ran its statement
//! to the end and is [`Lease::release`]d is parked here instead, and the next lease takes it
//! as it is: it just answered, so it is known to be alive and idle.
//!
//! What stays with sqlx: a lease dropped without `release` (its statement failed, or its
//! request was cancelled in the middle of a statement) goes back through sqlx's own release,
//! which pings and cleans the connection or closes it. A connection parked longer than
//! [`PARKED_AT_MOST`] is handed back to sqlx too, by a sweeper task, so that the pool's other
//! users (REST routes, transactions) never wait for connections parked here while nobody
//! reads, and sqlx's idle checks apply to it again.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};

use crate::Result;

/// How long a released connection may wait here for the next lease before it goes back to
/// the pool.
pub const PARKED_AT_MOST: Duration = Duration::from_secs(1);

/// Connections released by their last lease, and the pool behind them.
#[derive(Debug)]
pub struct WarmConnections {
    pool: PgPool,
    /// Newest last: the next lease takes the one most recently used.
    parked: Mutex<Vec<Parked>>,
}

#[derive(Debug)]
struct Parked {
    connection: PoolConnection<Postgres>,
    since: Instant,
}

impl WarmConnections {
    /// Warm connections over `pool`, with their sweeper (a task that ends with them). Call
    /// it inside the Tokio runtime.
    pub fn new(pool: PgPool) -> Arc<Self> {
        let warm = Arc::new(Self {
            pool,
            parked: Mutex::default(),
        });
        tokio::spawn(sweep_while_alive(Arc::downgrade(&warm)));
        warm
    }

    /// A connection: the one most recently released here, else one from the pool.
    pub async fn lease(&self) -> Result<Lease<'_>> {
        let parked = self.parked().pop();
        let connection = match parked {
            Some(parked) => parked.connection,
            None => self.pool.acquire().await?,
        };
        Ok(Lease {
            home: self,
            connection: Some(connection),
        })
    }

    /// How many connections are parked here now.
    pub fn parked_count(&self) -> usize {
        self.parked().len()
    }

    fn parked(&self) -> MutexGuard<'_, Vec<Parked>> {
        self.parked
            .lock()
            .expect("never poisoned: no panics while held")
    }

    /// Hands the connections parked longer than [`PARKED_AT_MOST`] back to the pool.
    fn give_back_idle(&self) {
        let now = Instant::now();
        let idle: Vec<Parked> = {
            let mut parked = self.parked();
            // Oldest first: those parked long enough are a prefix.
            let kept_from = parked
                .iter()
                .position(|entry| now.duration_since(entry.since) < PARKED_AT_MOST)
                .unwrap_or(parked.len());
            parked.drain(..kept_from).collect()
        };
        // Dropped outside the lock: sqlx's release runs in a task of its own.
        drop(idle);
    }
}

/// Gives idle connections back every [`PARKED_AT_MOST`] until `warm` is dropped.
async fn sweep_while_alive(warm: Weak<WarmConnections>) {
    let mut ticks = tokio::time::interval(PARKED_AT_MOST);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match warm.upgrade() {
            Some(warm) => warm.give_back_idle(),
            None => return,
        }
    }
}

/// A connection for one statement (or a few): use it as `&mut *lease`, then
/// [`release`](Self::release) it once its statements ran to the end. Dropped without that,
/// it goes back through sqlx's release, which checks it.
#[derive(Debug)]
pub struct Lease<'a> {
    home: &'a WarmConnections,
    connection: Option<PoolConnection<Postgres>>,
}

impl Lease<'_> {
    /// Parks the connection for the next lease: call it only once every statement run on it
    /// finished (its results were read to the end).
    pub fn release(mut self) {
        if let Some(connection) = self.connection.take() {
            self.home.parked().push(Parked {
                connection,
                since: Instant::now(),
            });
        }
    }
}

impl std::ops::Deref for Lease<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.connection
            .as_ref()
            .expect("held until released or dropped")
    }
}

impl std::ops::DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.connection
            .as_mut()
            .expect("held until released or dropped")
    }
}
