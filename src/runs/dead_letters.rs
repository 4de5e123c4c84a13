//! Dead letters: steps that failed for good, with the error, the input tried and the attempts.
//! An operator fixes the cause and retries: the run continues at the failed step.

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{Job, finish_run};
use crate::bus::{
    Bus, Destination,
    outbox::{self, OutboxRow},
};

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

/// Records a dead letter and fails the run, in the caller's transaction.
pub async fn record(
    tx: &mut Transaction<'_, Postgres>,
    d: NewDeadLetter<'_>,
) -> anyhow::Result<Uuid> {
    let id = Uuid::now_v7();
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
    .execute(&mut **tx)
    .await
    .context("record dead letter")?;
    let mut error = d.error.clone();
    error["step"] = Value::from(d.step_id);
    error["dead_letter"] = Value::from(id.to_string());
    finish_run(tx, d.job, "failed", Some(&error)).await?;
    Ok(id)
}

const COLUMNS: &str = "id, run_id, workflow, step_index, step_id, step_type, customer_id, error, input, attempts, created_at, retried_at";

pub async fn list(pool: &PgPool, limit: i64) -> anyhow::Result<Vec<DeadLetter>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM dead_letters ORDER BY created_at DESC LIMIT $1"
    )))
    .bind(limit.max(1))
    .fetch_all(pool)
    .await
    .context("list dead letters")
}

pub async fn show(pool: &PgPool, id: Uuid) -> anyhow::Result<Option<DeadLetter>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM dead_letters WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
    .context("load dead letter")
}

/// Continues the run at the failed step (a new attempt). Once per dead letter.
pub async fn retry(pool: &PgPool, bus: &Bus, id: Uuid) -> anyhow::Result<Uuid> {
    let mut tx = pool.begin().await.context("begin retry")?;
    let letter: Option<(Uuid, i32, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT run_id, step_index, retried_at FROM dead_letters WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .context("load dead letter")?;
    let Some((run_id, step_index, retried_at)) = letter else {
        bail!("no dead letter {id}");
    };
    if let Some(at) = retried_at {
        bail!("dead letter {id} was retried already at {at}");
    }
    let moved = sqlx::query(
        "UPDATE runs SET status = 'queued', error = NULL, finished_at = NULL, updated_at = now()
         WHERE id = $1 AND status = 'failed' AND step_index = $2",
    )
    .bind(run_id)
    .bind(step_index)
    .execute(&mut *tx)
    .await
    .context("reopen run")?
    .rows_affected();
    if moved != 1 {
        bail!("run {run_id} is no longer failed at that step");
    }
    sqlx::query("UPDATE dead_letters SET retried_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .context("mark retried")?;
    let row: OutboxRow = outbox::stage(
        &mut tx,
        Destination::Jobs,
        "",
        &serde_json::to_value(Job::step(run_id, step_index))?,
        None,
    )
    .await
    .context("stage job")?;
    tx.commit().await.context("commit retry")?;
    if let Err(e) = outbox::flush(bus, pool, &[row]).await {
        tracing::warn!(error = %e, "retry job not published yet; the outbox relay will");
    }
    Ok(run_id)
}
