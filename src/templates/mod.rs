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

pub use crate::store::templates::{FactsRequest, KnownTemplate, SendFacts};
use crate::{
    domain::{PhoneNumber, TemplateCategory, TemplateStatus},
    providers::whatsapp::{ListedTemplate, WhatsApp},
    store::templates::{self as store, NewTemplate, ReadFacts, TemplateSource},
    templates::catalog::Catalog,
};

/// Makes the `config` rows of the table what `catalog` says (none when there is no file):
/// inserts and updates its templates, removes config rows it no longer lists. Rows synced from
/// the Graph API are Meta's word and are left alone. Returns the number of templates in the file.
pub async fn seed_from_config(pool: &PgPool, catalog: Option<&Catalog>) -> anyhow::Result<usize> {
    let templates: Vec<NewTemplate<'_>> = catalog
        .map(|c| c.templates.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|t| NewTemplate {
            name: t.name.as_str(),
            language: t.language.as_str(),
            category: t.category,
            body_parameters: i32::try_from(t.body_parameters).unwrap_or(i32::MAX),
            named_parameters: &t.named_parameters,
            status: t.status,
        })
        .collect();
    let mut tx = pool.begin().await.context("begin template seed")?;
    for t in &templates {
        store::store_config(&mut tx, t)
            .await
            .context("store a template of templates.yaml")?;
    }
    store::remove_others(&mut tx, TemplateSource::Config, &templates)
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

/// A listed template as the catalog stores it; `None` (with a warning) when Meta gives it a
/// status or a category Herald does not know: it is left out of the catalog, so it is not sent.
fn catalog_entry(t: &ListedTemplate) -> Option<NewTemplate<'_>> {
    let parsed = TemplateStatus::parse(&t.status)
        .and_then(|status| TemplateCategory::parse(&t.category).map(|c| (status, c)));
    match parsed {
        Ok((status, category)) => Some(NewTemplate {
            name: &t.name,
            language: &t.language,
            category,
            body_parameters: i32::try_from(t.body_parameters).unwrap_or(i32::MAX),
            named_parameters: &t.named_parameters,
            status,
        }),
        Err(reason) => {
            tracing::warn!(
                template = %t.name,
                language = %t.language,
                reason,
                "listed template left out of the catalog"
            );
            None
        }
    }
}

async fn store_listed(pool: &PgPool, listed: &[ListedTemplate]) -> anyhow::Result<Synced> {
    let mut tx = pool.begin().await.context("begin template sync")?;
    // One process at a time: a second one skips (the transaction-scoped lock ends with it).
    let locked = store::try_lock_sync(&mut tx)
        .await
        .context("take the template sync lock")?;
    if !locked {
        return Ok(Synced::Skipped);
    }
    let templates: Vec<NewTemplate<'_>> = listed.iter().filter_map(catalog_entry).collect();
    for t in &templates {
        store::store_listed(&mut tx, t)
            .await
            .context("store a listed template")?;
    }
    store::remove_others(&mut tx, TemplateSource::Graph, &templates)
        .await
        .context("remove templates Meta no longer lists")?;
    tx.commit().await.context("commit template sync")?;
    Ok(Synced::Stored(templates.len()))
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
/// event does not change whether it can be sent (FLAGGED: still active, a warning) or is one
/// Herald does not know (logged; the catalog keeps the template's status).
pub fn status_after_event(event: &str) -> Option<TemplateStatus> {
    match event.trim().to_ascii_uppercase().as_str() {
        "" | "FLAGGED" => None,
        "REINSTATED" => Some(TemplateStatus::Approved),
        other => match TemplateStatus::parse(other) {
            Ok(status) => Some(status),
            Err(reason) => {
                tracing::warn!(
                    reason,
                    "template status event not known; the catalog keeps the status"
                );
                None
            }
        },
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
        assert_eq!(status_after_event("PAUSED"), Some(TemplateStatus::Paused));
        assert_eq!(
            status_after_event("disabled"),
            Some(TemplateStatus::Disabled)
        );
        assert_eq!(
            status_after_event("REINSTATED"),
            Some(TemplateStatus::Approved)
        );
        assert_eq!(
            status_after_event("APPROVED"),
            Some(TemplateStatus::Approved)
        );
        assert_eq!(
            status_after_event("PENDING_DELETION"),
            Some(TemplateStatus::PendingDeletion)
        );
        assert_eq!(status_after_event("FLAGGED"), None);
        assert_eq!(status_after_event(" "), None);
        assert_eq!(status_after_event("SOMETHING_NEW"), None);
    }
}
