//! The `step_attempts` table: every try of every step, with its rendered input (recorded before
//! the step's side effect: the intent), its output or error, and the lease of the worker that
//! holds it.

use std::{fmt, time::Duration};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::runs::Job;

/// An attempt's state. `step_attempts_state_check` (migration 0014) holds the same list.
#[derive(
    sqlx::Type, Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq,
)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum AttemptState {
    /// The intent: recorded before the side effect, while a worker holds the step.
    Started,
    Succeeded,
    Failed,
    /// Its worker died during the call; never repeated.
    Interrupted,
}

impl AttemptState {
    pub const ALL: [AttemptState; 4] = [
        AttemptState::Started,
        AttemptState::Succeeded,
        AttemptState::Failed,
        AttemptState::Interrupted,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            AttemptState::Started => "started",
            AttemptState::Succeeded => "succeeded",
            AttemptState::Failed => "failed",
            AttemptState::Interrupted => "interrupted",
        }
    }
}

impl fmt::Display for AttemptState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct Attempt {
    pub step_index: i32,
    pub step_id: String,
    pub step_type: String,
    pub attempt: i32,
    pub state: AttemptState,
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub error: Option<Value>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Every attempt of a run, step by step.
pub async fn of_run(db: impl PgExecutor<'_>, run_id: Uuid) -> sqlx::Result<Vec<Attempt>> {
    sqlx::query_as(
        "SELECT step_index, step_id, step_type, attempt, state, input, output, error, started_at, finished_at
         FROM step_attempts WHERE run_id = $1 ORDER BY step_index, attempt",
    )
    .bind(run_id)
    .fetch_all(db)
    .await
}

/// A step's latest attempt, as the worker decides by it.
#[derive(sqlx::FromRow)]
pub struct LastAttempt {
    pub attempt: i32,
    pub state: AttemptState,
    pub lease_until: DateTime<Utc>,
}

pub async fn last(conn: &mut PgConnection, job: Job) -> sqlx::Result<Option<LastAttempt>> {
    sqlx::query_as(
        "SELECT attempt, state, lease_until FROM step_attempts
         WHERE run_id = $1 AND step_index = $2 ORDER BY attempt DESC LIMIT 1",
    )
    .bind(job.run_id)
    .bind(job.step_index)
    .fetch_optional(conn)
    .await
}

/// Closes an attempt whose worker died mid-call as interrupted.
pub async fn close_interrupted(
    conn: &mut PgConnection,
    job: Job,
    attempt: i32,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE step_attempts SET state = 'interrupted', finished_at = now(),
           output = '{\"interrupted\": true}'::jsonb
         WHERE run_id = $1 AND step_index = $2 AND attempt = $3",
    )
    .bind(job.run_id)
    .bind(job.step_index)
    .bind(attempt)
    .execute(conn)
    .await?;
    Ok(())
}

/// A new attempt: an intent (`Started`, with its owner and lease) or one that failed at once.
pub struct NewAttempt<'a> {
    pub job: Job,
    pub step_id: &'a str,
    pub step_type: &'a str,
    pub attempt: i32,
    pub state: AttemptState,
    pub input: Option<&'a Value>,
    pub error: Option<&'a Value>,
    pub lease: Duration,
    pub owner: Option<Uuid>,
}

pub async fn record(conn: &mut PgConnection, a: NewAttempt<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO step_attempts (run_id, step_index, step_id, step_type, attempt, state, input, error, lease_until, finished_at, owner)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + make_interval(secs => $9),
                 CASE WHEN $6 = 'started' THEN NULL ELSE now() END, $10)",
    )
    .bind(a.job.run_id)
    .bind(a.job.step_index)
    .bind(a.step_id)
    .bind(a.step_type)
    .bind(a.attempt)
    .bind(a.state)
    .bind(a.input)
    .bind(a.error)
    .bind(a.lease.as_secs_f64())
    .bind(a.owner)
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes an intent if it is still this execution's own (`owner`) and still started.
pub async fn forget_intent(
    db: impl PgExecutor<'_>,
    job: Job,
    attempt: i32,
    owner: Uuid,
) -> sqlx::Result<()> {
    sqlx::query(
        "DELETE FROM step_attempts
         WHERE run_id = $1 AND step_index = $2 AND attempt = $3 AND owner = $4 AND state = 'started'",
    )
    .bind(job.run_id)
    .bind(job.step_index)
    .bind(attempt)
    .bind(owner)
    .execute(db)
    .await?;
    Ok(())
}

/// Removes an attempt that turned out not to be one (a paced send, deferred).
pub async fn forget(conn: &mut PgConnection, job: Job, attempt: i32) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM step_attempts WHERE run_id = $1 AND step_index = $2 AND attempt = $3")
        .bind(job.run_id)
        .bind(job.step_index)
        .bind(attempt)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn succeeded(
    conn: &mut PgConnection,
    job: Job,
    attempt: i32,
    output: &Value,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE step_attempts SET state = 'succeeded', output = $4, finished_at = now()
         WHERE run_id = $1 AND step_index = $2 AND attempt = $3",
    )
    .bind(job.run_id)
    .bind(job.step_index)
    .bind(attempt)
    .bind(output)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn failed(
    conn: &mut PgConnection,
    job: Job,
    attempt: i32,
    error: &Value,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE step_attempts SET state = 'failed', error = $4, finished_at = now()
         WHERE run_id = $1 AND step_index = $2 AND attempt = $3",
    )
    .bind(job.run_id)
    .bind(job.step_index)
    .bind(attempt)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// How often a step failed: (failures that were not rate limits, rate limits).
pub async fn count_failures(conn: &mut PgConnection, job: Job) -> sqlx::Result<(i64, i64)> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE error->>'class' IS DISTINCT FROM 'Rate limited'),
                count(*) FILTER (WHERE error->>'class' = 'Rate limited')
         FROM step_attempts WHERE run_id = $1 AND step_index = $2 AND state = 'failed'",
    )
    .bind(job.run_id)
    .bind(job.step_index)
    .fetch_one(conn)
    .await
}
