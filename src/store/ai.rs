//! The `ai_conversations` and `ai_messages` tables: one conversation per (assistant, customer),
//! the turns `generate_ai_response` adds to it and reads back as history.

use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// Who said a turn. The column's CHECK (migration 0002) holds the same list.
#[derive(sqlx::Type, Clone, Copy, Debug, PartialEq, Eq)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Speaker {
    User,
    Assistant,
}

/// One turn of a conversation.
#[derive(Debug, sqlx::FromRow)]
pub struct Turn {
    pub role: Speaker,
    pub content: String,
}

pub async fn find_conversation(
    db: impl PgExecutor<'_>,
    assistant: &str,
    customer: &str,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar("SELECT id FROM ai_conversations WHERE assistant = $1 AND customer = $2")
        .bind(assistant)
        .bind(customer)
        .fetch_optional(db)
        .await
}

/// The last `limit` turns of the conversation, oldest first.
pub async fn history(
    db: impl PgExecutor<'_>,
    conversation_id: Uuid,
    limit: i64,
) -> sqlx::Result<Vec<Turn>> {
    sqlx::query_as(
        "SELECT role, content FROM (
             SELECT id, role, content FROM ai_messages
             WHERE conversation_id = $1 ORDER BY id DESC LIMIT $2
         ) last ORDER BY id",
    )
    .bind(conversation_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Finds or creates the conversation and appends the customer's message and the answer, in
/// one transaction. Returns the conversation's id.
pub async fn add_turn(
    pool: &PgPool,
    assistant: &str,
    customer: &str,
    message: &str,
    answer: &str,
    run_id: Uuid,
) -> sqlx::Result<Uuid> {
    let mut tx = pool.begin().await?;
    // A no-op update on conflict locks the row and returns its id, even when another run
    // created it a moment ago.
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO ai_conversations (id, assistant, customer) VALUES ($1, $2, $3)
         ON CONFLICT (assistant, customer) DO UPDATE SET assistant = EXCLUDED.assistant
         RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(assistant)
    .bind(customer)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO ai_messages (conversation_id, role, content, run_id)
         VALUES ($1, 'user', $2, $4), ($1, 'assistant', $3, $4)",
    )
    .bind(id)
    .bind(message)
    .bind(answer)
    .bind(run_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}
