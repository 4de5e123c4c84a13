//! The `timers` table: durable timers (delays, reply timeouts, retries, turns). The scheduler
//! claims due rows with `FOR UPDATE SKIP LOCKED` and deletes them in the transaction that
//! stages their jobs: a timer fires once, even with several schedulers.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::runs::{Job, Resume};

/// Sets a timer that resumes `job`'s run at its step, as `kind` says, at `due`.
pub async fn set(
    conn: &mut PgConnection,
    job: Job,
    kind: Resume,
    due: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO timers (run_id, step_index, kind, due_at) VALUES ($1, $2, $3, $4)")
        .bind(job.run_id)
        .bind(job.step_index)
        .bind(kind)
        .bind(due)
        .execute(conn)
        .await?;
    Ok(())
}

/// Sets a `turn` timer `after` from now (the database's clock).
pub async fn set_turn(db: impl PgExecutor<'_>, job: Job, after: Duration) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO timers (run_id, step_index, kind, due_at)
         VALUES ($1, $2, 'turn', now() + make_interval(secs => $3))",
    )
    .bind(job.run_id)
    .bind(job.step_index)
    .bind(after.as_secs_f64())
    .execute(db)
    .await?;
    Ok(())
}

/// Cancels a run's reply timeout.
pub async fn cancel_timeout(conn: &mut PgConnection, run_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM timers WHERE run_id = $1 AND kind = 'timeout'")
        .bind(run_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Claims and deletes up to 500 due timers, inside the caller's transaction: the jobs they
/// resume.
pub async fn claim_due(conn: &mut PgConnection) -> sqlx::Result<Vec<Job>> {
    let due: Vec<(Uuid, i32, Resume)> = sqlx::query_as(
        "DELETE FROM timers WHERE id IN (
             SELECT id FROM timers WHERE due_at <= now() ORDER BY due_at LIMIT 500
             FOR UPDATE SKIP LOCKED)
         RETURNING run_id, step_index, kind",
    )
    .fetch_all(conn)
    .await?;
    Ok(due
        .into_iter()
        .map(|(run_id, step_index, resume)| Job {
            run_id,
            step_index,
            resume: Some(resume),
        })
        .collect())
}
