//! The `dead_letters` table: steps that failed for good, with the error, the input tried and
//! the attempts; an operator's retry marks its letter once.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::runs::Job;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeadLetter {
    pub id: Uuid,
    pub run_id: Uuid,
    pub workflow: String,
    pub step_index: i32,
    pub step_id: String,
    pub step_type: String,
    pub customer_id: Option<String>,
    pub error: Value,
    pub input: Option<Value>,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub retried_at: Option<DateTime<Utc>>,
}

/// What a new dead letter records.
pub struct NewDeadLetter<'a> {
    pub job: Job,
    pub workflow: &'a str,
    pub step_id: &'a str,
    pub step_type: &'a str,
    pub customer_id: Option<&'a str>,
    pub error: &'a Value,
    pub input: Option<&'a Value>,
    pub attempts: i32,
}

pub async fn insert(conn: &mut PgConnection, id: Uuid, d: &NewDeadLetter<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO dead_letters (id, run_id, workflow, step_index, step_id, step_type, customer_id, error, input, attempts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(id)
    .bind(d.job.run_id)
    .bind(d.workflow)
    .bind(d.job.step_index)
    .bind(d.step_id)
    .bind(d.step_type)
    .bind(d.customer_id)
    .bind(d.error)
    .bind(d.input)
    .bind(d.attempts)
    .execute(conn)
    .await?;
    Ok(())
}

const COLUMNS: &str = "id, run_id, workflow, step_index, step_id, step_type, customer_id, error, input, attempts, created_at, retried_at";

pub async fn list(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<DeadLetter>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM dead_letters ORDER BY created_at DESC LIMIT $1"
    )))
    .bind(limit.max(1))
    .fetch_all(db)
    .await
}

pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<DeadLetter>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM dead_letters WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// A letter locked for its retry: its run, step and when it was retried, if it was.
#[derive(sqlx::FromRow)]
pub struct LockedLetter {
    pub run_id: Uuid,
    pub step_index: i32,
    pub retried_at: Option<DateTime<Utc>>,
}

pub async fn lock(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<LockedLetter>> {
    sqlx::query_as(
        "SELECT run_id, step_index, retried_at FROM dead_letters WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

pub async fn mark_retried(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<()> {
    sqlx::query("UPDATE dead_letters SET retried_at = now() WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}
