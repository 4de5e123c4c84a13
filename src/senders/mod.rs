//! Senders: our WhatsApp numbers as Herald keeps them in PostgreSQL — their connection status,
//! quality and paused bulk dispatches — and the one send path every send step takes:
//! status check + pacing (one SQL round trip), then the Graph API, then the status Meta showed.

pub mod notices;
pub mod pacing;
pub mod quality;

use std::{sync::Arc, time::Duration};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

pub use crate::store::senders::{QualityRating, SenderRow, SenderStatus};
use crate::{
    domain::PhoneNumber,
    failure::{ErrorClass, StepError},
    providers::whatsapp::{Receipt, WhatsApp},
    store::{sender_pacing, senders as store},
};
pub use pacing::{Limit, Limits, Reservation, SendersConfig};

/// The send path's view of the senders: the pool, the limits, and the slot reservation
/// (batched across the sends of this process).
#[derive(Clone)]
pub struct Senders {
    pool: PgPool,
    limits: Arc<Limits>,
    reserve: crate::db::batch::Batched<pacing::Reserve>,
}

impl Senders {
    /// Starts the reservation's batcher (needs a Tokio runtime).
    pub fn new(pool: PgPool, limits: Limits) -> Self {
        let reserve = pacing::Reserve {
            max_wait: limits.max_wait,
            recheck: limits.recheck,
        };
        Senders {
            reserve: crate::db::batch::Batched::new("senders.reserve", pool.clone(), reserve),
            pool,
            limits: Arc::new(limits),
        }
    }

    /// Sends `request` from `sender` to `to`: fails fast with "Sender offline" for an offline
    /// sender, waits for the sender's and the recipient's next slot (or defers the step when
    /// it is far), calls the Graph API, and records what the answer says about the sender.
    pub async fn send(
        &self,
        whatsapp: &WhatsApp,
        sender: &str,
        to: &PhoneNumber,
        request: &Value,
    ) -> Result<Receipt, StepError> {
        let request_slot = pacing::SlotRequest {
            sender: sender.to_string(),
            recipient: to.digits().to_string(),
            limit: self.limits.for_sender(sender),
        };
        let reservation = self.reserve.run(request_slot).await.map_err(|e| {
            crate::failure::database_away(&format!("reserving a send slot for sender {sender}"), &e)
        })?;
        let probe = match reservation {
            Reservation::Offline { status, detail } => {
                return Err(StepError::new(
                    ErrorClass::SenderOffline,
                    format!(
                        "Sender offline: sender {sender} is {status}{}; not sent",
                        detail.map(|d| format!(" ({d})")).unwrap_or_default()
                    ),
                ));
            }
            Reservation::Later { after } => {
                metrics::counter!("herald_sends_deferred_total").increment(1);
                return Err(StepError::deferred(after));
            }
            Reservation::Go { wait, probe } => {
                if !wait.is_zero() {
                    metrics::histogram!("herald_send_pacing_seconds").record(wait.as_secs_f64());
                    tokio::time::sleep(wait).await;
                }
                probe
            }
        };
        match whatsapp.send(sender, request).await {
            Ok(receipt) => {
                if probe {
                    self.record_status(sender, SenderStatus::Connected, "a send succeeded")
                        .await;
                }
                Ok(receipt)
            }
            Err(e) => {
                match (e.class, e.code) {
                    (ErrorClass::SenderOffline, code) => {
                        let status = offline_status(code);
                        let detail = format!(
                            "Graph API code {}: {}",
                            code.map_or("-".into(), |c| c.to_string()),
                            e.message
                        );
                        tracing::warn!(sender, status = %status, detail, "sender marked {status}");
                        self.record_status(sender, status, &detail).await;
                    }
                    (ErrorClass::RateLimited, Some(130429)) => {
                        let pause = e.retry_after.unwrap_or(Duration::from_secs(1));
                        if let Err(err) =
                            sender_pacing::hold_sender(&self.pool, sender, pause).await
                        {
                            tracing::warn!(sender, error = %err, "could not hold the sender's sends");
                        }
                    }
                    (ErrorClass::RateLimited, Some(131056)) => {
                        // The next slot of the pair is a full gap away, whatever the burst.
                        let limit = self.limits.for_sender(sender);
                        let gap = limit.recipient_gap.max(Duration::from_secs(6));
                        let hold = gap * limit.recipient_burst.max(1);
                        if let Err(err) =
                            sender_pacing::hold_recipient(&self.pool, sender, to.digits(), hold)
                                .await
                        {
                            tracing::warn!(sender, error = %err, "could not hold the recipient's sends");
                        }
                    }
                    _ => {}
                }
                Err(e.into())
            }
        }
    }

    /// Records a status the Graph API showed (logged, never fatal: the send's outcome is what
    /// the step reports).
    async fn record_status(&self, sender: &str, status: SenderStatus, detail: &str) {
        if let Err(e) = store::set_status(&self.pool, sender, status, detail).await {
            tracing::warn!(sender, status = %status, error = %e, "could not record the sender's status");
        }
    }
}

/// The status a Graph "Sender offline" code means: locked or blocked numbers are restricted,
/// the rest (not registered, ...) offline.
pub fn offline_status(code: Option<i64>) -> SenderStatus {
    match code {
        Some(131031) | Some(368) => SenderStatus::Restricted,
        _ => SenderStatus::Offline,
    }
}

/// Records the display numbers of `senders.yaml`, so quality webhooks find their sender.
pub async fn record_display_numbers(
    pool: &PgPool,
    numbers: &[(String, String)],
) -> sqlx::Result<()> {
    store::record_display_numbers(pool, numbers).await
}

pub async fn list(pool: &PgPool) -> anyhow::Result<Vec<SenderRow>> {
    store::list(pool).await.context("list senders")
}

/// One sender, by its phone_number_id or its display number.
pub async fn show(pool: &PgPool, sender: &str) -> anyhow::Result<Option<SenderRow>> {
    store::find(pool, sender, &pacing::digits(sender))
        .await
        .context("load sender")
}

/// What `resume` did.
#[derive(Debug, Clone, Serialize)]
pub struct Resumed {
    pub sender: String,
    /// False when its dispatches were not paused.
    pub was_paused: bool,
    pub paused_reason: Option<String>,
}

/// Clears `dispatch_paused` of a known sender.
pub async fn resume(pool: &PgPool, sender: &str) -> anyhow::Result<Resumed> {
    let Some(row) = show(pool, sender).await? else {
        bail!(
            "no sender '{sender}': Herald knows the senders in `herald senders list` (a sender appears there once Meta reports on it or it is set)"
        );
    };
    store::resume_dispatches(pool, &row.id)
        .await
        .context("resume sender")?;
    tracing::info!(sender = %row.id, was_paused = row.dispatch_paused, "sender's dispatches resumed");
    Ok(Resumed {
        sender: row.id,
        was_paused: row.dispatch_paused,
        paused_reason: row.paused_reason,
    })
}

/// Sets a sender's status by hand (`herald senders set-status`); the sender need not be known.
pub async fn set_status_by_operator(
    pool: &PgPool,
    sender: &str,
    status: &str,
) -> anyhow::Result<()> {
    let Some(status) = SenderStatus::parse(status) else {
        let known: Vec<&str> = SenderStatus::ALL.iter().map(|s| s.as_str()).collect();
        bail!("unknown status '{status}': use one of {}", known.join(", "));
    };
    if sender.trim().is_empty() || !sender.chars().all(|c| c.is_ascii_alphanumeric()) {
        bail!("'{sender}' is not a sender id (the phone_number_id, digits)");
    }
    store::set_status(pool, sender, status, "set by an operator")
        .await
        .context("set sender status")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locked_and_blocked_numbers_are_restricted_the_rest_offline() {
        assert_eq!(offline_status(Some(131031)), SenderStatus::Restricted);
        assert_eq!(offline_status(Some(368)), SenderStatus::Restricted);
        assert_eq!(offline_status(Some(133010)), SenderStatus::Offline);
        assert_eq!(offline_status(None), SenderStatus::Offline);
        assert!(offline_status(None).is_offline() && offline_status(Some(368)).is_offline());
        assert!(!SenderStatus::Connected.is_offline() && !SenderStatus::Flagged.is_offline());
    }
}
