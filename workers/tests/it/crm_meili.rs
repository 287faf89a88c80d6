//! The Meilisearch backend, against a real Meilisearch. These tests run whenever `MEILI_URL`
//! is set (with `MEILI_MASTER_KEY` if the instance has one); Meilisearch cannot be installed
//! on the development machines, so without it they say so and do nothing.

use std::sync::Arc;
use std::time::Duration;

use domain::crm::{apply_changes, Change, CrmRecord};
use domain::meili::{settings, MeiliSearch};
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use testkit::unique;
use workers::index::{IndexMetrics, Indexer};
use workers::simulate::crm::{self, CrmSettings, CrmUpstream};
use workers::stop::Stop;

fn meili(index: &str) -> Option<MeiliSearch> {
    let Ok(url) = std::env::var("MEILI_URL") else {
        eprintln!("MEILI_URL is unset: the Meilisearch tests are not run");
        return None;
    };
    let key = std::env::var("MEILI_MASTER_KEY").ok();
    Some(MeiliSearch::with_index(&url, key.as_deref(), index).unwrap())
}

fn record(id: u64, first: Option<&str>, last: Option<&str>, email: &[&str]) -> CrmRecord {
    CrmRecord {
        email: email.iter().map(|e| e.to_string()).collect(),
        first_name: first.map(str::to_owned),
        id,
        last_name: last.map(str::to_owned),
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn the_index_has_the_contract_settings_and_finds_jon_smth(pool: PgPool) {
    let Some(search) = meili(&unique("settings")) else {
        return;
    };
    search.prepare().await.unwrap();
    let in_use = search.settings_in_use().await.unwrap();
    let wanted = settings();
    assert_eq!(in_use.searchable_attributes, wanted.searchable_attributes);
    assert_eq!(in_use.ranking_rules, wanted.ranking_rules);
    assert_eq!(in_use.displayed_attributes, wanted.displayed_attributes);
    assert_eq!(
        in_use
            .typo_tolerance
            .unwrap()
            .min_word_size_for_typos
            .unwrap()
            .one_typo,
        Some(3)
    );
    let records = [
        record(1, Some("John"), Some("Smith"), &["john.smith@example.com"]),
        record(2, Some("Jane"), Some("Doe"), &["jane@example.com"]),
        record(3, None, Some("Smithers"), &["smithers@example.com"]),
        record(4, None, None, &[]),
    ];
    let changes: Vec<(u64, Change)> = records
        .iter()
        .cloned()
        .map(|r| (1, Change::Upsert(r)))
        .collect();
    apply_changes(&pool, &changes, 1).await.unwrap();
    search.sync_ids(&pool, &[1, 2, 3, 4]).await.unwrap();
    let (ids, total) = search.search("jon smth", 5).await.unwrap();
    assert_eq!(ids.first(), Some(&1), "{ids:?}");
    assert!(total >= 1);
    let documents = search.all_documents().await.unwrap();
    assert!(
        !documents.contains_key(&4),
        "a record with no name and no email is left out"
    );
    assert_eq!(
        documents[&3].first_name, "",
        "a null name is indexed as an empty string"
    );
    assert_eq!(documents[&1].searchable_name, "John Smith");
    search.delete_index().await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn verify_and_reindex_keep_the_index_equal_to_the_table(pool: PgPool) {
    let Some(search) = meili(&unique("reindex")) else {
        return;
    };
    search.prepare().await.unwrap();
    let records: Vec<CrmRecord> = (1..=50)
        .map(|id| {
            record(
                id,
                Some("Ann"),
                Some(&format!("Lee{id}")),
                &["ann@example.com"],
            )
        })
        .collect();
    let changes: Vec<(u64, Change)> = records
        .iter()
        .cloned()
        .map(|r| (1, Change::Upsert(r)))
        .collect();
    apply_changes(&pool, &changes, 1).await.unwrap();
    search
        .sync_ids(
            &pool,
            &records[..40].iter().map(|r| r.id).collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    let report = search.verify(&records).await.unwrap();
    assert_eq!(report.missing, (41..=50).collect::<Vec<_>>());
    assert_eq!(search.reindex(&pool, &|_, _| {}).await.unwrap(), 50);
    assert!(search.verify(&records).await.unwrap().is_exact());
    search.delete_index().await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn the_indexer_keeps_meilisearch_in_step_with_its_scans(pool: PgPool) {
    let Some(search) = meili(&unique("indexer")) else {
        return;
    };
    search.prepare().await.unwrap();
    let upstream = Arc::new(CrmUpstream::new(CrmSettings {
        records: 1_500,
        page_size: 1000,
        latency: Duration::ZERO,
        change_interval: Duration::from_secs(3600),
        max_changes: Some(0),
        seed: 3,
        error_rate: 0.0,
        feed_seq: true,
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, crm::router(upstream.clone()))
            .await
            .unwrap()
    });
    let indexer = Indexer::new(
        pool.clone(),
        &api,
        4,
        Duration::from_secs(5),
        IndexMetrics::register(&mut Registry::default()),
    );
    indexer.use_search(search.clone());
    domain::crm::mark_resync_needed(&pool).await.unwrap();
    assert!(indexer.scan(&Stop::never()).await.unwrap());
    let truth: Vec<CrmRecord> = domain::crm::stored_records(&pool)
        .await
        .unwrap()
        .into_values()
        .collect();
    assert!(search.verify(&truth).await.unwrap().is_exact());
    search.delete_index().await.unwrap();
}

/// `MEILI_URL`, `MEILI_MASTER_KEY` (when set) and `MEILI_INDEX` for a child process.
fn meili_env(index: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("MEILI_URL".to_owned(), std::env::var("MEILI_URL").unwrap()),
        ("MEILI_INDEX".to_owned(), index.to_owned()),
    ];
    if let Ok(key) = std::env::var("MEILI_MASTER_KEY") {
        env.push(("MEILI_MASTER_KEY".to_owned(), key));
    }
    env
}

#[sqlx::test(migrations = "../migrations")]
async fn workers_index_with_meili_url_fills_the_index_the_gateway_searches(pool: PgPool) {
    let index = unique("binary");
    let Some(search) = meili(&index) else {
        return;
    };
    let upstream = Arc::new(CrmUpstream::new(CrmSettings {
        records: 1_200,
        page_size: 500,
        latency: Duration::ZERO,
        change_interval: Duration::from_secs(3600),
        max_changes: Some(0),
        seed: 4,
        error_rate: 0.0,
        feed_seq: true,
    }));
    let api = testkit::serve(crm::router(upstream.clone())).await;
    let database = testkit::database_url(&pool).await;
    let env = meili_env(&index);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let indexer = testkit::workers_launch(&database, &["index"])
        .env("CRM_API_URL", &api)
        .envs(&env)
        .start()
        .await;
    let wanted = upstream.snapshot();
    testkit::wait_until_within(
        "Meilisearch holds every record",
        Duration::from_secs(60),
        || async {
            search
                .verify(&wanted)
                .await
                .is_ok_and(|report| report.is_exact())
        },
    )
    .await;
    let in_use = search.settings_in_use().await.unwrap();
    assert_eq!(
        in_use.searchable_attributes,
        settings().searchable_attributes
    );
    drop(indexer);

    // The gateway given the same variables finds what the indexer wrote.
    let gateway = testkit::spawn_gateway(&database, &env).await;
    let found = testkit::http::graphql(
        &gateway.base(),
        "{ searchCustomers(query: \"smith\", first: 3) { totalHits } }",
        serde_json::json!({}),
    )
    .await;
    assert!(
        found["data"]["searchCustomers"]["totalHits"].as_i64() > Some(0),
        "{found}"
    );

    // The CRM apps' search route pages the same index by id, descending.
    let (status, listed) =
        testkit::http::get_json(&format!("{}/search?q=&page=2", gateway.base())).await;
    assert_eq!(status, 200, "{listed}");
    let listed: Vec<u64> = listed["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|hit| hit["id"].as_u64().unwrap())
        .collect();
    let mut indexable: Vec<u64> = wanted
        .iter()
        .filter_map(domain::meili::MeiliDocument::from_record)
        .map(|document| document.id)
        .collect();
    indexable.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(listed, indexable[100..200]);

    // `--reindex` rebuilds it (and exits), `--verify` checks it.
    let run = |args: &'static [&'static str]| {
        testkit::Launch::binary("workers")
            .args(args.iter().copied())
            .env("DATABASE_URL", &database)
            .env("CRM_API_URL", &api)
            .envs(&env)
    };
    let reindexed = run(&["index", "--reindex"]).start().await.wait().await;
    let printed = String::from_utf8_lossy(&reindexed.stdout).into_owned();
    assert!(reindexed.status.success(), "{printed}");
    assert!(printed.contains("reindex done:"), "{printed}");
    let verified = run(&["index", "--verify"]).start().await.wait().await;
    let printed = String::from_utf8_lossy(&verified.stdout).into_owned();
    assert!(verified.status.success(), "{printed}");
    assert!(
        printed.contains("search index (Meilisearch): 0 missing [], 0 stale [], 0 ghosts []"),
        "{printed}"
    );
    search.delete_index().await.unwrap();
}
