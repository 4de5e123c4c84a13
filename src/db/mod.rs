//! PostgreSQL: the pool, the migrations, and statements batched across callers (`batch`).
//! Queries live in `store`, one module per table or tight group of tables.

pub mod batch;

use std::time::Duration;

use anyhow::Context;
use sqlx::{PgPool, postgres::PgPoolOptions};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens a pool; fails fast (5 s) when PostgreSQL is unreachable.
///
/// Idle connections are not pinged before use (sqlx's default costs a round trip per
/// transaction; sqlx pings on release anyway and closes a connection that fails): a connection
/// that broke while idle fails its one statement or transaction, which the caller treats like
/// any database error (503 to the webhook, requeue of the delivery), and is then closed.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .connect(url)
        .await
        .context("connect to PostgreSQL (HERALD_DATABASE_URL)")
}

pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("apply database migrations")
}

/// Whether PostgreSQL answers a statement.
pub async fn ping(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}

/// Whether PostgreSQL refused the data itself (SQLSTATE class 22, data exception, such as a
/// NUL in text; or class 54, program limit exceeded, such as an over-long index key): the
/// same data fails the same way every time, so it is quarantined, never retried.
pub fn is_data_error(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code.starts_with("22") || code.starts_with("54"))
}
