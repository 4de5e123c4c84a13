//! The template catalog at run time: the `templates` table, seeded from `templates.yaml` at
//! start, synced from the Graph API's template list, moved by template-status webhooks (in the
//! ingress store), and read by `send_template` before it calls Meta.
//!
//! An empty table (no `templates.yaml`, no synced list) means no run-time check.

pub mod catalog;

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    domain::PhoneNumber,
    providers::whatsapp::{ListedTemplate, WhatsApp},
    templates::catalog::{Catalog, KnownTemplate},
};

/// Makes the `config` rows of the table what `catalog` says (none when there is no file):
/// inserts and updates its templates, removes config rows it no longer lists. Rows synced from
/// the Graph API are Meta's word and are left alone. Returns the number of templates in the file.
pub async fn seed_from_config(pool: &PgPool, catalog: Option<&Catalog>) -> anyhow::Result<usize> {
    let templates = catalog.map(|c| c.templates.as_slice()).unwrap_or_default();
    let mut tx = pool.begin().await.context("begin template seed")?;
    for t in templates {
        sqlx::query(
            "INSERT INTO templates (name, language, category, body_parameters, named_parameters, status, source)
             VALUES ($1, $2, $3, $4, $5, $6, 'config')
             ON CONFLICT (name, language) DO UPDATE SET
               category = EXCLUDED.category, body_parameters = EXCLUDED.body_parameters,
               named_parameters = EXCLUDED.named_parameters, status = EXCLUDED.status, updated_at = now()
             WHERE templates.source = 'config'",
        )
        .bind(t.name.as_str())
        .bind(t.language.as_str())
        .bind(t.category.as_str())
        .bind(i32::try_from(t.body_parameters).unwrap_or(i32::MAX))
        .bind(&t.named_parameters)
        .bind(t.status.as_str())
        .execute(&mut *tx)
        .await
        .context("store a template of templates.yaml")?;
    }
    let names: Vec<&str> = templates.iter().map(|t| t.name.as_str()).collect();
    let languages: Vec<&str> = templates.iter().map(|t| t.language.as_str()).collect();
    sqlx::query(
        "DELETE FROM templates WHERE source = 'config'
         AND (name, language) NOT IN (SELECT * FROM unnest($1::text[], $2::text[]))",
    )
    .bind(&names)
    .bind(&languages)
    .execute(&mut *tx)
    .await
    .context("remove templates no longer in templates.yaml")?;
    tx.commit().await.context("commit template seed")?;
    Ok(templates.len())
}

/// What one sync did.
#[derive(Debug, PartialEq, Eq)]
pub enum Synced {
    /// The list was read and stored: this many templates.
    Stored(usize),
    /// Another process was syncing at the same moment; its result stands.
    Skipped,
}

/// Reads the WABA's template list from the Graph API and makes the table's `graph` rows match
/// it (a template listed by Meta replaces a config row of the same name and language). Any
/// failure leaves the table as it was.
pub async fn sync_from_graph(
    pool: &PgPool,
    whatsapp: &WhatsApp,
    business_account_id: &str,
) -> anyhow::Result<Synced> {
    let listed = whatsapp.list_templates(business_account_id).await?;
    store_listed(pool, &listed).await
}

async fn store_listed(pool: &PgPool, listed: &[ListedTemplate]) -> anyhow::Result<Synced> {
    let mut tx = pool.begin().await.context("begin template sync")?;
    // One process at a time: a second one skips (the transaction-scoped lock ends with it).
    let locked: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext('herald.templates.sync'))")
            .fetch_one(&mut *tx)
            .await
            .context("take the template sync lock")?;
    if !locked {
        return Ok(Synced::Skipped);
    }
    for t in listed {
        sqlx::query(
            "INSERT INTO templates (name, language, category, body_parameters, named_parameters, status, source)
             VALUES ($1, $2, $3, $4, $5, $6, 'graph')
             ON CONFLICT (name, language) DO UPDATE SET
               category = EXCLUDED.category, body_parameters = EXCLUDED.body_parameters,
               named_parameters = EXCLUDED.named_parameters, status = EXCLUDED.status,
               source = 'graph', updated_at = now()",
        )
        .bind(&t.name)
        .bind(&t.language)
        .bind(&t.category)
        .bind(i32::try_from(t.body_parameters).unwrap_or(i32::MAX))
        .bind(&t.named_parameters)
        .bind(&t.status)
        .execute(&mut *tx)
        .await
        .context("store a listed template")?;
    }
    let names: Vec<&str> = listed.iter().map(|t| t.name.as_str()).collect();
    let languages: Vec<&str> = listed.iter().map(|t| t.language.as_str()).collect();
    sqlx::query(
        "DELETE FROM templates WHERE source = 'graph'
         AND (name, language) NOT IN (SELECT * FROM unnest($1::text[], $2::text[]))",
    )
    .bind(&names)
    .bind(&languages)
    .execute(&mut *tx)
    .await
    .context("remove templates Meta no longer lists")?;
    tx.commit().await.context("commit template sync")?;
    Ok(Synced::Stored(listed.len()))
}

/// Syncs at once, then every `interval`, until shutdown. A failed sync is logged and the last
/// known catalog stays.
pub async fn run_sync(
    pool: PgPool,
    whatsapp: WhatsApp,
    business_account_id: String,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        match sync_from_graph(&pool, &whatsapp, &business_account_id).await {
            Ok(Synced::Stored(n)) => tracing::info!(templates = n, "template catalog synced"),
            Ok(Synced::Skipped) => tracing::debug!("template sync running elsewhere; skipped"),
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "template sync failed; keeping the last known catalog"
            ),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// The status a `message_template_status_update` event gives the template, or `None` when the
/// event does not change whether it can be sent (FLAGGED: still active, a warning).
pub fn status_after_event(event: &str) -> Option<String> {
    match event.trim().to_ascii_uppercase().as_str() {
        "" | "FLAGGED" => None,
        "REINSTATED" => Some("APPROVED".into()),
        other => Some(other.to_string()),
    }
}

/// What a send must respect, read in one query at send time.
#[derive(Debug)]
pub struct SendFacts {
    /// False when the catalog is empty: no run-time template check.
    pub catalog: bool,
    /// The template's row, when known.
    pub template: Option<KnownTemplate>,
    /// Whether the recipient's contact opted out.
    pub opted_out: bool,
}

type FactsRow = (
    i64,
    bool,
    Option<String>,
    Option<String>,
    Option<i32>,
    Option<Vec<String>>,
    bool,
);

/// A send's question: the template (name, language) and the recipient.
#[derive(Clone)]
pub struct FactsRequest {
    pub name: String,
    pub language: String,
    pub to: PhoneNumber,
}

/// Reads, for many sends in one query, the catalog's entry for (name, language) and the
/// opt-out of the contact with the recipient's phone. Batched across the sends of a process
/// (`db::batch`); see [`Facts`].
#[derive(Clone)]
struct ReadFacts;

impl crate::db::batch::Statement for ReadFacts {
    type Input = FactsRequest;
    type Output = SendFacts;

    async fn run(
        &self,
        conn: &mut sqlx::PgConnection,
        all: &[FactsRequest],
    ) -> sqlx::Result<Vec<SendFacts>> {
        let rows: Vec<FactsRow> = sqlx::query_as(
            "SELECT x.ord, EXISTS (SELECT 1 FROM templates),
                    t.category, t.status, t.body_parameters, t.named_parameters,
                    COALESCE((SELECT bool_or(opted_out) FROM contacts
                              WHERE customer_id = x.digits OR phone = x.phone), false)
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
                    WITH ORDINALITY AS x(name, language, digits, phone, ord)
             LEFT JOIN templates t ON t.name = x.name AND t.language = x.language
             ORDER BY x.ord",
        )
        .bind(all.iter().map(|f| f.name.as_str()).collect::<Vec<_>>())
        .bind(all.iter().map(|f| f.language.as_str()).collect::<Vec<_>>())
        .bind(all.iter().map(|f| f.to.digits()).collect::<Vec<_>>())
        .bind(all.iter().map(|f| f.to.to_string()).collect::<Vec<_>>())
        .fetch_all(conn)
        .await?;
        let rows = crate::db::batch::one_row_each(rows, all.len(), "the template facts query")?;
        Ok(rows
            .into_iter()
            .map(
                |(_, catalog, category, status, body_parameters, named_parameters, opted_out)| {
                    let template = match (category, status, body_parameters, named_parameters) {
                        (
                            Some(category),
                            Some(status),
                            Some(body_parameters),
                            Some(named_parameters),
                        ) => Some(KnownTemplate {
                            category,
                            status,
                            body_parameters,
                            named_parameters,
                        }),
                        _ => None,
                    };
                    SendFacts {
                        catalog,
                        template,
                        opted_out,
                    }
                },
            )
            .collect())
    }
}

/// What sends must respect, read at send time (batched across the sends of a process).
#[derive(Clone)]
pub struct Facts {
    read: crate::db::batch::Batched<ReadFacts>,
}

impl Facts {
    /// Starts the query's batcher (needs a Tokio runtime).
    pub fn new(pool: PgPool) -> Self {
        Facts {
            read: crate::db::batch::Batched::new("templates.facts", pool, ReadFacts),
        }
    }

    /// The catalog's entry for (name, language) and the opt-out of the contact with this phone.
    pub async fn send_facts(
        &self,
        name: &str,
        language: &str,
        to: &PhoneNumber,
    ) -> Result<SendFacts, crate::db::batch::DbError> {
        self.read
            .run(FactsRequest {
                name: name.to_string(),
                language: language.to_string(),
                to: to.clone(),
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_webhooks_pause_disable_and_reinstate_but_a_flag_changes_nothing() {
        assert_eq!(status_after_event("PAUSED").as_deref(), Some("PAUSED"));
        assert_eq!(status_after_event("disabled").as_deref(), Some("DISABLED"));
        assert_eq!(
            status_after_event("REINSTATED").as_deref(),
            Some("APPROVED")
        );
        assert_eq!(status_after_event("APPROVED").as_deref(), Some("APPROVED"));
        assert_eq!(status_after_event("FLAGGED"), None);
        assert_eq!(status_after_event(" "), None);
    }
}
