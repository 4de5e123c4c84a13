//! `send_text`: free text (at most 4096 characters), only inside the 24-hour customer-service
//! window that the customer's last message opened; otherwise "Outside 24-hour window".

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ErrorClass, Recipient, Sent, Step, StepContext, StepError, StepOutput, sender};
use crate::{
    domain::PhoneNumber,
    expr::Text,
    providers::whatsapp::{Message, request_body},
};

pub const MAX_TEXT_CHARS: usize = 4096;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendText {
    #[serde(default)]
    pub id: Option<String>,
    /// This step's retry policy (default: the workflow's `retry`, then the global one).
    #[serde(default)]
    pub retry: Option<super::RetryPolicy>,
    #[serde(default)]
    pub sender: Option<String>,
    /// Recipient in E.164; defaults to `{{ trigger.customer_phone }}`.
    #[serde(default)]
    pub to: Recipient,
    /// The message, at most 4096 characters once rendered.
    pub text: Text,
}

#[derive(Debug, Serialize)]
pub struct Input {
    pub sender: String,
    pub to: PhoneNumber,
    pub text: String,
}

#[async_trait]
impl Step for SendText {
    type Input = Input;

    fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    fn retry(&self) -> Option<super::RetryPolicy> {
        self.retry
    }

    fn render(&self, ctx: &StepContext<'_>) -> Result<Input, StepError> {
        let sender = sender(self.sender.as_deref(), ctx)?.to_string();
        let to = self.to.render(ctx.data)?;
        let text = self.text.render(ctx.data)?;
        let chars = text.chars().count();
        if chars > MAX_TEXT_CHARS {
            return Err(StepError::new(
                ErrorClass::ProviderError,
                format!("text is {chars} characters; WhatsApp allows at most {MAX_TEXT_CHARS}"),
            ));
        }
        if text.trim().is_empty() {
            return Err(StepError::new(ErrorClass::ProviderError, "text is empty"));
        }
        Ok(Input { sender, to, text })
    }

    async fn execute(&self, input: Input, ctx: &StepContext<'_>) -> Result<StepOutput, StepError> {
        super::require_window(
            &ctx.services.pool,
            &input.sender,
            &input.to,
            "use a template message",
        )
        .await?;
        let message = Message::Text { body: input.text };
        let request = request_body(&input.to, &message);
        let receipt = ctx
            .services
            .senders
            .send(&ctx.services.whatsapp, &input.sender, &input.to, &request)
            .await?;
        Ok(
            StepOutput::new(json!({ "message_id": receipt.wamid, "to": input.to })).with_sent(
                Sent {
                    sender_id: input.sender,
                    recipient: input.to.to_string(),
                    kind: message.kind(),
                    provider: receipt.provider,
                    request,
                    wamid: receipt.wamid,
                },
            ),
        )
    }
}
