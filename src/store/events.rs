//! The `events` table: an event is recorded once per dedup key, with its outbox row, by one
//! statement. Every source (WhatsApp and call webhooks, schedules, dispatches) records through
//! here, so "a repeated delivery produces one event" holds the same way for all of them. The
//! webhook's own statements (many inbound messages at once, statuses with the message they move)
//! are here too.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor, Postgres};
use uuid::Uuid;

use super::outbox::{Destination, OutboxRow, select_outbox_rows};
use crate::domain::{CloudEvent, EventType};

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
    .bind(Destination::Events)
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
    let pending: Option<OutboxRow> =
        sqlx::query_as(select_outbox_rows!("WHERE o.event_id = $1 LIMIT 1"))
            .bind(event_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(Recorded::Duplicate { event_id, pending })
}

/// An event's type and data (`cloudevent -> 'data'`).
pub async fn type_and_data(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<(String, Value)> {
    sqlx::query_as("SELECT type, cloudevent -> 'data' FROM events WHERE id = $1")
        .bind(id)
        .fetch_one(db)
        .await
}

#[derive(Debug, Serialize, JsonSchema, sqlx::FromRow)]
pub struct EventView {
    pub id: Uuid,
    #[serde(rename = "type")]
    #[schemars(with = "EventType")]
    pub event_type: String,
    pub sender_id: String,
    /// The customer's id, when the event is about one.
    pub subject: Option<String>,
    pub received_at: DateTime<Utc>,
    /// The event as published (CloudEvents 1.0 JSON).
    pub cloudevent: Value,
}

/// Recent events, newest first: of one type, about one customer (phone or id), or all.
pub async fn list(
    db: impl PgExecutor<'_>,
    event_type: Option<EventType>,
    customer: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<EventView>> {
    sqlx::query_as(
        "SELECT id, type AS event_type, sender_id, subject, received_at, cloudevent FROM events
         WHERE ($1::text IS NULL OR type = $1) AND ($2::text IS NULL OR subject = ltrim($2, '+'))
         ORDER BY received_at DESC, id DESC LIMIT $3",
    )
    .bind(event_type.map(|t| t.as_str()))
    .bind(customer)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The still-unpublished outbox rows of the events with these dedup keys (their first
/// delivery's publish failed).
pub async fn pending_of(
    conn: &mut PgConnection,
    dedup_keys: &[String],
) -> sqlx::Result<Vec<OutboxRow>> {
    sqlx::query_as(select_outbox_rows!("WHERE e.dedup_key = ANY($1)"))
        .bind(dedup_keys)
        .fetch_all(conn)
        .await
}

/// Inserts one event unless its dedup key is known, with its outbox row, in one statement whose
/// further CTEs (`more`: parameters from `$9` on; `ins` holds the event when it was new) run
/// with it. Returns the outbox row of a new event. (`event_query` of the webhook's statements.)
pub fn insert_with<'q>(
    more: &str,
    event: &'q CloudEvent,
    dedup_key: &'q str,
    body: &'q Value,
) -> sqlx::query::QueryAs<'q, Postgres, OutboxRow, sqlx::postgres::PgArguments> {
    let sql = format!(
        "WITH ins AS (
           INSERT INTO events (id, type, sender_id, subject, dedup_key, cloudevent)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (dedup_key) DO NOTHING
           RETURNING id, cloudevent
         ), ob AS (
           INSERT INTO outbox (destination, routing_key, body, event_id)
           SELECT $7, $8, cloudevent, id FROM ins
           RETURNING id, destination, routing_key, body
         ){more}
         SELECT id, destination, routing_key, body FROM ob"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(event.id)
        .bind(event.event_type.as_str())
        .bind(&event.senderid)
        .bind(&event.subject)
        .bind(dedup_key)
        .bind(body)
        .bind(Destination::Events)
        .bind(event.routing_key())
}

/// One statement for many messages (of distinct contacts): the dedup check, the 24-hour
/// window, each message's events with their outbox rows, and the contact. Everything after the
/// window runs only for a message whose message_received event was inserted; the window is
/// kept only for a message not known yet, so a repeated delivery never touches it. Two
/// deliveries of the same message at once (in two batches): the second waits on the
/// conversation row (and on the dedup key) until the first commits; its window update repeats
/// the first one's (same timestamp: no change), and its event insert does nothing. Rows are
/// locked in (sender, customer) order, so two batches never wait on each other in a circle.
///
/// Per message ($1..$11, one array element each): sender, customer, a new conversation id,
/// the message time, the dedup key, the message_received event's id and body, the contact's
/// new id, phone and name, and the opt-out keyword's decision (`opted_out`, `opted_in` or
/// null: the contact's opt-out is set, cleared or kept). The further events ($13..$18, one
/// element each): their message's position in $1.., id, type, dedup key, body, and whether
/// they need a new conversation. $12 is the message_received type, $19 the outbox
/// destination. The event bodies get the conversation's id as data.conversation_id.
/// Returns per message (`item`) the outbox rows (id set) with their event's id and
/// conversation id (the caller has the rest of the event: no body goes back over the wire),
/// and the dedup keys of further events that were known (id null).
const STORE_MESSAGES_SQL: &str = "
WITH x AS (
  SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::timestamptz[], $5::text[], $6::uuid[],
                       $7::jsonb[], $8::uuid[], $9::text[], $10::text[], $11::text[])
    WITH ORDINALITY AS x(sender, customer, conv_id, at, key, event_id, body, contact_id, phone, name, opt_out, ord)
), conv AS (
  INSERT INTO conversations AS c (sender_id, customer_id, id, started_at, last_inbound_at, window_expires_at)
  SELECT sender, customer, conv_id, at, at, at + interval '24 hours' FROM x
  WHERE NOT EXISTS (SELECT 1 FROM events WHERE dedup_key = x.key)
  ORDER BY sender, customer
  ON CONFLICT (sender_id, customer_id) DO UPDATE SET
    id = CASE WHEN c.window_expires_at <= EXCLUDED.last_inbound_at THEN EXCLUDED.id ELSE c.id END,
    started_at = CASE WHEN c.window_expires_at <= EXCLUDED.last_inbound_at THEN EXCLUDED.started_at ELSE c.started_at END,
    last_inbound_at = GREATEST(c.last_inbound_at, EXCLUDED.last_inbound_at),
    window_expires_at = GREATEST(c.window_expires_at, EXCLUDED.window_expires_at)
  RETURNING c.sender_id, c.customer_id, c.id
), xc AS (
  SELECT x.*, conv.id AS cid, conv.id = x.conv_id AS started
  FROM x JOIN conv ON conv.sender_id = x.sender AND conv.customer_id = x.customer
), ins_msg AS (
  INSERT INTO events (id, type, sender_id, subject, dedup_key, cloudevent)
  SELECT event_id, $12, sender, customer, key, jsonb_set(body, '{data,conversation_id}', to_jsonb(cid))
  FROM xc ORDER BY sender, customer
  ON CONFLICT (dedup_key) DO NOTHING
  RETURNING id, type
), fresh AS (
  SELECT xc.* FROM xc JOIN ins_msg i ON i.id = xc.event_id
), more AS (
  SELECT y.item, y.sub, y.id, y.type, y.key, fresh.sender, fresh.customer, fresh.cid,
         jsonb_set(y.body, '{data,conversation_id}', to_jsonb(fresh.cid)) AS body
  FROM unnest($13::int8[], $14::uuid[], $15::text[], $16::text[], $17::jsonb[], $18::bool[])
         WITH ORDINALITY AS y(item, id, type, key, body, needs_start, sub)
  JOIN fresh ON fresh.ord = y.item
  WHERE fresh.started OR NOT y.needs_start
), ins_more AS (
  INSERT INTO events (id, type, sender_id, subject, dedup_key, cloudevent)
  SELECT id, type, sender, customer, key, body FROM more ORDER BY sender, customer, sub
  ON CONFLICT (dedup_key) DO NOTHING
  RETURNING id, type
), all_new AS (
  SELECT fresh.ord AS item, 0::bigint AS sub, i.id, i.type, fresh.cid, fresh.sender
  FROM ins_msg i JOIN fresh ON fresh.event_id = i.id
  UNION ALL
  SELECT more.item, more.sub, i.id, i.type, more.cid, more.sender
  FROM ins_more i JOIN more ON more.id = i.id
), ob AS (
  INSERT INTO outbox (destination, routing_key, body, event_id)
  SELECT $19, type || '.' || sender, NULL, id FROM all_new ORDER BY item, sub
  RETURNING id, destination, routing_key, event_id
), contact AS (
  INSERT INTO contacts (id, customer_id, phone, name, last_seen_at, opted_out)
  SELECT contact_id, customer, phone, name, at, COALESCE(opt_out = 'opted_out', false)
  FROM fresh ORDER BY customer
  ON CONFLICT (customer_id) DO UPDATE SET
    name = COALESCE(contacts.name, EXCLUDED.name),
    phone = COALESCE(contacts.phone, EXCLUDED.phone),
    last_seen_at = GREATEST(contacts.last_seen_at, EXCLUDED.last_seen_at),
    opted_out = CASE EXCLUDED.opted_out WHEN true THEN true
                ELSE CASE (SELECT f.opt_out FROM fresh f WHERE f.customer = EXCLUDED.customer_id)
                     WHEN 'opted_in' THEN false ELSE contacts.opted_out END END
)
SELECT n.item, n.sub, ob.id, ob.destination, ob.routing_key, n.id AS event_id, n.cid,
       NULL::text AS known
FROM ob JOIN all_new n ON n.id = ob.event_id
UNION ALL
SELECT more.item, more.sub, NULL, NULL, NULL, NULL, NULL, more.key FROM more
WHERE NOT EXISTS (SELECT 1 FROM ins_more i WHERE i.id = more.id)
ORDER BY 1, 2";

/// What [`StoreMessages`] returns of one message: an outbox row of one of its new events
/// (with the event's id and its conversation's), or the dedup key of a further event that was
/// known (`known`).
#[derive(Debug, sqlx::FromRow)]
pub struct MessageRow {
    /// The message's position in the statement (1-based) and the event's among its events.
    pub item: i64,
    pub sub: i64,
    pub id: Option<i64>,
    pub destination: Option<String>,
    pub routing_key: Option<String>,
    pub event_id: Option<Uuid>,
    pub cid: Option<Uuid>,
    pub known: Option<String>,
}

/// One message as [`StoreMessages`] takes it: its events are made here, at the edge, and kept
/// as the JSON the statement stores.
pub struct MessageInput {
    pub sender: String,
    pub customer: String,
    pub conversation_id: Uuid,
    pub at: DateTime<Utc>,
    pub key: String,
    pub wamid: String,
    pub received_id: Uuid,
    pub received_body: Value,
    /// Further events: conversation_started, and flow_completed for a flow's reply.
    pub more: Vec<FurtherEvent>,
    pub contact_id: Uuid,
    pub phone: Option<String>,
    pub name: Option<String>,
    pub opt_out: Option<&'static str>,
}

/// An event a message brings besides message_received.
pub struct FurtherEvent {
    pub id: Uuid,
    pub event_type: EventType,
    pub key: String,
    /// Stored only when the message opens a new conversation.
    pub needs_start: bool,
    pub body: Value,
}

/// Stores inbound messages, many in one statement (`STORE_MESSAGES_SQL`); batched across
/// the webhook deliveries of a process (`db::batch`). Messages of the same contact go in
/// separate statements, in the order they were handed in.
#[derive(Clone)]
pub struct StoreMessages;

impl crate::db::batch::Statement for StoreMessages {
    /// Shared with the caller, which keeps it to read the outcome: the batch takes no copy.
    type Input = Arc<MessageInput>;
    type Output = Vec<MessageRow>;

    async fn run(
        &self,
        conn: &mut PgConnection,
        all: &[Arc<MessageInput>],
    ) -> sqlx::Result<Vec<Vec<MessageRow>>> {
        let mut out: Vec<Vec<MessageRow>> = (0..all.len()).map(|_| Vec::new()).collect();
        // Rounds of distinct contacts: a statement may upsert a contact's rows only once.
        let mut rounds: Vec<Vec<usize>> = Vec::new();
        let mut seen: Vec<std::collections::HashSet<&str>> = Vec::new();
        for (i, m) in all.iter().enumerate() {
            let round = seen
                .iter()
                .rposition(|s| s.contains(m.customer.as_str()))
                .map_or(0, |r| r + 1);
            if round == rounds.len() {
                rounds.push(Vec::new());
                seen.push(Default::default());
            }
            rounds[round].push(i);
            seen[round].insert(m.customer.as_str());
        }
        for round in rounds {
            let ms: Vec<&MessageInput> = round.iter().map(|&i| &*all[i]).collect();
            let more: Vec<(i64, &FurtherEvent)> = ms
                .iter()
                .enumerate()
                .flat_map(|(i, m)| m.more.iter().map(move |e| (i as i64 + 1, e)))
                .collect();
            let rows: Vec<MessageRow> = sqlx::query_as(STORE_MESSAGES_SQL)
                .bind(ms.iter().map(|m| m.sender.as_str()).collect::<Vec<_>>())
                .bind(ms.iter().map(|m| m.customer.as_str()).collect::<Vec<_>>())
                .bind(ms.iter().map(|m| m.conversation_id).collect::<Vec<_>>())
                .bind(ms.iter().map(|m| m.at).collect::<Vec<_>>())
                .bind(ms.iter().map(|m| m.key.as_str()).collect::<Vec<_>>())
                .bind(ms.iter().map(|m| m.received_id).collect::<Vec<_>>())
                .bind(ms.iter().map(|m| &m.received_body).collect::<Vec<_>>())
                .bind(ms.iter().map(|m| m.contact_id).collect::<Vec<_>>())
                .bind(ms.iter().map(|m| m.phone.as_deref()).collect::<Vec<_>>())
                .bind(ms.iter().map(|m| m.name.as_deref()).collect::<Vec<_>>())
                .bind(ms.iter().map(|m| m.opt_out).collect::<Vec<_>>())
                .bind(EventType::MessageReceived.as_str())
                .bind(more.iter().map(|(i, _)| *i).collect::<Vec<_>>())
                .bind(more.iter().map(|(_, e)| e.id).collect::<Vec<_>>())
                .bind(
                    more.iter()
                        .map(|(_, e)| e.event_type.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(more.iter().map(|(_, e)| e.key.as_str()).collect::<Vec<_>>())
                .bind(more.iter().map(|(_, e)| &e.body).collect::<Vec<_>>())
                .bind(more.iter().map(|(_, e)| e.needs_start).collect::<Vec<_>>())
                .bind(Destination::Events)
                .fetch_all(&mut *conn)
                .await?;
            for row in rows {
                if let Some(&i) = usize::try_from(row.item - 1)
                    .ok()
                    .and_then(|k| round.get(k))
                {
                    out[i].push(row);
                }
            }
        }
        Ok(out)
    }
}
