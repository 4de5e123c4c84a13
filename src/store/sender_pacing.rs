//! The `sender_pacing` table: per-sender throughput and per-recipient gaps, shared by every
//! worker process (virtual scheduling: `next_at` is the next free time of a sender, recipient
//! `''`, or of a (sender, recipient) pair). `herald_reserve_sends` (migration 0013) takes the
//! slots of many sends in one statement, batched across the sends of a process (`db::batch`).

use std::time::Duration;

use sqlx::PgPool;

use super::senders::SenderStatus;
use crate::domain::Rate;

/// The limits of one sender.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limit {
    pub rate: Rate,
    /// Time between two messages to the same recipient, once the burst is used (0 = none).
    pub recipient_gap: Duration,
    /// Messages to one recipient allowed back to back before the gap applies (at least 1).
    pub recipient_burst: u32,
}

/// What `reserve` decided for one send.
#[derive(Clone, Debug, PartialEq)]
pub enum Reservation {
    /// Send after `wait`. `probe`: the sender is offline and this send checks whether it is back.
    Go { wait: Duration, probe: bool },
    /// The sender's next slot is `after` away (beyond `max_wait`): defer the send.
    Later { after: Duration },
    /// The sender is offline (status and why): do not call Meta.
    Offline {
        status: SenderStatus,
        detail: Option<String>,
    },
}

/// One send's request for a slot.
#[derive(Clone)]
pub struct SlotRequest {
    pub sender: String,
    pub recipient: String,
    pub limit: Limit,
}

/// Reserves slots for many sends in one statement (`herald_reserve_sends`: each sender's sends
/// in order, its pacing row written once): batched across the sends of a process (`db::batch`).
#[derive(Clone)]
pub struct Reserve {
    pub max_wait: Duration,
    pub recheck: Duration,
}

/// One row of `herald_reserve_sends`: the decision for one send (the rows come in the order of
/// the sends, by `ord`).
#[derive(sqlx::FromRow)]
struct ReserveRow {
    status: SenderStatus,
    detail: Option<String>,
    wait: f64,
    reserved: bool,
    probe: bool,
}

impl crate::db::batch::Statement for Reserve {
    type Input = SlotRequest;
    type Output = Reservation;

    async fn run(
        &self,
        conn: &mut sqlx::PgConnection,
        all: &[SlotRequest],
    ) -> sqlx::Result<Vec<Reservation>> {
        let rows: Vec<ReserveRow> = sqlx::query_as(
            "SELECT r.ord, r.status, r.detail, r.wait, r.reserved, r.probe
             FROM herald_reserve_sends($1::text[], $2::text[], $3::float8[], $4::float8[], $5::int[], $6, $7) r
             ORDER BY r.ord",
        )
        .bind(all.iter().map(|r| r.sender.as_str()).collect::<Vec<_>>())
        .bind(all.iter().map(|r| r.recipient.as_str()).collect::<Vec<_>>())
        .bind(
            all.iter()
                .map(|r| r.limit.rate.interval().as_secs_f64())
                .collect::<Vec<_>>(),
        )
        .bind(
            all.iter()
                .map(|r| r.limit.recipient_gap.as_secs_f64())
                .collect::<Vec<_>>(),
        )
        .bind(
            all.iter()
                .map(|r| r.limit.recipient_burst.min(i32::MAX as u32) as i32)
                .collect::<Vec<_>>(),
        )
        .bind(self.max_wait.as_secs_f64())
        .bind(self.recheck.as_secs_f64())
        .fetch_all(conn)
        .await?;
        Ok(
            crate::db::batch::one_row_each(rows, all.len(), "herald_reserve_sends")?
                .into_iter()
                .map(|row| {
                    let wait = Duration::from_secs_f64(row.wait.max(0.0));
                    match (row.reserved, wait.is_zero() && !row.probe) {
                        (true, _) => Reservation::Go {
                            wait,
                            probe: row.probe,
                        },
                        (false, true) => Reservation::Offline {
                            status: row.status,
                            detail: row.detail,
                        },
                        (false, false) => Reservation::Later { after: wait },
                    }
                })
                .collect(),
        )
    }
}

/// After Meta refused a send for throughput (130429), nobody sends from `sender` for `pause`.
pub async fn hold_sender(pool: &PgPool, sender: &str, pause: Duration) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO sender_pacing (sender_id, recipient, next_at)
         VALUES ($1, '', clock_timestamp() + make_interval(secs => $2))
         ON CONFLICT (sender_id, recipient) DO UPDATE
         SET next_at = greatest(sender_pacing.next_at, EXCLUDED.next_at)",
    )
    .bind(sender)
    .bind(pause.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}

/// After Meta refused a send for the pair rate limit (131056): the pair's next free time moves
/// to `hold` from now (the caller gives gap × burst, so the next slot is a full gap away).
pub async fn hold_recipient(
    pool: &PgPool,
    sender: &str,
    recipient: &str,
    hold: Duration,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO sender_pacing (sender_id, recipient, next_at)
         VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3))
         ON CONFLICT (sender_id, recipient) DO UPDATE
         SET next_at = greatest(sender_pacing.next_at, EXCLUDED.next_at)",
    )
    .bind(sender)
    .bind(recipient)
    .bind(hold.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}

/// Forgets pair rows whose gap ended long ago (they would only say "send now").
pub async fn forget_idle_pairs(pool: &PgPool) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM sender_pacing WHERE recipient <> '' AND next_at < now() - interval '1 hour'",
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
