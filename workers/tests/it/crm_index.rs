//! The CRM indexer against the simulator: exact convergence under heavy churn with a restart
//! in the middle of the backfill, lost feed events repaired, `--verify` catching planted
//! differences; and with the original's feed (no `seq`): an upstream restarted with other
//! data reconciled, repairs that live changes still beat, unreadable messages counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use sqlx::PgPool;
use testkit::{wait_until, wait_until_within, Launch, Process};
use workers::index::{run_indexer, IndexMetrics, Indexer, Pacing};
use workers::simulate::crm::{self, CrmSettings, CrmUpstream};
use workers::stop::Stop;
use zeromq::SocketSend;

fn settings(records: u64, latency_ms: u64, interval_ms: u64, max_changes: u64) -> CrmSettings {
    CrmSettings {
        records,
        page_size: 1000,
        latency: Duration::from_millis(latency_ms),
        change_interval: Duration::from_millis(interval_ms),
        max_changes: Some(max_changes),
        seed: 5,
        error_rate: 0.0,
        feed_seq: true,
    }
}

struct Upstream {
    crm: Arc<CrmUpstream>,
    api: String,
    feed: String,
}

async fn start_api(crm: Arc<CrmUpstream>) -> String {
    testkit::serve(crm::router(crm)).await
}

/// The simulator, publishing every change (`drop_every` = 0) or losing every n-th one.
async fn start_upstream(settings: CrmSettings, drop_every: u64) -> Upstream {
    let interval = settings.change_interval;
    let max_changes = settings.max_changes.unwrap_or(u64::MAX);
    let crm = Arc::new(CrmUpstream::new(settings));
    let api = start_api(crm.clone()).await;
    let (mut publisher, feed) = crm::bind_feed("tcp://127.0.0.1:0").await.unwrap();
    let changes = crm.clone();
    tokio::spawn(async move {
        // Give the indexer time to subscribe before the churn starts.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for n in 1..=max_changes {
            let event = changes.change();
            if drop_every == 0 || !n.is_multiple_of(drop_every) {
                publisher
                    .send(crm::feed_message(&event, true))
                    .await
                    .unwrap();
            }
            tokio::time::sleep(interval).await;
        }
    });
    Upstream { crm, api, feed }
}

/// The loop's pacing with no periodic reconcile in the way (tests that need one set it).
fn pacing(quiet: Duration, max_resync_wait: Duration) -> Pacing {
    Pacing {
        quiet,
        max_resync_wait,
        reconcile_every: Duration::from_secs(3_600),
    }
}

fn indexer(pool: &PgPool, api: &str) -> Arc<Indexer> {
    let metrics = IndexMetrics::register(&mut Registry::default());
    Indexer::new(pool.clone(), api, 16, Duration::from_secs(5), metrics)
}

async fn scan_pages_done(pool: &PgPool) -> usize {
    domain::crm::load_state(pool)
        .await
        .unwrap()
        .scan_pages_done
        .len()
}

/// Waits until the indexer declares the table exact at the upstream's final seq, then
/// checks it record by record.
async fn assert_converges(pool: &PgPool, upstream: &Upstream, within: Duration) {
    let started = Instant::now();
    loop {
        let state = domain::crm::load_state(pool).await.unwrap();
        let settled = upstream.crm.last_seq() > 0
            && !state.resync_needed
            && state.scan_id.is_none()
            && state
                .consistent_at_seq
                .is_some_and(|seq| seq >= upstream.crm.last_seq());
        if settled {
            break;
        }
        assert!(
            started.elapsed() < within,
            "not converged after {within:?}: {state:?}, upstream seq {}",
            upstream.crm.last_seq()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let report = domain::crm::verify(pool, &upstream.crm.snapshot())
        .await
        .unwrap();
    assert!(
        report.is_exact(),
        "{} missing, {} stale, {} ghosts: {report:?}",
        report.missing.len(),
        report.stale.len(),
        report.ghosts.len()
    );
    let stored = domain::customers::count(pool, Some(domain::customers::CustomerSource::Crm))
        .await
        .unwrap();
    assert_eq!(stored as usize, upstream.crm.len());
}

#[sqlx::test(migrations = "../migrations")]
async fn the_index_converges_exactly_under_churn_with_a_restart_mid_backfill(pool: PgPool) {
    // 100,000 records, a change every 2 ms for about 12 s, pages served with latency.
    let upstream = start_upstream(settings(100_000, 30, 2, 6_000), 0).await;
    let pacing = pacing(Duration::from_millis(500), Duration::from_secs(60));
    let (stop_first, stop) = Stop::manual();
    let first = tokio::spawn(run_indexer(
        indexer(&pool, &upstream.api),
        upstream.feed.clone(),
        pacing,
        stop,
    ));
    let started = Instant::now();
    while scan_pages_done(&pool).await < 30 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the backfill did not progress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_first.send(true).unwrap();
    first.await.unwrap().unwrap();
    let state = domain::crm::load_state(&pool).await.unwrap();
    let resumed_from = state.scan_pages_done.len();
    assert!(
        state.scan_id.is_some() && resumed_from >= 30,
        "the scan was not left to resume: {state:?}"
    );

    let (_stop_second, stop) = Stop::manual();
    let second = indexer(&pool, &upstream.api);
    tokio::spawn(run_indexer(second, upstream.feed.clone(), pacing, stop));
    // The second indexer continues the same scan instead of starting over.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let continued = domain::crm::load_state(&pool).await.unwrap();
    assert!(
        continued.scan_id == state.scan_id || continued.scan_id.is_none(),
        "a new scan started instead of resuming"
    );
    assert_converges(&pool, &upstream, Duration::from_secs(120)).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn lost_feed_events_are_detected_and_repaired(pool: PgPool) {
    // Every 7th event never reaches the indexer.
    let upstream = start_upstream(settings(3_000, 5, 3, 1_500), 7).await;
    let (_stop, stop) = Stop::manual();
    let indexer = indexer(&pool, &upstream.api);
    tokio::spawn(run_indexer(
        indexer,
        upstream.feed.clone(),
        pacing(Duration::from_millis(300), Duration::from_secs(30)),
        stop,
    ));
    assert_converges(&pool, &upstream, Duration::from_secs(90)).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn verify_finds_planted_missing_stale_and_ghost_records_and_repair_fixes_them(pool: PgPool) {
    let crm = Arc::new(CrmUpstream::new(settings(2_500, 0, 1, 0)));
    let api = start_api(crm.clone()).await;
    let indexer = indexer(&pool, &api);
    domain::crm::mark_resync_needed(&pool).await.unwrap();
    assert!(
        indexer.scan(&Stop::never()).await.unwrap(),
        "a scan of a quiet upstream is clean"
    );
    assert!(domain::crm::verify(&pool, &crm.snapshot())
        .await
        .unwrap()
        .is_exact());

    sqlx::query("DELETE FROM customers WHERE source = 'CRM' AND external_id = '10'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE customers SET first_name = 'Planted' WHERE source = 'CRM' AND external_id = '20'",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO customers (source, external_id, emails) VALUES ('CRM', '999999', '{}')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let report = domain::crm::verify(&pool, &crm.snapshot()).await.unwrap();
    assert_eq!(
        (
            report.missing.clone(),
            report.stale.clone(),
            report.ghosts.clone()
        ),
        (vec![10], vec![20], vec![999_999])
    );

    let database = testkit::database_url(&pool).await;
    let run = |extra: &'static [&'static str]| {
        let (api, database) = (api.clone(), database.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new(env!("CARGO_BIN_EXE_workers"))
                    .args(["index", "--verify"])
                    .args(extra)
                    .env("CRM_API_URL", api)
                    .env("DATABASE_URL", database)
                    .env("RUST_LOG", "warn")
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let output = run(&[]).await;
    let printed = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(output.status.code(), Some(1), "{printed}");
    assert!(
        printed.contains("database: 1 missing [10], 1 stale [20], 1 ghosts [999999]"),
        "{printed}"
    );
    let output = run(&["--repair"]).await;
    let printed = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(output.status.code(), Some(0), "{printed}");
    assert!(
        printed.contains("after repair: 0 missing [], 0 stale [], 0 ghosts []"),
        "{printed}"
    );
    assert_eq!(run(&[]).await.status.code(), Some(0));
}

/// The CRM simulator as a process: the original's feed (no `seq`) on `feed_port`, its API
/// on `api_port`, `changes` changes 5 ms apart, then quiet. Ready once its API answers.
async fn start_seq_less_simulator(
    seed: u64,
    api_port: u16,
    feed_port: u16,
    changes: u64,
) -> Process {
    let simulator = Launch::binary("workers")
        .args(["simulate", "--only", "crm"])
        .env("CRM_ADDR", format!("127.0.0.1:{api_port}"))
        .env("CRM_ZMQ_BIND", format!("tcp://127.0.0.1:{feed_port}"))
        .env("CRM_FEED_SEQ", "0")
        .env("CRM_SEED", seed.to_string())
        .env("CRM_RECORDS", "5000")
        .env("CRM_PAGE_SIZE", "500")
        .env("CRM_LATENCY_MS", "10")
        .env("CRM_CHANGE_INTERVAL_MS", "5")
        .env("CRM_MAX_CHANGES", changes.to_string())
        .env("RUST_LOG", "info")
        .start()
        .await;
    let url = format!("http://127.0.0.1:{api_port}/customers?page=1000");
    wait_until("the simulator answers", || async {
        reqwest::get(&url)
            .await
            .is_ok_and(|response| response.status() == 200)
    })
    .await;
    simulator
}

/// `workers index --verify [extra]` against `api`: its exit code and what it printed.
async fn verify_command(pool: &PgPool, api: &str, extra: &[&str]) -> (Option<i32>, String) {
    let output = Launch::binary("workers")
        .args(["index", "--verify"])
        .args(extra.iter().copied())
        .env("CRM_API_URL", api)
        .env("DATABASE_URL", testkit::database_url(pool).await)
        .start()
        .await
        .wait()
        .await;
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_seq_less_upstream_restarted_with_another_seed_converges_within_one_reconcile_interval(
    pool: PgPool,
) {
    const RECONCILE_SECS: u64 = 6;
    let (api_port, feed_port) = (testkit::free_port(), testkit::free_port());
    let api = format!("http://127.0.0.1:{api_port}");
    let mut first = start_seq_less_simulator(1, api_port, feed_port, 100_000).await;
    let database = testkit::database_url(&pool).await;
    let indexer = testkit::workers_launch(&database, &["index"])
        .env("CRM_API_URL", &api)
        .env("CRM_ZMQ_URL", format!("tcp://127.0.0.1:{feed_port}"))
        .env("INDEX_RECONCILE_SECS", RECONCILE_SECS.to_string())
        .env("INDEX_QUIET_MS", "500")
        .env("INDEX_MAX_RESYNC_WAIT_SECS", "3")
        .start()
        .await;
    // Churn with the first upstream, then it restarts with other data and churns on.
    wait_until_within("the backfill", Duration::from_secs(60), || async {
        domain::crm::load_state(&pool)
            .await
            .unwrap()
            .proved_exact_at
            .is_some()
            || domain::customers::count(&pool, Some(domain::customers::CustomerSource::Crm))
                .await
                .unwrap()
                >= 5_000
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    first.kill();
    let second = start_seq_less_simulator(2, api_port, feed_port, 1_500).await;
    wait_until_within(
        "the upstream goes quiet",
        Duration::from_secs(60),
        || async { second.stderr().contains("the upstream is quiet now") },
    )
    .await;
    let quiet_since = unix_now();

    // Within one reconcile interval (plus the scan itself) a content comparison proves
    // the table exact, and `--verify` agrees.
    let metrics = indexer.url("/metrics");
    wait_until_within(
        "a proof of exactness after the upstream went quiet",
        Duration::from_secs(RECONCILE_SECS + 10),
        || async {
            let text = testkit::http::get_text(&metrics).await;
            testkit::http::metric(&text, "index_last_exact_proof_timestamp_seconds")
                .is_some_and(|proved| proved >= quiet_since.floor())
        },
    )
    .await;
    let (code, printed) = verify_command(&pool, &api, &[]).await;
    assert_eq!(code, Some(0), "{printed}");
    assert!(
        printed.contains("database: 0 missing [], 0 stale [], 0 ghosts []"),
        "{printed}"
    );
    let text = testkit::http::get_text(&metrics).await;
    assert!(
        testkit::http::metric(&text, "index_records_fixed_total").is_some_and(|fixed| fixed > 0.0),
        "the reconcile corrected the old epoch's records: {text}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn repair_then_live_deletes_leave_no_ghost(pool: PgPool) {
    let crm = Arc::new(CrmUpstream::new(CrmSettings {
        feed_seq: false,
        ..settings(2_000, 0, 1, 0)
    }));
    let api = start_api(crm.clone()).await;
    let (mut publisher, feed) = crm::bind_feed("tcp://127.0.0.1:0").await.unwrap();
    let (_stop, stop) = Stop::manual();
    tokio::spawn(run_indexer(
        indexer(&pool, &api),
        feed,
        pacing(Duration::from_millis(200), Duration::from_secs(5)),
        stop,
    ));
    wait_until("the backfill proves the table exact", || async {
        let state = domain::crm::load_state(&pool).await.unwrap();
        state.proved_exact_at.is_some() && !state.resync_needed && state.scan_id.is_none()
    })
    .await;

    sqlx::query("DELETE FROM customers WHERE source = 'CRM' AND external_id = '10'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE customers SET first_name = 'Planted' WHERE source = 'CRM' AND external_id = '20'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let (code, printed) = verify_command(&pool, &api, &["--repair"]).await;
    assert_eq!(code, Some(0), "{printed}");
    assert!(
        printed.contains("database: 1 missing [10], 1 stale [20]"),
        "{printed}"
    );

    // The upstream deletes both repaired records; the feed says so (without seq).
    for id in [10, 20] {
        let event = crm.delete(id).unwrap();
        publisher
            .send(crm::feed_message(&event, false))
            .await
            .unwrap();
    }
    wait_until("the live DELETEs are applied", || async {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM customers WHERE source = 'CRM' AND external_id IN ('10', '20')",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        left == 0
    })
    .await;
    let report = domain::crm::verify(&pool, &crm.snapshot()).await.unwrap();
    assert!(report.is_exact(), "{report:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn unreadable_feed_messages_are_logged_and_counted(pool: PgPool) {
    let crm = Arc::new(CrmUpstream::new(settings(10, 0, 1, 0)));
    let api = start_api(crm).await;
    let (mut publisher, feed) = crm::bind_feed("tcp://127.0.0.1:0").await.unwrap();
    let database = testkit::database_url(&pool).await;
    let indexer = testkit::workers_launch(&database, &["index"])
        .env("CRM_API_URL", &api)
        .env("CRM_ZMQ_URL", &feed)
        .start()
        .await;
    let metrics = indexer.url("/metrics");
    let garbage = zeromq::ZmqMessage::try_from(vec![
        axum::body::Bytes::from_static(b"dataChanges"),
        axum::body::Bytes::from_static(br#"{"eventType": "MERGE", "data": {"id": 1}}"#),
    ])
    .unwrap();
    // Published until counted: the subscription takes a moment to reach the publisher.
    let started = Instant::now();
    loop {
        publisher.send(garbage.clone()).await.unwrap();
        let text = testkit::http::get_text(&metrics).await;
        if testkit::http::metric(&text, "index_feed_rejected_total").is_some_and(|n| n >= 1.0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never counted: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The log line is written before the count, but read from the child's pipe apart.
    wait_until("the unreadable message is logged", || async {
        let logged = indexer.stderr();
        logged.contains("unreadable CRM feed message dropped")
            && logged.contains("unknown eventType")
            && logged.contains("MERGE")
    })
    .await;
}
