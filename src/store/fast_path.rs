//! The worker's fast path: three statements (read, intent, success) over runs, step attempts,
//! outbound messages, contacts and the outbox, each batched across the jobs a process holds
//! (`db::batch`): under load one statement serves many jobs.

use std::sync::Arc;

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    attempts::AttemptState,
    messages::Sent,
    outbox::{Destination, OutboxRow},
    runs::{Job, RunStatus},
};
use crate::{
    db::batch::{Batched, DbError, Statement},
    domain::CloudEvent,
};

/// The batched statements of one worker process.
#[derive(Clone)]
pub struct Statements {
    read: Batched<Read>,
    intent: Batched<Intent>,
    success: Batched<Success>,
}

impl Statements {
    /// `stranded_after`: an earlier run of the contact that nothing moved for this long holds
    /// no later one back (the scheduler's sweep gives it its job again).
    pub fn new(
        pool: &sqlx::PgPool,
        lease: std::time::Duration,
        stranded_after: std::time::Duration,
    ) -> Self {
        Statements {
            read: Batched::new(
                "worker.read",
                pool.clone(),
                Read {
                    stranded_secs: stranded_after.as_secs_f64(),
                },
            ),
            intent: Batched::new(
                "worker.intent",
                pool.clone(),
                Intent {
                    lease_secs: lease.as_secs_f64(),
                },
            ),
            success: Batched::new("worker.success", pool.clone(), Success),
        }
    }

    pub async fn read(&self, job: Job) -> Result<Option<FastRow>, DbError> {
        self.read.run(job).await
    }

    pub async fn intent(&self, intent: NewIntent) -> Result<bool, DbError> {
        self.intent.run(intent).await
    }

    pub async fn success(&self, done: Arc<Done>) -> Result<Succeeded, DbError> {
        self.success.run(done).await
    }
}

/// What the fast path reads of a run, its step's last attempt and its contact.
#[derive(sqlx::FromRow)]
pub struct FastRow {
    ord: i64,
    pub workflow: String,
    pub status: RunStatus,
    pub step_index: i32,
    pub context: Value,
    pub event: sqlx::types::Json<CloudEvent>,
    pub customer_id: Option<String>,
    pub sender_id: Option<String>,
    pub last_attempt: Option<i32>,
    pub last_state: Option<AttemptState>,
    pub has_contact: bool,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub fields: Option<Value>,
    pub groups: Option<Vec<String>>,
    pub opted_out: Option<bool>,
    /// An earlier run of the same contact is queued or running.
    pub behind: bool,
}

/// Puts rows that carry their input's 1-based `ord` back in input order.
fn by_ord<T>(n: usize, rows: Vec<(i64, T)>) -> Vec<Option<T>> {
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    for (ord, row) in rows {
        if let Some(slot) = usize::try_from(ord - 1).ok().and_then(|i| out.get_mut(i)) {
            *slot = Some(row);
        }
    }
    out
}

#[derive(Clone)]
struct Read {
    stranded_secs: f64,
}

impl Statement for Read {
    type Input = Job;
    type Output = Option<FastRow>;

    async fn run(&self, conn: &mut PgConnection, jobs: &[Job]) -> sqlx::Result<Vec<Self::Output>> {
        let rows: Vec<FastRow> = sqlx::query_as(
            "SELECT x.ord, r.workflow, r.status, r.step_index, r.context, ev.cloudevent AS event,
                    r.customer_id, r.sender_id,
                    a.attempt AS last_attempt, a.state AS last_state, c.customer_id IS NOT NULL AS has_contact,
                    c.name, c.phone, c.fields, c.groups, c.opted_out,
                    r.customer_id IS NOT NULL AND EXISTS (
                      SELECT 1 FROM runs o JOIN events oe ON oe.id = o.event_id
                      WHERE o.customer_id = r.customer_id AND o.finished_at IS NULL
                        AND o.status IN ('queued', 'running')
                        AND o.updated_at > now() - make_interval(secs => $3)
                        AND o.id <> r.id AND (oe.received_at, oe.id) < (ev.received_at, ev.id)
                    ) AS behind
             FROM unnest($1::uuid[], $2::int[]) WITH ORDINALITY AS x(run_id, step_index, ord)
             JOIN runs r ON r.id = x.run_id
             JOIN events ev ON ev.id = r.event_id
             LEFT JOIN LATERAL (SELECT attempt, state FROM step_attempts
                                WHERE run_id = r.id AND step_index = x.step_index
                                ORDER BY attempt DESC LIMIT 1) a ON true
             LEFT JOIN contacts c ON c.customer_id = r.customer_id",
        )
        .bind(jobs.iter().map(|j| j.run_id).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.step_index).collect::<Vec<_>>())
        .bind(self.stranded_secs)
        .fetch_all(conn)
        .await?;
        Ok(by_ord(
            jobs.len(),
            rows.into_iter().map(|r| (r.ord, r)).collect(),
        ))
    }
}

/// A step's intent: recorded only while its run is still queued or running at that step, and
/// only once per (run, step, attempt); `owner` tells whose it is.
#[derive(Clone)]
pub struct NewIntent {
    pub job: Job,
    pub step_id: String,
    pub step_type: &'static str,
    pub attempt: i32,
    pub input: Value,
    pub owner: Uuid,
}

#[derive(Clone)]
struct Intent {
    lease_secs: f64,
}

impl Statement for Intent {
    type Input = NewIntent;
    type Output = bool;

    async fn run(&self, conn: &mut PgConnection, all: &[NewIntent]) -> sqlx::Result<Vec<bool>> {
        // Two deliveries of one job in one batch propose the same key: the unique key keeps the
        // first, and only its owner is told it recorded the intent.
        let recorded: Vec<(i64, bool)> = sqlx::query_as(
            "WITH x AS (
               SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::int[], $6::jsonb[], $7::uuid[])
                 WITH ORDINALITY AS x(run_id, step_index, step_id, step_type, attempt, input, owner, ord)
             ), ins AS (
               INSERT INTO step_attempts (run_id, step_index, step_id, step_type, attempt, state, input, lease_until, owner)
               SELECT x.run_id, x.step_index, x.step_id, x.step_type, x.attempt, 'started', x.input,
                      now() + make_interval(secs => $8), x.owner
               FROM x JOIN runs r ON r.id = x.run_id AND r.step_index = x.step_index
                                 AND r.status IN ('queued', 'running')
               ORDER BY x.run_id, x.ord
               ON CONFLICT (run_id, step_index, attempt) DO NOTHING
               RETURNING run_id, owner
             ), upd AS (
               UPDATE runs SET status = 'running', updated_at = now()
               WHERE id IN (SELECT run_id FROM ins) RETURNING id
             )
             SELECT x.ord, EXISTS (SELECT 1 FROM ins WHERE ins.owner = x.owner)
                           AND EXISTS (SELECT 1 FROM upd WHERE upd.id = x.run_id)
             FROM x",
        )
        .bind(all.iter().map(|i| i.job.run_id).collect::<Vec<_>>())
        .bind(all.iter().map(|i| i.job.step_index).collect::<Vec<_>>())
        .bind(all.iter().map(|i| i.step_id.as_str()).collect::<Vec<_>>())
        .bind(all.iter().map(|i| i.step_type).collect::<Vec<_>>())
        .bind(all.iter().map(|i| i.attempt).collect::<Vec<_>>())
        .bind(all.iter().map(|i| &i.input).collect::<Vec<_>>())
        .bind(all.iter().map(|i| i.owner).collect::<Vec<_>>())
        .bind(self.lease_secs)
        .fetch_all(conn)
        .await?;
        Ok(by_ord(all.len(), recorded)
            .into_iter()
            .map(|r| r.unwrap_or(false))
            .collect())
    }
}

/// A step that succeeded and goes on to step `target` (or completes the run, `None`).
pub struct Done {
    pub job: Job,
    pub step_id: String,
    pub attempt: i32,
    pub output: Value,
    pub target: Option<i32>,
    pub sent: Option<Sent>,
}

/// What recording a success did: whether the run moved (it had not moved on meanwhile) and
/// the next job's outbox row.
pub struct Succeeded {
    pub moved: bool,
    pub next_job: Option<OutboxRow>,
}

#[derive(Clone)]
struct Success;

/// What the success statement answers per step: whether its run moved, and the next job's
/// outbox row (all `None` when there is none).
#[derive(sqlx::FromRow)]
struct SuccessRow {
    ord: i64,
    moved: bool,
    id: Option<i64>,
    destination: Option<String>,
    routing_key: Option<String>,
    body: Option<Value>,
}

impl Statement for Success {
    /// Shared with the caller, which may hand it in again when PostgreSQL was away.
    type Input = Arc<Done>;
    type Output = Succeeded;

    /// In one statement for every step of the batch: the attempt's output, the message sent,
    /// the run's context and position, and the next job's outbox row. When a run has moved on
    /// meanwhile (its attempt was closed as interrupted), its attempt and message are still
    /// recorded, and nothing more.
    async fn run(
        &self,
        conn: &mut PgConnection,
        all: &[Arc<Done>],
    ) -> sqlx::Result<Vec<Succeeded>> {
        let jobs: Vec<Option<Value>> = all
            .iter()
            .map(|d| {
                d.target
                    .map(|t| serde_json::to_value(Job::step(d.job.run_id, t)))
                    .transpose()
            })
            .collect::<Result<_, _>>()
            .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let sent = |f: fn(&Sent) -> &str| -> Vec<Option<&str>> {
            all.iter().map(|d| d.sent.as_ref().map(f)).collect()
        };
        let rows: Vec<SuccessRow> = sqlx::query_as(
            "WITH x AS (
               SELECT * FROM unnest($1::uuid[], $2::int[], $3::int[], $4::jsonb[], $5::text[], $6::int[],
                                    $7::jsonb[], $8::uuid[], $9::text[], $10::text[], $11::text[], $12::text[],
                                    $13::jsonb[], $14::text[])
                 WITH ORDINALITY AS x(run_id, step_index, attempt, output, step_id, target, job, msg_id,
                                      sender_id, recipient, kind, provider, request, wamid, ord)
             ), att AS (
               UPDATE step_attempts a SET state = 'succeeded', output = x.output, finished_at = now()
               FROM x WHERE a.run_id = x.run_id AND a.step_index = x.step_index AND a.attempt = x.attempt
             ), msg AS (
               INSERT INTO outbound_messages (id, run_id, step_index, sender_id, recipient, kind, provider, request, wamid, status)
               SELECT x.msg_id, x.run_id, x.step_index, x.sender_id, x.recipient, x.kind, x.provider, x.request, x.wamid, 'accepted'
               FROM x WHERE x.wamid IS NOT NULL ORDER BY x.wamid
               ON CONFLICT (wamid) DO NOTHING
             ), run AS (
               UPDATE runs r SET context = jsonb_set(r.context, ARRAY['steps', x.step_id], x.output, true),
                 step_index = COALESCE(x.target, r.step_index),
                 status = CASE WHEN x.target IS NULL THEN 'completed' ELSE 'queued' END,
                 error = CASE WHEN x.target IS NULL THEN NULL ELSE r.error END,
                 finished_at = CASE WHEN x.target IS NULL THEN now() ELSE r.finished_at END,
                 updated_at = now()
               FROM x WHERE r.id = x.run_id AND r.step_index = x.step_index
               RETURNING r.id
             ), job AS (
               INSERT INTO outbox (destination, routing_key, body, event_id)
               SELECT $15, '', x.job, NULL FROM x JOIN run ON run.id = x.run_id
               WHERE x.job IS NOT NULL ORDER BY x.ord
               RETURNING id, destination, routing_key, body
             )
             SELECT x.ord, EXISTS (SELECT 1 FROM run WHERE run.id = x.run_id) AS moved,
                    job.id, job.destination, job.routing_key, job.body
             FROM x LEFT JOIN job ON job.body = x.job",
        )
        .bind(all.iter().map(|d| d.job.run_id).collect::<Vec<_>>())
        .bind(all.iter().map(|d| d.job.step_index).collect::<Vec<_>>())
        .bind(all.iter().map(|d| d.attempt).collect::<Vec<_>>())
        .bind(all.iter().map(|d| &d.output).collect::<Vec<_>>())
        .bind(all.iter().map(|d| d.step_id.as_str()).collect::<Vec<_>>())
        .bind(all.iter().map(|d| d.target).collect::<Vec<_>>())
        .bind(&jobs)
        .bind(all.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
        .bind(sent(|s| &s.sender_id))
        .bind(sent(|s| &s.recipient))
        .bind(sent(|s| s.kind))
        .bind(sent(|s| s.provider))
        .bind(
            all.iter()
                .map(|d| d.sent.as_ref().map(|s| &s.request))
                .collect::<Vec<_>>(),
        )
        .bind(sent(|s| &s.wamid))
        .bind(Destination::Jobs)
        .fetch_all(conn)
        .await?;
        let rows = rows
            .into_iter()
            .map(|r| {
                let next_job = OutboxRow::from_columns(r.id, r.destination, r.routing_key, r.body);
                (
                    r.ord,
                    Succeeded {
                        moved: r.moved,
                        next_job,
                    },
                )
            })
            .collect();
        Ok(by_ord(all.len(), rows)
            .into_iter()
            .map(|r| {
                r.unwrap_or(Succeeded {
                    moved: false,
                    next_job: None,
                })
            })
            .collect())
    }
}
