//! Sender notices: the scheduler tells the team about senders (a quality drop that paused
//! dispatches). Rows are written by the ingress with the webhook's event; each is claimed with
//! `FOR UPDATE SKIP LOCKED`, so it is sent once even with several schedulers.

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    providers::notify::Notifier,
    store::sender_notices::{self as store, Notice, NoticeKind},
};

/// Sends every due notice (up to 20); returns how many were sent.
pub async fn send_due(pool: &PgPool, notifier: &Notifier) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await.context("begin sender notices")?;
    let due = store::claim_due(&mut tx)
        .await
        .context("claim sender notices")?;
    let mut sent = 0;
    for Notice {
        id,
        sender_id: sender,
        kind,
        rating,
        reason,
        attempts,
        created_at,
    } in due
    {
        let text = match kind {
            NoticeKind::QualityDropped => format!(
                "Herald: the quality of sender {sender} dropped ({reason}). Its bulk dispatches are paused. \
                 Check the number's quality in WhatsApp Manager, then resume with `herald senders resume {sender}`."
            ),
        };
        if attempts == 0 {
            tracing::warn!(
                sender,
                reason,
                rating = rating.map(|r| r.as_str()),
                "sender quality dropped; bulk dispatches paused"
            );
        }
        let fields = [
            ("sender", sender.clone()),
            (
                "quality",
                rating.map_or_else(|| "-".into(), |r| r.as_str().to_string()),
            ),
            ("reported", created_at.to_rfc3339()),
        ];
        match notifier.send(&text, &fields).await {
            Ok(()) => {
                store::mark_sent(&mut tx, id)
                    .await
                    .context("mark sender notice sent")?;
                sent += 1;
            }
            Err(e) => {
                let wait = e
                    .retry_after
                    .unwrap_or(Duration::from_secs(30u64 << attempts.clamp(0, 5)));
                tracing::warn!(sender, error = %e, retry_in = ?wait, "sender notice not delivered; will retry");
                store::retry_later(&mut tx, id, wait)
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
            match crate::store::sender_pacing::forget_idle_pairs(&pool).await {
                Ok(n) if n > 0 => {
                    tracing::debug!(forgotten = n, "idle recipient pacing rows removed")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not remove idle pacing rows"),
            }
        }
    }
}
