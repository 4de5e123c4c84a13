//! Runs: run state and history in PostgreSQL (`store::runs`, `store::attempts`,
//! `store::messages`), read by the worker, the CLI and the API, and the state changes the
//! worker, the matcher (replies) and the scheduler (timers) share.

use anyhow::Context;

use crate::{
    bus::{
        Destination,
        outbox::{self, OutboxRow},
    },
    store::{self, attempts, messages},
};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

pub use crate::store::{
    attempts::{Attempt, AttemptState},
    messages::{MessageStatus, Outbound},
    runs::{Job, Resume, RunFilter, RunStatus, RunSummary},
};

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

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: RunSummary,
    pub event_type: String,
    pub trigger: Value,
    pub steps: Vec<Attempt>,
    pub messages: Vec<Outbound>,
}

pub async fn list(pool: &PgPool, filter: &RunFilter) -> anyhow::Result<Vec<RunSummary>> {
    store::runs::list(pool, filter).await.context("list runs")
}

/// A run with its trigger, every step attempt and every message it sent. `id` may be a prefix.
pub async fn show(pool: &PgPool, id: &str) -> anyhow::Result<Option<RunDetail>> {
    let run = match Uuid::parse_str(id) {
        Ok(uuid) => store::runs::find(pool, uuid).await.context("load run")?,
        Err(_) => {
            let mut found = store::runs::find_by_prefix(pool, &id.to_lowercase())
                .await
                .context("load run by prefix")?;
            if found.len() > 1 {
                anyhow::bail!("'{id}' matches more than one run; give more of the id");
            }
            found.pop()
        }
    };
    let Some(run) = run else { return Ok(None) };
    let (event_type, trigger) = store::events::type_and_data(pool, run.event_id)
        .await
        .context("load the run's event")?;
    let steps = attempts::of_run(pool, run.id)
        .await
        .context("load step attempts")?;
    let messages = messages::of_run(pool, run.id)
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
    store::runs::set_output(tx, job.run_id, step_id, output)
        .await
        .context("store step output")
}

/// Moves the run to step `target` and stages its job, or completes the run.
pub(crate) async fn move_to(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    job: Job,
    target: Option<usize>,
) -> anyhow::Result<Vec<OutboxRow>> {
    let Some(target) = target else {
        finish_run(tx, job, RunStatus::Completed, None).await?;
        tracing::info!(run_id = %job.run_id, "run completed");
        return Ok(Vec::new());
    };
    let target = target as i32;
    store::runs::advance(tx, job.run_id, target)
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

/// Stages `jobs` for the jobs queue inside the caller's transaction: the rows to publish.
pub(crate) async fn stage_jobs(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    jobs: impl IntoIterator<Item = Job>,
) -> anyhow::Result<Vec<OutboxRow>> {
    let mut rows = Vec::new();
    for job in jobs {
        let body = serde_json::to_value(job)?;
        let row = outbox::stage(tx, Destination::Jobs, "", &body, None)
            .await
            .context("stage job")?;
        rows.push(row);
    }
    Ok(rows)
}

pub(crate) async fn finish_run(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    job: Job,
    status: RunStatus,
    error: Option<&Value>,
) -> anyhow::Result<()> {
    store::runs::finish(tx, job.run_id, status, error)
        .await
        .context("finish run")
}

pub mod dead_letters;
pub mod sweeper;
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
