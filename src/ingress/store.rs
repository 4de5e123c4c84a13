//! Turns parsed webhook items into CloudEvents and stores them, deduplicated, with their outbox
//! rows, atomically (one statement per item, one transaction per delivery). Also keeps contacts,
//! the 24-hour windows and outbound statuses.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::payload::{InboundMessage, Item, QualityUpdate, StatusUpdate, TemplateStatusUpdate};
pub use crate::store::events::StoreMessages;
use crate::{
    bus::outbox::OutboxRow,
    db::batch::Batched,
    domain::{CloudEvent, EventType, OptOutKeywords},
    store::{
        events::{self, FurtherEvent, MessageInput, MessageRow},
        messages::StatusMove,
        senders::QualityChange,
        templates::StatusChange,
    },
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
            let input = Arc::new(message_input(m, keywords));
            let rows = match batched.run(input.clone()).await {
                Ok(rows) => rows,
                // The data of any message of the batch may have failed the shared statement:
                // this message alone, so that only the one whose data it was fails.
                Err(e) if crate::db::is_data_error(&e) => {
                    use crate::db::batch::Statement;
                    let mut conn = pool.acquire().await?;
                    let mut rows = StoreMessages
                        .run(&mut conn, std::slice::from_ref(&input))
                        .await?;
                    rows.pop().unwrap_or_default()
                }
                Err(e) => return Err(unshare(e)),
            };
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
    let pending = events::pending_of(conn, duplicate_keys).await?;
    stored.outbox.extend(pending);
    Ok(())
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

/// One message as the store takes it: its events are made here, at the edge.
fn message_input(m: &InboundMessage, keywords: &OptOutKeywords) -> MessageInput {
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
            MessageRow {
                id: Some(id),
                destination: Some(destination),
                routing_key: Some(routing_key),
                event_id: Some(event_id),
                cid: Some(cid),
                ..
            } => {
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
            MessageRow {
                known: Some(known), ..
            } => {
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
    let input = Arc::new(message_input(m, keywords));
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
    let moves = StatusMove {
        wamid: &s.wamid,
        status: &s.status,
        at: s.timestamp,
        errors: (!s.errors.is_empty()).then(|| s.data.get("errors").cloned().unwrap_or(Value::Null)),
        // A failed delivery is recorded on the step that sent the message, with its error class.
        step_error: (s.status == "failed").then(|| {
            let first = s.errors.first();
            let code = first.map(|e| e.code);
            json!({
                "class": crate::providers::whatsapp::classify(code, 200),
                "provider_code": code,
                "message": first.and_then(|e| e.details.clone().or_else(|| e.message.clone()).or_else(|| e.title.clone()))
                    .unwrap_or_else(|| "Meta reported the message as failed".into()),
                "delivery": "failed after Meta accepted the message",
            })
        }),
    };
    // The message's status moves (forward only) when the status event is new.
    let ctes = StatusMove::ctes();
    let row = moves
        .bind(events::insert_with(&ctes, &event, &key, &body))
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
        .bind(events::insert_with(StatusChange::CTES, &event, &key, &body))
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
        .bind(events::insert_with(
            QualityChange::CTES,
            &event,
            &key,
            &body,
        ))
        .fetch_optional(&mut *conn)
        .await?;
    record_event(row, &key, stored, duplicate_keys);
    Ok(())
}
