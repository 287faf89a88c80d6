//! The per-source counts behind `total` and `totalCount` stay exact through inserts,
//! upserts of existing rows, deletes and truncates.

use domain::accounts::{store, AccountRecord};
use domain::customers::{count, CustomerSource};
use sqlx::PgPool;

fn records(range: std::ops::Range<u32>) -> Vec<AccountRecord> {
    range
        .map(|n| AccountRecord {
            customer_id: format!("C{n:05}"),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            email: format!("ada{n}@example.com"),
            phone: None,
            address: None,
            date_of_birth: None,
            account_balance: None,
            created_at: None,
        })
        .collect()
}

async fn scanned(pool: &PgPool, source: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM customers WHERE source = $1")
        .bind(source)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn assert_exact(pool: &PgPool) {
    let accounts = count(pool, Some(CustomerSource::Accounts)).await.unwrap();
    assert_eq!(accounts, scanned(pool, "ACCOUNTS").await);
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM customers")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(count(pool, None).await.unwrap(), all);
}

#[sqlx::test(migrations = "../migrations")]
async fn counts_follow_inserts_upserts_deletes_and_truncates(pool: PgPool) {
    assert_eq!(
        count(&pool, Some(CustomerSource::Shop)).await.unwrap(),
        10,
        "the seed shop customers"
    );
    sqlx::query("DELETE FROM customers")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(count(&pool, None).await.unwrap(), 0);
    store(&pool, records(0..12_000)).await.unwrap();
    assert_exact(&pool).await;
    assert_eq!(
        count(&pool, Some(CustomerSource::Accounts)).await.unwrap(),
        12_000
    );

    // Half already stored, half new: only the new ones count.
    store(&pool, records(6_000..18_000)).await.unwrap();
    assert_exact(&pool).await;
    assert_eq!(count(&pool, None).await.unwrap(), 18_000);

    sqlx::query("DELETE FROM customers WHERE external_id < 'C01000'")
        .execute(&pool)
        .await
        .unwrap();
    assert_exact(&pool).await;
    assert_eq!(count(&pool, None).await.unwrap(), 17_000);
    assert_eq!(count(&pool, Some(CustomerSource::Crm)).await.unwrap(), 0);

    sqlx::query("TRUNCATE customers")
        .execute(&pool)
        .await
        .unwrap();
    assert_exact(&pool).await;
    assert_eq!(count(&pool, None).await.unwrap(), 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_rolled_back_write_leaves_the_counts_alone(pool: PgPool) {
    sqlx::query("DELETE FROM customers")
        .execute(&pool)
        .await
        .unwrap();
    store(&pool, records(0..10)).await.unwrap();
    let mut transaction = pool.begin().await.unwrap();
    sqlx::query("DELETE FROM customers")
        .execute(&mut *transaction)
        .await
        .unwrap();
    transaction.rollback().await.unwrap();
    assert_eq!(count(&pool, None).await.unwrap(), 10);
    assert_exact(&pool).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_customer_cannot_move_to_another_source(pool: PgPool) {
    store(&pool, records(0..1)).await.unwrap();
    let error = sqlx::query("UPDATE customers SET source = 'CRM'")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("cannot change"), "{error}");
    assert_exact(&pool).await;
}
