//! Customer search on PostgreSQL: typos, prefixes, partial records, ranking and filters.

use domain::crm::{apply_changes, Change, CrmRecord};
use domain::customers::CustomerSource;
use domain::search::search;
use sqlx::PgPool;

fn record(id: u64, first: Option<&str>, last: Option<&str>) -> CrmRecord {
    let email = match (first, last) {
        (None, None) => Vec::new(),
        _ => vec![format!(
            "{}@example.com",
            [first, last]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(".")
                .to_lowercase()
        )],
    };
    CrmRecord {
        email,
        first_name: first.map(str::to_owned),
        id,
        last_name: last.map(str::to_owned),
    }
}

async fn seed(pool: &PgPool) {
    let records = [
        record(1, Some("John"), Some("Smith")),
        record(2, Some("Jane"), Some("Smithson")),
        record(3, Some("Joanna"), Some("Brown")),
        record(4, None, Some("Smith")),
        record(5, Some("Peter"), None),
        record(6, None, None),
        record(7, Some("Johnny"), Some("Walker")),
    ];
    let changes: Vec<(u64, Change)> = records
        .into_iter()
        .map(|r| (1, Change::Upsert(r)))
        .collect();
    apply_changes(pool, &changes, 1).await.unwrap();
}

async fn ids(pool: &PgPool, query: &str) -> (i64, Vec<String>) {
    let result = search(pool, query, Some(CustomerSource::Crm), 20)
        .await
        .unwrap();
    (
        result.total_hits,
        result
            .customers
            .into_iter()
            .map(|c| c.key.external_id)
            .collect(),
    )
}

#[sqlx::test(migrations = "../migrations")]
async fn jon_smth_finds_john_smith_first(pool: PgPool) {
    seed(&pool).await;
    let (_, found) = ids(&pool, "jon smth").await;
    assert_eq!(found.first().map(String::as_str), Some("1"), "{found:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn prefixes_match_and_exact_words_rank_first(pool: PgPool) {
    seed(&pool).await;
    let (_, found) = ids(&pool, "jo").await;
    for id in ["1", "3", "7"] {
        assert!(
            found.contains(&id.to_owned()),
            "{id} missing from {found:?}"
        );
    }
    let (_, found) = ids(&pool, "smith").await;
    assert!(found.len() >= 3, "{found:?}");
    assert!(
        ["1", "4"].contains(&found[0].as_str()),
        "an exact smith ranks first: {found:?}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn partial_records_are_found_and_empty_ones_never(pool: PgPool) {
    seed(&pool).await;
    let (_, found) = ids(&pool, "peter").await;
    assert_eq!(found, ["5"]);
    let (total, found) = ids(&pool, "example").await;
    assert!(
        !found.contains(&"6".to_owned()),
        "a record with no name and no email is not indexed"
    );
    assert_eq!(total, 6);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_total_counts_every_hit_and_the_source_filters(pool: PgPool) {
    seed(&pool).await;
    let limited = search(&pool, "smith", Some(CustomerSource::Crm), 1)
        .await
        .unwrap();
    assert_eq!(limited.customers.len(), 1);
    assert!(limited.total_hits >= 3);
    let shop = search(&pool, "alice", Some(CustomerSource::Shop), 10)
        .await
        .unwrap();
    assert_eq!(
        shop.customers.len(),
        1,
        "the seed shop customer Alice Johnson"
    );
    let none = search(&pool, "alice", Some(CustomerSource::Crm), 10)
        .await
        .unwrap();
    assert_eq!(none.total_hits, 0);
    assert!(search(&pool, "   ", None, 10).await.is_err());
}
