//! Runs: run state and history in PostgreSQL, read by the worker, the CLI and the API.

use anyhow::Context;

use crate::bus::{
    Destination,
    outbox::{self, OutboxRow},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// A job on the jobs queue: run step `step_index` of run `run_id`, or, with `resume`, continue
/// a run that sleeps or waits at that step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub run_id: Uuid,
    pub step_index: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Resume>,
}

/// A run's data as its steps see it: what its event says (`trigger` and `event`, as the trigger
/// filter saw them) and what the run keeps itself (`steps`, each step's output). The run's row
/// keeps only the latter, so that the row every step rewrites stays small; rows written by
/// earlier versions also hold a copy of the former, which is the same.
pub fn run_data(event: crate::domain::CloudEvent, own: Value) -> Value {
    let mut data = event.into_trigger_data();
    if let (Some(data), Value::Object(own)) = (data.as_object_mut(), own) {
        data.extend(own);
    }
    data
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

/// Why a sleeping or waiting run continues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    pub fn as_str(self) -> &'static str {
        match self {
            Resume::Wake => "wake",
            Resume::Timeout => "timeout",
            Resume::Retry => "retry",
            Resume::Turn => "turn",
        }
    }
}

#[derive(Debug, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct RunSummary {
    pub id: Uuid,
    pub workflow: String,
    pub status: String,
    pub step_index: i32,
    pub customer_id: Option<String>,
    pub sender_id: Option<String>,
    pub event_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<Value>,
}

#[derive(Debug, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct Attempt {
    pub step_index: i32,
    pub step_id: String,
    pub step_type: String,
    pub attempt: i32,
    pub state: String,
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub error: Option<Value>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct Outbound {
    pub id: Uuid,
    pub step_index: Option<i32>,
    pub sender_id: String,
    pub recipient: String,
    pub kind: String,
    pub provider: String,
    pub request: Value,
    pub wamid: Option<String>,
    pub status: String,
    pub status_at: Option<DateTime<Utc>>,
    pub error: Option<Value>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: RunSummary,
    pub event_type: String,
    pub trigger: Value,
    pub steps: Vec<Attempt>,
    pub messages: Vec<Outbound>,
}

const SUMMARY_COLUMNS: &str = "id, workflow, status, step_index, customer_id, sender_id, event_id, created_at, finished_at, error";

#[derive(Debug, Default, Clone)]
pub struct RunFilter {
    pub workflow: Option<String>,
    pub status: Option<String>,
    /// The customer's id (phone digits) or phone (`+` and digits).
    pub customer: Option<String>,
    pub dispatch_id: Option<Uuid>,
    pub limit: i64,
}

pub async fn list(pool: &PgPool, filter: &RunFilter) -> anyhow::Result<Vec<RunSummary>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLUMNS} FROM runs
         WHERE ($1::text IS NULL OR workflow = $1) AND ($2::text IS NULL OR status = $2)
           AND ($4::text IS NULL OR customer_id = ltrim($4, '+')) AND ($5::uuid IS NULL OR dispatch_id = $5)
         ORDER BY created_at DESC, id DESC LIMIT $3"
    )))
    .bind(&filter.workflow)
    .bind(&filter.status)
    .bind(filter.limit.max(1))
    .bind(&filter.customer)
    .bind(filter.dispatch_id)
    .fetch_all(pool)
    .await
    .context("list runs")
}

/// A run with its trigger, every step attempt and every message it sent. `id` may be a prefix.
pub async fn show(pool: &PgPool, id: &str) -> anyhow::Result<Option<RunDetail>> {
    let run: Option<RunSummary> = match Uuid::parse_str(id) {
        Ok(uuid) => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SUMMARY_COLUMNS} FROM runs WHERE id = $1"
        )))
        .bind(uuid)
        .fetch_optional(pool)
        .await
        .context("load run")?,
        Err(_) => {
            let mut found: Vec<RunSummary> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {SUMMARY_COLUMNS} FROM runs WHERE id::text LIKE $1 || '%' LIMIT 2"
            )))
            .bind(id.to_lowercase())
            .fetch_all(pool)
            .await
            .context("load run by prefix")?;
            if found.len() > 1 {
                anyhow::bail!("'{id}' matches more than one run; give more of the id");
            }
            found.pop()
        }
    };
    let Some(run) = run else { return Ok(None) };
    let (event_type, trigger): (String, Value) =
        sqlx::query_as("SELECT type, cloudevent -> 'data' FROM events WHERE id = $1")
            .bind(run.event_id)
            .fetch_one(pool)
            .await
            .context("load the run's event")?;
    let steps = sqlx::query_as(
        "SELECT step_index, step_id, step_type, attempt, state, input, output, error, started_at, finished_at
         FROM step_attempts WHERE run_id = $1 ORDER BY step_index, attempt",
    )
    .bind(run.id)
    .fetch_all(pool)
    .await
    .context("load step attempts")?;
    let messages = sqlx::query_as(
        "SELECT id, step_index, sender_id, recipient, kind, provider, request, wamid, status, status_at, error, created_at
         FROM outbound_messages WHERE run_id = $1 ORDER BY created_at",
    )
    .bind(run.id)
    .fetch_all(pool)
    .await
    .context("load outbound messages")?;
    Ok(Some(RunDetail {
        run,
        event_type,
        trigger,
        steps,
        messages,
    }))
}

// Run state changes shared by the worker, the matcher (replies) and the scheduler (timers).

pub(crate) async fn set_output(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    job: Job,
    step_id: &str,
    output: &Value,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE runs SET context = jsonb_set(context, ARRAY['steps', $2], $3, true), updated_at = now()
         WHERE id = $1",
    )
    .bind(job.run_id)
    .bind(step_id)
    .bind(output)
    .execute(&mut **tx)
    .await
    .context("store step output")?;
    Ok(())
}

/// Moves the run to step `target` and stages its job, or completes the run.
pub(crate) async fn move_to(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    job: Job,
    target: Option<usize>,
) -> anyhow::Result<Vec<OutboxRow>> {
    let Some(target) = target else {
        finish_run(tx, job, "completed", None).await?;
        tracing::info!(run_id = %job.run_id, "run completed");
        return Ok(Vec::new());
    };
    let target = target as i32;
    sqlx::query(
        "UPDATE runs SET step_index = $2, status = 'queued', updated_at = now() WHERE id = $1",
    )
    .bind(job.run_id)
    .bind(target)
    .execute(&mut **tx)
    .await
    .context("advance run")?;
    let next_job = Job::step(job.run_id, target);
    let row = outbox::stage(
        tx,
        Destination::Jobs,
        "",
        &serde_json::to_value(next_job)?,
        None,
    )
    .await
    .context("stage next job")?;
    Ok(vec![row])
}

pub(crate) async fn finish_run(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    job: Job,
    status: &str,
    error: Option<&Value>,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE runs SET status = $2, error = $3, updated_at = now(), finished_at = now() WHERE id = $1",
    )
    .bind(job.run_id)
    .bind(status)
    .bind(error)
    .execute(&mut **tx)
    .await
    .context("finish run")?;
    Ok(())
}

pub mod dead_letters;
pub mod timers;

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use super::run_data;
    use crate::domain::{CloudEvent, EventType};

    fn event() -> CloudEvent {
        CloudEvent::new(
            EventType::MessageReceived,
            "/whatsapp/1".into(),
            "1".into(),
            Some("4915100000001".into()),
            Utc::now(),
            json!({"text": "hello", "from": "4915100000001"}),
        )
    }

    #[test]
    fn a_run_sees_its_events_data_beside_its_own_step_outputs() {
        let event = event();
        let data = run_data(
            event.clone(),
            json!({"steps": {"greet": {"wamid": "wamid.1"}}}),
        );
        assert_eq!(data["trigger"]["text"], "hello");
        assert_eq!(data["event"]["id"], json!(event.id));
        assert_eq!(data["event"]["subject"], "4915100000001");
        assert_eq!(data["event"]["sender_id"], "1");
        assert_eq!(data["steps"]["greet"]["wamid"], "wamid.1");
        assert_eq!(data, {
            let mut expected = event.trigger_data();
            expected["steps"] = json!({"greet": {"wamid": "wamid.1"}});
            expected
        });
    }

    #[test]
    fn a_run_row_that_kept_a_copy_of_its_trigger_keeps_it() {
        let event = event();
        let own = json!({"trigger": {"text": "stored"}, "steps": {}});
        let data = run_data(event.clone(), own);
        assert_eq!(data["trigger"]["text"], "stored");
        assert_eq!(data["event"]["id"], json!(event.id));
        assert_eq!(data["steps"], json!({}));
    }
}
