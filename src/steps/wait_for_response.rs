//! `wait_for_response`: the run pauses until the contact's next message on this sender, which is
//! routed to the waiting run (and starts no new runs), or until the timeout, which runs the
//! `on_timeout` steps. Output: `text`, `message_type`, `reply_id`, `button_payload`, ...

use async_trait::async_trait;
use chrono::Utc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ErrorClass, Next, Step, StepContext, StepError, StepKind, StepOutput};
use crate::domain::HumanDuration;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitForResponse {
    #[serde(default)]
    pub id: Option<String>,
    /// This step's retry policy (default: the workflow's `retry`, then the global one).
    #[serde(default)]
    pub retry: Option<super::RetryPolicy>,
    /// How long to wait (`10m`, `2h`, `3d`); without it the run waits for as long as it takes.
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// Steps to run when the timeout passes without a reply.
    #[serde(default)]
    pub on_timeout: Vec<StepKind>,
}

#[derive(Debug, Serialize)]
pub struct Input {
    pub timeout: Option<String>,
}

#[async_trait]
impl Step for WaitForResponse {
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

    fn arms(&self) -> Vec<&[StepKind]> {
        vec![self.on_timeout.as_slice()]
    }

    fn check(&self) -> Result<(), String> {
        if self.timeout.is_none() && !self.on_timeout.is_empty() {
            return Err("on_timeout needs a `timeout`".into());
        }
        Ok(())
    }

    fn render(&self, ctx: &StepContext<'_>) -> Result<Input, StepError> {
        if ctx.customer_id.is_none() || ctx.sender_id.is_none() {
            return Err(StepError::new(
                ErrorClass::ProviderError,
                "wait_for_response needs a run with a contact and a sender (a WhatsApp trigger)",
            ));
        }
        Ok(Input {
            timeout: self.timeout.map(|t| t.to_string()),
        })
    }

    async fn execute(
        &self,
        _input: Input,
        _ctx: &StepContext<'_>,
    ) -> Result<StepOutput, StepError> {
        let timeout_at = self
            .timeout
            .and_then(|t| chrono::Duration::from_std(t.get()).ok())
            .map(|d| Utc::now() + d);
        Ok(
            StepOutput::new(json!({ "waiting": true, "timeout_at": timeout_at }))
                .with_next(Next::WaitForReply { timeout_at }),
        )
    }
}
