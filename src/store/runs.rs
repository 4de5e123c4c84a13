//! The `runs` table: a run's state (status, step, the outputs of its steps) as the worker, the
//! matcher, the scheduler, the CLI and the API read and move it. The jobs that move runs
//! ([`Job`]) are defined here too: they are stored in the outbox and on timers.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor, types::Json};
use uuid::Uuid;

use super::outbox::{Destination, OutboxRow};
use crate::domain::CloudEvent;

/// A job on the jobs queue: run step `step_index` of run `run_id`, or, with `resume`, continue
/// a run that sleeps or waits at that step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub run_id: Uuid,
    pub step_index: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Resume>,
}

impl Job {
    pub fn step(run_id: Uuid, step_index: i32) -> Self {
        Job {
            run_id,
            step_index,
            resume: None,
        }
    }
}

/// Why a sleeping or waiting run continues; also the kind of the durable timer that says so.
#[derive(sqlx::Type, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Resume {
    /// A delay's time has come.
    Wake,
    /// A wait for a reply timed out.
    Timeout,
    /// A failed step's retry is due.
    Retry,
    /// The step was held back for an earlier run of the same contact: try it now.
    Turn,
}

impl Resume {
    pub const ALL: [Resume; 4] = [Resume::Wake, Resume::Timeout, Resume::Retry, Resume::Turn];

    pub fn as_str(self) -> &'static str {
        match self {
            Resume::Wake => "wake",
            Resume::Timeout => "timeout",
            Resume::Retry => "retry",
            Resume::Turn => "turn",
        }
    }
}

/// A run's status. `runs_status_check` (migration 0014) holds the same list.
#[derive(
    sqlx::Type, Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq,
)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Sleeping,
    Waiting,
    Retrying,
    Completed,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 8] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Sleeping,
        RunStatus::Waiting,
        RunStatus::Retrying,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Sleeping => "sleeping",
            RunStatus::Waiting => "waiting",
            RunStatus::Retrying => "retrying",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// A run in this status is over: nothing moves it again (but a dead letter's retry).
    pub const fn is_finished(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

impl std::str::FromStr for RunStatus {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        Self::parse(raw).ok_or_else(|| {
            let all: Vec<&str> = Self::ALL.iter().map(|s| s.as_str()).collect();
            format!("unknown status '{raw}' (one of {})", all.join(", "))
        })
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct RunSummary {
    pub id: Uuid,
    pub workflow: String,
    pub status: RunStatus,
    pub step_index: i32,
    pub customer_id: Option<String>,
    pub sender_id: Option<String>,
    pub event_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<Value>,
}

const SUMMARY_COLUMNS: &str = "id, workflow, status, step_index, customer_id, sender_id, event_id, created_at, finished_at, error";

#[derive(Debug, Default, Clone)]
pub struct RunFilter {
    pub workflow: Option<String>,
    pub status: Option<RunStatus>,
    /// The customer's id (phone digits) or phone (`+` and digits).
    pub customer: Option<String>,
    pub dispatch_id: Option<Uuid>,
    pub limit: i64,
}

pub async fn list(db: impl PgExecutor<'_>, filter: &RunFilter) -> sqlx::Result<Vec<RunSummary>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLUMNS} FROM runs
         WHERE ($1::text IS NULL OR workflow = $1) AND ($2::text IS NULL OR status = $2)
           AND ($4::text IS NULL OR customer_id = ltrim($4, '+')) AND ($5::uuid IS NULL OR dispatch_id = $5)
         ORDER BY created_at DESC, id DESC LIMIT $3"
    )))
    .bind(&filter.workflow)
    .bind(filter.status)
    .bind(filter.limit.max(1))
    .bind(&filter.customer)
    .bind(filter.dispatch_id)
    .fetch_all(db)
    .await
}

pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<RunSummary>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLUMNS} FROM runs WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// At most two runs whose id starts with `prefix` (lowercase hex): enough to tell one from many.
pub async fn find_by_prefix(
    db: impl PgExecutor<'_>,
    prefix: &str,
) -> sqlx::Result<Vec<RunSummary>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLUMNS} FROM runs WHERE id::text LIKE $1 || '%' LIMIT 2"
    )))
    .bind(prefix)
    .fetch_all(db)
    .await
}

/// A run as the locked path of the worker reads it: with its event, its row locked.
#[derive(sqlx::FromRow)]
pub struct LockedRun {
    pub workflow: String,
    pub status: RunStatus,
    pub step_index: i32,
    pub context: Value,
    pub cloudevent: Json<CloudEvent>,
    pub customer_id: Option<String>,
    pub sender_id: Option<String>,
}

/// Reads and locks (`FOR UPDATE`) a run with its event, inside the caller's transaction.
pub async fn lock(conn: &mut PgConnection, run_id: Uuid) -> sqlx::Result<Option<LockedRun>> {
    sqlx::query_as(
        "SELECT r.workflow, r.status, r.step_index, r.context, e.cloudevent, r.customer_id, r.sender_id
         FROM runs r JOIN events e ON e.id = r.event_id WHERE r.id = $1 FOR UPDATE OF r",
    )
    .bind(run_id)
    .fetch_optional(conn)
    .await
}

/// Locks a run and reads only where it is: its current step.
pub async fn lock_position(conn: &mut PgConnection, run_id: Uuid) -> sqlx::Result<Option<i32>> {
    sqlx::query_scalar("SELECT step_index FROM runs WHERE id = $1 FOR UPDATE")
        .bind(run_id)
        .fetch_optional(conn)
        .await
}

/// Stores a step's output under `steps.<id>` of the run's context.
pub async fn set_output(
    conn: &mut PgConnection,
    run_id: Uuid,
    step_id: &str,
    output: &Value,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE runs SET context = jsonb_set(context, ARRAY['steps', $2], $3, true), updated_at = now()
         WHERE id = $1",
    )
    .bind(run_id)
    .bind(step_id)
    .bind(output)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves the run to step `target`, queued for it.
pub async fn advance(conn: &mut PgConnection, run_id: Uuid, target: i32) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE runs SET step_index = $2, status = 'queued', updated_at = now() WHERE id = $1",
    )
    .bind(run_id)
    .bind(target)
    .execute(conn)
    .await?;
    Ok(())
}

/// Sets a run's status (running, sleeping, waiting, retrying), where it is.
pub async fn set_status(
    conn: &mut PgConnection,
    run_id: Uuid,
    status: RunStatus,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE runs SET status = $2, updated_at = now() WHERE id = $1")
        .bind(run_id)
        .bind(status)
        .execute(conn)
        .await?;
    Ok(())
}

/// Ends a run: completed, failed (with its error) or cancelled.
pub async fn finish(
    conn: &mut PgConnection,
    run_id: Uuid,
    status: RunStatus,
    error: Option<&Value>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE runs SET status = $2, error = $3, updated_at = now(), finished_at = now() WHERE id = $1",
    )
    .bind(run_id)
    .bind(status)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// Opens a failed run again at its failed step (a dead letter's retry). False when the run is
/// no longer failed at that step.
pub async fn reopen_failed(
    conn: &mut PgConnection,
    run_id: Uuid,
    step_index: i32,
) -> sqlx::Result<bool> {
    let moved = sqlx::query(
        "UPDATE runs SET status = 'queued', error = NULL, finished_at = NULL, updated_at = now()
         WHERE id = $1 AND status = 'failed' AND step_index = $2",
    )
    .bind(run_id)
    .bind(step_index)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(moved == 1)
}

/// A run that waits for its contact's reply.
#[derive(sqlx::FromRow)]
pub struct WaitingRun {
    pub id: Uuid,
    pub workflow: String,
    pub step_index: i32,
}

/// The runs of `customer` that wait for a reply on `sender`, locked.
pub async fn lock_waiting(
    conn: &mut PgConnection,
    sender: &str,
    customer: &str,
) -> sqlx::Result<Vec<WaitingRun>> {
    sqlx::query_as(
        "SELECT id, workflow, step_index FROM runs
         WHERE finished_at IS NULL AND status = 'waiting' AND sender_id = $1 AND customer_id = $2
         FOR UPDATE",
    )
    .bind(sender)
    .bind(customer)
    .fetch_all(conn)
    .await
}

/// Remembers which message resumed a waiting run.
pub async fn set_resumed_by(
    conn: &mut PgConnection,
    run_id: Uuid,
    message_id: &str,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE runs SET resumed_by = $2 WHERE id = $1")
        .bind(run_id)
        .bind(message_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether a run of `customer` waits for a reply on `sender`, or message `message_id` resumed
/// one already.
pub async fn waits_or_resumed_by(
    conn: &mut PgConnection,
    sender: &str,
    customer: &str,
    message_id: &str,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM runs WHERE finished_at IS NULL AND status = 'waiting'
                                       AND sender_id = $1 AND customer_id = $2)
             OR EXISTS (SELECT 1 FROM runs WHERE resumed_by = $3)",
    )
    .bind(sender)
    .bind(customer)
    .bind(message_id)
    .fetch_one(conn)
    .await
}

/// A run to create, with its first job.
pub struct NewRun {
    pub run_id: Uuid,
    pub workflow: String,
    pub event_id: Uuid,
    pub customer_id: Option<String>,
    pub sender_id: String,
    pub job: Value,
    pub dispatch_id: Option<Uuid>,
}

/// Creates runs and stages their first jobs, in one statement for many events (batched across
/// the events a matcher holds, `db::batch`); nothing for a run that exists already (a
/// redelivered event: its first job was staged with it).
#[derive(Clone)]
pub struct CreateRuns;

/// A new run's first job as staged (all `None` when the run existed).
#[derive(sqlx::FromRow)]
struct StagedRow {
    id: Option<i64>,
    destination: Option<String>,
    routing_key: Option<String>,
    body: Option<Value>,
}

impl crate::db::batch::Statement for CreateRuns {
    /// Shared with the caller, which keeps it for the log line: the batch takes no copy.
    type Input = std::sync::Arc<NewRun>;
    /// The first job's outbox row, `None` when the run existed.
    type Output = Option<OutboxRow>;

    async fn run(
        &self,
        conn: &mut PgConnection,
        all: &[std::sync::Arc<NewRun>],
    ) -> sqlx::Result<Vec<Option<OutboxRow>>> {
        let rows: Vec<StagedRow> = sqlx::query_as(
            "WITH x AS (
               SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[],
                                    $6::jsonb[], $7::uuid[])
                 WITH ORDINALITY AS x(id, workflow, event_id, customer_id, sender_id, job, dispatch_id, ord)
             ), run AS (
               INSERT INTO runs (id, workflow, event_id, customer_id, sender_id, status, context, dispatch_id)
               SELECT id, workflow, event_id, customer_id, sender_id, 'queued', jsonb_build_object('steps', '{}'::jsonb), dispatch_id
               FROM x ORDER BY ord
               ON CONFLICT (workflow, event_id) DO NOTHING
               RETURNING id
             ), job AS (
               INSERT INTO outbox (destination, routing_key, body, event_id)
               SELECT $8, '', x.job, NULL FROM x JOIN run ON run.id = x.id ORDER BY x.ord
               RETURNING id, destination, routing_key, body
             )
             SELECT job.id, job.destination, job.routing_key, job.body
             FROM x LEFT JOIN job ON job.body = x.job ORDER BY x.ord",
        )
        .bind(all.iter().map(|r| r.run_id).collect::<Vec<_>>())
        .bind(all.iter().map(|r| r.workflow.as_str()).collect::<Vec<_>>())
        .bind(all.iter().map(|r| r.event_id).collect::<Vec<_>>())
        .bind(all.iter().map(|r| r.customer_id.as_deref()).collect::<Vec<_>>())
        .bind(all.iter().map(|r| r.sender_id.as_str()).collect::<Vec<_>>())
        .bind(all.iter().map(|r| &r.job).collect::<Vec<_>>())
        .bind(all.iter().map(|r| r.dispatch_id).collect::<Vec<_>>())
        .bind(Destination::Jobs)
        .fetch_all(conn)
        .await?;
        let rows = crate::db::batch::one_row_each(rows, all.len(), "creating runs")?;
        Ok(rows
            .into_iter()
            .map(|r| OutboxRow::from_columns(r.id, r.destination, r.routing_key, r.body))
            .collect())
    }
}

/// Runs that should be moving and are not: queued or running, untouched for `after`, with no
/// timer and no job in the outbox (a job lost between the queue and a worker, or dead-lettered
/// and lost). Their current step's job, at most 500, oldest first; the worker's checks make a
/// job that was in fact still on its way harmless.
pub async fn stranded(
    conn: &mut PgConnection,
    after: std::time::Duration,
) -> sqlx::Result<Vec<Job>> {
    let rows: Vec<(Uuid, i32)> = sqlx::query_as(
        "SELECT r.id, r.step_index FROM runs r
         WHERE r.finished_at IS NULL AND r.status IN ('queued', 'running')
           AND r.updated_at < now() - make_interval(secs => $1)
           AND NOT EXISTS (SELECT 1 FROM timers t WHERE t.run_id = r.id)
           AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.destination = 'jobs'
                                                    AND o.body ->> 'run_id' = r.id::text)
         ORDER BY r.updated_at LIMIT 500
         FOR UPDATE OF r SKIP LOCKED",
    )
    .bind(after.as_secs_f64())
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|(id, _)| *id).collect();
    // Touched, so that the next sweep leaves them the same time again.
    sqlx::query("UPDATE runs SET updated_at = now() WHERE id = ANY($1)")
        .bind(&ids)
        .execute(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(run_id, step_index)| Job::step(run_id, step_index))
        .collect())
}
