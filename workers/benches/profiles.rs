//! `make bench`: the profile sync's throughput against the original's on the same batches.
//!
//! The batches come from the profile source simulator (the original's generator), made
//! once and replayed to both sides from memory, so only the sync's own work is timed:
//!
//! - ours: `SyncWriter::apply` per batch, one after the other, as `workers sync` runs
//!   (decode, read, plan, one statement: profiles, customers, run, outcomes, events);
//! - the original, reproduced: per profile, the email and status checks, then its two
//!   statements (`SELECT last_updated_at`, then the upsert into its `users` table), with
//!   at most 5 profiles in flight, as its semaphore allows.
//!
//! Both run against the same PostgreSQL and start from the same steady state: the first
//! `WARM_UP` batches are applied untimed and the tables analyzed, as a sync that has run a
//! while finds them (an empty, never-analyzed table is planned as tiny). The figure is
//! profiles per second over the next `BATCHES`.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sqlx::PgPool;
use workers::simulate::profiles::{ProfileSource, ProfilesSettings};

const BATCHES: usize = 1_000;
const WARM_UP: usize = 300;
/// Ours must sync at least as many profiles per second as the original.
const RATIO_LIMIT: f64 = 1.0;
const ORIGINAL_IN_FLIGHT: usize = 5;

fn batches() -> Vec<Vec<u8>> {
    let source = ProfileSource::new(ProfilesSettings {
        seed: 7,
        invalid_email_rate: 0.05,
        error_rate: 0.0,
    });
    (0..WARM_UP + BATCHES)
        .map(|_| serde_json::to_vec(&source.next_batch()).unwrap())
        .collect()
}

async fn ours(pool: &PgPool, batches: &[Vec<u8>]) -> (Duration, usize) {
    let mut writer = domain::profiles::SyncWriter::acquire(pool).await.unwrap();
    let started = Instant::now();
    let mut profiles = 0;
    for body in batches {
        let batch = domain::profiles::decode_batch(body).unwrap();
        profiles += batch.len();
        writer.apply(chrono::Utc::now(), &batch).await.unwrap();
    }
    (started.elapsed(), profiles)
}

/// The original TargetService's table.
async fn create_original_table(pool: &PgPool) {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS users (
            id UUID PRIMARY KEY,
            name VARCHAR(255) NOT NULL,
            email VARCHAR(255) UNIQUE NOT NULL,
            mobile VARCHAR(20) UNIQUE NOT NULL,
            status VARCHAR(50) NOT NULL,
            last_updated_at TIMESTAMPTZ NOT NULL,
            sync_status VARCHAR(50) NOT NULL DEFAULT 'synced',
            sync_message TEXT)",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// One profile the way the original handles it: checks, then two statements; a unique
/// violation is only logged (here: ignored).
async fn original_profile(pool: &PgPool, profile: &serde_json::Value) {
    let text = |field: &str| profile[field].as_str().unwrap_or_default().to_owned();
    let id = uuid::Uuid::parse_str(&text("id")).unwrap();
    let (status, message) = if !domain::profiles::change::is_valid_email(&text("email")) {
        ("failed_validation", "Invalid email format")
    } else if !domain::profiles::change::is_syncable_status(&text("status")) {
        ("skipped", "Status is neither active nor pending")
    } else {
        let stored: Option<String> =
            sqlx::query_scalar("SELECT last_updated_at::text FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
                .unwrap();
        match stored {
            Some(stored) if stored >= text("last_updated_at") => {
                ("skipped", "Not newer than existing record")
            }
            _ => ("synced", "Successfully synced"),
        }
    };
    let _ = sqlx::query(
        "INSERT INTO users (id, name, email, mobile, status, last_updated_at, sync_status,
                            sync_message)
         VALUES ($1, $2, $3, $4, $5, $6::timestamptz, $7, $8)
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, email = EXCLUDED.email,
             mobile = EXCLUDED.mobile, status = EXCLUDED.status,
             last_updated_at = EXCLUDED.last_updated_at, sync_status = EXCLUDED.sync_status,
             sync_message = EXCLUDED.sync_message",
    )
    .bind(id)
    .bind(text("name"))
    .bind(text("email"))
    .bind(text("mobile"))
    .bind(text("status"))
    .bind(text("last_updated_at"))
    .bind(status)
    .bind(message)
    .execute(pool)
    .await;
}

async fn original(pool: &PgPool, batches: &[Vec<u8>]) -> (Duration, usize) {
    let started = Instant::now();
    let mut profiles = 0;
    for body in batches {
        let batch: Vec<serde_json::Value> = serde_json::from_slice(body).unwrap();
        profiles += batch.len();
        futures_util::stream::iter(batch.iter())
            .map(|profile| original_profile(pool, profile))
            .buffer_unordered(ORIGINAL_IN_FLIGHT)
            .collect::<Vec<()>>()
            .await;
    }
    (started.elapsed(), profiles)
}

fn rate((elapsed, profiles): (Duration, usize)) -> f64 {
    profiles as f64 / elapsed.as_secs_f64()
}

#[tokio::main]
async fn main() {
    println!("profile sync benchmarks");
    let batches = batches();
    let ours_database = testkit::fresh_database("hub_bench_profiles", 8).await;
    let original_database = testkit::fresh_database("hub_bench_profiles_original", 8).await;
    let (warm_up, timed) = batches.split_at(WARM_UP);
    create_original_table(&original_database.pool).await;
    ours(&ours_database.pool, warm_up).await;
    original(&original_database.pool, warm_up).await;
    for pool in [&ours_database.pool, &original_database.pool] {
        sqlx::query("ANALYZE").execute(pool).await.unwrap();
    }
    let ours_rate = rate(ours(&ours_database.pool, timed).await);
    let original_rate = rate(original(&original_database.pool, timed).await);
    let ratio = ours_rate / original_rate;
    let ok = ratio >= RATIO_LIMIT;
    println!(
        "sync of {BATCHES} simulator batches (after {WARM_UP} untimed): ours {ours_rate:.0} profiles/s (two statements a \
         batch, every outcome recorded), the original's {original_rate:.0} profiles/s \
         ({ORIGINAL_IN_FLIGHT} in flight, two statements a profile): {ratio:.2}x (limit \
         {RATIO_LIMIT:.1}x) -> {}",
        if ok { "ok" } else { "MISSED" }
    );
    ours_database.remove().await;
    original_database.remove().await;
    if !ok {
        eprintln!("some figures missed their goal");
    }
}
