//! The `quarantine` table: signed bodies Herald could not parse or route, kept whole with the
//! reason, and what replaying them did.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;
use uuid::Uuid;

pub async fn insert(
    db: impl PgExecutor<'_>,
    id: Uuid,
    source: &str,
    body: &[u8],
    reason: &str,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO quarantine (id, source, body, reason) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(source)
        .bind(body)
        .bind(reason)
        .execute(db)
        .await?;
    Ok(())
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Entry {
    pub id: Uuid,
    pub source: String,
    pub reason: String,
    pub received_at: DateTime<Utc>,
    pub replayed_at: Option<DateTime<Utc>>,
    pub replay_result: Option<String>,
    pub size: i32,
}

pub async fn list(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<Entry>> {
    sqlx::query_as(
        "SELECT id, source, reason, received_at, replayed_at, replay_result, length(body) AS size
         FROM quarantine ORDER BY received_at DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}

pub async fn body(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<Vec<u8>>> {
    sqlx::query_scalar("SELECT body FROM quarantine WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn mark_replayed(db: impl PgExecutor<'_>, id: Uuid, result: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE quarantine SET replayed_at = now(), replay_result = $2 WHERE id = $1")
        .bind(id)
        .bind(result)
        .execute(db)
        .await?;
    Ok(())
}
