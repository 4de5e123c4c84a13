//! Failures: the error classes a user sees, the step error with its verdict (retry, give up, or
//! put off), and the retry policy. The bottom layer every stage and provider shares; no I/O.

use std::{fmt, time::Duration};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    domain::{HumanDuration, InvalidPhoneNumber},
    expr::RenderError,
};

/// The error classes every failure a user sees is named by (PRODUCT.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorClass {
    #[serde(rename = "Template not found")]
    TemplateNotFound,
    #[serde(rename = "Sender offline")]
    SenderOffline,
    #[serde(rename = "Invalid phone number")]
    InvalidPhoneNumber,
    #[serde(rename = "Outside 24-hour window")]
    OutsideWindow,
    #[serde(rename = "Rate limited")]
    RateLimited,
    #[serde(rename = "Opted out")]
    OptedOut,
    #[serde(rename = "Provider error")]
    ProviderError,
    /// The workflow reads a value the run does not have.
    #[serde(rename = "Missing variable")]
    MissingVariable,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::TemplateNotFound => "Template not found",
            ErrorClass::SenderOffline => "Sender offline",
            ErrorClass::InvalidPhoneNumber => "Invalid phone number",
            ErrorClass::OutsideWindow => "Outside 24-hour window",
            ErrorClass::RateLimited => "Rate limited",
            ErrorClass::OptedOut => "Opted out",
            ErrorClass::ProviderError => "Provider error",
            ErrorClass::MissingVariable => "Missing variable",
        }
    }

    /// Whether waiting and trying again can help.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorClass::SenderOffline | ErrorClass::RateLimited | ErrorClass::ProviderError
        )
    }

    /// What the user should do about it.
    pub fn advice(self) -> &'static str {
        match self {
            ErrorClass::TemplateNotFound => {
                "check the template is approved and its name and language are right"
            }
            ErrorClass::SenderOffline => "check the sender's status and connection",
            ErrorClass::InvalidPhoneNumber => "format as +[country code][number]",
            ErrorClass::OutsideWindow => "use a template message",
            ErrorClass::RateLimited => "Herald paces and retries by itself",
            ErrorClass::OptedOut => "none: the contact unsubscribed",
            ErrorClass::ProviderError => "see the recorded detail",
            ErrorClass::MissingVariable => "give the value in the event or use the default filter",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What becomes of a step that did not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Waiting and trying again can help; `after` is the provider's own wait (Retry-After), if
    /// it gave one.
    Retryable { after: Option<Duration> },
    /// No retry can fix it: recorded, dead-lettered and notified at once.
    Permanent,
    /// Not a failure: the step could not start yet (its send slot is `after` away, or Herald's
    /// own database was away before anything was sent). It runs again then, using no attempt.
    Deferred { after: Duration },
}

/// A step that did not succeed: what happened (class, message, the provider's code and HTTP
/// status) and the verdict. The verdict decides retry versus dead letter; never the message text.
#[derive(Clone, Debug, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    pub class: ErrorClass,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(skip)]
    pub verdict: Verdict,
}

impl StepError {
    /// A failure whose verdict follows from its class.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        StepError {
            class,
            message: message.into(),
            provider_code: None,
            http_status: None,
            verdict: Self::judge(class, None, None, None),
        }
    }

    /// A failure of an outside API: its HTTP status, its own error code and Retry-After join the
    /// class in the verdict.
    pub fn from_provider(
        class: ErrorClass,
        message: impl Into<String>,
        http_status: Option<u16>,
        provider_code: Option<i64>,
        retry_after: Option<Duration>,
    ) -> Self {
        StepError {
            class,
            message: message.into(),
            provider_code,
            http_status,
            verdict: Self::judge(class, http_status, provider_code, retry_after),
        }
    }

    /// The send's slot is `after` away: run the step again then, without using an attempt.
    pub fn deferred(after: Duration) -> Self {
        Self::deferred_because(
            after,
            format!("Rate limited: paced, next send slot in {after:?}"),
        )
    }

    /// Put off for `after`, for the reason given; not a failure.
    pub fn deferred_because(after: Duration, message: impl Into<String>) -> Self {
        StepError {
            class: ErrorClass::RateLimited,
            message: message.into(),
            provider_code: None,
            http_status: None,
            verdict: Verdict::Deferred { after },
        }
    }

    /// Marks the error as one no retry can fix (a configuration mistake, an answer that will not
    /// change), whatever its class.
    pub fn permanent(mut self) -> Self {
        self.verdict = Verdict::Permanent;
        self
    }

    /// Retryable when the class says so and the error is not a client error of an outside API
    /// without a provider code (a wrong URL, a refused request: those answer the same every
    /// time; 408 and 429 excepted).
    fn judge(
        class: ErrorClass,
        http_status: Option<u16>,
        provider_code: Option<i64>,
        retry_after: Option<Duration>,
    ) -> Verdict {
        let client_error = provider_code.is_none()
            && http_status.is_some_and(|s| (400..500).contains(&s) && s != 408 && s != 429);
        if class.retryable() && !client_error {
            Verdict::Retryable { after: retry_after }
        } else {
            Verdict::Permanent
        }
    }

    /// Whether waiting and trying again can help.
    pub fn retryable(&self) -> bool {
        matches!(self.verdict, Verdict::Retryable { .. })
    }

    /// Whether the step was put off rather than failed.
    pub fn is_deferred(&self) -> bool {
        matches!(self.verdict, Verdict::Deferred { .. })
    }

    /// The wait the provider asked for, or the deferral's.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.verdict {
            Verdict::Retryable { after } => after,
            Verdict::Deferred { after } => Some(after),
            Verdict::Permanent => None,
        }
    }

    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        v["retryable"] = Value::Bool(self.retryable());
        v["advice"] = Value::from(self.class.advice());
        v
    }
}

impl From<RenderError> for StepError {
    fn from(e: RenderError) -> Self {
        StepError::new(ErrorClass::MissingVariable, e.to_string())
    }
}

impl From<InvalidPhoneNumber> for StepError {
    fn from(e: InvalidPhoneNumber) -> Self {
        StepError::new(ErrorClass::InvalidPhoneNumber, e.to_string())
    }
}

/// A read or write of Herald's own database that a send needs failed before anything was sent:
/// not a failed attempt. The step is put off for a second (recorded once the database is back),
/// like a send waiting for its slot.
pub fn database_away(what: &str, e: &sqlx::Error) -> StepError {
    tracing::warn!(error = %e, "{what} failed; step put off, nothing sent");
    StepError::deferred_because(
        Duration::from_secs(1),
        format!("not sent: {what} failed: {e}"),
    )
}

/// How often and how long apart a failed step is tried again. Written on a step, a workflow,
/// or globally (`HERALD_RETRY_ATTEMPTS`, `HERALD_RETRY_WAIT`); the step's wins, then the
/// workflow's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (2 = one retry; 0 and 1: no retry), at most 100.
    /// Rate limits do not count (up to 20).
    #[schemars(range(max = 100))]
    pub attempts: u32,
    /// The wait before each retry (`60s`, at least 1s); a provider's Retry-After wins for
    /// rate limits.
    pub wait: HumanDuration,
}

impl RetryPolicy {
    /// The most attempts a policy may ask for.
    pub const MAX_ATTEMPTS: u32 = 100;

    /// What serde cannot check, run when the workflow loads.
    pub fn check(&self) -> Result<(), String> {
        if self.attempts > Self::MAX_ATTEMPTS {
            return Err(format!(
                "retry: attempts {} is more than {}",
                self.attempts,
                Self::MAX_ATTEMPTS
            ));
        }
        if self.wait.get() < Duration::from_secs(1) {
            return Err(format!("retry: wait {} is shorter than 1s", self.wait));
        }
        Ok(())
    }

    /// The policy for a step: its own, else its workflow's, else the global one.
    pub fn for_step(
        step: Option<RetryPolicy>,
        workflow: Option<RetryPolicy>,
        global: RetryPolicy,
    ) -> RetryPolicy {
        step.or(workflow).unwrap_or(global)
    }
}

/// When to try again, computed by backon's exponential builder (with jitter, capped) for every
/// retry Herald makes without a policy of the user's: rate limits without a Retry-After, and
/// reconnecting to RabbitMQ or PostgreSQL. Durable retries compute their timer's due time here.
pub mod backoff {
    use std::time::Duration;

    use backon::{BackoffBuilder, ExponentialBuilder};

    /// The longest wait of a rate limit that gave no Retry-After.
    pub const RATE_LIMIT_MAX: Duration = Duration::from_secs(64);

    /// The wait before retry `n` (0 = the first) of a rate-limited step that gave no
    /// Retry-After: 1 s, 2 s, 4 s, ... up to 64 s, each with jitter (up to as much again, within
    /// the cap) so that many runs limited together do not come back together.
    pub fn rate_limited(n: u32) -> Duration {
        ExponentialBuilder::new()
            .with_min_delay(Duration::from_secs(1))
            .with_max_delay(RATE_LIMIT_MAX)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(n as usize)
            .unwrap_or(RATE_LIMIT_MAX)
            .min(RATE_LIMIT_MAX)
    }

    /// Waits between attempts to reach RabbitMQ or PostgreSQL again: 200 ms doubling to 2 s,
    /// each with jitter (up to as much again), for ever (a role waits for its broker and database; the caller stops on
    /// shutdown or when its own patience runs out).
    /// Waits between tries of a delivery whose work failed (PostgreSQL away, most often),
    /// held rather than given back to the queue: 500 ms doubling to 5 s, with jitter, for
    /// ever (the holder stops after its own patience, [`HOLD_PATIENCE`]).
    pub fn held() -> ExponentialBuilder {
        ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times()
    }

    /// How long the matcher and the workers hold a delivery whose work keeps failing before
    /// they dead-letter it (it is put back after `HERALD_REINJECT_AFTER`): no tight requeue
    /// loop, and no delivery held for ever.
    pub const HOLD_PATIENCE: Duration = Duration::from_secs(60);

    pub fn reconnect() -> ExponentialBuilder {
        ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(2))
            .with_jitter()
            .without_max_times()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_follows_the_class_except_permanent_and_plain_client_errors() {
        assert!(StepError::new(ErrorClass::ProviderError, "5xx").retryable());
        assert!(!StepError::new(ErrorClass::TemplateNotFound, "x").retryable());
        assert!(
            !StepError::new(ErrorClass::ProviderError, "x")
                .permanent()
                .retryable()
        );
        let client =
            StepError::from_provider(ErrorClass::ProviderError, "404", Some(404), None, None);
        assert!(
            !client.retryable(),
            "a 404 from an outside API answers the same next time"
        );
        let coded = StepError::from_provider(
            ErrorClass::ProviderError,
            "404",
            Some(404),
            Some(999_999),
            None,
        );
        assert!(coded.retryable(), "an unknown Graph code stays retryable");
        let limited = StepError::from_provider(
            ErrorClass::RateLimited,
            "429",
            Some(429),
            None,
            Some(Duration::from_secs(3)),
        );
        assert!(limited.retryable());
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(
            StepError::new(ErrorClass::OptedOut, "x").to_json()["retryable"],
            false
        );
    }

    #[test]
    fn a_deferral_is_neither_retryable_nor_a_failure_and_keeps_its_wait() {
        let d = StepError::deferred(Duration::from_secs(2));
        assert!(d.is_deferred());
        assert!(!d.retryable());
        assert_eq!(d.retry_after(), Some(Duration::from_secs(2)));
        let away = database_away("reading", &sqlx::Error::PoolTimedOut);
        assert!(away.is_deferred());
        assert!(away.message.starts_with("not sent: reading failed"));
    }

    #[test]
    fn the_steps_retry_policy_wins_over_the_workflows_which_wins_over_the_global_one() {
        let policy = |attempts, secs| RetryPolicy {
            attempts,
            wait: HumanDuration::from(Duration::from_secs(secs)),
        };
        let (step, workflow, global) = (policy(3, 1), policy(5, 30), policy(2, 60));
        assert_eq!(
            RetryPolicy::for_step(Some(step), Some(workflow), global),
            step
        );
        assert_eq!(
            RetryPolicy::for_step(None, Some(workflow), global),
            workflow
        );
        assert_eq!(RetryPolicy::for_step(None, None, global), global);
        assert_eq!(policy(0, 1).check(), Ok(()));
        assert!(
            policy(101, 1)
                .check()
                .unwrap_err()
                .contains("more than 100")
        );
    }

    #[test]
    fn rate_limit_backoff_doubles_from_one_second_with_jitter_and_a_cap() {
        for n in 0..8 {
            let d = backoff::rate_limited(n);
            let base = Duration::from_secs(1 << n.min(6));
            assert!(d >= base.min(backoff::RATE_LIMIT_MAX), "retry {n}: {d:?}");
            assert!(
                d <= (base * 2).min(backoff::RATE_LIMIT_MAX),
                "retry {n}: {d:?}"
            );
        }
        assert_eq!(backoff::rate_limited(1000), backoff::RATE_LIMIT_MAX);
    }

    #[test]
    fn reconnect_backoff_grows_to_two_seconds_and_never_ends() {
        let waits: Vec<_> = backon::BackoffBuilder::build(backoff::reconnect())
            .take(50)
            .collect();
        assert_eq!(waits.len(), 50);
        assert!(waits[0] >= Duration::from_millis(200) && waits[0] <= Duration::from_millis(400));
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(4)));
        assert!(waits[49] >= Duration::from_secs(2));
    }
}
