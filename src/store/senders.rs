//! The `senders` table: our WhatsApp numbers as Herald knows them (connection status, quality
//! as Meta last reported it, whether their bulk dispatches are paused). A sender without a row
//! is connected and not paused. The send path's slot reservation reads it too
//! (`sender_pacing`), and a quality webhook writes it with its event (see [`QualityChange`]).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, postgres::PgArguments, query::QueryAs};

/// A sender's connection status.
#[derive(sqlx::Type, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum SenderStatus {
    Connected,
    Offline,
    Disconnected,
    Flagged,
    Restricted,
}

impl SenderStatus {
    /// Every status, in the order an operator is told them.
    pub const ALL: [SenderStatus; 5] = [
        SenderStatus::Connected,
        SenderStatus::Offline,
        SenderStatus::Disconnected,
        SenderStatus::Flagged,
        SenderStatus::Restricted,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            SenderStatus::Connected => "connected",
            SenderStatus::Offline => "offline",
            SenderStatus::Disconnected => "disconnected",
            SenderStatus::Flagged => "flagged",
            SenderStatus::Restricted => "restricted",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// A sender in this status cannot send (fail fast, before Meta). `herald_reserve_sends`
    /// (migration 0013) holds the same list.
    pub const fn is_offline(self) -> bool {
        matches!(
            self,
            SenderStatus::Offline | SenderStatus::Disconnected | SenderStatus::Restricted
        )
    }
}

impl fmt::Display for SenderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A sender's quality rating, as Meta reports it (its older names read as these).
#[derive(sqlx::Type, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[sqlx(type_name = "text", rename_all = "UPPERCASE")]
#[serde(rename_all = "UPPERCASE")]
pub enum QualityRating {
    Green,
    Yellow,
    Red,
}

impl QualityRating {
    pub const fn as_str(self) -> &'static str {
        match self {
            QualityRating::Green => "GREEN",
            QualityRating::Yellow => "YELLOW",
            QualityRating::Red => "RED",
        }
    }

    /// Orders ratings: RED 1, YELLOW 2, GREEN 3 (as [`QualityChange::CTES`] ranks a stored one).
    pub const fn rank(self) -> i32 {
        match self {
            QualityRating::Red => 1,
            QualityRating::Yellow => 2,
            QualityRating::Green => 3,
        }
    }
}

impl fmt::Display for QualityRating {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A sender as `herald senders list|show` prints it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SenderRow {
    pub id: String,
    pub display_phone_number: Option<String>,
    pub status: SenderStatus,
    pub status_detail: Option<String>,
    pub status_changed_at: Option<DateTime<Utc>>,
    pub quality_rating: Option<QualityRating>,
    pub quality_event: Option<String>,
    pub quality_at: Option<DateTime<Utc>>,
    pub dispatch_paused: bool,
    pub paused_reason: Option<String>,
    pub paused_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

const SENDER_COLUMNS: &str = "id, display_phone_number, status, status_detail, status_changed_at, \
     quality_rating, quality_event, quality_at, dispatch_paused, paused_reason, paused_at, updated_at";

/// Sets a sender's status (creating its row), with why.
pub async fn set_status(
    pool: &PgPool,
    sender: &str,
    status: SenderStatus,
    detail: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO senders (id, status, status_detail, status_changed_at, updated_at)
         VALUES ($1, $2, $3, now(), now())
         ON CONFLICT (id) DO UPDATE SET status = $2, status_detail = $3,
           status_changed_at = now(), updated_at = now()",
    )
    .bind(sender)
    .bind(status)
    .bind(detail)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records display numbers (phone_number_id, digits), so quality webhooks find their sender.
pub async fn record_display_numbers(
    pool: &PgPool,
    numbers: &[(String, String)],
) -> sqlx::Result<()> {
    for (id, display) in numbers {
        sqlx::query(
            "INSERT INTO senders (id, display_phone_number) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET display_phone_number = $2
             WHERE senders.display_phone_number IS DISTINCT FROM $2",
        )
        .bind(id)
        .bind(display)
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// Every sender, by id.
pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<SenderRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SENDER_COLUMNS} FROM senders ORDER BY id"
    )))
    .fetch_all(pool)
    .await
}

/// The sender whose id is `sender`, else the one whose display number is `display_digits`.
pub async fn find(
    pool: &PgPool,
    sender: &str,
    display_digits: &str,
) -> sqlx::Result<Option<SenderRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SENDER_COLUMNS} FROM senders WHERE id = $1 OR display_phone_number = $2
         ORDER BY id = $1 DESC LIMIT 1"
    )))
    .bind(sender)
    .bind(display_digits)
    .fetch_optional(pool)
    .await
}

/// Clears a sender's paused dispatches.
pub async fn resume_dispatches(pool: &PgPool, sender: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE senders SET dispatch_paused = false, paused_reason = NULL, paused_at = NULL,
           updated_at = now() WHERE id = $1",
    )
    .bind(sender)
    .execute(pool)
    .await?;
    Ok(())
}

/// What a quality webhook does to its sender, written by the webhook's own statement: with a
/// new event only, the sender (found by its display number, else recorded under it) takes the
/// rating; a drop (the event says so, or the rating is below the one recorded) pauses its
/// dispatches and queues one `sender_notices` row for the team.
#[derive(Clone, Debug)]
pub struct QualityChange {
    /// The display number's digits (or the sender's id).
    pub sender: String,
    pub rating: Option<QualityRating>,
    /// Meta's event, uppercase (FLAGGED, DOWNGRADE, ...).
    pub event: String,
    /// The event itself says quality or limits went down.
    pub dropped: bool,
    /// Why, for the operator.
    pub reason: String,
}

impl QualityChange {
    /// The statement's further CTEs, after the event's (`ins` holds the event when it was new):
    /// parameters `$9` to `$14`, bound by [`QualityChange::bind`]. A stored rating is ranked
    /// as [`QualityRating::rank`] ranks (an unknown one as GREEN).
    pub const CTES: &'static str = ", who AS (
           SELECT coalesce((SELECT id FROM senders WHERE id = $9 OR display_phone_number = $9
                            ORDER BY id = $9 DESC LIMIT 1), $9) AS id
         ), judged AS (
           SELECT who.id, $12 OR ($13::int IS NOT NULL AND $13::int < CASE s.quality_rating WHEN 'RED' THEN 1 WHEN 'YELLOW' THEN 2 ELSE 3 END) AS dropped
           FROM who LEFT JOIN senders s ON s.id = who.id
         ), snd AS (
           INSERT INTO senders AS s (id, display_phone_number, quality_rating, quality_event, quality_at,
                                     dispatch_paused, paused_reason, paused_at, updated_at)
           SELECT judged.id, $9, $10, $11, now(), judged.dropped,
                  CASE WHEN judged.dropped THEN $14 END, CASE WHEN judged.dropped THEN now() END, now()
           FROM judged WHERE EXISTS (SELECT 1 FROM ins)
           ON CONFLICT (id) DO UPDATE SET
             quality_rating = coalesce(EXCLUDED.quality_rating, s.quality_rating),
             quality_event = EXCLUDED.quality_event, quality_at = now(),
             dispatch_paused = s.dispatch_paused OR EXCLUDED.dispatch_paused,
             paused_reason = CASE WHEN EXCLUDED.dispatch_paused THEN EXCLUDED.paused_reason ELSE s.paused_reason END,
             paused_at = CASE WHEN EXCLUDED.dispatch_paused AND NOT s.dispatch_paused THEN now() ELSE s.paused_at END,
             updated_at = now()
           RETURNING s.id
         ), notice AS (
           INSERT INTO sender_notices (sender_id, event_id, kind, rating, reason)
           SELECT snd.id, ins.id, 'quality_dropped', $10, $14
           FROM snd, ins, judged WHERE judged.dropped
         )";

    /// Binds `$9` to `$14` of [`QualityChange::CTES`] after the event's own parameters.
    pub fn bind<'q, O>(
        &'q self,
        query: QueryAs<'q, Postgres, O, PgArguments>,
    ) -> QueryAs<'q, Postgres, O, PgArguments> {
        query
            .bind(&self.sender)
            .bind(self.rating)
            .bind(&self.event)
            .bind(self.dropped)
            .bind(self.rating.map(QualityRating::rank))
            .bind(&self.reason)
    }
}
