//! Durable timers (delays, reply timeouts): rows in PostgreSQL. The scheduler claims due rows
//! with `FOR UPDATE SKIP LOCKED`, deletes them and stages their jobs in the outbox in one
//! transaction: a timer fires once, even with several schedulers, across restarts of anything.

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    bus::{
        Bus,
        outbox::{self, OutboxRow},
    },
    store::timers,
};

/// Stages the jobs of every due timer (up to 500). Returns the rows to publish.
pub async fn claim_due(pool: &PgPool) -> anyhow::Result<Vec<OutboxRow>> {
    let mut tx = pool.begin().await.context("begin timers")?;
    let due = timers::claim_due(&mut tx)
        .await
        .context("claim due timers")?;
    let rows = super::stage_jobs(&mut tx, due).await?;
    tx.commit().await.context("commit timers")?;
    Ok(rows)
}

/// The scheduler's timer loop.
pub async fn run(bus: Bus, pool: PgPool, interval: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        match claim_due(&pool).await {
            Ok(rows) if rows.is_empty() => {}
            Ok(rows) => {
                tracing::info!(fired = rows.len(), "timers fired");
                if let Err(e) = outbox::flush(&bus, &pool, &rows).await {
                    tracing::warn!(error = %e, "timer jobs not published yet; the outbox relay will");
                }
            }
            Err(e) => tracing::warn!(error = format!("{e:#}"), "timers failed; will retry"),
        }
    }
}
