//! The sweep of stranded runs: a run queued or running that nothing moved for
//! `HERALD_STRANDED_AFTER`, with no job in the outbox and no timer, lost its job (a message
//! dropped between the queue and a worker); the scheduler stages its job again. The worker's
//! checks (the run's step, the attempt's lease) make a job that was only slow harmless.

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    bus::{
        Bus,
        outbox::{self, OutboxRow},
    },
    store::runs,
};

/// Stages a job for every stranded run (up to 500). Returns the rows to publish.
pub async fn sweep_once(pool: &PgPool, after: Duration) -> anyhow::Result<Vec<OutboxRow>> {
    let mut tx = pool.begin().await.context("begin sweep")?;
    let jobs = runs::stranded(&mut tx, after)
        .await
        .context("find stranded runs")?;
    for job in &jobs {
        tracing::warn!(run_id = %job.run_id, step = job.step_index, "run was stranded; its job is staged again");
    }
    let rows = super::stage_jobs(&mut tx, jobs).await?;
    tx.commit().await.context("commit sweep")?;
    metrics::counter!("herald_runs_swept_total").increment(rows.len() as u64);
    Ok(rows)
}

/// The scheduler's sweep loop: every quarter of `after` (at most a minute).
pub async fn run(bus: Bus, pool: PgPool, after: Duration, shutdown: CancellationToken) {
    let interval = (after / 4).min(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        match sweep_once(&pool, after).await {
            Ok(rows) if rows.is_empty() => {}
            Ok(rows) => {
                if let Err(e) = outbox::flush(&bus, &pool, &rows).await {
                    tracing::warn!(error = %e, "swept jobs not published yet; the outbox relay will");
                }
            }
            Err(e) => tracing::warn!(error = format!("{e:#}"), "sweep failed; will retry"),
        }
    }
}
