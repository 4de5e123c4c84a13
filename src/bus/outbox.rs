//! Outbox: a message is first written to PostgreSQL in the same transaction as the state it
//! belongs to, then published with a confirm and deleted. An inbound message's event row keeps
//! no copy of the event (`body` is NULL): readers take the event's own `cloudevent`. If the publish fails (broker down,
//! process killed), the relay publishes the row later. Consumers are idempotent, so a row
//! published twice does no harm; a row is never lost.

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{Bus, BusError};
use crate::store::outbox as store;

pub use crate::store::outbox::{OutboxRow, stage};

#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("PostgreSQL: {0}")]
    Db(#[from] sqlx::Error),
}

/// Publishes committed outbox rows, then deletes them: in batches by the deleter when this
/// process runs one, else at once. On a bus error the rows stay for the relay. A row whose
/// delete is lost (crash) is published again by the relay; consumers are idempotent.
pub async fn flush(bus: &Bus, pool: &PgPool, rows: &[OutboxRow]) -> Result<(), FlushError> {
    if rows.is_empty() {
        return Ok(());
    }
    publish_all(bus, rows).await?;
    if let Some(deleter) = bus.published.get()
        && rows.iter().all(|r| deleter.send(r.id).is_ok())
    {
        return Ok(());
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    store::delete(pool, &ids).await?;
    Ok(())
}

/// Deletes published outbox rows in batches (one statement for up to 2,000 rows), so the hot
/// paths spend no commit on it. Runs until shutdown, then deletes what is left.
pub async fn run_deleter(bus: Bus, pool: PgPool, shutdown: CancellationToken) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<i64>();
    if bus.published.set(tx).is_err() {
        return; // another deleter serves this bus
    }
    let mut ids = Vec::with_capacity(2000);
    loop {
        let stop = tokio::select! {
            n = rx.recv_many(&mut ids, 2000) => n == 0,
            _ = shutdown.cancelled() => true,
        };
        if stop {
            while let Ok(id) = rx.try_recv() {
                ids.push(id);
            }
        }
        if !ids.is_empty() {
            let result = store::delete(&pool, &ids).await;
            if let Err(e) = result {
                tracing::warn!(error = %e, rows = ids.len(), "could not delete published outbox rows; the relay will publish them again");
            }
            ids.clear();
        }
        if stop {
            return;
        }
    }
}

async fn publish_all(bus: &Bus, rows: &[OutboxRow]) -> Result<(), BusError> {
    let publishes = rows.iter().map(|row| async move {
        let destination = row.destination();
        let body = serde_json::to_vec(&row.body).unwrap_or_default();
        bus.publish(destination, &row.routing_key, &body).await
    });
    for result in futures::future::join_all(publishes).await {
        result?;
    }
    Ok(())
}

/// Publishes rows older than `min_age` that nobody published (crash, broker outage). Rows are
/// claimed with `FOR UPDATE SKIP LOCKED`, so several relays never publish the same row at once.
pub async fn relay_once(bus: &Bus, pool: &PgPool, min_age: Duration) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await.context("begin outbox relay")?;
    let rows = store::claim_unpublished(&mut tx, min_age)
        .await
        .context("claim outbox rows")?;
    if rows.is_empty() {
        return Ok(0);
    }
    publish_all(bus, &rows)
        .await
        .context("publish outbox rows")?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    store::delete(&mut *tx, &ids)
        .await
        .context("delete published outbox rows")?;
    tx.commit().await.context("commit outbox relay")?;
    Ok(rows.len())
}

/// The relay loop: runs in every process until shutdown.
pub async fn run_relay(bus: Bus, pool: PgPool, interval: Duration, shutdown: CancellationToken) {
    let min_age = Duration::from_secs(2);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        match relay_once(&bus, &pool, min_age).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(published = n, "outbox relay published stored messages"),
            Err(e) => tracing::warn!(error = format!("{e:#}"), "outbox relay failed; will retry"),
        }
    }
}
