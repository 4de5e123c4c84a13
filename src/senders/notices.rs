//! Sender notices: the scheduler tells the team about senders (a quality drop that paused
//! dispatches). Rows are written by the ingress with the webhook's event; each is claimed with
//! `FOR UPDATE SKIP LOCKED`, so it is sent once even with several schedulers.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::providers::notify::Notifier;

type NoticeRow = (
    i64,
    String,
    String,
    Option<String>,
    String,
    i32,
    DateTime<Utc>,
);

/// Sends every due notice (up to 20); returns how many were sent.
pub async fn send_due(pool: &PgPool, notifier: &Notifier) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await.context("begin sender notices")?;
    let due: Vec<NoticeRow> = sqlx::query_as(
        "SELECT id, sender_id, kind, rating, reason, attempts, created_at FROM sender_notices
         WHERE sent_at IS NULL AND next_try_at <= now() ORDER BY id LIMIT 20
         FOR UPDATE SKIP LOCKED",
    )
    .fetch_all(&mut *tx)
    .await
    .context("claim sender notices")?;
    let mut sent = 0;
    for (id, sender, kind, rating, reason, attempts, created_at) in due {
        let text = match kind.as_str() {
            "quality_dropped" => format!(
                "Herald: the quality of sender {sender} dropped ({reason}). Its bulk dispatches are paused. \
                 Check the number's quality in WhatsApp Manager, then resume with `herald senders resume {sender}`."
            ),
            other => format!("Herald: sender {sender}: {other} ({reason})"),
        };
        if attempts == 0 {
            tracing::warn!(
                sender,
                reason,
                rating,
                "sender quality dropped; bulk dispatches paused"
            );
        }
        let fields = [
            ("sender", sender.clone()),
            ("quality", rating.clone().unwrap_or_else(|| "-".into())),
            ("reported", created_at.to_rfc3339()),
        ];
        match notifier.send(&text, &fields).await {
            Ok(()) => {
                sqlx::query("UPDATE sender_notices SET sent_at = now() WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .context("mark sender notice sent")?;
                sent += 1;
            }
            Err(e) => {
                let wait = e
                    .retry_after
                    .unwrap_or(Duration::from_secs(30u64 << attempts.clamp(0, 5)));
                tracing::warn!(sender, error = %e, retry_in = ?wait, "sender notice not delivered; will retry");
                sqlx::query(
                    "UPDATE sender_notices SET attempts = attempts + 1,
                       next_try_at = now() + make_interval(secs => $2) WHERE id = $1",
                )
                .bind(id)
                .bind(wait.as_secs_f64())
                .execute(&mut *tx)
                .await
                .context("reschedule sender notice")?;
            }
        }
    }
    tx.commit().await.context("commit sender notices")?;
    Ok(sent)
}

/// The scheduler's loop: notices every `interval`, idle pacing rows every few minutes.
pub async fn run(
    pool: PgPool,
    notifier: Notifier,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut last_cleanup = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if let Err(e) = send_due(&pool, &notifier).await {
            tracing::warn!(
                error = format!("{e:#}"),
                "sender notices failed; will retry"
            );
        }
        if last_cleanup.elapsed() > Duration::from_secs(300) {
            last_cleanup = tokio::time::Instant::now();
            match super::pacing::forget_idle_pairs(&pool).await {
                Ok(n) if n > 0 => {
                    tracing::debug!(forgotten = n, "idle recipient pacing rows removed")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not remove idle pacing rows"),
            }
        }
    }
}
