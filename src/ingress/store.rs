//! Turns parsed webhook items into CloudEvents and stores them, deduplicated, with their outbox
//! rows, atomically (one statement per item, one transaction per delivery). Also keeps contacts,
//! the 24-hour windows and outbound statuses.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sqlx::{PgConnection, PgPool, Postgres};
use uuid::Uuid;

use super::payload::{InboundMessage, Item, QualityUpdate, StatusUpdate, TemplateStatusUpdate};
use crate::{
    bus::{Destination, outbox::OutboxRow},
    db::batch::Batched,
    domain::{CloudEvent, EventType, OptOutKeywords},
    store::{senders::QualityChange, templates::StatusChange},
};

#[derive(Debug, Default)]
pub struct Stored {
    pub new_events: usize,
    pub duplicates: usize,
    /// Rows to publish: the new events', and any still-unpublished rows of duplicates.
    pub outbox: Vec<OutboxRow>,
}

/// Stores every item of one delivery atomically. Each item is stored by exactly one statement
/// (CTEs), so a delivery of one item (the usual case) needs no BEGIN/COMMIT round trips: the
/// statement commits on its own before it answers. Several items share one transaction.
/// `keywords` decide which inbound texts opt the contact out or back in.
///
/// With `batched`, a delivery of one message (the usual case) is stored by the statement that
/// stores the messages of every concurrent delivery at once (see [`StoreMessages`]).
pub async fn store_items(
    pool: &PgPool,
    batched: Option<&Batched<StoreMessages>>,
    items: &[Item],
    keywords: &OptOutKeywords,
) -> sqlx::Result<Stored> {
    let mut stored = Stored::default();
    let mut duplicate_keys = Vec::new();
    match (items, batched) {
        ([], _) => {}
        ([Item::Message(m)], Some(batched)) => {
            let input = Arc::new(MessageInput::new(m, keywords));
            let rows = batched.run(input.clone()).await.map_err(unshare)?;
            record_message(&input, rows, &mut stored, &mut duplicate_keys);
            if !duplicate_keys.is_empty() {
                let mut conn = pool.acquire().await?;
                pending_of_duplicates(&mut conn, &duplicate_keys, &mut stored).await?;
            }
        }
        ([item], _) => {
            let mut conn = pool.acquire().await?;
            store_item(&mut conn, item, keywords, &mut stored, &mut duplicate_keys).await?;
            pending_of_duplicates(&mut conn, &duplicate_keys, &mut stored).await?;
        }
        (_, _) => {
            let mut tx = pool.begin().await?;
            for item in items {
                store_item(&mut tx, item, keywords, &mut stored, &mut duplicate_keys).await?;
            }
            pending_of_duplicates(&mut tx, &duplicate_keys, &mut stored).await?;
            tx.commit().await?;
        }
    }
    for row in &stored.outbox {
        if let Some(t) = row.body.get("type").and_then(Value::as_str) {
            metrics::counter!("herald_events_received_total", "type" => t.to_string()).increment(1);
        }
    }
    Ok(stored)
}

/// Stores one item with exactly one statement (see `store_items`).
async fn store_item(
    conn: &mut PgConnection,
    item: &Item,
    keywords: &OptOutKeywords,
    stored: &mut Stored,
    duplicate_keys: &mut Vec<String>,
) -> sqlx::Result<()> {
    match item {
        Item::Message(m) => store_message(conn, m, keywords, stored, duplicate_keys).await,
        Item::Status(s) => store_status(conn, s, stored, duplicate_keys).await,
        Item::TemplateStatus(t) => store_template_status(conn, t, stored, duplicate_keys).await,
        Item::QualityUpdate(q) => store_quality(conn, q, stored, duplicate_keys).await,
    }
}

/// The still-unpublished outbox rows of duplicates (their first delivery's publish failed).
async fn pending_of_duplicates(
    conn: &mut PgConnection,
    duplicate_keys: &[String],
    stored: &mut Stored,
) -> sqlx::Result<()> {
    if duplicate_keys.is_empty() {
        return Ok(());
    }
    let pending: Vec<OutboxRow> = sqlx::query_as(crate::bus::outbox::select_outbox_rows!(
        "WHERE e.dedup_key = ANY($1)"
    ))
    .bind(duplicate_keys)
    .fetch_all(&mut *conn)
    .await?;
    stored.outbox.extend(pending);
    Ok(())
}

/// Inserts one event unless its dedup key is known, with its outbox row, in one statement whose
/// further CTEs (`more`: parameters from `$9` on; `ins` holds the event when it was new) run
/// with it. Returns the outbox row of a new event.
fn event_query<'q>(
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
        .bind(Destination::Events.as_str())
        .bind(event.routing_key())
}

/// Records the outcome of `event_query`: returns whether the event was new.
fn record_event(
    row: Option<OutboxRow>,
    dedup_key: &str,
    stored: &mut Stored,
    duplicate_keys: &mut Vec<String>,
) -> bool {
    match row {
        Some(row) => {
            stored.outbox.push(row);
            stored.new_events += 1;
            true
        }
        None => {
            stored.duplicates += 1;
            duplicate_keys.push(dedup_key.to_string());
            false
        }
    }
}

fn whatsapp_event(
    event_type: EventType,
    sender: &str,
    subject: Option<&str>,
    time: DateTime<Utc>,
    data: Value,
) -> CloudEvent {
    CloudEvent::new(
        event_type,
        format!("/whatsapp/{sender}"),
        sender.to_string(),
        subject.map(str::to_string),
        time,
        data,
    )
}

/// A batch's statement error as the store's callers see it (the batch's callers share it).
fn unshare(e: crate::db::batch::DbError) -> sqlx::Error {
    std::sync::Arc::try_unwrap(e)
        .unwrap_or_else(|shared| sqlx::Error::Io(std::io::Error::other(shared.to_string())))
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

type MessageRow = (
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<Uuid>,
    Option<Uuid>,
    Option<String>,
);

/// One message as [`StoreMessages`] takes it: its events are made here, at the edge, and kept
/// as the JSON the statement stores.
pub struct MessageInput {
    sender: String,
    customer: String,
    conversation_id: Uuid,
    at: DateTime<Utc>,
    key: String,
    wamid: String,
    received_id: Uuid,
    received_body: Value,
    /// Further events: conversation_started, and flow_completed for a flow's reply.
    more: Vec<FurtherEvent>,
    contact_id: Uuid,
    phone: Option<String>,
    name: Option<String>,
    opt_out: Option<&'static str>,
}

/// An event a message brings besides message_received.
struct FurtherEvent {
    id: Uuid,
    event_type: EventType,
    key: String,
    /// Stored only when the message opens a new conversation.
    needs_start: bool,
    body: Value,
}

impl MessageInput {
    fn new(m: &InboundMessage, keywords: &OptOutKeywords) -> Self {
        let opt_out = keywords.decide(&m.message_type, m.data.get("text").and_then(Value::as_str));
        // The window opens (or stays open) for 24 h from the message's own time. The events
        // carry this id until the statement puts in the conversation's (the same one when it
        // started).
        let new_id = Uuid::now_v7();
        let mut data = m.data.clone();
        data.insert("conversation_id".into(), json!(new_id));
        data.insert("opt_out".into(), json!(opt_out.map(|c| c.as_str())));
        let event = |event_type, data: &Map<String, Value>| {
            whatsapp_event(
                event_type,
                &m.phone_number_id,
                Some(&m.customer_id),
                m.timestamp,
                Value::Object(data.clone()),
            )
        };
        let to_json = |e: &CloudEvent| serde_json::to_value(e).unwrap_or(Value::Null);
        let received = event(EventType::MessageReceived, &data);
        let started = event(EventType::ConversationStarted, &data);
        let mut more = vec![FurtherEvent {
            id: started.id,
            event_type: started.event_type,
            body: to_json(&started),
            key: format!("conversation_started:{}", m.wamid),
            needs_start: true,
        }];
        if m.message_type == "nfm_reply" {
            let flow = data.get("flow").cloned().unwrap_or(Value::Null);
            let mut flow_data = data.clone();
            flow_data.insert("flow_token".into(), flow["flow_token"].clone());
            flow_data.insert("response".into(), flow["response"].clone());
            let completed = event(EventType::FlowCompleted, &flow_data);
            let body = to_json(&completed);
            more.push(FurtherEvent {
                id: completed.id,
                event_type: completed.event_type,
                key: format!("flow_completed:{}", m.wamid),
                needs_start: false,
                body,
            });
        }
        MessageInput {
            sender: m.phone_number_id.clone(),
            customer: m.customer_id.clone(),
            conversation_id: new_id,
            at: m.timestamp,
            key: format!("message:{}", m.wamid),
            wamid: m.wamid.clone(),
            received_id: received.id,
            received_body: to_json(&received),
            more,
            contact_id: Uuid::now_v7(),
            phone: m.customer_phone.clone(),
            name: m.contact_name.clone(),
            opt_out: opt_out.map(|c| c.as_str()),
        }
    }
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
                .bind(Destination::Events.as_str())
                .fetch_all(&mut *conn)
                .await?;
            for row in rows {
                if let Some(&i) = usize::try_from(row.0 - 1).ok().and_then(|k| round.get(k)) {
                    out[i].push(row);
                }
            }
        }
        Ok(out)
    }
}

/// Records what the statement did with one message: its outbox rows, or that it was known.
fn record_message(
    m: &MessageInput,
    rows: Vec<MessageRow>,
    stored: &mut Stored,
    duplicate_keys: &mut Vec<String>,
) {
    if let Some(change) = m.opt_out
        && !rows.is_empty()
    {
        tracing::info!(customer = %m.customer, change, "opt-out keyword");
    }
    if rows.is_empty() {
        // Known already, or a concurrent delivery of the same message won.
        stored.duplicates += 1;
        duplicate_keys.push(m.key.clone());
        duplicate_keys.push(format!("conversation_started:{}", m.wamid));
        duplicate_keys.push(format!("flow_completed:{}", m.wamid));
        return;
    }
    for row in rows {
        match row {
            (
                _,
                _,
                Some(id),
                Some(destination),
                Some(routing_key),
                Some(event_id),
                Some(cid),
                _,
            ) => {
                // The event as stored: the body Herald made, with the conversation's id.
                let made = std::iter::once((m.received_id, &m.received_body))
                    .chain(m.more.iter().map(|e| (e.id, &e.body)))
                    .find(|(id, _)| *id == event_id);
                let Some((_, made)) = made else {
                    continue; // not one of this message's events (cannot be): the relay has it
                };
                let mut body = made.clone();
                body["data"]["conversation_id"] = json!(cid);
                stored.outbox.push(OutboxRow {
                    id,
                    destination,
                    routing_key,
                    body,
                });
                stored.new_events += 1;
            }
            (_, _, _, _, _, _, _, Some(known)) => {
                stored.duplicates += 1;
                duplicate_keys.push(known);
            }
            _ => {}
        }
    }
}

async fn store_message(
    conn: &mut PgConnection,
    m: &InboundMessage,
    keywords: &OptOutKeywords,
    stored: &mut Stored,
    duplicate_keys: &mut Vec<String>,
) -> sqlx::Result<()> {
    use crate::db::batch::Statement;
    let input = Arc::new(MessageInput::new(m, keywords));
    let mut rows = StoreMessages
        .run(conn, std::slice::from_ref(&input))
        .await?;
    record_message(
        &input,
        rows.pop().unwrap_or_default(),
        stored,
        duplicate_keys,
    );
    Ok(())
}

/// Status order: a status never moves backwards (a late `delivered` never undoes `read`).
pub const STATUS_RANK_SQL: &str = "CASE $1 WHEN 'accepted' THEN 0 WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2 \
     WHEN 'read' THEN 3 WHEN 'played' THEN 4 WHEN 'failed' THEN 5 ELSE -1 END";

async fn store_status(
    conn: &mut PgConnection,
    s: &StatusUpdate,
    stored: &mut Stored,
    duplicate_keys: &mut Vec<String>,
) -> sqlx::Result<()> {
    let key = format!("status:{}:{}", s.wamid, s.status);
    let event = whatsapp_event(
        EventType::MessageStatus,
        &s.phone_number_id,
        s.recipient_id.as_deref(),
        s.timestamp,
        Value::Object(s.data.clone()),
    );
    let body = serde_json::to_value(&event).unwrap_or(Value::Null);
    let rank = |col: &str| STATUS_RANK_SQL.replace("$1", col);
    let errors =
        (!s.errors.is_empty()).then(|| s.data.get("errors").cloned().unwrap_or(Value::Null));
    // A failed delivery is recorded on the step that sent the message, with its error class.
    let step_error = (s.status == "failed").then(|| {
        let first = s.errors.first();
        let code = first.map(|e| e.code);
        json!({
            "class": crate::providers::whatsapp::classify(code, 200),
            "provider_code": code,
            "message": first.and_then(|e| e.details.clone().or_else(|| e.message.clone()).or_else(|| e.title.clone()))
                .unwrap_or_else(|| "Meta reported the message as failed".into()),
            "delivery": "failed after Meta accepted the message",
        })
    });
    // The message's status moves (forward only) when the status event is new.
    let more = format!(
        ", upd AS (
           UPDATE outbound_messages SET status = $10, status_at = $11, error = COALESCE($12, error)
           WHERE wamid = $9 AND {} < {} AND EXISTS (SELECT 1 FROM ins)
         ), step AS (
           UPDATE step_attempts sa SET error = $13
           FROM outbound_messages om
           WHERE $13::jsonb IS NOT NULL AND om.wamid = $9 AND sa.run_id = om.run_id
             AND sa.step_index = om.step_index AND sa.state = 'succeeded' AND EXISTS (SELECT 1 FROM ins)
         )",
        rank("status"),
        rank("$10")
    );
    let row = event_query(&more, &event, &key, &body)
        .bind(&s.wamid)
        .bind(&s.status)
        .bind(s.timestamp)
        .bind(errors)
        .bind(step_error)
        .fetch_optional(&mut *conn)
        .await?;
    record_event(row, &key, stored, duplicate_keys);
    Ok(())
}

async fn store_template_status(
    conn: &mut PgConnection,
    t: &TemplateStatusUpdate,
    stored: &mut Stored,
    duplicate_keys: &mut Vec<String>,
) -> sqlx::Result<()> {
    let key = format!(
        "template_status:{}:{}:{}:{}:{}",
        t.waba_id,
        t.template_name,
        t.language,
        t.event,
        Value::Object(t.data.clone())
    );
    let event = CloudEvent::new(
        EventType::TemplateStatus,
        format!("/whatsapp/waba/{}", t.waba_id),
        t.waba_id.clone(),
        None,
        Utc::now(),
        Value::Object(t.data.clone()),
    );
    let body = serde_json::to_value(&event).unwrap_or(Value::Null);
    // The catalog's row moves with the event, when the event is new and changes the status.
    let change = StatusChange {
        status: crate::templates::status_after_event(&t.event),
        name: &t.template_name,
        language: t.language.replace('-', "_"),
    };
    let row = change
        .bind(event_query(StatusChange::CTES, &event, &key, &body))
        .fetch_optional(&mut *conn)
        .await?;
    record_event(row, &key, stored, duplicate_keys);
    Ok(())
}

async fn store_quality(
    conn: &mut PgConnection,
    q: &QualityUpdate,
    stored: &mut Stored,
    duplicate_keys: &mut Vec<String>,
) -> sqlx::Result<()> {
    let key = format!(
        "quality:{}:{}:{}:{}",
        q.display_phone_number,
        q.event,
        q.current_limit.as_deref().unwrap_or_default(),
        q.time.map(|t| t.timestamp()).unwrap_or_default()
    );
    let event = CloudEvent::new(
        EventType::QualityChanged,
        format!("/whatsapp/waba/{}", q.waba_id),
        q.display_phone_number.clone(),
        None,
        q.time.unwrap_or_else(Utc::now),
        Value::Object(q.data.clone()),
    );
    let body = serde_json::to_value(&event).unwrap_or(Value::Null);
    // With a new event only, in the same statement: the sender takes the rating; a drop pauses
    // its dispatches and queues one notice for the team (see `QualityChange`).
    let assessment = crate::senders::quality::assess(&q.event, &q.data);
    let change = QualityChange {
        sender: crate::senders::pacing::digits(&q.display_phone_number),
        rating: assessment.rating,
        event: q.event.trim().to_ascii_uppercase(),
        dropped: assessment.dropped,
        reason: assessment.reason,
    };
    let row = change
        .bind(event_query(QualityChange::CTES, &event, &key, &body))
        .fetch_optional(&mut *conn)
        .await?;
    record_event(row, &key, stored, duplicate_keys);
    Ok(())
}
