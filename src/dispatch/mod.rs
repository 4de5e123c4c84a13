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

use crate::{
    bus::{
        Bus,
        outbox::{self, OutboxRow},
    },
    domain::{CloudEvent, EventType, PhoneNumber},
    events,
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

/// Where a dispatch came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Api,
    Cli,
    Schedule,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Cli => "cli",
            Source::Schedule => "schedule",
        }
    }
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
        status: String,
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

struct Recipient {
    raw: String,
    phone: Option<String>,
    customer_id: Option<String>,
    error: Option<Value>,
}

/// Creates a dispatch (status `running`) and its contacts in one transaction.
pub async fn create(
    pool: &PgPool,
    workflows: &Workflows,
    defaults: &Defaults,
    new: NewDispatch,
) -> Result<Dispatch, DispatchError> {
    let mut tx = pool.begin().await?;
    let id = create_in(&mut tx, workflows, defaults, new, EventType::Manual).await?;
    tx.commit().await?;
    show(pool, id).await?.ok_or(DispatchError::NotFound(id))
}

/// [`create`] inside the caller's transaction; runs get events of `event_type`.
pub async fn create_in(
    conn: &mut PgConnection,
    workflows: &Workflows,
    defaults: &Defaults,
    new: NewDispatch,
    event_type: EventType,
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
    sqlx::query(
        "INSERT INTO dispatches (id, workflow, sender_id, event_type, source, started_by, target, vars, rate, status, budget)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'running', 1)",
    )
    .bind(id)
    .bind(&workflow.name)
    .bind(new.sender.as_deref().unwrap_or(&defaults.sender))
    .bind(event_type.as_str())
    .bind(new.source.as_str())
    .bind(&new.started_by)
    .bind(&target_json)
    .bind(Value::Object(new.vars))
    .bind(rate)
    .execute(&mut *conn)
    .await?;
    let positions: Vec<i32> = (0..recipients.len() as i32).collect();
    let raws: Vec<&str> = recipients.iter().map(|r| r.raw.as_str()).collect();
    let phones: Vec<Option<&str>> = recipients.iter().map(|r| r.phone.as_deref()).collect();
    let customers: Vec<Option<&str>> = recipients
        .iter()
        .map(|r| r.customer_id.as_deref())
        .collect();
    let states: Vec<&str> = recipients
        .iter()
        .map(|r| {
            if r.error.is_some() {
                "failed"
            } else {
                "pending"
            }
        })
        .collect();
    let errors: Vec<Option<Value>> = recipients.iter().map(|r| r.error.clone()).collect();
    sqlx::query(
        "INSERT INTO dispatch_contacts (dispatch_id, position, raw, phone, customer_id, state, error)
         SELECT $1, * FROM UNNEST($2::int[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[])",
    )
    .bind(id)
    .bind(&positions)
    .bind(&raws)
    .bind(&phones)
    .bind(&customers)
    .bind(&states)
    .bind(&errors)
    .execute(&mut *conn)
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
                        error: None,
                    });
                }
            }
            Err(e) => out.push(Recipient {
                raw: raw.clone(),
                phone: None,
                customer_id: None,
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
    type MemberRow = (
        String,
        Option<String>,
        Option<String>,
        Value,
        Vec<String>,
        bool,
    );
    let rows: Vec<MemberRow> = sqlx::query_as(
        "SELECT customer_id, phone, name, fields, groups, opted_out FROM contacts
             WHERE $1 = ANY(groups) AND phone IS NOT NULL ORDER BY created_at, customer_id",
    )
    .bind(group)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::new();
    for (customer_id, phone, name, fields, groups, opted_out) in rows {
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
    pub source: String,
    pub started_by: Option<String>,
    pub target: Value,
    pub vars: Value,
    pub rate: f64,
    /// running, paused, cancelled or completed.
    pub status: String,
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

/// Outbound messages by status (`accepted` until Meta reports `sent`).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct MessageCounts {
    pub accepted: i64,
    pub sent: i64,
    pub delivered: i64,
    pub read: i64,
    pub failed: i64,
}

/// A contact's state: the dispatch row's, or, once started, its run's.
const CONTACT_STATE: &str = "CASE WHEN dc.state <> 'started' THEN dc.state
       WHEN r.status IS NULL THEN 'running'
       WHEN r.status IN ('waiting', 'completed', 'failed', 'cancelled') THEN r.status
       ELSE 'running' END";

type DispatchRow = (
    Uuid,
    String,
    String,
    String,
    Option<String>,
    Value,
    Value,
    f64,
    String,
    bool,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

pub async fn show(pool: &PgPool, id: Uuid) -> Result<Option<Dispatch>, DispatchError> {
    let row: Option<DispatchRow> = sqlx::query_as(
        "SELECT d.id, d.workflow, d.sender_id, d.source, d.started_by, d.target, d.vars, d.rate, d.status,
                EXISTS (SELECT 1 FROM senders s WHERE s.id = d.sender_id AND s.dispatch_paused),
                d.created_at, d.finished_at
         FROM dispatches d WHERE d.id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let counts: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CONTACT_STATE} AS state, count(*) FROM dispatch_contacts dc
         LEFT JOIN runs r ON r.dispatch_id = dc.dispatch_id AND r.customer_id = dc.customer_id
         WHERE dc.dispatch_id = $1 GROUP BY 1"
    )))
    .bind(id)
    .fetch_all(pool)
    .await?;
    let mut progress = Progress::default();
    for (state, n) in counts {
        progress.total += n;
        match state.as_str() {
            "pending" => progress.pending += n,
            "running" => progress.running += n,
            "waiting" => progress.waiting += n,
            "completed" => progress.completed += n,
            "failed" => progress.failed += n,
            "skipped_opted_out" => progress.skipped_opted_out += n,
            _ => progress.cancelled += n,
        }
    }
    let statuses: Vec<(String, i64)> = sqlx::query_as(
        "SELECT om.status, count(*) FROM outbound_messages om JOIN runs r ON r.id = om.run_id
         WHERE r.dispatch_id = $1 GROUP BY 1",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    for (status, n) in statuses {
        let m = &mut progress.messages;
        match status.as_str() {
            "sent" => m.sent += n,
            "delivered" => m.delivered += n,
            "read" => m.read += n,
            "failed" => m.failed += n,
            _ => m.accepted += n,
        }
    }
    Ok(Some(Dispatch {
        id: row.0,
        workflow: row.1,
        sender_id: row.2,
        source: row.3,
        started_by: row.4,
        target: row.5,
        vars: row.6,
        rate: row.7,
        status: row.8,
        sender_paused: row.9,
        progress,
        created_at: row.10,
        finished_at: row.11,
    }))
}

/// The newest dispatches.
pub async fn list(pool: &PgPool, limit: i64) -> Result<Vec<Dispatch>, DispatchError> {
    let ids: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM dispatches ORDER BY created_at DESC LIMIT $1")
            .bind(limit)
            .fetch_all(pool)
            .await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(d) = show(pool, id).await? {
            out.push(d);
        }
    }
    Ok(out)
}

/// One contact of a dispatch: its state, its run and what went wrong.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct DispatchContact {
    pub position: i32,
    /// The number as given.
    pub to: String,
    pub phone: Option<String>,
    pub state: String,
    pub run_id: Option<Uuid>,
    pub error: Option<Value>,
    pub started_at: Option<DateTime<Utc>>,
}

pub const CONTACT_STATES: [&str; 7] = [
    "pending",
    "running",
    "waiting",
    "completed",
    "failed",
    "skipped_opted_out",
    "cancelled",
];

/// The contacts of a dispatch, optionally only those in `state`.
pub async fn contacts(
    pool: &PgPool,
    id: Uuid,
    state: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<Vec<DispatchContact>, DispatchError> {
    type Row = (
        i32,
        String,
        Option<String>,
        String,
        Option<Uuid>,
        Option<Value>,
        Option<DateTime<Utc>>,
    );
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM (
           SELECT dc.position, dc.raw, dc.phone, {CONTACT_STATE} AS state, r.id,
                  coalesce(dc.error, r.error), dc.started_at
           FROM dispatch_contacts dc
           LEFT JOIN runs r ON r.dispatch_id = dc.dispatch_id AND r.customer_id = dc.customer_id
           WHERE dc.dispatch_id = $1
         ) c WHERE $2::text IS NULL OR c.state = $2 ORDER BY position LIMIT $3 OFFSET $4"
    )))
    .bind(id)
    .bind(state)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(position, to, phone, state, run_id, error, started_at)| DispatchContact {
                position,
                to,
                phone,
                state,
                run_id,
                error,
                started_at,
            },
        )
        .collect())
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
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM dispatches WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let status = status.ok_or(DispatchError::NotFound(id))?;
    let (allowed, new_status, verb): (&[&str], &str, &'static str) = match action {
        Action::Pause => (&["running"], "paused", "paused"),
        Action::Resume => (&["paused"], "running", "resumed"),
        Action::Cancel => (&["running", "paused"], "cancelled", "cancelled"),
    };
    if !allowed.contains(&status.as_str()) {
        tx.rollback().await?;
        return Err(DispatchError::Conflict {
            id,
            status,
            action: verb,
        });
    }
    sqlx::query(
        "UPDATE dispatches SET status = $2, updated_at = now(), ticked_at = now(),
           finished_at = CASE WHEN $2 = 'cancelled' THEN now() END WHERE id = $1",
    )
    .bind(id)
    .bind(new_status)
    .execute(&mut *tx)
    .await?;
    if action == Action::Cancel {
        sqlx::query(
            "UPDATE dispatch_contacts SET state = 'cancelled' WHERE dispatch_id = $1 AND state = 'pending'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let cancelled: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE runs SET status = 'cancelled', finished_at = now(), updated_at = now(),
               error = '{\"class\": \"Cancelled\", \"message\": \"the dispatch was cancelled\"}'
             WHERE dispatch_id = $1 AND status IN ('queued', 'sleeping', 'waiting', 'retrying')
             RETURNING id",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM timers WHERE run_id = ANY($1)")
            .bind(&cancelled)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    tracing::info!(dispatch_id = %id, action = verb, "dispatch {verb}");
    show(pool, id).await?.ok_or(DispatchError::NotFound(id))
}

/// The bucket of starts holds this many seconds' worth.
pub const BURST_SECONDS: f64 = 0.25;

/// At most this many runs start per dispatch per tick.
const MAX_PER_TICK: i64 = 500;

type ActiveRow = (Uuid, String, String, String, Value, f64, f64, DateTime<Utc>);

/// One pass of the dispatcher at `now`: starts the runs each running dispatch may start now
/// and marks finished dispatches completed. Returns the outbox rows (events) to publish.
pub async fn tick(pool: &PgPool, now: DateTime<Utc>) -> anyhow::Result<Vec<OutboxRow>> {
    let mut tx = pool.begin().await.context("begin dispatcher tick")?;
    let active: Vec<ActiveRow> = sqlx::query_as(
        "SELECT d.id, d.workflow, d.sender_id, d.event_type, d.vars, d.rate, d.budget, d.ticked_at
         FROM dispatches d
         WHERE d.status = 'running'
           AND NOT EXISTS (SELECT 1 FROM senders s WHERE s.id = d.sender_id AND s.dispatch_paused)
           AND EXISTS (SELECT 1 FROM dispatch_contacts c WHERE c.dispatch_id = d.id AND c.state = 'pending')
         ORDER BY d.created_at LIMIT 50
         FOR UPDATE OF d SKIP LOCKED",
    )
    .fetch_all(&mut *tx)
    .await
    .context("claim running dispatches")?;
    let mut rows = Vec::new();
    for (id, workflow, sender, event_type, vars, rate, budget, ticked_at) in active {
        let elapsed = (now - ticked_at).num_milliseconds().max(0) as f64 / 1000.0;
        // A token bucket holding at most a quarter second's worth of starts (at least one), so
        // no second ever sees more than 1.25 x rate + 1 starts.
        let budget = (budget + elapsed * rate).min((rate * BURST_SECONDS).max(1.0));
        let allowed = (budget.floor() as i64).min(MAX_PER_TICK);
        let started = if allowed > 0 {
            let event_type = event_type.parse().unwrap_or(EventType::Manual);
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
        sqlx::query("UPDATE dispatches SET budget = $2, ticked_at = $3 WHERE id = $1")
            .bind(id)
            .bind(budget - started as f64)
            .bind(now)
            .execute(&mut *tx)
            .await
            .context("update dispatch budget")?;
    }
    // Dispatches with nobody pending whose every started contact's run has finished.
    sqlx::query(
        "UPDATE dispatches d SET status = 'completed', finished_at = now(), updated_at = now()
         WHERE d.status = 'running'
           AND NOT EXISTS (SELECT 1 FROM dispatch_contacts c WHERE c.dispatch_id = d.id AND c.state = 'pending')
           AND NOT EXISTS (
             SELECT 1 FROM dispatch_contacts c WHERE c.dispatch_id = d.id AND c.state = 'started'
               AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.dispatch_id = d.id AND r.customer_id = c.customer_id
                                 AND r.status IN ('completed', 'failed', 'cancelled')))",
    )
    .execute(&mut *tx)
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
    type PendingRow = (
        i32,
        String,
        String,
        Option<String>,
        Option<Value>,
        Option<bool>,
    );
    let pending: Vec<PendingRow> = sqlx::query_as(
        "SELECT dc.position, dc.phone, dc.customer_id, ct.name, ct.fields, ct.opted_out
         FROM dispatch_contacts dc LEFT JOIN contacts ct ON ct.customer_id = dc.customer_id
         WHERE dc.dispatch_id = $1 AND dc.state = 'pending' ORDER BY dc.position LIMIT $2",
    )
    .bind(d.id)
    .bind(allowed)
    .fetch_all(&mut *tx)
    .await
    .context("claim pending contacts")?;
    let mut positions = Vec::new();
    let mut states = Vec::new();
    let mut event_ids: Vec<Option<Uuid>> = Vec::new();
    let mut started = 0;
    for (position, phone, customer_id, name, fields, opted_out) in pending {
        positions.push(position);
        if opted_out == Some(true) {
            states.push("skipped_opted_out");
            event_ids.push(None);
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
        states.push("started");
        event_ids.push(Some(event_id));
        started += 1;
    }
    sqlx::query(
        "UPDATE dispatch_contacts dc SET state = u.state, event_id = u.event_id,
           started_at = CASE WHEN u.state = 'started' THEN $5 END
         FROM UNNEST($2::int[], $3::text[], $4::uuid[]) AS u(position, state, event_id)
         WHERE dc.dispatch_id = $1 AND dc.position = u.position",
    )
    .bind(d.id)
    .bind(&positions)
    .bind(&states)
    .bind(&event_ids)
    .bind(d.now)
    .execute(&mut *tx)
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
