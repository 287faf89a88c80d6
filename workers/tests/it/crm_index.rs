//! The CRM indexer against the simulator: exact convergence under heavy churn with a restart
//! in the middle of the backfill, lost feed events repaired, and `--verify` catching planted
//! differences.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use sqlx::PgPool;
use workers::index::{run_indexer, IndexMetrics, Indexer};
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
                publisher.send(crm::feed_message(&event)).await.unwrap();
            }
            tokio::time::sleep(interval).await;
        }
    });
    Upstream { crm, api, feed }
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
    let quiet = Duration::from_millis(500);
    let (stop_first, stop) = Stop::manual();
    let first = tokio::spawn(run_indexer(
        indexer(&pool, &upstream.api),
        upstream.feed.clone(),
        quiet,
        Duration::from_secs(60),
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
    tokio::spawn(run_indexer(
        second,
        upstream.feed.clone(),
        quiet,
        Duration::from_secs(60),
        stop,
    ));
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
        Duration::from_millis(300),
        Duration::from_secs(30),
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
