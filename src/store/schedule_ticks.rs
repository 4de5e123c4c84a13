//! The `schedule_ticks` table: the last tick each schedule fired (or skipped). A scheduler
//! locks the row (`FOR UPDATE SKIP LOCKED`), fires the due tick and moves `last_tick` in one
//! transaction: one fire per tick across schedulers.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// Registers a schedule seen for the first time, counting from `now`; false when it is known.
pub async fn register(
    conn: &mut PgConnection,
    workflow: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO schedule_ticks (workflow, last_tick) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(workflow)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Locks the schedule's row for the caller's transaction: its last tick, `None` when another
/// scheduler holds it.
pub async fn lock(conn: &mut PgConnection, workflow: &str) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar(
        "SELECT last_tick FROM schedule_ticks WHERE workflow = $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(workflow)
    .fetch_optional(&mut *conn)
    .await
}

/// Moves the schedule's last tick to `tick`.
pub async fn advance(
    conn: &mut PgConnection,
    workflow: &str,
    tick: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE schedule_ticks SET last_tick = $2, updated_at = now() WHERE workflow = $1")
        .bind(workflow)
        .bind(tick)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
