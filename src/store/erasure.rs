//! Erasure: deleting a contact removes their personal data from every table, in one
//! transaction. History rows stay, so counts of runs, events and messages still add up, with
//! their personal data replaced: payloads become `{"erased": true}`, errors keep only their
//! class, the customer's ids become one random token per erasure (`erased:<hex>`), texts
//! `[erased]`. State about the person (conversation windows, pacing slots) is deleted.
//!
//! A row belongs to the contact by its ids (customer id, phone, the contact's runs and their
//! events); any other row of these tables whose text carries the phone's digits is erased too.
//! That search reads the tables whole: erasure is rare, and an index per column is not worth
//! its cost on every write.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::contacts::{Contact, ContactRef};

/// The payload that replaces an erased one.
const ERASED: &str = r#"{"erased": true}"#;
/// The text that replaces an erased one.
const ERASED_TEXT: &str = "[erased]";
/// An erased error: its class stays (error counts by class still add up), the rest goes.
const ERASED_ERROR: &str = "CASE WHEN {col} IS NULL THEN NULL ELSE jsonb_strip_nulls(jsonb_build_object('class', {col} -> 'class', 'erased', true)) END";

/// Digits this short could be part of anything; only rows that belong to the contact by their
/// ids are erased then.
const MIN_NEEDLE: usize = 7;

fn erased_error(col: &str) -> String {
    ERASED_ERROR.replace("{col}", col)
}

/// What an erasure changed, per table: rows erased in place (their personal data replaced) or
/// deleted (`contacts`, `conversations`, `sender_pacing`, `outbox`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ErasedRows {
    /// The contact itself (deleted).
    pub contacts: u64,
    /// Events whose data (and subject) were replaced.
    pub events: u64,
    /// Runs whose data, error and customer id were replaced.
    pub runs: u64,
    /// Of those, runs that had not finished: cancelled, their timers deleted.
    pub runs_cancelled: u64,
    pub step_attempts: u64,
    pub outbound_messages: u64,
    pub dead_letters: u64,
    pub ai_conversations: u64,
    pub ai_messages: u64,
    /// Quarantined bodies that carried the number (replaced whole).
    pub quarantine: u64,
    pub dispatch_contacts: u64,
    /// Dispatches whose list of numbers named the contact.
    pub dispatches: u64,
    /// 24-hour windows with the contact (deleted).
    pub conversations: u64,
    /// Pacing slots of the contact (deleted).
    pub sender_pacing: u64,
    /// The contact's events not yet published (deleted: they would start runs).
    pub outbox: u64,
}

impl ErasedRows {
    /// Rows per table, by table name, for tables and logs.
    pub fn rows(&self) -> BTreeMap<&'static str, u64> {
        BTreeMap::from([
            ("contacts", self.contacts),
            ("events", self.events),
            ("runs", self.runs),
            ("runs_cancelled", self.runs_cancelled),
            ("step_attempts", self.step_attempts),
            ("outbound_messages", self.outbound_messages),
            ("dead_letters", self.dead_letters),
            ("ai_conversations", self.ai_conversations),
            ("ai_messages", self.ai_messages),
            ("quarantine", self.quarantine),
            ("dispatch_contacts", self.dispatch_contacts),
            ("dispatches", self.dispatches),
            ("conversations", self.conversations),
            ("sender_pacing", self.sender_pacing),
            ("outbox", self.outbox),
        ])
    }
}

/// A contact erased: the contact as it was, and what was removed.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Erasure {
    #[serde(flatten)]
    pub contact: Contact,
    /// Rows changed per table.
    pub erased: ErasedRows,
}

/// The ids an erasure looks for.
struct Person<'a> {
    customer_id: &'a str,
    phone: Option<&'a str>,
    /// The phone's digits (or the customer id): searched for in every text, when long enough.
    needle: Option<String>,
    token: String,
}

/// Erases the contact `key` (see the module's comment); `None` when there is no such contact.
pub async fn erase(pool: &PgPool, key: ContactRef<'_>) -> sqlx::Result<Option<Erasure>> {
    let (customer_id, id) = match key {
        ContactRef::CustomerId(c) => (Some(c), None),
        ContactRef::Id(id) => (None, Some(id)),
    };
    let mut tx = pool.begin().await?;
    let contact: Option<Contact> = sqlx::query_as(
        "DELETE FROM contacts WHERE customer_id = $1 OR id = $2
         RETURNING id, customer_id, phone, name, fields, groups, opted_out, created_at, last_seen_at",
    )
    .bind(customer_id)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(contact) = contact else {
        return Ok(None);
    };
    let digits = contact
        .phone
        .as_deref()
        .map(|p| p.trim_start_matches('+').to_string())
        .unwrap_or_else(|| contact.customer_id.clone());
    let person = Person {
        customer_id: &contact.customer_id,
        phone: contact.phone.as_deref(),
        needle: (digits.len() >= MIN_NEEDLE && digits.chars().all(|c| c.is_ascii_digit()))
            .then_some(digits),
        token: format!("erased:{}", Uuid::new_v4().simple()),
    };
    let mut erased = erase_rows(&mut tx, &person).await?;
    erased.contacts = 1;
    tx.commit().await?;
    Ok(Some(Erasure { contact, erased }))
}

async fn erase_rows(tx: &mut PgConnection, p: &Person<'_>) -> sqlx::Result<ErasedRows> {
    let mut e = ErasedRows::default();
    // The contact's runs (and those whose data carry the number), locked for the erasure.
    let runs: Vec<(Uuid, Uuid, bool)> = sqlx::query_as(
        "SELECT id, event_id, coalesce(customer_id = $1, false) FROM runs
          WHERE customer_id = $1 OR strpos(context::text, $2) > 0
             OR strpos(coalesce(error::text, ''), $2) > 0
          FOR UPDATE",
    )
    .bind(p.customer_id)
    .bind(&p.needle)
    .fetch_all(&mut *tx)
    .await?;
    let run_ids: Vec<Uuid> = runs.iter().map(|r| r.0).collect();
    let owned_events: Vec<Uuid> = runs.iter().filter(|r| r.2).map(|r| r.1).collect();

    let cancelled: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE runs SET status = 'cancelled', finished_at = now(), updated_at = now(),
           error = '{\"class\": \"Cancelled\", \"message\": \"the contact was erased\"}'
          WHERE id = ANY($1) AND finished_at IS NULL RETURNING id",
    )
    .bind(&run_ids)
    .fetch_all(&mut *tx)
    .await?;
    e.runs_cancelled = cancelled.len() as u64;
    sqlx::query("DELETE FROM timers WHERE run_id = ANY($1)")
        .bind(&cancelled)
        .execute(&mut *tx)
        .await?;
    e.runs = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE runs SET context = '{ERASED}'::jsonb, error = {},
           customer_id = CASE WHEN customer_id = $2 THEN $3 ELSE customer_id END
          WHERE id = ANY($1)",
        erased_error("error")
    )))
    .bind(&run_ids)
    .bind(p.customer_id)
    .bind(&p.token)
    .execute(&mut *tx)
    .await?
    .rows_affected();

    e.step_attempts = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE step_attempts SET
           input = CASE WHEN input IS NULL THEN NULL ELSE '{ERASED}'::jsonb END,
           output = CASE WHEN output IS NULL THEN NULL ELSE '{ERASED}'::jsonb END,
           error = {}
          WHERE run_id = ANY($1)
             OR strpos(coalesce(input::text, '') || coalesce(output::text, '')
                       || coalesce(error::text, ''), $2) > 0",
        erased_error("error")
    )))
    .bind(&run_ids)
    .bind(&p.needle)
    .execute(&mut *tx)
    .await?
    .rows_affected();

    e.outbound_messages = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE outbound_messages SET recipient = $4, request = '{ERASED}'::jsonb, error = {}
          WHERE run_id = ANY($1) OR recipient IN ($2, $3)
             OR strpos(recipient || request::text || coalesce(error::text, ''), $2) > 0",
        erased_error("error")
    )))
    .bind(&run_ids)
    .bind(&p.needle)
    .bind(p.phone)
    .bind(&p.token)
    .execute(&mut *tx)
    .await?
    .rows_affected();

    e.dead_letters = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE dead_letters SET input = CASE WHEN input IS NULL THEN NULL ELSE '{ERASED}'::jsonb END,
           error = {},
           customer_id = CASE WHEN customer_id = $2 THEN $4 ELSE customer_id END
          WHERE run_id = ANY($1) OR customer_id = $2
             OR strpos(coalesce(input::text, '') || error::text, $3) > 0",
        erased_error("error")
    )))
    .bind(&run_ids)
    .bind(p.customer_id)
    .bind(&p.needle)
    .bind(&p.token)
    .execute(&mut *tx)
    .await?
    .rows_affected();

    let events: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "UPDATE events SET
           subject = CASE WHEN subject = $2 THEN $4 ELSE subject END,
           cloudevent = cloudevent || jsonb_build_object('data', '{ERASED}'::jsonb)
             || CASE WHEN cloudevent ? 'subject' THEN jsonb_build_object('subject', $4)
                     ELSE '{{}}'::jsonb END
          WHERE id = ANY($1) OR subject = $2 OR strpos(cloudevent::text, $3) > 0
          RETURNING id"
    )))
    .bind(&owned_events)
    .bind(p.customer_id)
    .bind(&p.needle)
    .bind(&p.token)
    .fetch_all(&mut *tx)
    .await?;
    e.events = events.len() as u64;
    e.outbox = sqlx::query(
        "DELETE FROM outbox WHERE event_id = ANY($1) OR strpos(coalesce(body::text, ''), $2) > 0",
    )
    .bind(&events)
    .bind(&p.needle)
    .execute(&mut *tx)
    .await?
    .rows_affected();

    // AI history: conversations kept for the customer under any of their ids, or written by
    // their runs. The token is suffixed per row: one customer may have several conversations
    // with one assistant (by phone and by CRM id), and (assistant, customer) is unique.
    let conversations: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE ai_conversations c SET customer = $5 || ':' || c.id
          WHERE c.customer IN ($2, $3, $4) OR strpos(c.customer, $4) > 0
             OR c.id IN (SELECT m.conversation_id FROM ai_messages m WHERE m.run_id = ANY($1))
          RETURNING c.id",
    )
    .bind(&run_ids)
    .bind(p.customer_id)
    .bind(p.phone)
    .bind(&p.needle)
    .bind(&p.token)
    .fetch_all(&mut *tx)
    .await?;
    e.ai_conversations = conversations.len() as u64;
    e.ai_messages = sqlx::query(
        "UPDATE ai_messages SET content = $4
          WHERE conversation_id = ANY($1) OR run_id = ANY($2) OR strpos(content, $3) > 0",
    )
    .bind(&conversations)
    .bind(&run_ids)
    .bind(&p.needle)
    .bind(ERASED_TEXT)
    .execute(&mut *tx)
    .await?
    .rows_affected();

    e.quarantine = sqlx::query(
        "UPDATE quarantine SET body = convert_to($2, 'UTF8'),
           reason = replace(reason, $1, $3),
           replay_result = replace(replay_result, $1, $3)
          WHERE position(convert_to($1, 'UTF8') IN body) > 0
             OR strpos(reason || coalesce(replay_result, ''), $1) > 0",
    )
    .bind(&p.needle)
    .bind(ERASED)
    .bind(ERASED_TEXT)
    .execute(&mut *tx)
    .await?
    .rows_affected();

    e.dispatch_contacts = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE dispatch_contacts SET raw = $4, phone = NULL, customer_id = $4, error = {}
          WHERE customer_id = $1 OR phone = $2 OR strpos(raw, $3) > 0",
        erased_error("error")
    )))
    .bind(p.customer_id)
    .bind(p.phone)
    .bind(&p.needle)
    .bind(&p.token)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    e.dispatches = sqlx::query(
        "UPDATE dispatches d SET target = d.target || jsonb_build_object('to', (
             SELECT coalesce(jsonb_agg(CASE WHEN strpos(x.n, $1) > 0 THEN to_jsonb($2::text)
                                            ELSE to_jsonb(x.n) END ORDER BY x.i), '[]'::jsonb)
               FROM jsonb_array_elements_text(d.target -> 'to') WITH ORDINALITY AS x(n, i)))
          WHERE jsonb_typeof(d.target -> 'to') = 'array' AND strpos(d.target::text, $1) > 0",
    )
    .bind(&p.needle)
    .bind(&p.token)
    .execute(&mut *tx)
    .await?
    .rows_affected();

    e.conversations = sqlx::query("DELETE FROM conversations WHERE customer_id = $1")
        .bind(p.customer_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    e.sender_pacing = sqlx::query("DELETE FROM sender_pacing WHERE recipient IN ($1, $2)")
        .bind(p.customer_id)
        .bind(&p.needle)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    Ok(e)
}
