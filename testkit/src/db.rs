//! Databases for tests and benches. Tests get theirs from `#[sqlx::test]`; [`database_url`]
//! gives its URL to the binaries a test spawns. Benches make a named one with
//! [`fresh_database`] (dropped and recreated, migrated). The server is the one in
//! `DATABASE_URL` (as for `#[sqlx::test]`), by default `postgres://postgres@127.0.0.1:5432/postgres`.

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

/// The repository's migrations, the same ones `#[sqlx::test(migrations = "../migrations")]` runs.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// The server's maintenance URL: `DATABASE_URL`, or the local default.
pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `server_url()` with its database replaced by `name` (query parameters kept).
pub fn url_for(name: &str) -> String {
    let server = server_url();
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base.to_owned(), format!("?{query}")),
        None => (server.clone(), String::new()),
    };
    let (without_database, _) = base
        .rsplit_once('/')
        .unwrap_or_else(|| panic!("DATABASE_URL {server:?} names no database"));
    format!("{without_database}/{name}{query}")
}

/// The URL of the database `pool` is connected to (a `#[sqlx::test]` pool's own database),
/// for the child processes a test starts.
pub async fn database_url(pool: &PgPool) -> String {
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(pool)
        .await
        .expect("the test database answers");
    url_for(&name)
}

/// A migrated database of a bench's own, made empty at start.
#[derive(Debug)]
pub struct FreshDatabase {
    /// Its name on the server.
    pub name: String,
    /// Its URL, for the binaries a bench starts.
    pub url: String,
    /// A pool of the size asked for.
    pub pool: PgPool,
}

/// Drops the database `name` if it exists (closing its connections), creates it again,
/// runs the migrations and connects a pool of `max_connections`. It is left in place
/// afterwards, to look at; [`FreshDatabase::remove`] drops it.
pub async fn fresh_database(name: &str, max_connections: u32) -> FreshDatabase {
    drop_database(name).await;
    admin(&format!("CREATE DATABASE \"{name}\"")).await;
    let url = url_for(name);
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .connect(&url)
        .await
        .unwrap_or_else(|error| panic!("connect to {name}: {error}"));
    MIGRATOR
        .run(&pool)
        .await
        .unwrap_or_else(|error| panic!("migrate {name}: {error}"));
    FreshDatabase {
        name: name.to_owned(),
        url,
        pool,
    }
}

impl FreshDatabase {
    /// Closes the pool and drops the database.
    pub async fn remove(self) {
        self.pool.close().await;
        drop_database(&self.name).await;
    }
}

/// Drops the database `name` if it exists, closing its connections first.
pub async fn drop_database(name: &str) {
    admin(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await;
}

/// Runs one statement on the server's maintenance database.
async fn admin(statement: &str) {
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&server_url())
        .await
        .unwrap_or_else(|error| panic!("PostgreSQL at DATABASE_URL is unreachable: {error}"));
    sqlx::query(statement)
        .execute(&admin)
        .await
        .unwrap_or_else(|error| panic!("{statement}: {error}"));
    admin.close().await;
}
