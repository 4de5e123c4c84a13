//! `send_template`: sends an approved template to a recipient (E.164), with positional
//! (`{{1}}`, `{{2}}`, ...) or named variables rendered from the run's data.

use std::collections::BTreeMap;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Recipient, Sent, Step, StepContext, StepError, StepOutput, sender};
use crate::{
    domain::{LanguageCode, PhoneNumber, TemplateName},
    providers::whatsapp::{Message, request_body},
    workflow::Text,
};

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendTemplate {
    #[serde(default)]
    pub id: Option<String>,
    /// Our sender's phone_number_id; defaults to the one the trigger came in on.
    #[serde(default)]
    pub sender: Option<String>,
    /// Recipient in E.164; defaults to `{{ trigger.customer_phone }}`.
    #[serde(default)]
    pub to: Recipient,
    pub template: TemplateName,
    pub language: LanguageCode,
    /// The body's variables: a list for `{{1}}`, `{{2}}`, ... or a map for named parameters.
    #[serde(default)]
    pub variables: Variables,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Variables {
    Positional(Vec<Text>),
    Named(BTreeMap<String, Text>),
}

impl Default for Variables {
    fn default() -> Self {
        Variables::Positional(Vec::new())
    }
}

#[derive(Debug, Serialize)]
pub struct Input {
    pub sender: String,
    pub to: PhoneNumber,
    pub template: String,
    pub language: String,
    pub variables: Value,
    #[serde(skip)]
    pub message: Message,
}

#[async_trait]
impl Step for SendTemplate {
    type Input = Input;

    fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    fn render(&self, ctx: &StepContext<'_>) -> Result<Input, StepError> {
        let sender = sender(self.sender.as_deref(), ctx)?.to_string();
        let to = self.to.render(ctx.data)?;
        let (variables, parameters) = match &self.variables {
            Variables::Positional(list) => {
                let values = list
                    .iter()
                    .map(|t| t.render(ctx.data))
                    .collect::<Result<Vec<_>, _>>()?;
                let params: Vec<Value> = values
                    .iter()
                    .map(|v| json!({"type": "text", "text": v}))
                    .collect();
                (json!(values), params)
            }
            Variables::Named(map) => {
                let mut values = serde_json::Map::new();
                let mut params = Vec::new();
                for (name, text) in map {
                    let v = text.render(ctx.data)?;
                    params.push(json!({"type": "text", "parameter_name": name, "text": v}));
                    values.insert(name.clone(), Value::String(v));
                }
                (Value::Object(values), params)
            }
        };
        let components = if parameters.is_empty() {
            Vec::new()
        } else {
            vec![json!({"type": "body", "parameters": parameters})]
        };
        Ok(Input {
            sender,
            to,
            template: self.template.to_string(),
            language: self.language.to_string(),
            variables,
            message: Message::Template {
                name: self.template.to_string(),
                language: self.language.to_string(),
                components,
            },
        })
    }

    async fn execute(&self, input: Input, ctx: &StepContext<'_>) -> Result<StepOutput, StepError> {
        let request = request_body(&input.to, &input.message);
        let receipt = ctx.services.whatsapp.send(&input.sender, &request).await?;
        Ok(StepOutput::new(json!({
            "message_id": receipt.wamid,
            "to": input.to,
            "template": input.template,
            "language": input.language,
            "variables": input.variables,
        }))
        .with_sent(Sent {
            sender_id: input.sender,
            recipient: input.to.to_string(),
            kind: input.message.kind(),
            provider: receipt.provider,
            request,
            wamid: receipt.wamid,
        }))
    }
}
