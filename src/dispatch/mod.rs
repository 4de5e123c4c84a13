//! Active dispatch: start one run of a workflow per contact of a list or a group, paced.
//!
//! Creating a dispatch only writes rows (the dispatch and one row per contact, in one
//! transaction). The dispatcher (scheduler role) then turns pending contacts into `manual` (or
//! `schedule`) events at the dispatch's rate; the matcher makes each event a run of exactly that
//! workflow. The dispatch row is locked (`FOR UPDATE SKIP LOCKED`) while contacts are claimed,
//! so several schedulers never start a contact twice and the rate holds across them.

use std::collections::HashSet;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use crate::store::dispatches::{
    ContactProgress, DispatchContact, DispatchEventType, DispatchSource as Source, DispatchStatus,
    MessageCounts,
};
use crate::{
    bus::{
        Bus,
        outbox::{self, OutboxRow},
    },
    domain::{CloudEvent, EventType, PhoneNumber},
    store::events,
    store::{
        self,
        dispatches::{ActiveDispatch, ContactOutcome, ContactState, PendingContact, Recipient},
    },
    {expr::Condition, workflow::Workflows},
};

/// Who gets a run.
#[derive(Clone, Debug)]
pub enum Target {
    /// Numbers as given; each is parsed, and one that is not E.164 is recorded as failed with
    /// "Invalid phone number" (the others still go).
    To(Vec<String>),
    /// Every contact in the group, optionally only those for whom `filter` (CEL over `contact`)
    /// is true.
    Group {
        name: String,
        filter: Option<Condition>,
    },
}

/// A request to start a workflow for contacts; checked by [`create`].
#[derive(Clone, Debug)]
pub struct NewDispatch {
    pub workflow: String,
    pub target: Target,
    /// Reachable as `trigger.<key>` (and `trigger.vars.<key>`) in every run.
    pub vars: Map<String, Value>,
    /// Runs started per second at most (default: the configured dispatch rate).
    pub rate: Option<f64>,
    /// Our sender (phone_number_id); default: the configured default sender.
    pub sender: Option<String>,
    pub source: Source,
    pub started_by: Option<String>,
}

/// Why a dispatch could not be created or changed. `code()` is stable for the API.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("unknown workflow '{0}'")]
    UnknownWorkflow(String),
    #[error("workflow '{0}' is disabled")]
    DisabledWorkflow(String),
    #[error("no contacts to start: {0}")]
    NoContacts(String),
    #[error("rate must be a number of runs per second between 0.01 and 1000 (got {0})")]
    BadRate(f64),
    #[error("dispatch {0} not found")]
    NotFound(Uuid),
    #[error("dispatch {id} is {status}: it cannot be {action}")]
    Conflict {
        id: Uuid,
        status: DispatchStatus,
        action: &'static str,
    },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl DispatchError {
    pub fn code(&self) -> &'static str {
        match self {
            DispatchError::UnknownWorkflow(_) => "unknown_workflow",
            DispatchError::DisabledWorkflow(_) => "disabled_workflow",
            DispatchError::NoContacts(_) => "no_contacts",
            DispatchError::BadRate(_) => "bad_rate",
            DispatchError::NotFound(_) => "not_found",
            DispatchError::Conflict { .. } => "conflict",
            DispatchError::Db(_) => "unavailable",
        }
    }
}

/// Defaults a dispatch takes from the configuration.
#[derive(Clone, Debug)]
pub struct Defaults {
    pub rate: f64,
    pub sender: String,
}

/// Creates a dispatch (status `running`) and its contacts in one transaction.
pub async fn create(
    pool: &PgPool,
    workflows: &Workflows,
    defaults: &Defaults,
    new: NewDispatch,
) -> Result<Dispatch, DispatchError> {
    let mut tx = pool.begin().await?;
    let id = create_in(&mut tx, workflows, defaults, new, DispatchEventType::Manual).await?;
    tx.commit().await?;
    show(pool, id).await?.ok_or(DispatchError::NotFound(id))
}

/// [`create`] inside the caller's transaction; runs get events of `event_type`.
pub async fn create_in(
    conn: &mut PgConnection,
    workflows: &Workflows,
    defaults: &Defaults,
    new: NewDispatch,
    event_type: DispatchEventType,
) -> Result<Uuid, DispatchError> {
    let workflow = workflows
        .get(&new.workflow)
        .ok_or_else(|| DispatchError::UnknownWorkflow(new.workflow.clone()))?;
    if !workflow.enabled {
        return Err(DispatchError::DisabledWorkflow(new.workflow));
    }
    let rate = new.rate.unwrap_or(defaults.rate);
    if !(0.01..=1000.0).contains(&rate) || rate.is_nan() {
        return Err(DispatchError::BadRate(rate));
    }
    let (recipients, target_json) = match &new.target {
        Target::To(list) => (parse_numbers(list), json!({ "to": list })),
        Target::Group { name, filter } => (
            group_members(conn, name, filter.as_ref()).await?,
            json!({ "group": name, "filter": filter.as_ref().map(Condition::source) }),
        ),
    };
    if recipients.is_empty() {
        return Err(DispatchError::NoContacts(match &new.target {
            Target::To(_) => "the list of numbers is empty".into(),
            Target::Group { name, .. } => format!("group '{name}' has no matching contacts"),
        }));
    }
    let id = Uuid::now_v7();
    store::dispatches::insert(
        conn,
        &store::dispatches::NewDispatch {
            id,
            workflow: &workflow.name,
            sender_id: new.sender.as_deref().unwrap_or(&defaults.sender),
            event_type,
            source: new.source,
            started_by: new.started_by.as_deref(),
            target: &target_json,
            vars: &Value::Object(new.vars),
            rate,
        },
        &recipients,
    )
    .await?;
    tracing::info!(dispatch_id = %id, workflow = %workflow.name, contacts = recipients.len(), rate, "dispatch created");
    Ok(id)
}

/// Parses each number; duplicates (the same customer twice) are kept once.
fn parse_numbers(list: &[String]) -> Vec<Recipient> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for raw in list {
        match PhoneNumber::parse(raw) {
            Ok(phone) => {
                if seen.insert(phone.digits().to_string()) {
                    out.push(Recipient {
                        raw: raw.clone(),
                        customer_id: Some(phone.digits().to_string()),
                        phone: Some(phone.as_str().to_string()),
                        state: ContactState::Pending,
                        error: None,
                    });
                }
            }
            Err(e) => out.push(Recipient {
                raw: raw.clone(),
                phone: None,
                customer_id: None,
                state: ContactState::Failed,
                error: Some(json!({
                    "class": "Invalid phone number",
                    "message": e.to_string(),
                    "what_to_do": "format as +[country code][number]",
                })),
            }),
        }
    }
    out
}

async fn group_members(
    conn: &mut PgConnection,
    group: &str,
    filter: Option<&Condition>,
) -> Result<Vec<Recipient>, DispatchError> {
    let rows = store::contacts::members_with_phone(conn, group).await?;
    let mut out = Vec::new();
    for store::contacts::GroupMember {
        customer_id,
        phone,
        name,
        fields,
        groups,
        opted_out,
    } in rows
    {
        if let Some(filter) = filter {
            let data = json!({ "contact": {
                "phone": phone, "name": name, "fields": fields, "groups": groups, "opted_out": opted_out,
            }});
            match filter.evaluate(&data) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(reason) => {
                    tracing::warn!(
                        customer_id,
                        reason,
                        "contact filter failed; contact left out"
                    );
                    continue;
                }
            }
        }
        out.push(Recipient {
            raw: phone.clone().unwrap_or_default(),
            phone,
            customer_id: Some(customer_id),
            state: ContactState::Pending,
            error: None,
        });
    }
    Ok(out)
}

/// A dispatch with its progress.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Dispatch {
    pub id: Uuid,
    pub workflow: String,
    pub sender_id: String,
    pub source: Source,
    pub started_by: Option<String>,
    pub target: Value,
    pub vars: Value,
    pub rate: f64,
    pub status: DispatchStatus,
    /// The sender's bulk dispatches are paused (quality drop); nothing starts until an operator
    /// resumes the sender.
    pub sender_paused: bool,
    pub progress: Progress,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// How many contacts are in each state.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct Progress {
    pub total: i64,
    pub pending: i64,
    pub running: i64,
    pub waiting: i64,
    pub completed: i64,
    pub failed: i64,
    pub skipped_opted_out: i64,
    pub cancelled: i64,
    /// The messages the dispatch's runs sent, by their last status from Meta.
    pub messages: MessageCounts,
}

pub async fn show(pool: &PgPool, id: Uuid) -> Result<Option<Dispatch>, DispatchError> {
    let Some(row) = store::dispatches::get(pool, id).await? else {
        return Ok(None);
    };
    let mut progress = Progress::default();
    for (state, n) in store::dispatches::progress_counts(pool, id).await? {
        progress.total += n;
        let count = match state {
            ContactProgress::Pending => &mut progress.pending,
            ContactProgress::Running => &mut progress.running,
            ContactProgress::Waiting => &mut progress.waiting,
            ContactProgress::Completed => &mut progress.completed,
            ContactProgress::Failed => &mut progress.failed,
            ContactProgress::SkippedOptedOut => &mut progress.skipped_opted_out,
            ContactProgress::Cancelled => &mut progress.cancelled,
        };
        *count += n;
    }
    progress.messages = store::dispatches::message_counts(pool, id).await?;
    Ok(Some(Dispatch {
        id: row.id,
        workflow: row.workflow,
        sender_id: row.sender_id,
        source: row.source,
        started_by: row.started_by,
        target: row.target,
        vars: row.vars,
        rate: row.rate,
        status: row.status,
        sender_paused: row.sender_paused,
        progress,
        created_at: row.created_at,
        finished_at: row.finished_at,
    }))
}

/// The newest dispatches.
pub async fn list(pool: &PgPool, limit: i64) -> Result<Vec<Dispatch>, DispatchError> {
    let ids = store::dispatches::newest(pool, limit).await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(d) = show(pool, id).await? {
            out.push(d);
        }
    }
    Ok(out)
}

/// The states a dispatch's contact can be in, as `contacts` filters them.
pub const CONTACT_STATES: [&str; 7] = [
    ContactProgress::Pending.as_str(),
    ContactProgress::Running.as_str(),
    ContactProgress::Waiting.as_str(),
    ContactProgress::Completed.as_str(),
    ContactProgress::Failed.as_str(),
    ContactProgress::SkippedOptedOut.as_str(),
    ContactProgress::Cancelled.as_str(),
];

/// The contacts of a dispatch, optionally only those in `state` (one of [`CONTACT_STATES`];
/// another matches none).
pub async fn contacts(
    pool: &PgPool,
    id: Uuid,
    state: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<Vec<DispatchContact>, DispatchError> {
    let state = match state.map(ContactProgress::parse) {
        None => None,
        Some(Some(state)) => Some(state),
        Some(None) => return Ok(Vec::new()),
    };
    Ok(store::dispatches::contacts(pool, id, state, limit, offset).await?)
}

/// Operator actions on a dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    Cancel,
}

/// Pauses (no new runs start; runs under way go on), resumes or cancels (pending contacts are
/// not started; runs still waiting, sleeping or queued are cancelled).
pub async fn act(pool: &PgPool, id: Uuid, action: Action) -> Result<Dispatch, DispatchError> {
    let mut tx = pool.begin().await?;
    let status = store::dispatches::lock_status(&mut tx, id)
        .await?
        .ok_or(DispatchError::NotFound(id))?;
    let (allowed, new_status, verb): (&[DispatchStatus], DispatchStatus, &'static str) =
        match action {
            Action::Pause => (&[DispatchStatus::Running], DispatchStatus::Paused, "paused"),
            Action::Resume => (
                &[DispatchStatus::Paused],
                DispatchStatus::Running,
                "resumed",
            ),
            Action::Cancel => (
                &[DispatchStatus::Running, DispatchStatus::Paused],
                DispatchStatus::Cancelled,
                "cancelled",
            ),
        };
    if !allowed.contains(&status) {
        tx.rollback().await?;
        return Err(DispatchError::Conflict {
            id,
            status,
            action: verb,
        });
    }
    store::dispatches::set_status(&mut tx, id, new_status).await?;
    if action == Action::Cancel {
        store::dispatches::cancel_contacts(&mut tx, id).await?;
    }
    tx.commit().await?;
    tracing::info!(dispatch_id = %id, action = verb, "dispatch {verb}");
    show(pool, id).await?.ok_or(DispatchError::NotFound(id))
}

/// The bucket of starts holds this many seconds' worth.
pub const BURST_SECONDS: f64 = 0.25;

/// At most this many runs start per dispatch per tick.
const MAX_PER_TICK: i64 = 500;

/// One pass of the dispatcher at `now`: starts the runs each running dispatch may start now
/// and marks finished dispatches completed. Returns the outbox rows (events) to publish.
pub async fn tick(pool: &PgPool, now: DateTime<Utc>) -> anyhow::Result<Vec<OutboxRow>> {
    let mut tx = pool.begin().await.context("begin dispatcher tick")?;
    let active = store::dispatches::claim_running(&mut tx)
        .await
        .context("claim running dispatches")?;
    let mut rows = Vec::new();
    for ActiveDispatch {
        id,
        workflow,
        sender_id: sender,
        event_type,
        vars,
        rate,
        budget,
        ticked_at,
    } in active
    {
        let elapsed = (now - ticked_at).num_milliseconds().max(0) as f64 / 1000.0;
        // A token bucket holding at most a quarter second's worth of starts (at least one), so
        // no second ever sees more than 1.25 x rate + 1 starts.
        let budget = (budget + elapsed * rate).min((rate * BURST_SECONDS).max(1.0));
        let allowed = (budget.floor() as i64).min(MAX_PER_TICK);
        let started = if allowed > 0 {
            let event_type = event_type.event_type();
            start_contacts(
                &mut tx,
                Starting {
                    id,
                    workflow: &workflow,
                    sender: &sender,
                    event_type,
                    vars: &vars,
                    now,
                },
                allowed,
                &mut rows,
            )
            .await?
        } else {
            0
        };
        store::dispatches::set_budget(&mut tx, id, budget - started as f64, now)
            .await
            .context("update dispatch budget")?;
    }
    // Dispatches with nobody pending whose every started contact's run has finished.
    store::dispatches::complete_finished(&mut tx)
        .await
        .context("complete finished dispatches")?;
    tx.commit().await.context("commit dispatcher tick")?;
    Ok(rows)
}

struct Starting<'a> {
    id: Uuid,
    workflow: &'a str,
    sender: &'a str,
    event_type: EventType,
    vars: &'a Value,
    now: DateTime<Utc>,
}

/// Starts up to `allowed` pending contacts of one dispatch: opted-out contacts are skipped,
/// the others get an event (deduplicated per dispatch and position). Returns how many started.
async fn start_contacts(
    tx: &mut PgConnection,
    d: Starting<'_>,
    allowed: i64,
    rows: &mut Vec<OutboxRow>,
) -> anyhow::Result<usize> {
    let pending = store::dispatches::pending_contacts(tx, d.id, allowed)
        .await
        .context("claim pending contacts")?;
    let mut outcomes = Vec::with_capacity(pending.len());
    let mut started = 0;
    for PendingContact {
        position,
        phone,
        customer_id,
        name,
        fields,
        opted_out,
    } in pending
    {
        if opted_out == Some(true) {
            outcomes.push(ContactOutcome {
                position,
                state: ContactState::SkippedOptedOut,
                event_id: None,
            });
            continue;
        }
        let mut data = Map::new();
        if let Value::Object(vars) = d.vars {
            data.extend(vars.clone());
        }
        data.insert("vars".into(), d.vars.clone());
        data.insert("workflow".into(), json!(d.workflow));
        data.insert("dispatch_id".into(), json!(d.id));
        data.insert("customer_phone".into(), json!(phone));
        data.insert("customer_id".into(), json!(customer_id));
        data.insert("contact_name".into(), json!(name));
        data.insert("contact_fields".into(), fields.unwrap_or_else(|| json!({})));
        let event = CloudEvent::new(
            d.event_type,
            format!("/herald/dispatches/{}", d.id),
            d.sender.to_string(),
            Some(customer_id),
            d.now,
            Value::Object(data),
        );
        let recorded = events::record(tx, &event, &format!("dispatch:{}:{position}", d.id))
            .await
            .context("record dispatch event")?;
        let event_id = match &recorded {
            events::Recorded::New(_) => event.id,
            events::Recorded::Duplicate { event_id, .. } => *event_id,
        };
        if let Some(row) = recorded.outbox() {
            rows.push(row.clone());
        }
        outcomes.push(ContactOutcome {
            position,
            state: ContactState::Started,
            event_id: Some(event_id),
        });
        started += 1;
    }
    store::dispatches::mark_contacts(tx, d.id, &outcomes, d.now)
        .await
        .context("mark contacts started")?;
    if started > 0 {
        metrics::counter!("herald_dispatch_runs_started_total").increment(started as u64);
    }
    Ok(started)
}

/// The dispatcher: a tick every `interval` until shutdown (in the scheduler role).
pub async fn run(
    bus: Bus,
    pool: PgPool,
    interval: std::time::Duration,
    shutdown: CancellationToken,
) {
    loop {
        match tick(&pool, Utc::now()).await {
            Ok(rows) => {
                if let Err(e) = outbox::flush(&bus, &pool, &rows).await {
                    tracing::warn!(error = %e, "publishing dispatch events failed; the outbox relay will");
                }
            }
            Err(e) => tracing::warn!(error = format!("{e:#}"), "dispatcher tick failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_parsed_deduplicated_and_bad_ones_marked_failed() {
        let list: Vec<String> = [
            "+4915112345678",
            " +4915112345678 ",
            "12345",
            "+14155550123",
        ]
        .map(String::from)
        .to_vec();
        let out = parse_numbers(&list);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].phone.as_deref(), Some("+4915112345678"));
        assert_eq!(out[1].raw, "12345");
        assert_eq!(
            out[1].error.as_ref().unwrap()["class"],
            "Invalid phone number"
        );
        assert_eq!(out[2].customer_id.as_deref(), Some("14155550123"));
    }
}
