//! The `templates` table: the template catalog at run time (the WABA's templates, seeded from
//! `templates.yaml` and synced from the Graph API's list; template-status webhooks move a
//! row's status with their event, see [`StatusChange`]). The send path reads it with the
//! recipient's opt-out in one batched statement ([`ReadFacts`]).

use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Postgres, postgres::PgArguments, query::QueryAs};

use crate::domain::{PhoneNumber, TemplateCategory, TemplateStatus};

/// Where a catalog row came from: `templates.yaml` or the Graph API's list (which wins over a
/// config row of the same name and language).
#[derive(sqlx::Type, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum TemplateSource {
    Config,
    Graph,
}

impl TemplateSource {
    pub const fn as_str(self) -> &'static str {
        match self {
            TemplateSource::Config => "config",
            TemplateSource::Graph => "graph",
        }
    }
}

/// A template as the run-time catalog knows it (a `templates` row).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct KnownTemplate {
    pub category: TemplateCategory,
    pub status: TemplateStatus,
    pub body_parameters: i32,
    pub named_parameters: Vec<String>,
}

/// A catalog row to write.
#[derive(Debug, Clone, Copy)]
pub struct NewTemplate<'a> {
    pub name: &'a str,
    /// `en_US` (a `-` is stored as `_`).
    pub language: &'a str,
    pub category: TemplateCategory,
    pub body_parameters: i32,
    pub named_parameters: &'a [String],
    pub status: TemplateStatus,
}

/// Writes a template of `templates.yaml` (source `config`); a row synced from the Graph API is
/// Meta's word and is left alone.
pub async fn store_config(conn: &mut PgConnection, t: &NewTemplate<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO templates (name, language, category, body_parameters, named_parameters, status, source)
         VALUES ($1, $2, $3, $4, $5, $6, 'config')
         ON CONFLICT (name, language) DO UPDATE SET
           category = EXCLUDED.category, body_parameters = EXCLUDED.body_parameters,
           named_parameters = EXCLUDED.named_parameters, status = EXCLUDED.status, updated_at = now()
         WHERE templates.source = 'config'",
    )
    .bind(t.name)
    .bind(t.language)
    .bind(t.category)
    .bind(t.body_parameters)
    .bind(t.named_parameters)
    .bind(t.status)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Writes a template the Graph API listed (source `graph`, replacing a config row).
pub async fn store_listed(conn: &mut PgConnection, t: &NewTemplate<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO templates (name, language, category, body_parameters, named_parameters, status, source)
         VALUES ($1, $2, $3, $4, $5, $6, 'graph')
         ON CONFLICT (name, language) DO UPDATE SET
           category = EXCLUDED.category, body_parameters = EXCLUDED.body_parameters,
           named_parameters = EXCLUDED.named_parameters, status = EXCLUDED.status,
           source = 'graph', updated_at = now()",
    )
    .bind(t.name)
    .bind(t.language)
    .bind(t.category)
    .bind(t.body_parameters)
    .bind(t.named_parameters)
    .bind(t.status)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Removes the rows of `source` that are not among `kept` (name, language).
pub async fn remove_others(
    conn: &mut PgConnection,
    source: TemplateSource,
    kept: &[NewTemplate<'_>],
) -> sqlx::Result<()> {
    let names: Vec<&str> = kept.iter().map(|t| t.name).collect();
    let languages: Vec<&str> = kept.iter().map(|t| t.language).collect();
    sqlx::query(
        "DELETE FROM templates WHERE source = $3
         AND (name, language) NOT IN (SELECT * FROM unnest($1::text[], $2::text[]))",
    )
    .bind(&names)
    .bind(&languages)
    .bind(source)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Takes the sync's lock for the caller's transaction; false when another process holds it.
pub async fn try_lock_sync(conn: &mut PgConnection) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext('herald.templates.sync'))")
        .fetch_one(&mut *conn)
        .await
}

/// What a template-status webhook does to the catalog, in the webhook's own statement: with a
/// new event only, the row of (name, language) takes the status (none: the event does not
/// change whether the template can be sent).
#[derive(Clone, Debug)]
pub struct StatusChange<'a> {
    pub status: Option<TemplateStatus>,
    pub name: &'a str,
    /// `en_US` (a `-` is stored as `_`).
    pub language: String,
}

impl<'a> StatusChange<'a> {
    /// The statement's further CTE, after the event's (`ins` holds the event when it was new):
    /// parameters `$9` to `$11`, bound by [`StatusChange::bind`].
    pub const CTES: &'static str = ", upd AS (
           UPDATE templates SET status = $9, updated_at = now()
           WHERE name = $10 AND language = $11 AND $9 IS NOT NULL AND EXISTS (SELECT 1 FROM ins)
         )";

    /// Binds `$9` to `$11` of [`StatusChange::CTES`] after the event's own parameters.
    pub fn bind<'q, O>(
        &'q self,
        query: QueryAs<'q, Postgres, O, PgArguments>,
    ) -> QueryAs<'q, Postgres, O, PgArguments>
    where
        'a: 'q,
    {
        query.bind(self.status).bind(self.name).bind(&self.language)
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

/// A send's question: the template (name, language) and the recipient.
#[derive(Clone)]
pub struct FactsRequest {
    pub name: String,
    pub language: String,
    pub to: PhoneNumber,
}

/// One row of the facts query (the rows come in the order of the requests, by `ord`).
#[derive(sqlx::FromRow)]
struct FactsRow {
    catalog: bool,
    category: Option<TemplateCategory>,
    status: Option<TemplateStatus>,
    body_parameters: Option<i32>,
    named_parameters: Option<Vec<String>>,
    opted_out: bool,
}

/// Reads, for many sends in one query, the catalog's entry for (name, language) and the
/// opt-out of the contact with the recipient's phone. Batched across the sends of a process
/// (`db::batch`).
#[derive(Clone)]
pub struct ReadFacts;

impl crate::db::batch::Statement for ReadFacts {
    type Input = FactsRequest;
    type Output = SendFacts;

    async fn run(
        &self,
        conn: &mut PgConnection,
        all: &[FactsRequest],
    ) -> sqlx::Result<Vec<SendFacts>> {
        let rows: Vec<FactsRow> = sqlx::query_as(
            "SELECT x.ord, EXISTS (SELECT 1 FROM templates) AS catalog,
                    t.category, t.status, t.body_parameters, t.named_parameters,
                    COALESCE((SELECT bool_or(opted_out) FROM contacts
                              WHERE customer_id = x.digits OR phone = x.phone), false) AS opted_out
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
            .map(|row| {
                let template = match (
                    row.category,
                    row.status,
                    row.body_parameters,
                    row.named_parameters,
                ) {
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
                    catalog: row.catalog,
                    template,
                    opted_out: row.opted_out,
                }
            })
            .collect())
    }
}
