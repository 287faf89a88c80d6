//! The profile sync end to end: `workers sync` (the binary, configured through its
//! environment) against a scripted source (every outcome, upstream 500, stall, truncated
//! JSON, a replayed batch), against the simulator (`workers simulate --only profiles`),
//! and against the original Go source's documented shape.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use serde_json::{json, Value};
use sqlx::PgPool;
use testkit::http::{get_text, metric};
use testkit::{database_url, serve, wait_until, Launch, Process};
use uuid::Uuid;

/// The original Go source's documented shape (README example), with real UUIDs.
const GO_SOURCE_FIXTURE: &str = include_str!("../fixtures/source_service_users_changes.json");

/// One answer of the scripted source.
#[derive(Clone)]
enum Answer {
    Batch(Value),
    Status(u16),
    Stall,
    Truncated(Value),
}

/// A source answering `answers` in order, then empty batches; counts its calls.
async fn scripted_source(answers: Vec<Answer>) -> (String, Arc<Mutex<usize>>) {
    type Script = Arc<(Mutex<VecDeque<Answer>>, Arc<Mutex<usize>>)>;
    async fn answer(State(script): State<Script>) -> Response {
        *script.1.lock().unwrap() += 1;
        let next = script.0.lock().unwrap().pop_front();
        match next.unwrap_or(Answer::Batch(json!([]))) {
            Answer::Batch(body) => axum::Json(body).into_response(),
            Answer::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
            Answer::Stall => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                axum::Json(json!([])).into_response()
            }
            Answer::Truncated(body) => {
                let text = body.to_string();
                text[..text.len() / 2].to_owned().into_response()
            }
        }
    }
    let calls = Arc::new(Mutex::new(0));
    let script: Script = Arc::new((Mutex::new(answers.into()), calls.clone()));
    let base = serve(
        Router::new()
            .route("/users/changes", any(answer))
            .with_state(script),
    )
    .await;
    (format!("{base}/users/changes"), calls)
}

fn profile(id: u128, email: &str, mobile: &str, status: &str, at: &str) -> Value {
    json!({
        "id": Uuid::from_u128(id).to_string(),
        "name": format!("User{id}"),
        "email": email,
        "mobile": mobile,
        "status": status,
        "last_updated_at": at,
    })
}

/// `workers sync` over `pool`'s database, polling `source_url` every 0.2 s, its metrics on
/// a free port (`SYNC_METRICS_ADDR`).
async fn start_sync(pool: &PgPool, source_url: &str) -> Process {
    Launch::binary("workers")
        .arg("sync")
        .env("DATABASE_URL", database_url(pool).await)
        .env("SOURCE_SERVICE_URL", source_url)
        .env("SYNC_INTERVAL", "0.2")
        .env("SYNC_FETCH_TIMEOUT_SECS", "1")
        .listen_env("SYNC_METRICS_ADDR")
        .start()
        .await
}

/// `workers sync --once` over `pool`'s database against `source_url`.
async fn sync_once(pool: &PgPool, source_url: &str) -> std::process::Output {
    Launch::binary("workers")
        .args(["sync", "--once"])
        .env("DATABASE_URL", database_url(pool).await)
        .env("SOURCE_SERVICE_URL", source_url)
        .start()
        .await
        .wait()
        .await
}

async fn runs(pool: &PgPool) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE ok), count(*) FILTER (WHERE NOT ok) FROM pipeline_runs
         WHERE pipeline = 'profiles-sync'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn profiles(pool: &PgPool) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT jsonb_build_object('id', id, 'email', email, 'mobile', mobile, 'status', status,
                'last_updated_at', last_updated_at, 'accepted', accepted,
                'sync_status', sync_status, 'sync_message', sync_message)
         FROM user_profiles ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

fn row(rows: &[Value], id: u128) -> &Value {
    let id = Uuid::from_u128(id).to_string();
    rows.iter()
        .find(|row| row["id"] == json!(id))
        .unwrap_or_else(|| panic!("no profile {id} in {rows:?}"))
}

#[sqlx::test(migrations = "../migrations")]
async fn every_outcome_is_right_recorded_and_counted_under_the_originals_names(pool: PgPool) {
    let first = json!([
        // Synced; its older change in the same batch is superseded, whatever the order.
        profile(
            1,
            "one@example.com",
            "+911",
            "active",
            "2025-07-01T10:00:05Z"
        ),
        profile(
            1,
            "old@example.com",
            "+911",
            "active",
            "2025-07-01T15:29:00+05:30"
        ),
        profile(
            2,
            "two-at-example.com",
            "+912",
            "active",
            "2025-07-01T10:00:00Z"
        ),
        profile(
            3,
            "three@example.com",
            "+913",
            "inactive",
            "2025-07-01T10:00:00Z"
        ),
        // Email and mobile of profile 1: conflicts, kept with their data, not accepted.
        profile(
            4,
            "one@example.com",
            "+914",
            "pending",
            "2025-07-01T10:00:06Z"
        ),
        profile(
            5,
            "five@example.com",
            "+911",
            "active",
            "2025-07-01T10:00:07Z"
        ),
    ]);
    let older = json!([
        // The same instant as the stored change, written with another offset: not newer.
        profile(
            1,
            "changed@example.com",
            "+911",
            "active",
            "2025-07-01T15:30:05+05:30"
        ),
    ]);
    let (url, calls) = scripted_source(vec![
        Answer::Batch(first.clone()),
        Answer::Status(500),
        Answer::Truncated(first.clone()),
        Answer::Stall,
        Answer::Batch(older),
        Answer::Batch(first),
    ])
    .await;
    let sync = start_sync(&pool, &url).await;
    wait_until("six runs are recorded", || async {
        runs(&pool).await.0 + runs(&pool).await.1 >= 6
    })
    .await;
    assert!(*calls.lock().unwrap() >= 6);
    // 500, truncated JSON and the stall failed; nothing partial was written by them.
    assert_eq!(runs(&pool).await.1, 3);
    let errors: Vec<String> =
        sqlx::query_scalar("SELECT error FROM pipeline_runs WHERE NOT ok ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(errors[0].contains("500"), "{errors:?}");
    assert!(errors[1].contains("no JSON array"), "{errors:?}");
    assert!(errors[2].contains("cannot fetch"), "{errors:?}");

    let rows = profiles(&pool).await;
    assert_eq!(rows.len(), 5, "{rows:?}");
    let one = row(&rows, 1);
    assert_eq!(
        one["email"], "one@example.com",
        "a skipped change never overwrites"
    );
    assert_eq!(one["accepted"], true);
    // The last outcome is the older change's; the replay of its stored change left it.
    assert_eq!(one["sync_status"], "skipped");
    assert_eq!(one["sync_message"], "Not newer than existing record");
    assert_eq!(row(&rows, 2)["sync_status"], "failed_validation");
    assert_eq!(row(&rows, 2)["sync_message"], "Invalid email format");
    assert_eq!(row(&rows, 3)["sync_status"], "skipped");
    assert_eq!(
        row(&rows, 3)["sync_message"],
        "Status is neither active nor pending"
    );
    let four = row(&rows, 4);
    assert_eq!(four["sync_status"], "conflict");
    assert_eq!(
        four["sync_message"],
        format!(
            "Email one@example.com already belongs to profile {}",
            Uuid::from_u128(1)
        )
    );
    assert_eq!(four["accepted"], false);
    assert_eq!(
        row(&rows, 5)["sync_message"],
        format!(
            "Mobile +911 already belongs to profile {}",
            Uuid::from_u128(1)
        )
    );

    // The older change's outcome is recorded in its run.
    let older_outcome: (String, String) = sqlx::query_as(
        "SELECT outcome, message FROM profile_sync_outcomes
         WHERE profile_id = $1 AND received->>'email' = 'changed@example.com'",
    )
    .bind(Uuid::from_u128(1))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        older_outcome,
        ("skipped".into(), "Not newer than existing record".into())
    );

    // Only the synced profile is a customer of source PROFILES.
    let customers: Vec<(String, Vec<String>, Option<String>)> = sqlx::query_as(
        "SELECT external_id, emails, phone FROM customers WHERE source = 'PROFILES'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        customers,
        [(
            Uuid::from_u128(1).to_string(),
            vec!["one@example.com".to_owned()],
            Some("+911".to_owned())
        )]
    );

    // The original's metric names and values: two batches of 6 and one of 1 were fetched;
    // only profile 1 was ever synced; skipped = failed validation + status + not newer.
    let text = get_text(&sync.url("/metrics")).await;
    assert_eq!(
        metric(&text, "profiles_fetched_total"),
        Some(13.0),
        "{text}"
    );
    assert_eq!(metric(&text, "profiles_synced_total"), Some(1.0), "{text}");
    // Batch 1: invalid email, inactive. Batch 5: not newer. Batch 6 (the replay): every
    // profile is now stored at its own time, so the rule "not newer" (checked before any
    // conflict) skips 1, 4 and 5; 2 and 3 fail as before.
    assert_eq!(metric(&text, "profiles_skipped_total"), Some(8.0), "{text}");
    assert_eq!(
        metric(&text, "profiles_conflicts_total"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "profiles_superseded_total"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(metric(&text, "sync_runs_failed_total"), Some(3.0), "{text}");
    assert!(
        metric(&text, "sync_batch_duration_seconds_count").unwrap() >= 6.0,
        "{text}"
    );
    assert!(metric(&text, "sync_last_success_timestamp_seconds").unwrap() > 1.7e9);
    drop(sync);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_replayed_batch_changes_nothing(pool: PgPool) {
    let batch = json!([
        profile(
            1,
            "one@example.com",
            "+911",
            "active",
            "2025-07-01T10:00:05Z"
        ),
        profile(
            2,
            "one@example.com",
            "+912",
            "active",
            "2025-07-01T10:00:06Z"
        ),
        profile(3, "three@example", "+913", "active", "2025-07-01T10:00:06Z"),
    ]);
    let (url, _) = scripted_source(vec![Answer::Batch(batch.clone()), Answer::Batch(batch)]).await;
    let sync = start_sync(&pool, &url).await;
    wait_until("the first run", || async { runs(&pool).await.0 >= 1 }).await;
    let after_first = sqlx::query_scalar::<_, Value>(
        "SELECT jsonb_agg(to_jsonb(p) ORDER BY id) FROM user_profiles p",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    wait_until("the replay", || async { runs(&pool).await.0 >= 2 }).await;
    drop(sync);
    let after_replay = sqlx::query_scalar::<_, Value>(
        "SELECT jsonb_agg(to_jsonb(p) ORDER BY id) FROM user_profiles p",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    // Conflicted and invalid rows are rewritten with the same outcome: only their
    // synced_at moves; everything else is byte for byte the same.
    let strip = |rows: &Value| -> Vec<Value> {
        rows.as_array()
            .unwrap()
            .iter()
            .map(|row| {
                let mut row = row.clone();
                row.as_object_mut().unwrap().remove("synced_at");
                row
            })
            .collect()
    };
    assert_eq!(strip(&after_first), strip(&after_replay));
}

#[sqlx::test(migrations = "../migrations")]
async fn the_simulated_source_syncs_with_conflicts_recorded_and_every_method_answered(
    pool: PgPool,
) {
    let simulator = Launch::binary("workers")
        .args(["simulate", "--only", "profiles"])
        .env("PROFILES_SEED", "9")
        .env("PROFILES_INVALID_EMAIL_RATE", "0.2")
        .listen_env("PROFILES_ADDR")
        .ready_path("/users/changes")
        .start()
        .await;
    let url = format!("{}/users/changes", simulator.base());
    // Any method, as the original.
    let posted = reqwest::Client::new().post(&url).send().await.unwrap();
    assert_eq!(posted.status(), 200);
    let batch: Vec<Value> = posted.json().await.unwrap();
    assert!((4..=10).contains(&batch.len()));

    let sync = start_sync(&pool, &url).await;
    wait_until("twenty runs", || async { runs(&pool).await.0 >= 20 }).await;
    drop(sync);
    let counts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT outcome, count(*) FROM profile_sync_outcomes GROUP BY outcome ORDER BY outcome",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let count = |outcome: &str| {
        counts
            .iter()
            .find(|(o, _)| o == outcome)
            .map_or(0, |(_, n)| *n)
    };
    assert!(count("synced") > 0, "{counts:?}");
    assert!(count("skipped") > 0, "{counts:?}");
    assert!(count("failed_validation") > 0, "{counts:?}");
    // Every synced profile is a customer; emails and mobiles stay unique among them.
    let (accepted, customers, distinct_emails): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM user_profiles WHERE accepted),
                (SELECT count(*) FROM customers WHERE source = 'PROFILES'),
                (SELECT count(DISTINCT email) FROM user_profiles WHERE accepted)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(accepted, customers);
    assert_eq!(accepted, distinct_emails);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_original_go_sources_documented_shape_decodes_unchanged(pool: PgPool) {
    let fixture: Value = serde_json::from_str(GO_SOURCE_FIXTURE).unwrap();
    let (url, _) = scripted_source(vec![Answer::Batch(fixture)]).await;
    let output = sync_once(&pool, &url).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let statuses: Vec<(String, String)> =
        sqlx::query_as("SELECT name, sync_status FROM user_profiles ORDER BY name")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        statuses,
        [
            ("User123".to_owned(), "synced".to_owned()),
            ("User4821".to_owned(), "synced".to_owned()),
            ("User77".to_owned(), "skipped".to_owned()),
        ]
    );
    let stored: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT last_updated_at FROM user_profiles WHERE name = 'User123'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(stored.to_rfc3339(), "2025-07-01T10:13:04+00:00");
}

#[sqlx::test(migrations = "../migrations")]
async fn sync_once_exits_1_on_a_failed_fetch_and_records_the_run(pool: PgPool) {
    let (url, _) = scripted_source(vec![Answer::Status(503)]).await;
    let output = sync_once(&pool, &url).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("503"), "{stderr}");
    assert_eq!(runs(&pool).await, (0, 1));
    let (status, error): (String, String) = sqlx::query_as(
        "SELECT s.pipeline, s.last_error FROM pipeline_status s WHERE pipeline = 'profiles-sync'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(status, "profiles-sync");
    assert!(error.contains("503"), "{error}");
}

#[tokio::test]
async fn an_invalid_sync_interval_is_refused_naming_the_variable() {
    let output = Launch::binary("workers")
        .arg("sync")
        .env("SYNC_INTERVAL", "soon")
        .start()
        .await
        .wait()
        .await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("SYNC_INTERVAL") || stderr.contains("sync-interval"),
        "{stderr}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_field_too_long_for_its_column_fails_only_its_profile(pool: PgPool) {
    let long_mobile = format!("+91{}", "9".repeat(30));
    let batch = json!([
        profile(
            1,
            "one@example.com",
            "+911",
            "active",
            "2025-07-01T10:00:05Z"
        ),
        profile(
            2,
            "two@example.com",
            &long_mobile,
            "active",
            "2025-07-01T10:00:05Z"
        ),
    ]);
    let (url, _) = scripted_source(vec![Answer::Batch(batch)]).await;
    let output = sync_once(&pool, &url).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows = profiles(&pool).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(row(&rows, 1)["sync_status"], "synced");
    let (outcome, message, received): (String, String, Value) = sqlx::query_as(
        "SELECT outcome, message, received FROM profile_sync_outcomes WHERE profile_id = $1",
    )
    .bind(Uuid::from_u128(2))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(outcome, "failed_validation");
    assert_eq!(message, "Mobile longer than 20 characters");
    assert_eq!(received["mobile"], long_mobile);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_second_writer_waits_until_the_first_lets_go(pool: PgPool) {
    let first = domain::profiles::SyncWriter::acquire(&pool).await.unwrap();
    let second = domain::profiles::SyncWriter::acquire(&pool);
    tokio::pin!(second);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut second)
            .await
            .is_err(),
        "two syncs must never write at once: the second waits"
    );
    drop(first);
    let mut second = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the lock is released when the first writer's connection closes")
        .unwrap();
    let batch = domain::profiles::decode_batch(
        br#"[{"id":"6f1c2e8a-3b4d-4c5e-8f9a-0b1c2d3e4f50","name":"User1","email":"user1@example.com","mobile":"+9111","status":"active","last_updated_at":"2025-07-01T10:00:00Z"}]"#,
    )
    .unwrap();
    let report = second.apply(chrono::Utc::now(), &batch).await.unwrap();
    assert_eq!(report.synced, 1);
}
