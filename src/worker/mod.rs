//! Worker: takes a job, runs its step, records the outcome, stages the next job.
//!
//! A step runs in three phases so that a crash never sends twice: (1) lock the run, record the
//! attempt with its rendered input (the intent) and commit; (2) execute; (3) record the outcome
//! and the next job in one transaction. A job whose intent is recorded but whose worker died
//! (its lease ran out) is reconciled as "interrupted" and not sent again.

use std::{future::Future, time::Duration};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use tokio_util::sync::CancellationToken;

pub use crate::store::fast_path::Statements;
use crate::{
    bus::{
        Bus, Delivery,
        outbox::{self, OutboxRow},
    },
    failure::{ErrorClass, StepError},
    runs::{
        AttemptState, Job, Resume, RunStatus,
        dead_letters::{self, NewDeadLetter},
        finish_run, move_to, set_output,
    },
    steps::{Next, Rendered, Services, StepContext},
    store::{
        attempts::{self, LastAttempt, NewAttempt},
        contacts::ContactView,
        fast_path::{Done, NewIntent},
        messages, runs, timers,
    },
    workflow::{FlatStep, SharedWorkflows, Workflow},
};

/// What became of one job.
#[derive(Debug)]
pub enum Outcome {
    /// Recorded; publish these rows (the next job), then ack.
    Done(Vec<OutboxRow>),
    /// A duplicate or stale job: nothing to do.
    Stale,
    /// Another worker holds the step's lease; look again after this long.
    Busy(Duration),
}

/// Runs one job to its outcome. The loop around it only acks and retries.
pub async fn execute_job(
    services: &Services,
    statements: &Statements,
    workflows: &SharedWorkflows,
    job: Job,
) -> anyhow::Result<Outcome> {
    if matches!(job.resume, None | Some(Resume::Turn))
        && let Some(outcome) = fast_step(services, statements, workflows, job).await?
    {
        return Ok(outcome);
    }
    // Boxed: the common case above should not carry this path's larger state.
    Box::pin(locked_step(services, statements, workflows, job)).await
}

/// Every case the fast path hands on: the run locked in a transaction (see [`fast_step`]).
async fn locked_step(
    services: &Services,
    statements: &Statements,
    workflows: &SharedWorkflows,
    job: Job,
) -> anyhow::Result<Outcome> {
    let pool = &services.pool;
    // Phase 1: lock the run, check the job is current, record the intent.
    let mut tx = pool.begin().await.context("begin step")?;
    let run = runs::lock(&mut tx, job.run_id).await.context("lock run")?;
    let Some(runs::LockedRun {
        workflow: workflow_name,
        status,
        step_index,
        context,
        cloudevent: event,
        customer_id,
        sender_id,
    }) = run
    else {
        tracing::warn!(run_id = %job.run_id, "job for an unknown run; dropped");
        return Ok(Outcome::Stale);
    };
    if status.is_finished() || step_index != job.step_index {
        return Ok(Outcome::Stale);
    }
    let Some(workflow) = workflows.get(&workflow_name) else {
        let error = json!({"class": "Provider error", "message": format!("workflow '{workflow_name}' is not loaded by this worker")});
        finish_run(&mut tx, job, RunStatus::Failed, Some(&error)).await?;
        tx.commit().await.context("commit failed run")?;
        tracing::error!(run_id = %job.run_id, workflow = %workflow_name, "workflow not loaded; run failed");
        return Ok(Outcome::Done(Vec::new()));
    };
    let Some(flat) = workflow.steps.get(job.step_index as usize) else {
        finish_run(&mut tx, job, RunStatus::Completed, None).await?;
        tx.commit().await.context("commit completed run")?;
        return Ok(Outcome::Done(Vec::new()));
    };
    let (step_id, step) = (flat.id.as_str(), &flat.kind);
    match (status, job.resume) {
        (RunStatus::Sleeping, Some(Resume::Wake)) => {
            let rows = move_to(&mut tx, job, flat.next).await?;
            tx.commit().await.context("commit wake-up")?;
            return Ok(Outcome::Done(rows));
        }
        // A retry is due: run the step again below, as its next attempt.
        (RunStatus::Retrying, Some(Resume::Retry)) => {}
        // Held back for an earlier run of the contact: run the step as a first try.
        (RunStatus::Queued | RunStatus::Running, Some(Resume::Turn)) => {}
        (RunStatus::Waiting, Some(Resume::Timeout)) => {
            tracing::info!(run_id = %job.run_id, step = step_id, "no reply before the timeout");
            set_output(&mut tx, job, step_id, &json!({"timed_out": true})).await?;
            let rows = move_to(
                &mut tx,
                job,
                workflow.arm_target(job.step_index as usize, 0),
            )
            .await?;
            tx.commit().await.context("commit timeout")?;
            return Ok(Outcome::Done(rows));
        }
        // A duplicate of the job that put the run to sleep or to wait, or a timer for a run
        // that has moved on: nothing to do.
        (RunStatus::Sleeping | RunStatus::Waiting | RunStatus::Retrying, _) | (_, Some(_)) => {
            return Ok(Outcome::Stale);
        }
        _ => {}
    }
    let last = attempts::last(&mut tx, job)
        .await
        .context("load last attempt")?;
    let attempt = last.as_ref().map_or(1, |a| a.attempt + 1);
    if let Some(LastAttempt {
        attempt: n,
        state: AttemptState::Started,
        lease_until,
    }) = &last
    {
        let now = Utc::now();
        if *lease_until > now {
            let wait = (*lease_until - now)
                .to_std()
                .unwrap_or(Duration::from_secs(1));
            return Ok(Outcome::Busy(wait));
        }
        // The worker that recorded this intent died during the call: the message may have gone
        // out. Never send twice: close the attempt as interrupted and go on.
        tracing::warn!(run_id = %job.run_id, step = %step_id, attempt = n, "step was interrupted mid-call; not repeated");
        attempts::close_interrupted(&mut tx, job, *n)
            .await
            .context("close interrupted attempt")?;
        if !step.repeatable() {
            let output = json!({"interrupted": true});
            let rows = follow(&mut tx, job, workflow, step_id, &output, &Next::Continue).await?;
            tx.commit().await.context("commit reconciled step")?;
            return Ok(Outcome::Done(rows));
        }
        // No outside effect: simply run it again as the next attempt.
    }

    let mut data = crate::runs::run_data(event.0, context);
    data["contact"] = load_contact(&mut tx, customer_id.as_deref()).await?;
    let ctx = StepContext {
        run_id: job.run_id,
        step_id,
        sender_id: sender_id.as_deref(),
        customer_id: customer_id.as_deref(),
        data: &data,
        services,
    };
    let step_type = step.type_name();
    let owner = uuid::Uuid::now_v7();
    let (rendered, input) = match step.render(&ctx) {
        Ok(r) => r,
        Err(error) => {
            let error_json = error.to_json();
            let failed = NewAttempt {
                job,
                step_id,
                step_type,
                attempt,
                state: AttemptState::Failed,
                input: None,
                error: Some(&error_json),
                lease: services.lease,
                owner: None,
            };
            attempts::record(&mut tx, failed)
                .await
                .context("record step attempt")?;
            // A step whose input cannot be rendered fails the same way every time: no retry.
            let letter = NewDeadLetter {
                job,
                workflow: &workflow_name,
                step_id,
                step_type,
                customer_id: customer_id.as_deref(),
                error: &error_json,
                input: None,
                attempts: attempt,
            };
            let id = dead_letters::record(&mut tx, letter).await?;
            tx.commit().await.context("commit failed step")?;
            give_up(
                services,
                &workflow_name,
                job,
                step_id,
                customer_id.as_deref(),
                &error,
                id,
            )
            .await;
            return Ok(Outcome::Done(Vec::new()));
        }
    };
    let intent = NewAttempt {
        job,
        step_id,
        step_type,
        attempt,
        state: AttemptState::Started,
        input: Some(&input),
        error: None,
        lease: services.lease,
        owner: Some(owner),
    };
    attempts::record(&mut tx, intent)
        .await
        .context("record step attempt")?;
    runs::set_status(&mut tx, job.run_id, RunStatus::Running)
        .await
        .context("mark run running")?;
    if let Err(e) = tx.commit().await {
        // The commit may have happened; nothing was sent.
        forget_intent(pool, job, attempt, owner).await;
        return Err(anyhow::Error::new(e).context("commit step intent"));
    }
    let step = Started {
        workflow,
        flat,
        attempt,
        input,
    };
    carry_out(services, statements, job, step, rendered, &ctx).await
}

/// A step whose intent is recorded: what phases 2 and 3 need to know of it.
struct Started<'w> {
    workflow: &'w Workflow,
    flat: &'w FlatStep,
    attempt: i32,
    input: Value,
}

/// Phases 2 and 3: executes a step whose intent is recorded, then records its outcome and the
/// next job.
async fn carry_out(
    services: &Services,
    statements: &Statements,
    job: Job,
    started_step: Started<'_>,
    rendered: Rendered,
    ctx: &StepContext<'_>,
) -> anyhow::Result<Outcome> {
    let pool = &services.pool;
    let Started {
        workflow,
        flat,
        attempt,
        input,
    } = started_step;
    let (step_id, step) = (flat.id.as_str(), &flat.kind);
    let step_type = step.type_name();
    let workflow_name = workflow.name.as_str();
    let customer_id = ctx.customer_id;

    // Phase 2: the side effect.
    let started = std::time::Instant::now();
    let result = step.execute(rendered, ctx).await;
    let elapsed = started.elapsed();

    // Phase 3: the outcome and the next job, atomically. Only this worker knows the outcome:
    // if PostgreSQL is away, hold it and try again (the delivery stays unacked meanwhile)
    // rather than leave the attempt "started", which would later be closed as interrupted
    // and lose what was sent (its wamid, the outbound message, the step's output).
    let outcome = match &result {
        Ok(_) => "succeeded",
        Err(e) if e.is_deferred() => "deferred",
        Err(_) => "failed",
    };
    metrics::counter!("herald_steps_total", "type" => step_type, "outcome" => outcome).increment(1);
    if let Ok(out) = &result
        && let Some(sent) = &out.sent
    {
        metrics::histogram!("herald_send_latency_seconds", "provider" => sent.provider)
            .record(elapsed.as_secs_f64());
    }
    if let Ok(out) = &result
        && let Some(target) = match out.next {
            Next::Continue => Some(flat.next),
            Next::Arm(arm) => Some(workflow.arm_target(job.step_index as usize, arm)),
            _ => None,
        }
    {
        let done = std::sync::Arc::new(Done {
            job,
            step_id: step_id.to_string(),
            attempt,
            output: out.output.clone(),
            target: target.map(|t| t as i32),
            sent: out.sent.clone(),
        });
        let succeeded = patiently(job, "record the step's outcome", || async {
            statements
                .success(done.clone())
                .await
                .context("record step outcome")
        })
        .await?;
        if succeeded.moved && target.is_none() {
            tracing::info!(run_id = %job.run_id, "run completed");
        }
        let rows: Vec<OutboxRow> = succeeded.next_job.into_iter().collect();
        tracing::info!(run_id = %job.run_id, workflow = %workflow_name, step = %step_id, step_type, "step succeeded");
        return Ok(Outcome::Done(rows));
    }
    // Boxed: the success above is the common case and should not carry this path's state.
    Box::pin(patiently(job, "record the step's outcome", || async {
            let mut tx = pool.begin().await.context("begin step outcome")?;
            let current = runs::lock_position(&mut tx, job.run_id)
                .await
                .context("lock run for outcome")?;
            let rows = match &result {
                Ok(out) => {
                    if let Some(sent) = &out.sent {
                        messages::record_sent(&mut tx, job, sent)
                            .await
                            .context("record outbound message")?;
                    }
                    attempts::succeeded(&mut tx, job, attempt, &out.output)
                        .await
                        .context("record step output")?;
                    tracing::info!(run_id = %job.run_id, workflow = %workflow_name, step = %step_id, step_type, "step succeeded");
                    if current == Some(job.step_index) {
                        follow(&mut tx, job, workflow, step_id, &out.output, &out.next).await?
                    } else {
                        Vec::new()
                    }
                }
                // Paced: the sender's next slot is far. Not an attempt: forget it, come back then.
                Err(error) if error.is_deferred() => {
                    attempts::forget(&mut tx, job, attempt)
                        .await
                        .context("forget deferred attempt")?;
                    if current != Some(job.step_index) {
                        tx.commit().await.context("commit late deferral")?;
                        return Ok(Outcome::Done(Vec::new()));
                    }
                    let wait = error.retry_after().unwrap_or(Duration::from_secs(1));
                    tracing::debug!(run_id = %job.run_id, step = step_id, defer = ?wait, "send paced; step deferred");
                    let due = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
                    pause(&mut tx, job, RunStatus::Retrying, Some((Resume::Retry, due))).await?;
                    Vec::new()
                }
                Err(error) => {
                    attempts::failed(&mut tx, job, attempt, &error.to_json())
                        .await
                        .context("record step error")?;
                    if current != Some(job.step_index) {
                        // Recorded late, after the run moved on (its attempt was closed as
                        // interrupted meanwhile): nothing more to decide for this step.
                        tx.commit().await.context("commit late step error")?;
                        return Ok(Outcome::Done(Vec::new()));
                    }
                    match retry_decision(
                        &mut tx,
                        job,
                        crate::failure::RetryPolicy::for_step(step.retry(), workflow.retry, services.retry),
                        error,
                    )
                    .await?
                    {
                        Some(wait) => {
                            tracing::warn!(
                                run_id = %job.run_id, workflow = %workflow_name, step = step_id, attempt,
                                error_class = %error.class, error = %error.message, retry_in = ?wait,
                                "step failed; will retry"
                            );
                            let due = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
                            pause(&mut tx, job, RunStatus::Retrying, Some((Resume::Retry, due))).await?;
                        }
                        None => {
                            let error_json = error.to_json();
                            let letter = NewDeadLetter {
                                job,
                                workflow: workflow_name,
                                step_id,
                                step_type,
                                customer_id,
                                error: &error_json,
                                input: Some(&input),
                                attempts: attempt,
                            };
                            let id = dead_letters::record(&mut tx, letter).await?;
                            tx.commit().await.context("commit failed step")?;
                            give_up(
                                services,
                                workflow_name,
                                job,
                                step_id,
                                customer_id,
                                error,
                                id,
                            )
                            .await;
                            return Ok(Outcome::Done(Vec::new()));
                        }
                    }
                    Vec::new()
                }
            };
            tx.commit().await.context("commit step outcome")?;
            Ok(Outcome::Done(rows))
    }))
    .await
}

/// Runs `op` until it succeeds, again and again (backing off) while PostgreSQL is away, for at
/// most [`OUTCOME_PATIENCE`]: what only this worker knows (a step's outcome, that it never
/// called the provider) is held rather than dropped.
async fn patiently<T, F, Fut>(job: Job, what: &str, op: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    use backon::Retryable;
    let since = std::time::Instant::now();
    op.retry(crate::failure::backoff::reconnect())
        .when(|_| since.elapsed() < OUTCOME_PATIENCE)
        .notify(|e, wait| {
            tracing::warn!(run_id = %job.run_id, error = format!("{e:#}"), retry_in = ?wait, "could not {what}; trying again");
        })
        .await
}

/// The common case in two statements and one commit instead of a locked transaction: a job for
/// a queued or running run whose step has no attempt in progress. It reads the run, the last
/// attempt and the contact in one query, renders the step, and records the intent with a
/// statement that only inserts while the run is still at that step; the unique key on
/// (run, step, attempt) makes two workers holding the same job record one intent between them.
/// `None` hands the job to the locked path, which decides every other case (a run that is
/// sleeping, waiting, retrying or finished, an interrupted attempt, a step that cannot be
/// rendered, an intent another worker recorded first).
async fn fast_step(
    services: &Services,
    statements: &Statements,
    workflows: &SharedWorkflows,
    job: Job,
) -> anyhow::Result<Option<Outcome>> {
    let row = statements.read(job).await.context("load run")?;
    let Some(row) = row else {
        return Ok(None);
    };
    let (step_index, status, last_state) = (row.step_index, &row.status, &row.last_state);
    if step_index != job.step_index {
        return Ok(Some(Outcome::Stale));
    }
    if !matches!(status, RunStatus::Queued | RunStatus::Running)
        || *last_state == Some(AttemptState::Started)
    {
        return Ok(None);
    }
    if row.behind {
        // An earlier run of this contact is under way: its steps go first. Come back on a
        // durable timer rather than hold the delivery (other contacts keep every slot).
        timers::set_turn(&services.pool, job, TURN_WAIT)
            .await
            .context("hold the step for the contact's earlier run")?;
        metrics::counter!("herald_steps_held_for_order_total").increment(1);
        tracing::debug!(run_id = %job.run_id, step = job.step_index, "held for an earlier run of the contact");
        return Ok(Some(Outcome::Done(Vec::new())));
    }
    let Some(workflow) = workflows.get(&row.workflow) else {
        return Ok(None);
    };
    let Some(flat) = workflow.steps.get(job.step_index as usize) else {
        return Ok(None);
    };
    let attempt = row.last_attempt.map_or(1, |n| n + 1);
    let contact = row.has_contact.then(|| ContactView {
        name: row.name,
        phone: row.phone,
        fields: row.fields.unwrap_or_else(|| json!({})),
        groups: row.groups.unwrap_or_default(),
        opted_out: row.opted_out.unwrap_or(false),
    });
    let (customer_id, sender_id) = (row.customer_id, row.sender_id);
    let mut data = crate::runs::run_data(row.event.0, row.context);
    data["contact"] = contact_json(customer_id.as_deref(), contact);
    let ctx = StepContext {
        run_id: job.run_id,
        step_id: &flat.id,
        sender_id: sender_id.as_deref(),
        customer_id: customer_id.as_deref(),
        data: &data,
        services,
    };
    let Ok((rendered, input)) = flat.kind.render(&ctx) else {
        return Ok(None); // the locked path records the failure and its dead letter
    };
    let owner = uuid::Uuid::now_v7();
    let recorded = statements
        .intent(NewIntent {
            job,
            step_id: flat.id.clone(),
            step_type: flat.kind.type_name(),
            attempt,
            input: input.clone(),
            owner,
        })
        .await;
    let recorded = match recorded {
        Ok(r) => r,
        Err(e) => {
            forget_intent(&services.pool, job, attempt, owner).await;
            return Err(anyhow::Error::new(e).context("record step intent"));
        }
    };
    if !recorded {
        return Ok(None);
    }
    let step = Started {
        workflow,
        flat,
        attempt,
        input,
    };
    carry_out(services, statements, job, step, rendered, &ctx)
        .await
        .map(Some)
}

/// The statement (or commit) that records the intent failed, so it may or may not have
/// committed; this worker has not called the provider. Removes the intent if it was recorded (only this execution's own, by `owner`),
/// so that the job's next delivery runs the step instead of closing it as interrupted. Keeps
/// trying while PostgreSQL is away (as long as an outcome would be kept); if that runs out, the
/// intent stays and is closed as interrupted after its lease: at most once still holds.
async fn forget_intent(pool: &sqlx::PgPool, job: Job, attempt: i32, owner: uuid::Uuid) {
    let forgotten = patiently(job, "check the step's intent", || async {
        attempts::forget_intent(pool, job, attempt, owner)
            .await
            .context("forget the step's intent")
    })
    .await;
    if let Err(e) = forgotten {
        tracing::warn!(run_id = %job.run_id, error = format!("{e:#}"), "gave up checking the step's intent; it will be closed as interrupted");
    }
}

/// How soon a step held for an earlier run of its contact is tried again.
const TURN_WAIT: Duration = Duration::from_millis(200);

/// How long a worker keeps trying to record a step's outcome while PostgreSQL is away.
const OUTCOME_PATIENCE: Duration = Duration::from_secs(60);

/// Rate limits may be retried this often before they count as failures.
const RATE_LIMIT_CAP: i64 = 20;

/// When to try a failed step again, or `None` to give up. Errors no retry can fix are never
/// retried; rate limits wait for the provider's Retry-After (or back off) and do not use up
/// attempts until the cap.
async fn retry_decision(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    job: Job,
    policy: crate::failure::RetryPolicy,
    error: &StepError,
) -> anyhow::Result<Option<Duration>> {
    if !error.retryable() {
        return Ok(None);
    }
    let (failures, rate_limited) = attempts::count_failures(tx, job)
        .await
        .context("count failed attempts")?;
    if error.class == ErrorClass::RateLimited {
        if rate_limited > RATE_LIMIT_CAP {
            return Ok(None);
        }
        let backoff = crate::failure::backoff::rate_limited(rate_limited.clamp(0, 64) as u32);
        return Ok(Some(
            error
                .retry_after()
                .unwrap_or(backoff)
                .min(Duration::from_secs(900)),
        ));
    }
    if failures >= i64::from(policy.attempts) {
        return Ok(None);
    }
    Ok(Some(policy.wait.get()))
}

/// A step failed for good: log it at error level and tell the team, once.
async fn give_up(
    services: &Services,
    workflow: &str,
    job: Job,
    step_id: &str,
    customer: Option<&str>,
    error: &StepError,
    dead_letter: uuid::Uuid,
) {
    tracing::error!(
        run_id = %job.run_id, workflow, step = step_id, error_class = %error.class,
        provider_code = error.provider_code, error = %error.message, advice = error.class.advice(),
        dead_letter = %dead_letter, "step failed; run failed"
    );
    let text = format!(
        "Herald: step '{step_id}' of workflow '{workflow}' failed: {}. What to do: {}. Retry with `herald dead-letters retry {dead_letter}`.",
        error.message,
        error.class.advice()
    );
    let fields = [
        ("workflow", workflow.to_string()),
        ("run", job.run_id.to_string()),
        ("step", step_id.to_string()),
        ("contact", customer.unwrap_or("-").to_string()),
        ("error class", error.class.to_string()),
        ("dead letter", dead_letter.to_string()),
    ];
    if let Err(e) = services.notifier.send(&text, &fields).await {
        tracing::warn!(error = %e, "could not notify the team (the failure is logged and recorded)");
    }
}

async fn load_contact(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    customer_id: Option<&str>,
) -> anyhow::Result<Value> {
    let Some(customer_id) = customer_id else {
        return Ok(contact_json(None, None));
    };
    let row = crate::store::contacts::view(tx, customer_id)
        .await
        .context("load contact")?;
    Ok(contact_json(Some(customer_id), row))
}

/// `{{ contact.* }}`: the run's contact as steps see it (`{}` without a customer, only the id
/// for a customer Herald has no contact row for).
fn contact_json(customer_id: Option<&str>, row: Option<ContactView>) -> Value {
    match (customer_id, row) {
        (None, _) => json!({}),
        (Some(id), None) => json!({ "id": id }),
        (Some(id), Some(c)) => json!({
            "id": id, "name": c.name, "phone": c.phone, "fields": c.fields,
            "groups": c.groups, "opted_out": c.opted_out,
        }),
    }
}

/// Stores the step's output under `steps.<id>`, then goes where the step said: the next step,
/// an arm, a durable sleep, or a wait for the contact's reply.
async fn follow(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    job: Job,
    workflow: &Workflow,
    step_id: &str,
    output: &Value,
    next: &Next,
) -> anyhow::Result<Vec<OutboxRow>> {
    set_output(tx, job, step_id, output).await?;
    let index = job.step_index as usize;
    match next {
        Next::Continue => move_to(tx, job, workflow.steps[index].next).await,
        Next::Arm(arm) => move_to(tx, job, workflow.arm_target(index, *arm)).await,
        Next::SleepUntil(due) => {
            pause(tx, job, RunStatus::Sleeping, Some((Resume::Wake, *due))).await?;
            Ok(Vec::new())
        }
        Next::WaitForReply { timeout_at } => {
            let timer = timeout_at.map(|t| (Resume::Timeout, t));
            pause(tx, job, RunStatus::Waiting, timer).await?;
            Ok(Vec::new())
        }
    }
}

/// Parks the run at its current step (sleeping or waiting), with a durable timer if given.
async fn pause(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    job: Job,
    status: RunStatus,
    timer: Option<(Resume, DateTime<Utc>)>,
) -> anyhow::Result<()> {
    runs::set_status(tx, job.run_id, status)
        .await
        .context("pause run")?;
    if let Some((kind, due)) = timer {
        timers::set(tx, job, kind, due).await.context("set timer")?;
    }
    tracing::info!(run_id = %job.run_id, %status, due = ?timer.map(|t| t.1), "run paused");
    Ok(())
}

async fn handle_delivery(
    services: &Services,
    statements: &Statements,
    bus: &Bus,
    workflows: &SharedWorkflows,
    delivery: Delivery,
) {
    let job: Job = match serde_json::from_slice(delivery.body()) {
        Ok(j) => j,
        Err(e) => {
            tracing::error!(error = %e, "message on the jobs queue is not a job; dropped");
            let _ = delivery.ack().await;
            return;
        }
    };
    let since = std::time::Instant::now();
    let mut waits = backon::BackoffBuilder::build(crate::failure::backoff::held());
    loop {
        match execute_job(services, statements, workflows, job).await {
            Ok(Outcome::Done(rows)) => {
                if let Err(e) = outbox::flush(bus, &services.pool, &rows).await {
                    // The next job is stored: the relay publishes it.
                    tracing::warn!(run_id = %job.run_id, error = %e, "next job not published yet; the outbox relay will");
                }
                let _ = delivery.ack().await;
                return;
            }
            Ok(Outcome::Stale) => {
                let _ = delivery.ack().await;
                return;
            }
            Ok(Outcome::Busy(wait)) => {
                tokio::time::sleep(wait.min(services.lease) + Duration::from_millis(50)).await;
            }
            // Held, not requeued (a quorum queue drops a message after 20 redeliveries):
            // tried again after a pause, and dead-lettered when it keeps failing, to be put
            // back later.
            Err(e) if since.elapsed() >= crate::failure::backoff::HOLD_PATIENCE => {
                tracing::warn!(run_id = %job.run_id, error = format!("{e:#}"), "job kept failing to run; dead-lettered, to be put back later");
                let _ = delivery.reject().await;
                return;
            }
            Err(e) => {
                let wait = waits.next().unwrap_or(Duration::from_secs(15));
                tracing::warn!(run_id = %job.run_id, error = format!("{e:#}"), retry_in = ?wait, "job failed to run; holding it and trying again");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// The worker role.
pub async fn run(
    services: Services,
    bus: Bus,
    workflows: SharedWorkflows,
    prefetch: u16,
    shutdown: CancellationToken,
) {
    let queue = bus.names().jobs_queue.clone();
    let statements = Statements::new(&services.pool, services.lease, services.stranded_after);
    crate::bus::consume_loop(&bus, &queue, prefetch, "worker", shutdown, |d| {
        let (services, bus, workflows) = (services.clone(), bus.clone(), workflows.clone());
        let statements = statements.clone();
        async move { handle_delivery(&services, &statements, &bus, &workflows, d).await }
    })
    .await;
}
