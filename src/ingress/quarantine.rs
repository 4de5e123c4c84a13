//! Quarantine: signed bodies Herald could not parse or route, kept whole with the reason,
//! listed for operators and replayed once Herald understands them.

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::{payload, store};
use crate::bus::{Bus, outbox};

pub async fn keep(pool: &PgPool, source: &str, body: &[u8], reason: &str) -> sqlx::Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO quarantine (id, source, body, reason) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(source)
        .bind(body)
        .bind(reason)
        .execute(pool)
        .await?;
    metrics::counter!("herald_quarantined_total", "source" => source.to_string()).increment(1);
    tracing::warn!(quarantine_id = %id, source, reason, "webhook body quarantined");
    Ok(id)
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Entry {
    pub id: Uuid,
    pub source: String,
    pub reason: String,
    pub received_at: DateTime<Utc>,
    pub replayed_at: Option<DateTime<Utc>>,
    pub replay_result: Option<String>,
    pub size: i32,
}

pub async fn list(pool: &PgPool, limit: i64) -> anyhow::Result<Vec<Entry>> {
    sqlx::query_as(
        "SELECT id, source, reason, received_at, replayed_at, replay_result, length(body) AS size
         FROM quarantine ORDER BY received_at DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
    .context("list quarantine")
}

/// Parses and stores a quarantined body again. Events already stored are not stored twice.
pub async fn replay(
    pool: &PgPool,
    bus: &Bus,
    id: Uuid,
    keywords: &crate::domain::OptOutKeywords,
) -> anyhow::Result<String> {
    let body: Vec<u8> = sqlx::query_scalar("SELECT body FROM quarantine WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .context("load quarantined body")?
        .with_context(|| format!("no quarantined body with id {id}"))?;
    let result = match payload::parse(&body) {
        Err(e) => format!("still not understood: {e}"),
        Ok(parsed) => {
            let stored = store::store_items(pool, None, &parsed.items, keywords)
                .await
                .context("store replayed events")?;
            outbox::flush(bus, pool, &stored.outbox)
                .await
                .context("publish replayed events")?;
            let mut r = format!(
                "{} new events, {} already known",
                stored.new_events, stored.duplicates
            );
            if !parsed.problems.is_empty() {
                r.push_str(&format!(
                    "; still not understood: {}",
                    parsed.problems.join("; ")
                ));
            }
            r
        }
    };
    sqlx::query("UPDATE quarantine SET replayed_at = now(), replay_result = $2 WHERE id = $1")
        .bind(id)
        .bind(&result)
        .execute(pool)
        .await
        .context("record replay")?;
    Ok(result)
}
