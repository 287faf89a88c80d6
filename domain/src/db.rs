//! Connecting to PostgreSQL: creates the database when it is missing and applies the
//! migrations of `migrations/` (sqlx takes an advisory lock, so processes starting together
//! are safe).

use std::time::Duration;

use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool, Postgres};

use crate::config::{DatabaseArgs, DatabaseUrl};
use crate::{Error, Result};

/// The migrations, embedded at build time from `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// SQLSTATE `duplicate_database`: another process created it between our check and create.
const DUPLICATE_DATABASE: &str = "42P04";

/// SQLSTATE `unique_violation`: what PostgreSQL answers instead when the other process's
/// `CREATE DATABASE` is still committing (its `pg_database` row is not visible yet).
const UNIQUE_VIOLATION: &str = "23505";

/// How long PostgreSQL has to answer at start-up (creating the database if needed, then
/// the pool's first connection) before the process gives up, naming `DATABASE_URL`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// SQLSTATE `query_canceled`: a statement ran past `DATABASE_STATEMENT_TIMEOUT_SECS`.
pub const QUERY_CANCELED: &str = "57014";

/// Creates the database if needed, connects a pool (every connection with the statement
/// timeout) and applies pending migrations (on a connection of their own, without it). A
/// server that accepts the connection but never answers is an error within
/// [`CONNECT_TIMEOUT`], never a hang.
pub async fn connect_and_migrate(database: &DatabaseArgs, max_connections: u32) -> Result<PgPool> {
    let url = &database.database_url;
    let no_answer = || Error::NoAnswer {
        variable: "DATABASE_URL",
        seconds: CONNECT_TIMEOUT.as_secs(),
    };
    let connect = async {
        create_database_if_missing(url).await?;
        Ok::<_, Error>(
            pool_options(max_connections)
                .connect_with(database.connect_options())
                .await?,
        )
    };
    let pool = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(pool)) => pool,
        Ok(Err(Error::Database(sqlx::Error::PoolTimedOut))) | Err(_) => return Err(no_answer()),
        Ok(Err(error)) => return Err(error),
    };
    // A migration may take longer than any request should: its connection is closed after.
    let mut migrating = pool.acquire().await?.detach();
    sqlx::query("SET statement_timeout = 0")
        .execute(&mut migrating)
        .await?;
    MIGRATOR.run(&mut migrating).await?;
    Ok(pool)
}

/// A pooled connection idle at least this long is checked (a ping) before it is handed out.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(10);

/// Pool settings shared by every binary: a short acquire timeout so a dead database is an
/// error within seconds, never a hang. A connection that sat idle is pinged before use (and
/// replaced when the ping fails); one in steady use is not: sqlx's default pings before
/// every acquire, a second round trip for each statement (a fifth of the gateway's CPU for
/// a one-row query).
pub fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_WHEN_IDLE_FOR {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
}

async fn create_database_if_missing(url: &DatabaseUrl) -> Result<()> {
    if Postgres::database_exists(url.expose()).await? {
        return Ok(());
    }
    match Postgres::create_database(url.expose()).await {
        Ok(()) => {
            tracing::info!("created the database");
            Ok(())
        }
        Err(sqlx::Error::Database(error))
            if matches!(
                error.code().as_deref(),
                Some(DUPLICATE_DATABASE | UNIQUE_VIOLATION)
            ) =>
        {
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

/// Checks the database answers within `timeout`; the error says why not.
pub async fn ping(pool: &PgPool, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(pool)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!("database unreachable: {error}")),
        Err(_) => Err(format!(
            "database did not answer within {} ms",
            timeout.as_millis()
        )),
    }
}
