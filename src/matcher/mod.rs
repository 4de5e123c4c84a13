//! Matcher: turns one event into zero or more runs and their first jobs. Never calls a provider.
//! Idempotent under redelivery: one run per (workflow, event).

use std::sync::Arc;

use anyhow::Context;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use crate::store::runs::CreateRuns;
use crate::{
    bus::{
        Bus, Delivery,
        outbox::{self, OutboxRow},
    },
    db::batch::Batched,
    domain::{CloudEvent, EventType},
    runs::{Job, move_to, set_output},
    store::{
        runs::{self, NewRun},
        timers,
    },
    workflow::{SharedWorkflows, Workflow},
};

/// The enabled workflows whose trigger matches `event`. Pure; a filter that fails to evaluate
/// does not match (and is logged).
pub fn matching<'a>(workflows: &'a SharedWorkflows, event: &CloudEvent) -> Vec<&'a Workflow> {
    if let Some(name) = targeted_workflow(event) {
        // Started for one workflow (a dispatch or a schedule): that one, whatever its trigger
        // and filter say; the operator or its schedule chose it.
        return workflows
            .get(name)
            .filter(|w| w.enabled)
            .into_iter()
            .collect();
    }
    // Made for the first filter only: most triggers have none.
    let mut data: Option<Value> = None;
    workflows
        .for_event(event.event_type)
        .filter(|w| match &w.trigger.filter {
            None => true,
            Some(filter) => match filter.evaluate(data.get_or_insert_with(|| event.trigger_data())) {
                Ok(matched) => matched,
                Err(reason) => {
                    tracing::warn!(workflow = %w.name, event_id = %event.id, reason, "trigger filter failed; not matched");
                    false
                }
            },
        })
        .collect()
}

/// The workflow a `manual` or `schedule` event was made for (`data.workflow`).
fn targeted_workflow(event: &CloudEvent) -> Option<&str> {
    match event.event_type {
        EventType::Manual | EventType::Schedule => event.data["workflow"].as_str(),
        _ => None,
    }
}

/// Creates the runs for `event` and stages their first jobs. Returns the outbox rows to publish.
pub async fn handle_event(
    pool: &PgPool,
    create_runs: &Batched<CreateRuns>,
    workflows: &SharedWorkflows,
    event: &CloudEvent,
) -> anyhow::Result<Vec<OutboxRow>> {
    let matched = matching(workflows, event);
    let reply = event
        .subject
        .as_deref()
        .filter(|_| is_inbound_message(event.event_type) && workflows.has_waits());
    if matched.is_empty() && reply.is_none() {
        return Ok(Vec::new()); // nothing to do: no transaction
    }
    if reply.is_none()
        && let [workflow] = matched.as_slice()
    {
        // One run: its statement commits on its own (with other events' runs), no BEGIN/COMMIT
        // round trips.
        let run = Arc::new(new_run(workflow, event, dispatch_of(event))?);
        let staged = create_runs
            .run(run.clone())
            .await
            .context("create run and stage its first job")?;
        return Ok(started(&run, event, staged));
    }
    // Boxed: the common case above should not carry this path's larger state.
    Box::pin(match_in_transaction(pool, workflows, event, matched, reply)).await
}

/// Several runs, or a reply that may resume a waiting run: one transaction.
async fn match_in_transaction(
    pool: &PgPool,
    workflows: &SharedWorkflows,
    event: &CloudEvent,
    matched: Vec<&Workflow>,
    reply: Option<&str>,
) -> anyhow::Result<Vec<OutboxRow>> {
    let mut tx = pool.begin().await.context("begin matcher transaction")?;
    let mut rows = Vec::new();
    if let Some(customer) = reply {
        let message_id = event.data["message_id"].as_str().unwrap_or_default();
        if event.event_type == EventType::MessageReceived {
            let resumed = resume_waiting(&mut tx, workflows, event, customer).await?;
            if !resumed.is_empty() {
                rows.extend(resumed);
                tx.commit().await.context("commit resumed runs")?;
                return Ok(rows);
            }
        } else if reply_belongs_to_a_waiting_run(&mut tx, event, customer, message_id).await? {
            // The message_received event of the same message resumes (or resumed) the run.
            return Ok(Vec::new());
        }
    }
    if matched.is_empty() {
        tx.commit().await.context("commit")?;
        return Ok(Vec::new());
    }
    let dispatch_id = dispatch_of(event);
    for workflow in matched {
        rows.extend(create_run(&mut tx, workflow, event, dispatch_id).await?);
    }
    tx.commit().await.context("commit runs")?;
    Ok(rows)
}

/// The dispatch a `manual` or `schedule` event belongs to.
fn dispatch_of(event: &CloudEvent) -> Option<Uuid> {
    event.data["dispatch_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .filter(|_| {
            event.event_type == EventType::Manual || event.event_type == EventType::Schedule
        })
}

/// The run of `workflow` for `event`, with its first job.
fn new_run(
    workflow: &Workflow,
    event: &CloudEvent,
    dispatch_id: Option<Uuid>,
) -> anyhow::Result<NewRun> {
    let run_id = Uuid::now_v7();
    Ok(NewRun {
        run_id,
        workflow: workflow.name.clone(),
        event_id: event.id,
        customer_id: event.subject.clone(),
        sender_id: event.senderid.clone(),
        job: serde_json::to_value(Job::step(run_id, 0))?,
        dispatch_id,
    })
}

/// The metric and the log line of a run that was created.
fn started(run: &NewRun, event: &CloudEvent, staged: Option<OutboxRow>) -> Vec<OutboxRow> {
    let Some(staged) = staged else {
        return Vec::new();
    };
    metrics::counter!("herald_runs_started_total", "workflow" => run.workflow.clone()).increment(1);
    tracing::info!(run_id = %run.run_id, workflow = %run.workflow, event_id = %event.id, event_type = %event.event_type, "run started");
    vec![staged]
}

/// Creates the run of `workflow` for `event` and stages its first job, inside the caller's
/// transaction.
async fn create_run(
    conn: &mut sqlx::PgConnection,
    workflow: &Workflow,
    event: &CloudEvent,
    dispatch_id: Option<Uuid>,
) -> anyhow::Result<Vec<OutboxRow>> {
    use crate::db::batch::Statement;
    let run = Arc::new(new_run(workflow, event, dispatch_id)?);
    let mut staged = CreateRuns
        .run(conn, std::slice::from_ref(&run))
        .await
        .context("create run and stage its first job")?;
    Ok(started(&run, event, staged.pop().flatten()))
}

fn is_inbound_message(t: EventType) -> bool {
    matches!(
        t,
        EventType::MessageReceived | EventType::ConversationStarted | EventType::FlowCompleted
    )
}

/// The reply as a waiting step's output (`steps.<id>.text`, ...).
fn reply_output(event: &CloudEvent) -> Value {
    let d = &event.data;
    json!({
        "timed_out": false,
        "text": d["text"],
        "message_type": d["message_type"],
        "message_id": d["message_id"],
        "reply_id": d["reply_id"],
        "reply_title": d["reply_title"],
        "button_payload": d["button_payload"],
        "media_id": d["media_id"],
        "flow_response": d["flow"]["response"],
        "received_at": d["timestamp"],
    })
}

/// Routes an inbound message to the runs of this contact that wait for a reply on this sender.
async fn resume_waiting(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    workflows: &SharedWorkflows,
    event: &CloudEvent,
    customer: &str,
) -> anyhow::Result<Vec<OutboxRow>> {
    let waiting = runs::lock_waiting(tx, &event.senderid, customer)
        .await
        .context("find waiting runs")?;
    let mut rows = Vec::new();
    let message_id = event.data["message_id"].as_str().unwrap_or_default();
    for runs::WaitingRun {
        id: run_id,
        workflow: workflow_name,
        step_index,
    } in waiting
    {
        let Some(step) = workflows
            .get(&workflow_name)
            .and_then(|w| w.steps.get(step_index as usize))
        else {
            tracing::warn!(run_id = %run_id, workflow = %workflow_name, "waiting run of a workflow that is not loaded");
            continue;
        };
        let job = Job::step(run_id, step_index);
        set_output(tx, job, &step.id, &reply_output(event)).await?;
        timers::cancel_timeout(tx, run_id)
            .await
            .context("cancel reply timeout")?;
        runs::set_resumed_by(tx, run_id, message_id)
            .await
            .context("mark resumed")?;
        rows.extend(move_to(tx, job, step.next).await?);
        tracing::info!(run_id = %run_id, workflow = %workflow_name, step = %step.id, event_id = %event.id, "reply routed to waiting run");
    }
    Ok(rows)
}

async fn reply_belongs_to_a_waiting_run(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    event: &CloudEvent,
    customer: &str,
    message_id: &str,
) -> anyhow::Result<bool> {
    runs::waits_or_resumed_by(tx, &event.senderid, customer, message_id)
        .await
        .context("check waiting runs")
}

async fn handle_delivery(
    pool: &PgPool,
    create_runs: &Batched<CreateRuns>,
    bus: &Bus,
    workflows: &SharedWorkflows,
    delivery: Delivery,
) {
    let event: CloudEvent = match serde_json::from_slice(delivery.body()) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "event on the bus is not a CloudEvent Herald knows; dropped");
            let _ = delivery.ack().await;
            return;
        }
    };
    let since = std::time::Instant::now();
    let mut waits = backon::BackoffBuilder::build(crate::failure::backoff::held());
    loop {
        let result = async {
            let rows = handle_event(pool, create_runs, workflows, &event).await?;
            outbox::flush(bus, pool, &rows)
                .await
                .context("publish jobs")?;
            anyhow::Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                let _ = delivery.ack().await;
                return;
            }
            // Held, not requeued (a quorum queue drops a message after 20 redeliveries):
            // tried again after a pause, and dead-lettered when it keeps failing, to be put
            // back later.
            Err(e) if since.elapsed() >= crate::failure::backoff::HOLD_PATIENCE => {
                tracing::warn!(event_id = %event.id, error = format!("{e:#}"), "matching kept failing; event dead-lettered, to be put back later");
                let _ = delivery.reject().await;
                return;
            }
            Err(e) => {
                let wait = waits.next().unwrap_or(std::time::Duration::from_secs(15));
                tracing::warn!(event_id = %event.id, error = format!("{e:#}"), retry_in = ?wait, "matching failed; holding the event and trying again");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// The matcher role: consumes the events queue until shutdown, reconnecting when the broker goes away.
pub async fn run(
    pool: PgPool,
    bus: Bus,
    workflows: SharedWorkflows,
    prefetch: u16,
    shutdown: CancellationToken,
) {
    let queue = bus.names().matcher_queue.clone();
    let create_runs = Batched::new("matcher.create_runs", pool.clone(), CreateRuns);
    crate::bus::consume_loop(&bus, &queue, prefetch, "matcher", shutdown, |d| {
        let (pool, bus, workflows) = (pool.clone(), bus.clone(), workflows.clone());
        let create_runs = create_runs.clone();
        async move { handle_delivery(&pool, &create_runs, &bus, &workflows, d).await }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use std::{path::Path, sync::Arc};

    use chrono::Utc;

    use super::*;
    use crate::{
        domain::EventType,
        workflow::{Workflows, parse_workflow},
    };

    fn workflows(texts: &[&str]) -> SharedWorkflows {
        let all = texts
            .iter()
            .map(|t| parse_workflow(Path::new("t.yaml"), t).expect("valid"))
            .collect();
        Arc::new(Workflows::new(all))
    }

    fn wf(name: &str, event: &str, filter: Option<&str>, enabled: bool) -> String {
        let filter = filter
            .map(|f| format!("\n  filter: '{f}'"))
            .unwrap_or_default();
        format!(
            "name: {name}\nenabled: {enabled}\ntrigger:\n  event: {event}{filter}\nsteps:\n  - send_text:\n      text: hi\n"
        )
    }

    fn event(event_type: EventType, data: Value) -> CloudEvent {
        CloudEvent::new(
            event_type,
            "/whatsapp/1".into(),
            "1".into(),
            None,
            Utc::now(),
            data,
        )
    }

    #[test]
    fn events_match_the_workflows_of_their_type_whose_filter_is_true() {
        let set = workflows(&[
            &wf("any-message", "whatsapp.message_received", None, true),
            &wf(
                "texts",
                "whatsapp.message_received",
                Some("trigger.message_type == \"text\""),
                true,
            ),
            &wf(
                "images",
                "whatsapp.message_received",
                Some("trigger.message_type == \"image\""),
                true,
            ),
            &wf("off", "whatsapp.message_received", None, false),
            &wf("starts", "whatsapp.conversation_started", None, true),
            &wf(
                "broken-filter",
                "whatsapp.message_received",
                Some("trigger.nope == 1"),
                true,
            ),
            &wf(
                "by-sender",
                "whatsapp.message_received",
                Some("event.sender_id == \"2\""),
                true,
            ),
        ]);
        let cases = [
            (
                EventType::MessageReceived,
                json!({"message_type": "text"}),
                vec!["any-message", "texts"],
            ),
            (
                EventType::MessageReceived,
                json!({"message_type": "image"}),
                vec!["any-message", "images"],
            ),
            (
                EventType::ConversationStarted,
                json!({"message_type": "text"}),
                vec!["starts"],
            ),
            (EventType::MessageStatus, json!({"status": "read"}), vec![]),
        ];
        for (t, data, expected) in cases {
            let e = event(t, data.clone());
            let names: Vec<&str> = matching(&set, &e).iter().map(|w| w.name.as_str()).collect();
            assert_eq!(names, expected, "{t} {data}");
        }
    }
}
