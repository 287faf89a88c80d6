//! Warm connections (`domain::warm`): a released lease's connection is the next lease's,
//! as it was; one dropped without release goes back through sqlx; and none stays parked
//! while the pool's other users wait for it.

use std::time::Duration;

use domain::warm::{WarmConnections, PARKED_AT_MOST};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

/// A pool of one connection to the test's database, that waits `acquire` seconds at most.
async fn pool_of_one(pool: &PgPool, acquire: Duration) -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(acquire)
        .connect_with(pool.connect_options().as_ref().clone())
        .await
        .unwrap()
}

async fn backend_of(connection: &mut sqlx::PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(connection)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_released_connection_is_the_next_lease_and_a_dropped_one_is_not(pool: PgPool) {
    let warm = WarmConnections::new(pool_of_one(&pool, Duration::from_secs(5)).await);
    let mut lease = warm.lease().await.unwrap();
    let first = backend_of(&mut lease).await;
    lease.release();
    assert_eq!(warm.parked_count(), 1);

    let mut lease = warm.lease().await.unwrap();
    assert_eq!(
        warm.parked_count(),
        0,
        "the lease took the parked connection"
    );
    assert_eq!(
        backend_of(&mut lease).await,
        first,
        "the same session, kept warm"
    );
    // A statement left unread (as a cancelled request leaves it), then dropped: sqlx's own
    // release cleans the connection before anyone gets it again.
    {
        let mut rows = sqlx::query_scalar::<_, i32>("SELECT g FROM generate_series(1, 100000) g")
            .fetch(&mut *lease);
        let _ = futures_util::StreamExt::next(&mut rows).await;
    }
    drop(lease);
    assert_eq!(
        warm.parked_count(),
        0,
        "a lease dropped unreleased is not parked"
    );

    let mut lease = warm.lease().await.unwrap();
    assert_eq!(
        sqlx::query_scalar::<_, i32>("SELECT 7")
            .fetch_one(&mut *lease)
            .await
            .unwrap(),
        7,
        "the connection answers its next statement, not the abandoned one's rows"
    );
    lease.release();
}

#[sqlx::test(migrations = "../migrations")]
async fn a_parked_connection_goes_back_to_the_pool_for_its_other_users(pool: PgPool) {
    // The pool's only connection is parked; its other users must get it once it has been
    // parked for PARKED_AT_MOST, well within their acquire timeout.
    let timeout = PARKED_AT_MOST * 5;
    let one = pool_of_one(&pool, timeout).await;
    let warm = WarmConnections::new(one.clone());
    let mut lease = warm.lease().await.unwrap();
    backend_of(&mut lease).await;
    lease.release();
    assert_eq!(warm.parked_count(), 1);

    let mut other = one
        .acquire()
        .await
        .expect("the parked connection went back to the pool");
    backend_of(&mut other).await;
    assert_eq!(warm.parked_count(), 0);
}
