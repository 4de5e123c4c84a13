//! The `sender_notices` table: team notifications about senders, written by a quality webhook's
//! statement (see `senders::QualityChange`) and sent by the scheduler. Due notices are claimed
//! with `FOR UPDATE SKIP LOCKED`, so each is sent once even with several schedulers.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use super::senders::QualityRating;

/// What a notice is about.
#[derive(sqlx::Type, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// The sender's quality dropped; its bulk dispatches are paused.
    QualityDropped,
}

impl NoticeKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            NoticeKind::QualityDropped => "quality_dropped",
        }
    }
}

/// A notice to send.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Notice {
    pub id: i64,
    pub sender_id: String,
    pub kind: NoticeKind,
    pub rating: Option<QualityRating>,
    pub reason: String,
    /// Deliveries tried so far.
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
}

/// Claims the due notices (up to 20) in the caller's transaction, oldest first.
pub async fn claim_due(conn: &mut PgConnection) -> sqlx::Result<Vec<Notice>> {
    sqlx::query_as(
        "SELECT id, sender_id, kind, rating, reason, attempts, created_at FROM sender_notices
         WHERE sent_at IS NULL AND next_try_at <= now() ORDER BY id LIMIT 20
         FOR UPDATE SKIP LOCKED",
    )
    .fetch_all(&mut *conn)
    .await
}

pub async fn mark_sent(conn: &mut PgConnection, id: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE sender_notices SET sent_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Counts a failed delivery; the notice is due again in `wait`.
pub async fn retry_later(conn: &mut PgConnection, id: i64, wait: Duration) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE sender_notices SET attempts = attempts + 1,
           next_try_at = now() + make_interval(secs => $2) WHERE id = $1",
    )
    .bind(id)
    .bind(wait.as_secs_f64())
    .execute(&mut *conn)
    .await?;
    Ok(())
}
