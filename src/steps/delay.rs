//! `delay`: waits a duration (`90s`, `10m`, `2h`, `3d`) or until a time. Durable: the run sleeps
//! on a PostgreSQL timer, so restarts of any component neither lose nor double the continuation.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ErrorClass, Next, Step, StepContext, StepError, StepOutput};
use crate::{domain::HumanDuration, expr::Text};

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Delay {
    #[serde(default)]
    pub id: Option<String>,
    /// This step's retry policy (default: the workflow's `retry`, then the global one).
    #[serde(default)]
    pub retry: Option<super::RetryPolicy>,
    /// How long to wait: `90s`, `10m`, `2h`, `3d`.
    #[serde(default)]
    pub duration: Option<HumanDuration>,
    /// Or until this time (RFC 3339, e.g. `{{ trigger.appointment_at }}`); a time in the past
    /// continues at once.
    #[serde(default)]
    pub until: Option<Text>,
}

#[derive(Debug, Serialize)]
pub struct Input {
    pub until: DateTime<Utc>,
}

#[async_trait]
impl Step for Delay {
    type Input = Input;

    fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    fn retry(&self) -> Option<super::RetryPolicy> {
        self.retry
    }

    fn repeatable(&self) -> bool {
        true
    }

    fn check(&self) -> Result<(), String> {
        match (&self.duration, &self.until) {
            (Some(_), None) | (None, Some(_)) => Ok(()),
            _ => Err("delay needs exactly one of `duration` or `until`".into()),
        }
    }

    fn render(&self, ctx: &StepContext<'_>) -> Result<Input, StepError> {
        let until = match (&self.duration, &self.until) {
            (Some(d), _) => {
                Utc::now()
                    + chrono::Duration::from_std(d.get()).map_err(|e| {
                        StepError::new(ErrorClass::ProviderError, format!("bad duration: {e}"))
                    })?
            }
            (None, Some(text)) => {
                let raw = text.render(ctx.data)?;
                DateTime::parse_from_rfc3339(raw.trim())
                    .map_err(|_| {
                        StepError::new(
                            ErrorClass::MissingVariable,
                            format!(
                                "delay until '{raw}': not a time such as 2026-11-24T09:00:00+01:00"
                            ),
                        )
                    })?
                    .with_timezone(&Utc)
            }
            (None, None) => {
                return Err(StepError::new(
                    ErrorClass::ProviderError,
                    "delay needs `duration` or `until`",
                ));
            }
        };
        Ok(Input { until })
    }

    async fn execute(&self, input: Input, _ctx: &StepContext<'_>) -> Result<StepOutput, StepError> {
        Ok(StepOutput::new(json!({ "until": input.until }))
            .with_next(Next::SleepUntil(input.until)))
    }
}
