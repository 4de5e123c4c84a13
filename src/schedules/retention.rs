//! Retention (scheduler role): deletes history older than `HERALD_RETENTION` in small batches
//! with a short pause between them, and vacuums the tables that churn every few minutes, since
//! Herald cannot count on autovacuum. One scheduler at a time (an advisory lock); the others skip.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::store::retention::{self, CHURN_TABLES, Table};

/// Rows per statement (runs: per statement, each with its attempts, messages and dead letters).
const BATCH: i64 = 1000;
const RUN_BATCH: i64 = 250;
/// The pause between two batches, so that a large backlog does not crowd out the pipeline.
const PAUSE: Duration = Duration::from_millis(50);
/// How often history is swept, and how often the churn tables are vacuumed.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
const VACUUM_EVERY: Duration = Duration::from_secs(300);

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Rows deleted per table (tables with none are left out).
    pub deleted: BTreeMap<Table, u64>,
    /// Whether the sweep ran to its end (false: shutdown stopped it between two batches).
    pub complete: bool,
}

impl Sweep {
    pub fn total(&self) -> u64 {
        self.deleted.values().sum()
    }

    fn add(&mut self, table: Table, n: u64) {
        if n > 0 {
            *self.deleted.entry(table).or_default() += n;
            metrics::counter!("herald_retention_deleted_total", "table" => table.as_str())
                .increment(n);
        }
    }
}

/// The kinds of batch a sweep runs, in order: runs go before events (a run refers to its
/// event), AI messages before their conversations.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Runs,
    UnlinkedMessages,
    Events,
    AiMessages,
    AiConversations,
    Quarantine,
    SenderNotices,
}

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::Runs,
        Kind::UnlinkedMessages,
        Kind::Events,
        Kind::AiMessages,
        Kind::AiConversations,
        Kind::Quarantine,
        Kind::SenderNotices,
    ];

    /// Runs one batch; true when it was full (there may be more).
    async fn batch(
        self,
        conn: &mut PgConnection,
        cutoff: DateTime<Utc>,
        sweep: &mut Sweep,
    ) -> sqlx::Result<bool> {
        let (table, n, limit) = match self {
            Kind::Runs => {
                let d = retention::delete_runs(conn, cutoff, RUN_BATCH).await?;
                sweep.add(Table::StepAttempts, d.step_attempts);
                sweep.add(Table::OutboundMessages, d.outbound_messages);
                sweep.add(Table::DeadLetters, d.dead_letters);
                (Table::Runs, d.runs, RUN_BATCH)
            }
            Kind::UnlinkedMessages => (
                Table::OutboundMessages,
                retention::delete_unlinked_messages(conn, cutoff, BATCH).await?,
                BATCH,
            ),
            Kind::Events => (
                Table::Events,
                retention::delete_events(conn, cutoff, BATCH).await?,
                BATCH,
            ),
            Kind::AiMessages => (
                Table::AiMessages,
                retention::delete_ai_messages(conn, cutoff, BATCH).await?,
                BATCH,
            ),
            Kind::AiConversations => (
                Table::AiConversations,
                retention::delete_ai_conversations(conn, cutoff, BATCH).await?,
                BATCH,
            ),
            Kind::Quarantine => (
                Table::Quarantine,
                retention::delete_quarantine(conn, cutoff, BATCH).await?,
                BATCH,
            ),
            Kind::SenderNotices => (
                Table::SenderNotices,
                retention::delete_sender_notices(conn, cutoff, BATCH).await?,
                BATCH,
            ),
        };
        sweep.add(table, n);
        Ok(n as i64 >= limit)
    }
}

/// A connection of its own for the sweep's session lock: detached from the pool, so that the
/// lock goes with the connection whatever happens (a pooled connection would keep it).
async fn lock(pool: &PgPool) -> anyhow::Result<Option<PgConnection>> {
    let mut conn = pool
        .acquire()
        .await
        .context("connect for retention")?
        .detach();
    if retention::try_lock(&mut conn)
        .await
        .context("take the retention lock")?
    {
        Ok(Some(conn))
    } else {
        Ok(None)
    }
}

async fn release(mut conn: PgConnection) {
    use sqlx::Connection;
    let _ = retention::unlock(&mut conn).await;
    let _ = conn.close().await;
}

/// Deletes everything older than `retention` before `now` that nothing uses any more, then
/// vacuums the tables it deleted from. `None`: another scheduler is sweeping.
pub async fn sweep(
    pool: &PgPool,
    retention: Duration,
    now: DateTime<Utc>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Sweep>> {
    let cutoff =
        now - chrono::TimeDelta::from_std(retention).context("HERALD_RETENTION is out of range")?;
    let Some(mut conn) = lock(pool).await? else {
        return Ok(None);
    };
    let result = sweep_locked(&mut conn, cutoff, shutdown).await;
    release(conn).await;
    result.map(Some)
}

async fn sweep_locked(
    conn: &mut PgConnection,
    cutoff: DateTime<Utc>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Sweep> {
    let mut sweep = Sweep::default();
    for kind in Kind::ALL {
        loop {
            if shutdown.is_cancelled() {
                return Ok(sweep);
            }
            let more = kind
                .batch(conn, cutoff, &mut sweep)
                .await
                .with_context(|| format!("delete old rows ({kind:?})"))?;
            if !more {
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
    }
    let swept: Vec<&'static str> = sweep.deleted.keys().map(|t| t.as_str()).collect();
    retention::vacuum(conn, &swept)
        .await
        .context("vacuum the swept tables")?;
    sweep.complete = true;
    Ok(sweep)
}

/// `VACUUM (ANALYZE)` of the churn tables. False: another scheduler holds the lock.
pub async fn vacuum_churn(pool: &PgPool) -> anyhow::Result<bool> {
    let Some(mut conn) = lock(pool).await? else {
        return Ok(false);
    };
    let result = retention::vacuum(&mut conn, &CHURN_TABLES)
        .await
        .context("vacuum the churn tables");
    release(conn).await;
    result.map(|()| true)
}

/// The retention loop (scheduler role): a sweep at start and every hour, a vacuum of the churn
/// tables every five minutes, until shutdown.
pub async fn run(pool: PgPool, retention: Duration, shutdown: CancellationToken) {
    let mut last_sweep: Option<tokio::time::Instant> = None;
    loop {
        if last_sweep.is_none_or(|t| t.elapsed() >= SWEEP_EVERY) {
            last_sweep = Some(tokio::time::Instant::now());
            let started = std::time::Instant::now();
            match sweep(&pool, retention, Utc::now(), &shutdown).await {
                Ok(Some(s)) => {
                    let counts: BTreeMap<&str, u64> =
                        s.deleted.iter().map(|(t, n)| (t.as_str(), *n)).collect();
                    tracing::info!(
                        retention = %crate::domain::HumanDuration::from(retention),
                        deleted = s.total(),
                        tables = ?counts,
                        complete = s.complete,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "retention sweep"
                    );
                }
                Ok(None) => tracing::debug!("retention sweep skipped: another scheduler sweeps"),
                Err(e) => tracing::warn!(error = format!("{e:#}"), "retention sweep failed"),
            }
        }
        match vacuum_churn(&pool).await {
            Ok(_) => {}
            Err(e) => tracing::warn!(error = format!("{e:#}"), "vacuum of churn tables failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(VACUUM_EVERY) => {}
        }
    }
}
