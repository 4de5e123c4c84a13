//! Outbox: a message is first written to PostgreSQL in the same transaction as the state it
//! belongs to, then published with a confirm and deleted. An inbound message's event row keeps
//! no copy of the event (`body` is NULL): readers take the event's own `cloudevent`. If the publish fails (broker down,
//! process killed), the relay publishes the row later. Consumers are idempotent, so a row
//! published twice does no harm; a row is never lost.

use std::time::Duration;

use anyhow::Context;
use sqlx::{PgPool, Postgres, Transaction};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Bus, BusError, Destination};

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub destination: String,
    pub routing_key: String,
    pub body: serde_json::Value,
}

impl OutboxRow {
    /// A row read back as nullable columns (the outer side of a join): `None` unless every
    /// column is there.
    pub fn from_columns(
        id: Option<i64>,
        destination: Option<String>,
        routing_key: Option<String>,
        body: Option<serde_json::Value>,
    ) -> Option<Self> {
        Some(OutboxRow {
            id: id?,
            destination: destination?,
            routing_key: routing_key?,
            body: body?,
        })
    }
}

/// A query for outbox rows (`o`) as [`OutboxRow`]s, followed by the literal `$rest` (a WHERE
/// clause and more): the one place that knows an inbound message's row takes its body from its
/// event (`e`, joined by `event_id`).
macro_rules! select_outbox_rows {
    ($rest:literal) => {
        concat!(
            "SELECT o.id, o.destination, o.routing_key, COALESCE(o.body, e.cloudevent) AS body
             FROM outbox o LEFT JOIN events e ON e.id = o.event_id ",
            $rest
        )
    };
}
pub(crate) use select_outbox_rows;

/// Writes a message to the outbox inside the caller's transaction.
pub async fn stage(
    tx: &mut Transaction<'_, Postgres>,
    destination: Destination,
    routing_key: &str,
    body: &serde_json::Value,
    event_id: Option<Uuid>,
) -> sqlx::Result<OutboxRow> {
    sqlx::query_as(
        "INSERT INTO outbox (destination, routing_key, body, event_id) VALUES ($1, $2, $3, $4)
         RETURNING id, destination, routing_key, body",
    )
    .bind(destination.as_str())
    .bind(routing_key)
    .bind(body)
    .bind(event_id)
    .fetch_one(&mut **tx)
    .await
}

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
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
        .bind(&ids)
        .execute(pool)
        .await?;
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
            let result = sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
                .bind(&ids)
                .execute(&pool)
                .await;
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
        let destination = Destination::parse(&row.destination).unwrap_or(Destination::Events);
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
    let rows: Vec<OutboxRow> = sqlx::query_as(select_outbox_rows!(
        "WHERE o.created_at < now() - make_interval(secs => $1)
             ORDER BY o.id LIMIT 500 FOR UPDATE OF o SKIP LOCKED"
    ))
    .bind(min_age.as_secs_f64())
    .fetch_all(&mut *tx)
    .await
    .context("claim outbox rows")?;
    if rows.is_empty() {
        return Ok(0);
    }
    publish_all(bus, &rows)
        .await
        .context("publish outbox rows")?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
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
