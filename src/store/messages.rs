//! The `outbound_messages` table: what Herald sent (or the sandbox recorded), joined to Meta's
//! status webhooks by wamid; and the `conversations` table's 24-hour windows, which the send
//! steps check.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor, Postgres, postgres::PgArguments, query::QueryAs};
use uuid::Uuid;

use super::runs::Job;

/// A message a step sent, recorded with the attempt.
#[derive(Clone, Debug, Serialize)]
pub struct Sent {
    pub sender_id: String,
    pub recipient: String,
    pub kind: &'static str,
    pub provider: &'static str,
    pub request: Value,
    pub wamid: String,
}

/// An outbound message's status as Meta reported it last. It only moves forward, in this
/// order (a late `delivered` never undoes `read`); `outbound_messages_status_check`
/// (migration 0014) holds the same list.
#[derive(
    sqlx::Type, Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq,
)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    Accepted,
    Sent,
    Delivered,
    Read,
    Played,
    Failed,
}

impl MessageStatus {
    pub const ALL: [MessageStatus; 6] = [
        MessageStatus::Accepted,
        MessageStatus::Sent,
        MessageStatus::Delivered,
        MessageStatus::Read,
        MessageStatus::Played,
        MessageStatus::Failed,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Accepted => "accepted",
            MessageStatus::Sent => "sent",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Read => "read",
            MessageStatus::Played => "played",
            MessageStatus::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Status order in SQL: `$1` (replaced by a column or parameter) ranked as
/// [`MessageStatus::ALL`] orders them, -1 for any other value.
pub const STATUS_RANK_SQL: &str = "CASE $1 WHEN 'accepted' THEN 0 WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2 \
     WHEN 'read' THEN 3 WHEN 'played' THEN 4 WHEN 'failed' THEN 5 ELSE -1 END";

#[derive(Debug, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct Outbound {
    pub id: Uuid,
    pub step_index: Option<i32>,
    pub sender_id: String,
    pub recipient: String,
    pub kind: String,
    pub provider: String,
    pub request: Value,
    pub wamid: Option<String>,
    pub status: MessageStatus,
    pub status_at: Option<DateTime<Utc>>,
    pub error: Option<Value>,
    pub created_at: DateTime<Utc>,
}

/// Every message a run sent, oldest first.
pub async fn of_run(db: impl PgExecutor<'_>, run_id: Uuid) -> sqlx::Result<Vec<Outbound>> {
    sqlx::query_as(
        "SELECT id, step_index, sender_id, recipient, kind, provider, request, wamid, status, status_at, error, created_at
         FROM outbound_messages WHERE run_id = $1 ORDER BY created_at",
    )
    .bind(run_id)
    .fetch_all(db)
    .await
}

/// Records a message a step of `job` sent (once per wamid), as accepted.
pub async fn record_sent(conn: &mut PgConnection, job: Job, sent: &Sent) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO outbound_messages (id, run_id, step_index, sender_id, recipient, kind, provider, request, wamid, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'accepted') ON CONFLICT (wamid) DO NOTHING",
    )
    .bind(Uuid::now_v7())
    .bind(job.run_id)
    .bind(job.step_index)
    .bind(&sent.sender_id)
    .bind(&sent.recipient)
    .bind(sent.kind)
    .bind(sent.provider)
    .bind(&sent.request)
    .bind(&sent.wamid)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether `customer` wrote to `sender` in the last 24 hours (`None`: never).
pub async fn window_open(
    db: impl PgExecutor<'_>,
    sender: &str,
    customer: &str,
) -> sqlx::Result<Option<bool>> {
    sqlx::query_scalar(
        "SELECT window_expires_at > now() FROM conversations
         WHERE sender_id = $1 AND customer_id = $2",
    )
    .bind(sender)
    .bind(customer)
    .fetch_optional(db)
    .await
}

/// What a new status event moves with it, in the statement that records the event (see
/// `store::events::insert_with`): the message's status (forward only) and, for a failed
/// delivery, the error on the step that sent it.
pub struct StatusMove<'a> {
    pub wamid: &'a str,
    /// As Meta reported it; a value outside [`MessageStatus`] moves nothing.
    pub status: &'a str,
    pub at: DateTime<Utc>,
    pub errors: Option<Value>,
    pub step_error: Option<Value>,
}

impl StatusMove<'_> {
    /// The statement's further CTEs, after the event's (`ins` holds the event when it was new):
    /// parameters `$9` to `$13`, bound by [`StatusMove::bind`].
    pub fn ctes() -> String {
        let rank = |col: &str| STATUS_RANK_SQL.replace("$1", col);
        format!(
            ", upd AS (
           UPDATE outbound_messages SET status = $10, status_at = $11, error = COALESCE($12, error)
           WHERE wamid = $9 AND {} < {} AND EXISTS (SELECT 1 FROM ins)
         ), step AS (
           UPDATE step_attempts sa SET error = $13
           FROM outbound_messages om
           WHERE $13::jsonb IS NOT NULL AND om.wamid = $9 AND sa.run_id = om.run_id
             AND sa.step_index = om.step_index AND sa.state = 'succeeded' AND EXISTS (SELECT 1 FROM ins)
         )",
            rank("status"),
            rank("$10")
        )
    }

    /// Binds `$9` to `$13` of [`StatusMove::ctes`] after the event's own parameters.
    pub fn bind<'q, O>(
        &'q self,
        query: QueryAs<'q, Postgres, O, PgArguments>,
    ) -> QueryAs<'q, Postgres, O, PgArguments> {
        query
            .bind(self.wamid)
            .bind(self.status)
            .bind(self.at)
            .bind(&self.errors)
            .bind(&self.step_error)
    }
}
