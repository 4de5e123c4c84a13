//! The events table: an event is recorded once per dedup key, with its outbox row, by one
//! statement. Every source (WhatsApp and call webhooks, schedules, dispatches) records through
//! here, so "a repeated delivery produces one event" holds the same way for all of them.

use sqlx::PgConnection;

use crate::{
    bus::{Destination, outbox::OutboxRow},
    domain::CloudEvent,
};

/// What `record` did.
#[derive(Debug)]
pub enum Recorded {
    /// A new event; publish its outbox row.
    New(OutboxRow),
    /// The dedup key was known: no new event. Carries the first delivery's outbox row while it
    /// is still unpublished (its publish failed), so the caller can publish it now.
    Duplicate {
        event_id: uuid::Uuid,
        pending: Option<OutboxRow>,
    },
}

impl Recorded {
    /// The outbox row to publish, if any.
    pub fn outbox(&self) -> Option<&OutboxRow> {
        match self {
            Recorded::New(row) => Some(row),
            Recorded::Duplicate { pending, .. } => pending.as_ref(),
        }
    }
    pub fn is_new(&self) -> bool {
        matches!(self, Recorded::New(_))
    }
}

/// Inserts `event` unless `dedup_key` is known, staging it for the events exchange.
pub async fn record(
    conn: &mut PgConnection,
    event: &CloudEvent,
    dedup_key: &str,
) -> sqlx::Result<Recorded> {
    let body = serde_json::to_value(event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let new: Option<OutboxRow> = sqlx::query_as(
        "WITH ins AS (
           INSERT INTO events (id, type, sender_id, subject, dedup_key, cloudevent)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (dedup_key) DO NOTHING
           RETURNING id, cloudevent
         )
         INSERT INTO outbox (destination, routing_key, body, event_id)
         SELECT $7, $8, cloudevent, id FROM ins
         RETURNING id, destination, routing_key, body",
    )
    .bind(event.id)
    .bind(event.event_type.as_str())
    .bind(&event.senderid)
    .bind(&event.subject)
    .bind(dedup_key)
    .bind(&body)
    .bind(Destination::Events.as_str())
    .bind(event.routing_key())
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = new {
        metrics::counter!("herald_events_received_total", "type" => event.event_type.as_str())
            .increment(1);
        return Ok(Recorded::New(row));
    }
    let event_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM events WHERE dedup_key = $1")
        .bind(dedup_key)
        .fetch_one(&mut *conn)
        .await?;
    let pending: Option<OutboxRow> = sqlx::query_as(crate::bus::outbox::select_outbox_rows!(
        "WHERE o.event_id = $1 LIMIT 1"
    ))
    .bind(event_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(Recorded::Duplicate { event_id, pending })
}
