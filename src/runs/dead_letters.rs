//! Dead letters: steps that failed for good, with the error, the input tried and the attempts.
//! An operator fixes the cause and retries: the run continues at the failed step.

use anyhow::{Context, bail};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{Job, RunStatus, finish_run};
use crate::{
    bus::{
        Bus, Destination,
        outbox::{self, OutboxRow},
    },
    store::{
        dead_letters::{self as store, LockedLetter},
        runs,
    },
};

pub use crate::store::dead_letters::{DeadLetter, NewDeadLetter};

/// Records a dead letter and fails the run, in the caller's transaction.
pub async fn record(
    tx: &mut Transaction<'_, Postgres>,
    d: NewDeadLetter<'_>,
) -> anyhow::Result<Uuid> {
    let id = Uuid::now_v7();
    store::insert(tx, id, &d)
        .await
        .context("record dead letter")?;
    let mut error = d.error.clone();
    error["step"] = Value::from(d.step_id);
    error["dead_letter"] = Value::from(id.to_string());
    finish_run(tx, d.job, RunStatus::Failed, Some(&error)).await?;
    Ok(id)
}

pub async fn list(pool: &PgPool, limit: i64) -> anyhow::Result<Vec<DeadLetter>> {
    store::list(pool, limit).await.context("list dead letters")
}

pub async fn show(pool: &PgPool, id: Uuid) -> anyhow::Result<Option<DeadLetter>> {
    store::find(pool, id).await.context("load dead letter")
}

/// Continues the run at the failed step (a new attempt). Once per dead letter.
pub async fn retry(pool: &PgPool, bus: &Bus, id: Uuid) -> anyhow::Result<Uuid> {
    let mut tx = pool.begin().await.context("begin retry")?;
    let letter = store::lock(&mut tx, id).await.context("load dead letter")?;
    let Some(LockedLetter {
        run_id,
        step_index,
        retried_at,
    }) = letter
    else {
        bail!("no dead letter {id}");
    };
    if let Some(at) = retried_at {
        bail!("dead letter {id} was retried already at {at}");
    }
    let moved = runs::reopen_failed(&mut tx, run_id, step_index)
        .await
        .context("reopen run")?;
    if !moved {
        bail!("run {run_id} is no longer failed at that step");
    }
    store::mark_retried(&mut tx, id)
        .await
        .context("mark retried")?;
    let row: OutboxRow = outbox::stage(
        &mut tx,
        Destination::Jobs,
        "",
        &serde_json::to_value(Job::step(run_id, step_index))?,
        None,
    )
    .await
    .context("stage job")?;
    tx.commit().await.context("commit retry")?;
    if let Err(e) = outbox::flush(bus, pool, &[row]).await {
        tracing::warn!(error = %e, "retry job not published yet; the outbox relay will");
    }
    Ok(run_id)
}
