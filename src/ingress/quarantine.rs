//! Quarantine: signed bodies Herald could not parse or route, kept whole with the reason,
//! listed for operators and replayed once Herald understands them.

use anyhow::Context;
use sqlx::PgPool;
use uuid::Uuid;

use super::{payload, store};
use crate::{
    bus::{Bus, outbox},
    store::quarantine,
};

/// Keeps a body whose data PostgreSQL refused (see `db::is_data_error`): the same body would
/// fail the same way for ever, so it is kept with the refusal as its reason. Returns the
/// quarantine id and the reason, for the caller's 200 answer.
pub async fn keep_refused(
    pool: &PgPool,
    source: &str,
    body: &[u8],
    error: &sqlx::Error,
) -> sqlx::Result<(Uuid, String)> {
    let reason = format!("PostgreSQL refused the data: {error}");
    let id = keep(pool, source, body, &reason).await?;
    Ok((id, reason))
}

pub async fn keep(pool: &PgPool, source: &str, body: &[u8], reason: &str) -> sqlx::Result<Uuid> {
    let id = Uuid::now_v7();
    quarantine::insert(pool, id, source, body, reason).await?;
    metrics::counter!("herald_quarantined_total", "source" => source.to_string()).increment(1);
    tracing::warn!(quarantine_id = %id, source, reason, "webhook body quarantined");
    Ok(id)
}

pub use crate::store::quarantine::Entry;

pub async fn list(pool: &PgPool, limit: i64) -> anyhow::Result<Vec<Entry>> {
    quarantine::list(pool, limit)
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
    let body = quarantine::body(pool, id)
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
    quarantine::mark_replayed(pool, id, &result)
        .await
        .context("record replay")?;
    Ok(result)
}
