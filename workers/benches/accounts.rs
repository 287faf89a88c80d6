//! `make bench`: the accounts pipeline on this machine.
//!
//! 1. Ingest time for 25 and for 100,000 accounts customers through `POST /api/ingest`
//!    (cold into an empty table, and a re-ingest of unchanged data), against the time to
//!    merely fetch the same pages from the simulator: the floor any ingest must pay.
//! 2. `GET /api/customers?limit=100` requests per second at 64 connections.
//!
//! Everything runs on loopback: the simulator and the load generator in this process, the
//! gateway as its release binary (`cargo build --release --bins`, which `make bench` runs),
//! so the figures include the load generator's own share of the two cores.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::PgPool;
use testkit::{fresh_database, serve, spawn_gateway, FreshDatabase};
use workers::simulate::accounts::{self as simulator, AccountsDataset};

/// An ingest may cost at most this multiple of its floor: the bare fetch of the same pages
/// plus the database's own time to insert the same rows from a table it already holds.
const INGEST_OVER_FLOOR_LIMIT: f64 = 1.5;
/// Requests per second the list route must sustain at 64 connections.
const LIST_RPS_TARGET: f64 = 2_000.0;
const CONNECTIONS: usize = 64;
const LOAD_DURATION: Duration = Duration::from_secs(10);
const RUNS: usize = 3;

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn secs(duration: Duration) -> String {
    format!("{:.3} s", duration.as_secs_f64())
}

async fn time_ingest(client: &reqwest::Client, gateway: &str) -> Duration {
    let started = Instant::now();
    let response = client
        .post(format!("{gateway}/api/ingest"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    started.elapsed()
}

/// The database's own cost of inserting the rows it holds into an empty table: copies the
/// table aside, empties it, and times one INSERT ... SELECT of the copy.
async fn time_server_side_insert(pool: &PgPool) -> Duration {
    let mut connection = pool.acquire().await.unwrap();
    sqlx::query("CREATE TEMP TABLE staging AS SELECT * FROM customers")
        .execute(&mut *connection)
        .await
        .unwrap();
    sqlx::query("TRUNCATE customers")
        .execute(&mut *connection)
        .await
        .unwrap();
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO customers (source, external_id, first_name, last_name, emails, phone, address,
                                date_of_birth, account_balance, created_at)
         SELECT source, external_id, first_name, last_name, emails, phone, address,
                date_of_birth, account_balance, created_at FROM staging
         ON CONFLICT (source, external_id) DO NOTHING",
    )
    .execute(&mut *connection)
    .await
    .unwrap();
    let elapsed = started.elapsed();
    sqlx::query("DROP TABLE staging")
        .execute(&mut *connection)
        .await
        .unwrap();
    elapsed
}

/// The gateway's pool size here: as large as the bench's own.
const GATEWAY_CONNECTIONS: &str = "32";

async fn bench_ingest(database: &FreshDatabase, records: Vec<Value>) -> bool {
    let pool = &database.pool;
    let count = records.len();
    let upstream = serve(simulator::router(Arc::new(
        AccountsDataset::from_records(records).unwrap(),
    )))
    .await;
    let process = spawn_gateway(
        &database.url,
        &[
            ("MOCK_SERVER_URL", upstream.as_str()),
            ("REQUEST_TIMEOUT_SECS", "600"),
            ("DATABASE_MAX_CONNECTIONS", GATEWAY_CONNECTIONS),
        ],
    )
    .await;
    let gateway = process.base();
    let client = reqwest::Client::new();
    let http = domain::accounts::upstream_client();

    let mut fetch = Vec::new();
    let mut insert = Vec::new();
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let (fetched, _) = domain::accounts::fetch_all(&http, &upstream).await.unwrap();
        assert_eq!(fetched.len(), count);
        fetch.push(started.elapsed());
        sqlx::query("TRUNCATE customers")
            .execute(pool)
            .await
            .unwrap();
        cold.push(time_ingest(&client, &gateway).await);
        warm.push(time_ingest(&client, &gateway).await);
        insert.push(time_server_side_insert(pool).await);
    }
    let (fetch, insert, cold, warm) = (median(fetch), median(insert), median(cold), median(warm));
    let floor = fetch + insert;
    let ratio = cold.as_secs_f64() / floor.as_secs_f64();
    let ok = ratio <= INGEST_OVER_FLOOR_LIMIT || cold < Duration::from_millis(50);
    println!(
        "ingest {count:>7} records: cold ingest {} = {ratio:.2}x its floor {} (fetch only {} + \
         server-side insert {}; limit {INGEST_OVER_FLOOR_LIMIT:.1}x{}), re-ingest unchanged {} -> {}",
        secs(cold),
        secs(floor),
        secs(fetch),
        secs(insert),
        if cold < Duration::from_millis(50) { " or under 50 ms" } else { "" },
        secs(warm),
        common::verdict(ok)
    );
    ok
}

async fn bench_list(database: &FreshDatabase, stored: usize) -> bool {
    let process = spawn_gateway(
        &database.url,
        &[("DATABASE_MAX_CONNECTIONS", GATEWAY_CONNECTIONS)],
    )
    .await;
    let gateway = process.base();
    let url = format!("{gateway}/api/customers?limit=100");
    let report = common::http_load(CONNECTIONS, LOAD_DURATION, 200, move |client, _| {
        client.get(&url)
    })
    .await;
    let ok = report.requests_per_second >= LIST_RPS_TARGET && report.errors == 0;
    println!(
        "GET /api/customers?limit=100 ({stored} stored), {CONNECTIONS} connections: {:.0} req/s \
         (target >= {LIST_RPS_TARGET:.0}), p50 {:.1} ms, p99 {:.1} ms, errors {} -> {}",
        report.requests_per_second,
        report.p50_ms,
        report.p99_ms,
        report.errors,
        common::verdict(ok)
    );
    ok
}

#[tokio::main]
async fn main() {
    let database = fresh_database("hub_bench", 32).await;
    println!("accounts pipeline benchmarks ({} runs each, median)", RUNS);
    let shipped: Vec<Value> = serde_json::from_str(simulator::DEFAULT_DATA).unwrap();
    let mut ok = bench_ingest(&database, shipped).await;
    ok &= bench_ingest(&database, simulator::generate(100_000)).await;
    ok &= bench_list(&database, 100_000).await;
    if !ok {
        eprintln!("some figures missed their limit");
    }
}
