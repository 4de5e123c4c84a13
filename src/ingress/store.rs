//! Turns parsed webhook items into CloudEvents and stores them, deduplicated, with their outbox
//! rows, in one transaction. Also keeps contacts, the 24-hour windows and outbound statuses.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::payload::{InboundMessage, Item, QualityUpdate, StatusUpdate, TemplateStatusUpdate};
use crate::{
    bus::{
        Destination,
        outbox::{self, OutboxRow},
    },
    domain::{CloudEvent, EventType},
};

#[derive(Debug, Default)]
pub struct Stored {
    pub new_events: usize,
    pub duplicates: usize,
    /// Rows to publish: the new events', and any still-unpublished rows of duplicates.
    pub outbox: Vec<OutboxRow>,
}

/// Stores every item of one delivery in one transaction.
pub async fn store_items(pool: &PgPool, items: &[Item]) -> sqlx::Result<Stored> {
    let mut tx = pool.begin().await?;
    let mut stored = Stored::default();
    let mut duplicate_keys = Vec::new();
    for item in items {
        match item {
            Item::Message(m) => store_message(&mut tx, m, &mut stored, &mut duplicate_keys).await?,
            Item::Status(s) => store_status(&mut tx, s, &mut stored, &mut duplicate_keys).await?,
            Item::TemplateStatus(t) => {
                store_template_status(&mut tx, t, &mut stored, &mut duplicate_keys).await?
            }
            Item::QualityUpdate(q) => {
                store_quality(&mut tx, q, &mut stored, &mut duplicate_keys).await?
            }
        }
    }
    if !duplicate_keys.is_empty() {
        let pending: Vec<OutboxRow> = sqlx::query_as(
            "SELECT o.id, o.destination, o.routing_key, o.body FROM outbox o
             JOIN events e ON e.id = o.event_id WHERE e.dedup_key = ANY($1)",
        )
        .bind(&duplicate_keys)
        .fetch_all(&mut *tx)
        .await?;
        stored.outbox.extend(pending);
    }
    tx.commit().await?;
    for row in &stored.outbox {
        if let Some(t) = row.body.get("type").and_then(Value::as_str) {
            metrics::counter!("herald_events_received_total", "type" => t.to_string()).increment(1);
        }
    }
    Ok(stored)
}

/// Inserts one event unless its dedup key is known; returns whether it was new.
pub async fn insert_event(
    tx: &mut Transaction<'_, Postgres>,
    event: &CloudEvent,
    dedup_key: &str,
    stored: &mut Stored,
    duplicate_keys: &mut Vec<String>,
) -> sqlx::Result<bool> {
    let body = serde_json::to_value(event).unwrap_or(Value::Null);
    let inserted = sqlx::query(
        "INSERT INTO events (id, type, sender_id, subject, dedup_key, cloudevent)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (dedup_key) DO NOTHING",
    )
    .bind(event.id)
    .bind(event.event_type.as_str())
    .bind(&event.senderid)
    .bind(&event.subject)
    .bind(dedup_key)
    .bind(&body)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if inserted {
        let row = outbox::stage(
            tx,
            Destination::Events,
            &event.routing_key(),
            &body,
            Some(event.id),
        )
        .await?;
        stored.outbox.push(row);
        stored.new_events += 1;
    } else {
        stored.duplicates += 1;
        duplicate_keys.push(dedup_key.to_string());
    }
    Ok(inserted)
}

async fn is_known(tx: &mut Transaction<'_, Postgres>, dedup_key: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events WHERE dedup_key = $1)")
        .bind(dedup_key)
        .fetch_one(&mut **tx)
        .await
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

async fn store_message(
    tx: &mut Transaction<'_, Postgres>,
    m: &InboundMessage,
    stored: &mut Stored,
    duplicate_keys: &mut Vec<String>,
) -> sqlx::Result<()> {
    let key = format!("message:{}", m.wamid);
    if is_known(tx, &key).await? {
        stored.duplicates += 1;
        duplicate_keys.push(key);
        duplicate_keys.push(format!("conversation_started:{}", m.wamid));
        duplicate_keys.push(format!("flow_completed:{}", m.wamid));
        return Ok(());
    }
    // The window opens (or stays open) for 24 h from the message's own time. Concurrent
    // deliveries of the same message serialise on the conversation row.
    let new_id = Uuid::now_v7();
    let (conversation_id, started): (Uuid, bool) = sqlx::query_as(
        "INSERT INTO conversations AS c (sender_id, customer_id, id, started_at, last_inbound_at, window_expires_at)
         VALUES ($1, $2, $3, $4, $4, $4 + interval '24 hours')
         ON CONFLICT (sender_id, customer_id) DO UPDATE SET
           id = CASE WHEN c.window_expires_at <= EXCLUDED.last_inbound_at THEN EXCLUDED.id ELSE c.id END,
           started_at = CASE WHEN c.window_expires_at <= EXCLUDED.last_inbound_at THEN EXCLUDED.started_at ELSE c.started_at END,
           last_inbound_at = GREATEST(c.last_inbound_at, EXCLUDED.last_inbound_at),
           window_expires_at = GREATEST(c.window_expires_at, EXCLUDED.window_expires_at)
         RETURNING id, id = $3",
    )
    .bind(&m.phone_number_id)
    .bind(&m.customer_id)
    .bind(new_id)
    .bind(m.timestamp)
    .fetch_one(&mut **tx)
    .await?;

    let mut data = m.data.clone();
    data.insert("conversation_id".into(), json!(conversation_id));
    let received = whatsapp_event(
        EventType::MessageReceived,
        &m.phone_number_id,
        Some(&m.customer_id),
        m.timestamp,
        Value::Object(data.clone()),
    );
    if !insert_event(tx, &received, &key, stored, duplicate_keys).await? {
        return Ok(()); // a concurrent delivery of the same message won
    }
    if started {
        let event = whatsapp_event(
            EventType::ConversationStarted,
            &m.phone_number_id,
            Some(&m.customer_id),
            m.timestamp,
            Value::Object(data.clone()),
        );
        let key = format!("conversation_started:{}", m.wamid);
        insert_event(tx, &event, &key, stored, duplicate_keys).await?;
    }
    if m.message_type == "nfm_reply" {
        let flow = data.get("flow").cloned().unwrap_or(Value::Null);
        let mut flow_data = data.clone();
        flow_data.insert("flow_token".into(), flow["flow_token"].clone());
        flow_data.insert("response".into(), flow["response"].clone());
        let event = whatsapp_event(
            EventType::FlowCompleted,
            &m.phone_number_id,
            Some(&m.customer_id),
            m.timestamp,
            Value::Object(flow_data),
        );
        let key = format!("flow_completed:{}", m.wamid);
        insert_event(tx, &event, &key, stored, duplicate_keys).await?;
    }
    sqlx::query(
        "INSERT INTO contacts (id, customer_id, phone, name, last_seen_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (customer_id) DO UPDATE SET
           name = COALESCE(contacts.name, EXCLUDED.name),
           phone = COALESCE(contacts.phone, EXCLUDED.phone),
           last_seen_at = GREATEST(contacts.last_seen_at, EXCLUDED.last_seen_at)",
    )
    .bind(Uuid::now_v7())
    .bind(&m.customer_id)
    .bind(&m.customer_phone)
    .bind(&m.contact_name)
    .bind(m.timestamp)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Status order: a status never moves backwards (a late `delivered` never undoes `read`).
pub const STATUS_RANK_SQL: &str = "CASE $1 WHEN 'accepted' THEN 0 WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2 \
     WHEN 'read' THEN 3 WHEN 'played' THEN 4 WHEN 'failed' THEN 5 ELSE -1 END";

async fn store_status(
    tx: &mut Transaction<'_, Postgres>,
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
    if !insert_event(tx, &event, &key, stored, duplicate_keys).await? {
        return Ok(());
    }
    let rank = |col: &str| STATUS_RANK_SQL.replace("$1", col);
    let errors =
        (!s.errors.is_empty()).then(|| s.data.get("errors").cloned().unwrap_or(Value::Null));
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE outbound_messages SET status = $2, status_at = $3, error = COALESCE($4, error)
         WHERE wamid = $1 AND {} < {}",
        rank("status"),
        rank("$2")
    )))
    .bind(&s.wamid)
    .bind(&s.status)
    .bind(s.timestamp)
    .bind(errors)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn store_template_status(
    tx: &mut Transaction<'_, Postgres>,
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
    insert_event(tx, &event, &key, stored, duplicate_keys).await?;
    Ok(())
}

async fn store_quality(
    tx: &mut Transaction<'_, Postgres>,
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
    insert_event(tx, &event, &key, stored, duplicate_keys).await?;
    Ok(())
}
