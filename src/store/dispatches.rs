//! The `dispatches` and `dispatch_contacts` tables: one run of a workflow per contact of a list
//! or a group, started at a paced rate by the dispatcher. A dispatch row is locked
//! (`FOR UPDATE SKIP LOCKED`) while its contacts are claimed. A contact's progress past
//! `started` is its run's status (a dispatch reads its runs by `runs.dispatch_id`).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::EventType;

/// A dispatch's status.
#[derive(
    sqlx::Type, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema,
)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum DispatchStatus {
    /// Starting its contacts' runs.
    Running,
    /// Nothing new starts; runs under way go on.
    Paused,
    /// Pending contacts were not started; waiting runs were cancelled.
    Cancelled,
    /// Nobody pending, and every started contact's run finished.
    Completed,
}

impl DispatchStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            DispatchStatus::Running => "running",
            DispatchStatus::Paused => "paused",
            DispatchStatus::Cancelled => "cancelled",
            DispatchStatus::Completed => "completed",
        }
    }
}

impl fmt::Display for DispatchStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Where a dispatch came from.
#[derive(
    sqlx::Type, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema,
)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum DispatchSource {
    Api,
    Cli,
    Schedule,
}

impl DispatchSource {
    pub const fn as_str(self) -> &'static str {
        match self {
            DispatchSource::Api => "api",
            DispatchSource::Cli => "cli",
            DispatchSource::Schedule => "schedule",
        }
    }
}

impl fmt::Display for DispatchSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The trigger type of a dispatch's runs (the type of the events it records).
#[derive(sqlx::Type, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum DispatchEventType {
    Manual,
    Schedule,
}

impl DispatchEventType {
    pub fn as_str(self) -> &'static str {
        self.event_type().as_str()
    }

    pub const fn event_type(self) -> EventType {
        match self {
            DispatchEventType::Manual => EventType::Manual,
            DispatchEventType::Schedule => EventType::Schedule,
        }
    }
}

/// A contact's state as its `dispatch_contacts` row keeps it.
#[derive(sqlx::Type, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum ContactState {
    /// Not started yet.
    Pending,
    /// Its event was recorded; its run's status says the rest.
    Started,
    SkippedOptedOut,
    /// Never started (its number was not E.164).
    Failed,
    /// The dispatch was cancelled before it started.
    Cancelled,
}

impl ContactState {
    pub const fn as_str(self) -> &'static str {
        match self {
            ContactState::Pending => "pending",
            ContactState::Started => "started",
            ContactState::SkippedOptedOut => "skipped_opted_out",
            ContactState::Failed => "failed",
            ContactState::Cancelled => "cancelled",
        }
    }
}

/// A contact's progress as a dispatch shows it: its row's state or, once started, its run's.
#[derive(
    sqlx::Type, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema,
)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum ContactProgress {
    Pending,
    Running,
    Waiting,
    Completed,
    Failed,
    SkippedOptedOut,
    Cancelled,
}

impl ContactProgress {
    pub const ALL: [ContactProgress; 7] = [
        ContactProgress::Pending,
        ContactProgress::Running,
        ContactProgress::Waiting,
        ContactProgress::Completed,
        ContactProgress::Failed,
        ContactProgress::SkippedOptedOut,
        ContactProgress::Cancelled,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ContactProgress::Pending => "pending",
            ContactProgress::Running => "running",
            ContactProgress::Waiting => "waiting",
            ContactProgress::Completed => "completed",
            ContactProgress::Failed => "failed",
            ContactProgress::SkippedOptedOut => "skipped_opted_out",
            ContactProgress::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

impl fmt::Display for ContactProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A contact's progress: the dispatch row's state, or, once started, its run's.
const CONTACT_STATE: &str = "CASE WHEN dc.state <> 'started' THEN dc.state
       WHEN r.status IS NULL THEN 'running'
       WHEN r.status IN ('waiting', 'completed', 'failed', 'cancelled') THEN r.status
       ELSE 'running' END";

/// A dispatch to create.
#[derive(Debug, Clone, Copy)]
pub struct NewDispatch<'a> {
    pub id: Uuid,
    pub workflow: &'a str,
    pub sender_id: &'a str,
    pub event_type: DispatchEventType,
    pub source: DispatchSource,
    pub started_by: Option<&'a str>,
    /// `{"to": [...]}` or `{"group": "...", "filter": ...}`.
    pub target: &'a Value,
    pub vars: &'a Value,
    pub rate: f64,
}

/// A contact of a dispatch to create.
#[derive(Debug, Clone)]
pub struct Recipient {
    /// The number as given.
    pub raw: String,
    /// E.164, when it parsed.
    pub phone: Option<String>,
    pub customer_id: Option<String>,
    pub state: ContactState,
    pub error: Option<Value>,
}

/// Creates a dispatch (status `running`, a budget of one start) and its contacts (positions
/// from 0, in order) in the caller's transaction.
pub async fn insert(
    conn: &mut PgConnection,
    dispatch: &NewDispatch<'_>,
    contacts: &[Recipient],
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO dispatches (id, workflow, sender_id, event_type, source, started_by, target, vars, rate, status, budget)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'running', 1)",
    )
    .bind(dispatch.id)
    .bind(dispatch.workflow)
    .bind(dispatch.sender_id)
    .bind(dispatch.event_type)
    .bind(dispatch.source)
    .bind(dispatch.started_by)
    .bind(dispatch.target)
    .bind(dispatch.vars)
    .bind(dispatch.rate)
    .execute(&mut *conn)
    .await?;
    let positions: Vec<i32> = (0..contacts.len() as i32).collect();
    let raws: Vec<&str> = contacts.iter().map(|c| c.raw.as_str()).collect();
    let phones: Vec<Option<&str>> = contacts.iter().map(|c| c.phone.as_deref()).collect();
    let customers: Vec<Option<&str>> = contacts.iter().map(|c| c.customer_id.as_deref()).collect();
    let states: Vec<ContactState> = contacts.iter().map(|c| c.state).collect();
    let errors: Vec<Option<&Value>> = contacts.iter().map(|c| c.error.as_ref()).collect();
    sqlx::query(
        "INSERT INTO dispatch_contacts (dispatch_id, position, raw, phone, customer_id, state, error)
         SELECT $1, * FROM UNNEST($2::int[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[])",
    )
    .bind(dispatch.id)
    .bind(&positions)
    .bind(&raws)
    .bind(&phones)
    .bind(&customers)
    .bind(&states)
    .bind(&errors)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A dispatch's row, with whether its sender's dispatches are paused.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DispatchRow {
    pub id: Uuid,
    pub workflow: String,
    pub sender_id: String,
    pub source: DispatchSource,
    pub started_by: Option<String>,
    pub target: Value,
    pub vars: Value,
    pub rate: f64,
    pub status: DispatchStatus,
    pub sender_paused: bool,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

pub async fn get(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<DispatchRow>> {
    sqlx::query_as(
        "SELECT d.id, d.workflow, d.sender_id, d.source, d.started_by, d.target, d.vars, d.rate, d.status,
                EXISTS (SELECT 1 FROM senders s WHERE s.id = d.sender_id AND s.dispatch_paused) AS sender_paused,
                d.created_at, d.finished_at
         FROM dispatches d WHERE d.id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// How many contacts of a dispatch are at each progress.
pub async fn progress_counts(pool: &PgPool, id: Uuid) -> sqlx::Result<Vec<(ContactProgress, i64)>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CONTACT_STATE} AS state, count(*) FROM dispatch_contacts dc
         LEFT JOIN runs r ON r.dispatch_id = dc.dispatch_id AND r.customer_id = dc.customer_id
         WHERE dc.dispatch_id = $1 GROUP BY 1"
    )))
    .bind(id)
    .fetch_all(pool)
    .await
}

/// Outbound messages by status (`accepted` until Meta reports `sent`).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq, schemars::JsonSchema, sqlx::FromRow)]
pub struct MessageCounts {
    pub accepted: i64,
    pub sent: i64,
    pub delivered: i64,
    pub read: i64,
    pub failed: i64,
}

/// The messages a dispatch's runs sent, by their last status from Meta.
pub async fn message_counts(pool: &PgPool, id: Uuid) -> sqlx::Result<MessageCounts> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE om.status NOT IN ('sent', 'delivered', 'read', 'failed')) AS accepted,
                count(*) FILTER (WHERE om.status = 'sent') AS sent,
                count(*) FILTER (WHERE om.status = 'delivered') AS delivered,
                count(*) FILTER (WHERE om.status = 'read') AS read,
                count(*) FILTER (WHERE om.status = 'failed') AS failed
         FROM outbound_messages om JOIN runs r ON r.id = om.run_id
         WHERE r.dispatch_id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
}

/// The ids of the newest dispatches.
pub async fn newest(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar("SELECT id FROM dispatches ORDER BY created_at DESC LIMIT $1")
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// One contact of a dispatch: its progress, its run and what went wrong.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema, sqlx::FromRow)]
pub struct DispatchContact {
    pub position: i32,
    /// The number as given.
    #[sqlx(rename = "raw")]
    pub to: String,
    pub phone: Option<String>,
    pub state: ContactProgress,
    pub run_id: Option<Uuid>,
    pub error: Option<Value>,
    pub started_at: Option<DateTime<Utc>>,
}

/// The contacts of a dispatch by position, optionally only those at `state`.
pub async fn contacts(
    pool: &PgPool,
    id: Uuid,
    state: Option<ContactProgress>,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<DispatchContact>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM (
           SELECT dc.position, dc.raw, dc.phone, {CONTACT_STATE} AS state, r.id AS run_id,
                  coalesce(dc.error, r.error) AS error, dc.started_at
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
    .await
}

/// Locks a dispatch's row for the caller's transaction; its status, `None` when there is none.
pub async fn lock_status(
    conn: &mut PgConnection,
    id: Uuid,
) -> sqlx::Result<Option<DispatchStatus>> {
    sqlx::query_scalar("SELECT status FROM dispatches WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
}

/// Moves a dispatch to `status` (a cancelled one is finished now); its budget starts again.
pub async fn set_status(
    conn: &mut PgConnection,
    id: Uuid,
    status: DispatchStatus,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE dispatches SET status = $2, updated_at = now(), ticked_at = now(),
           finished_at = CASE WHEN $2 = 'cancelled' THEN now() END WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Cancels a dispatch's pending contacts and its runs still queued, sleeping, waiting or
/// retrying (with their timers), in the caller's transaction.
pub async fn cancel_contacts(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE dispatch_contacts SET state = 'cancelled' WHERE dispatch_id = $1 AND state = 'pending'",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    let cancelled: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE runs SET status = 'cancelled', finished_at = now(), updated_at = now(),
           error = '{\"class\": \"Cancelled\", \"message\": \"the dispatch was cancelled\"}'
         WHERE dispatch_id = $1 AND status IN ('queued', 'sleeping', 'waiting', 'retrying')
         RETURNING id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM timers WHERE run_id = ANY($1)")
        .bind(&cancelled)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A running dispatch the dispatcher holds for one tick.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ActiveDispatch {
    pub id: Uuid,
    pub workflow: String,
    pub sender_id: String,
    pub event_type: DispatchEventType,
    pub vars: Value,
    /// Runs started per second at most.
    pub rate: f64,
    /// Starts allowed at `ticked_at` (a token bucket).
    pub budget: f64,
    pub ticked_at: DateTime<Utc>,
}

/// Claims (up to 50, oldest first) the running dispatches with pending contacts whose sender
/// is not paused, for the caller's transaction; another scheduler skips them.
pub async fn claim_running(conn: &mut PgConnection) -> sqlx::Result<Vec<ActiveDispatch>> {
    sqlx::query_as(
        "SELECT d.id, d.workflow, d.sender_id, d.event_type, d.vars, d.rate, d.budget, d.ticked_at
         FROM dispatches d
         WHERE d.status = 'running'
           AND NOT EXISTS (SELECT 1 FROM senders s WHERE s.id = d.sender_id AND s.dispatch_paused)
           AND EXISTS (SELECT 1 FROM dispatch_contacts c WHERE c.dispatch_id = d.id AND c.state = 'pending')
         ORDER BY d.created_at LIMIT 50
         FOR UPDATE OF d SKIP LOCKED",
    )
    .fetch_all(&mut *conn)
    .await
}

pub async fn set_budget(
    conn: &mut PgConnection,
    id: Uuid,
    budget: f64,
    ticked_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE dispatches SET budget = $2, ticked_at = $3 WHERE id = $1")
        .bind(id)
        .bind(budget)
        .bind(ticked_at)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Marks `completed` the running dispatches with nobody pending whose every started contact's
/// run has finished.
pub async fn complete_finished(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE dispatches d SET status = 'completed', finished_at = now(), updated_at = now()
         WHERE d.status = 'running'
           AND NOT EXISTS (SELECT 1 FROM dispatch_contacts c WHERE c.dispatch_id = d.id AND c.state = 'pending')
           AND NOT EXISTS (
             SELECT 1 FROM dispatch_contacts c WHERE c.dispatch_id = d.id AND c.state = 'started'
               AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.dispatch_id = d.id AND r.customer_id = c.customer_id
                                 AND r.status IN ('completed', 'failed', 'cancelled')))",
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A pending contact with what its contact row says (none when it has no row).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PendingContact {
    pub position: i32,
    pub phone: String,
    pub customer_id: String,
    pub name: Option<String>,
    pub fields: Option<Value>,
    pub opted_out: Option<bool>,
}

/// The first `limit` pending contacts of a dispatch, by position.
pub async fn pending_contacts(
    conn: &mut PgConnection,
    id: Uuid,
    limit: i64,
) -> sqlx::Result<Vec<PendingContact>> {
    sqlx::query_as(
        "SELECT dc.position, dc.phone, dc.customer_id, ct.name, ct.fields, ct.opted_out
         FROM dispatch_contacts dc LEFT JOIN contacts ct ON ct.customer_id = dc.customer_id
         WHERE dc.dispatch_id = $1 AND dc.state = 'pending' ORDER BY dc.position LIMIT $2",
    )
    .bind(id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await
}

/// What became of a pending contact.
#[derive(Clone, Copy, Debug)]
pub struct ContactOutcome {
    pub position: i32,
    pub state: ContactState,
    /// The event that starts its run.
    pub event_id: Option<Uuid>,
}

/// Records what became of pending contacts; a started one started at `now`.
pub async fn mark_contacts(
    conn: &mut PgConnection,
    id: Uuid,
    outcomes: &[ContactOutcome],
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    let positions: Vec<i32> = outcomes.iter().map(|o| o.position).collect();
    let states: Vec<ContactState> = outcomes.iter().map(|o| o.state).collect();
    let event_ids: Vec<Option<Uuid>> = outcomes.iter().map(|o| o.event_id).collect();
    sqlx::query(
        "UPDATE dispatch_contacts dc SET state = u.state, event_id = u.event_id,
           started_at = CASE WHEN u.state = 'started' THEN $5 END
         FROM UNNEST($2::int[], $3::text[], $4::uuid[]) AS u(position, state, event_id)
         WHERE dc.dispatch_id = $1 AND dc.position = u.position",
    )
    .bind(id)
    .bind(&positions)
    .bind(&states)
    .bind(&event_ids)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
