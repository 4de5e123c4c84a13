//! The `outbox` table: a message is first written to PostgreSQL in the same transaction as the
//! state it belongs to, then published with a confirm and deleted (`bus::outbox` publishes).
//! An inbound message's row keeps no copy of its event (`body` is NULL): readers take the
//! event's own `cloudevent`.

use std::time::Duration;

use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// Where a message goes: the events exchange (routing key `<type>.<sender>`) or the jobs queue.
#[derive(sqlx::Type, Clone, Copy, Debug, PartialEq, Eq)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Destination {
    Events,
    Jobs,
}

impl Destination {
    pub const ALL: [Destination; 2] = [Destination::Events, Destination::Jobs];

    pub fn as_str(self) -> &'static str {
        match self {
            Destination::Events => "events",
            Destination::Jobs => "jobs",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "events" => Some(Destination::Events),
            "jobs" => Some(Destination::Jobs),
            _ => None,
        }
    }
}

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

    /// The row's destination (the events exchange for a value Herald did not write).
    pub fn destination(&self) -> Destination {
        Destination::parse(&self.destination).unwrap_or(Destination::Events)
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
    conn: &mut PgConnection,
    destination: Destination,
    routing_key: &str,
    body: &serde_json::Value,
    event_id: Option<Uuid>,
) -> sqlx::Result<OutboxRow> {
    sqlx::query_as(
        "INSERT INTO outbox (destination, routing_key, body, event_id) VALUES ($1, $2, $3, $4)
         RETURNING id, destination, routing_key, body",
    )
    .bind(destination)
    .bind(routing_key)
    .bind(body)
    .bind(event_id)
    .fetch_one(conn)
    .await
}

/// Deletes published rows.
pub async fn delete(db: impl PgExecutor<'_>, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
        .bind(ids)
        .execute(db)
        .await?;
    Ok(())
}

/// Claims up to 500 rows older than `min_age` that nobody published (crash, broker outage),
/// with `FOR UPDATE SKIP LOCKED`, so several relays never publish the same row at once.
pub async fn claim_unpublished(
    conn: &mut PgConnection,
    min_age: Duration,
) -> sqlx::Result<Vec<OutboxRow>> {
    sqlx::query_as(select_outbox_rows!(
        "WHERE o.created_at < now() - make_interval(secs => $1)
             ORDER BY o.id LIMIT 500 FOR UPDATE OF o SKIP LOCKED"
    ))
    .bind(min_age.as_secs_f64())
    .fetch_all(conn)
    .await
}
