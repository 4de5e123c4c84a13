//! `notify`: tells the team. The message goes to the log and, when `HERALD_NOTIFY_WEBHOOK_URL` is
//! set, to a Slack-compatible incoming webhook (`{"text": ...}`). Without a webhook the step still
//! succeeds (`delivered: log`).

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::Instrument;

use super::{ErrorClass, Step, StepContext, StepError, StepOutput};
use crate::{expr::Text, providers::notify::NotifyError};

/// Slack shows at most this much of a message's text.
pub const MAX_TEXT_CHARS: usize = 40_000;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    #[serde(default)]
    pub id: Option<String>,
    /// This step's retry policy (default: the workflow's `retry`, then the global one).
    #[serde(default)]
    pub retry: Option<super::RetryPolicy>,
    /// The message; may contain variables.
    pub text: Text,
}

#[derive(Debug, Serialize)]
pub struct Input {
    pub text: String,
}

impl From<NotifyError> for StepError {
    fn from(e: NotifyError) -> Self {
        StepError::from_provider(e.class, e.message, e.http_status, None, e.retry_after)
    }
}

#[async_trait]
impl Step for Notify {
    type Input = Input;

    fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    fn retry(&self) -> Option<super::RetryPolicy> {
        self.retry
    }

    fn render(&self, ctx: &StepContext<'_>) -> Result<Input, StepError> {
        let text = self.text.render(ctx.data)?;
        if text.trim().is_empty() {
            return Err(StepError::new(
                ErrorClass::ProviderError,
                "notify: the text is empty",
            ));
        }
        let chars = text.chars().count();
        if chars > MAX_TEXT_CHARS {
            return Err(StepError::new(
                ErrorClass::ProviderError,
                format!("notify: the text is {chars} characters; at most {MAX_TEXT_CHARS}"),
            ));
        }
        Ok(Input { text })
    }

    async fn execute(&self, input: Input, ctx: &StepContext<'_>) -> Result<StepOutput, StepError> {
        let notifier = &ctx.services.notifier;
        let span = tracing::info_span!("notify", run_id = %ctx.run_id, step = ctx.step_id);
        notifier.send(&input.text, &[]).instrument(span).await?;
        let delivered = if notifier.has_webhook() {
            "webhook"
        } else {
            "log"
        };
        Ok(StepOutput::new(
            json!({ "delivered": delivered, "text": input.text }),
        ))
    }
}
