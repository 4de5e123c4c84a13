//! Retention: the statements that delete history older than `HERALD_RETENTION`, one small batch
//! at a time, and the `VACUUM` of the tables that churn. Each batch is one statement (its own
//! transaction), so a sweep never holds locks for long; rows still in use are never chosen:
//! unfinished runs, runs with a pending timer, events with a run or an unpublished outbox row.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// A table the sweep deletes from, named as in `herald_retention_deleted_total{table}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Runs,
    StepAttempts,
    OutboundMessages,
    DeadLetters,
    Events,
    AiMessages,
    AiConversations,
    Quarantine,
    SenderNotices,
}

impl Table {
    pub const ALL: [Table; 9] = [
        Table::Runs,
        Table::StepAttempts,
        Table::OutboundMessages,
        Table::DeadLetters,
        Table::Events,
        Table::AiMessages,
        Table::AiConversations,
        Table::Quarantine,
        Table::SenderNotices,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Table::Runs => "runs",
            Table::StepAttempts => "step_attempts",
            Table::OutboundMessages => "outbound_messages",
            Table::DeadLetters => "dead_letters",
            Table::Events => "events",
            Table::AiMessages => "ai_messages",
            Table::AiConversations => "ai_conversations",
            Table::Quarantine => "quarantine",
            Table::SenderNotices => "sender_notices",
        }
    }
}

/// The tables whose rows are deleted or rewritten all day long (a published outbox row, a fired
/// timer, a send's pacing slot, a dispatch's tick, a schedule's tick, a sent notice). With
/// autovacuum off nothing else reclaims their dead rows, and every scan of them reads the dead
/// rows again; they are small, so a `VACUUM (ANALYZE)` of them is quick.
pub const CHURN_TABLES: [&str; 6] = [
    "outbox",
    "timers",
    "sender_pacing",
    "sender_notices",
    "dispatches",
    "schedule_ticks",
];

/// What one batch of [`delete_runs`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunsDeleted {
    pub runs: u64,
    pub step_attempts: u64,
    pub outbound_messages: u64,
    pub dead_letters: u64,
}

/// Deletes up to `limit` runs that finished before `cutoff` and have no pending timer, with
/// their step attempts, outbound messages and dead letters (one statement: the children go
/// first, so the foreign keys hold). Oldest first.
pub async fn delete_runs(
    conn: &mut PgConnection,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<RunsDeleted> {
    let (runs, step_attempts, outbound_messages, dead_letters): (i64, i64, i64, i64) =
        sqlx::query_as(
            "WITH old AS (
               SELECT r.id FROM runs r
                WHERE r.created_at < $1 AND r.finished_at < $1
                  AND NOT EXISTS (SELECT 1 FROM timers t WHERE t.run_id = r.id)
                ORDER BY r.created_at LIMIT $2
                FOR UPDATE SKIP LOCKED
             ), sa AS (
               DELETE FROM step_attempts WHERE run_id IN (SELECT id FROM old) RETURNING 1
             ), om AS (
               DELETE FROM outbound_messages WHERE run_id IN (SELECT id FROM old) RETURNING 1
             ), dl AS (
               DELETE FROM dead_letters WHERE run_id IN (SELECT id FROM old) RETURNING 1
             ), r AS (
               DELETE FROM runs WHERE id IN (SELECT id FROM old) RETURNING 1
             )
             SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM sa),
                    (SELECT count(*) FROM om), (SELECT count(*) FROM dl)",
        )
        .bind(cutoff)
        .bind(limit)
        .fetch_one(conn)
        .await?;
    Ok(RunsDeleted {
        runs: runs as u64,
        step_attempts: step_attempts as u64,
        outbound_messages: outbound_messages as u64,
        dead_letters: dead_letters as u64,
    })
}

/// Deletes up to `limit` outbound messages older than `cutoff` that belong to no run (those
/// of a run go with it).
pub async fn delete_unlinked_messages(
    conn: &mut PgConnection,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<u64> {
    delete_batch(
        conn,
        "DELETE FROM outbound_messages WHERE id IN (
           SELECT id FROM outbound_messages WHERE run_id IS NULL AND created_at < $1
            ORDER BY created_at LIMIT $2)",
        cutoff,
        limit,
    )
    .await
}

/// Deletes up to `limit` events received before `cutoff` that no run refers to any more and
/// whose outbox row (if any) is published. `cutoff` is at least 7 days ago (the configuration
/// refuses less), so a redelivery of Meta's is still deduplicated.
pub async fn delete_events(
    conn: &mut PgConnection,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<u64> {
    delete_batch(
        conn,
        "DELETE FROM events WHERE id IN (
           SELECT e.id FROM events e
            WHERE e.received_at < $1
              AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.event_id = e.id)
              AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = e.id)
            ORDER BY e.received_at LIMIT $2
            FOR UPDATE SKIP LOCKED)",
        cutoff,
        limit,
    )
    .await
}

/// Deletes up to `limit` AI messages stored before `cutoff` (a conversation keeps its newer
/// turns).
pub async fn delete_ai_messages(
    conn: &mut PgConnection,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<u64> {
    delete_batch(
        conn,
        "DELETE FROM ai_messages WHERE id IN (
           SELECT id FROM ai_messages WHERE created_at < $1 ORDER BY created_at LIMIT $2)",
        cutoff,
        limit,
    )
    .await
}

/// Deletes up to `limit` AI conversations started before `cutoff` that have no message left.
pub async fn delete_ai_conversations(
    conn: &mut PgConnection,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<u64> {
    delete_batch(
        conn,
        "DELETE FROM ai_conversations WHERE id IN (
           SELECT c.id FROM ai_conversations c
            WHERE c.created_at < $1
              AND NOT EXISTS (SELECT 1 FROM ai_messages m WHERE m.conversation_id = c.id)
            ORDER BY c.created_at LIMIT $2
            FOR UPDATE SKIP LOCKED)",
        cutoff,
        limit,
    )
    .await
}

/// Deletes up to `limit` quarantined bodies received before `cutoff`, replayed or not.
pub async fn delete_quarantine(
    conn: &mut PgConnection,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<u64> {
    delete_batch(
        conn,
        "DELETE FROM quarantine WHERE id IN (
           SELECT id FROM quarantine WHERE received_at < $1 ORDER BY received_at LIMIT $2)",
        cutoff,
        limit,
    )
    .await
}

/// Deletes up to `limit` team notifications about senders sent before `cutoff` (unsent ones
/// stay: they are still to be delivered).
pub async fn delete_sender_notices(
    conn: &mut PgConnection,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<u64> {
    delete_batch(
        conn,
        "DELETE FROM sender_notices WHERE id IN (
           SELECT id FROM sender_notices WHERE sent_at < $1 ORDER BY sent_at LIMIT $2
           FOR UPDATE SKIP LOCKED)",
        cutoff,
        limit,
    )
    .await
}

/// `VACUUM (ANALYZE)` of `tables` (names from this module's constants only). `conn` must not be
/// in a transaction: VACUUM cannot run in one.
pub async fn vacuum(conn: &mut PgConnection, tables: &[&'static str]) -> sqlx::Result<()> {
    if tables.is_empty() {
        return Ok(());
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "VACUUM (ANALYZE) {}",
        tables.join(", ")
    )))
    .execute(conn)
    .await?;
    Ok(())
}

/// The advisory lock that makes one scheduler at a time sweep (key: "herald retention").
const SWEEP_LOCK: i64 = 0x6865_7261_6c64_7274;

/// Takes the sweep's session lock on `conn` unless another session holds it.
pub async fn try_lock(conn: &mut PgConnection) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(SWEEP_LOCK)
        .fetch_one(conn)
        .await
}

/// Releases the lock [`try_lock`] took on `conn`.
pub async fn unlock(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(SWEEP_LOCK)
        .execute(conn)
        .await?;
    Ok(())
}

/// Runs one batched delete whose `$1` is the cutoff and `$2` the batch size; the rows deleted.
async fn delete_batch(
    conn: &mut PgConnection,
    sql: &'static str,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<u64> {
    let done = sqlx::query(sql)
        .bind(cutoff)
        .bind(limit)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}
