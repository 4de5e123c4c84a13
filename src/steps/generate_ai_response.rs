//! `generate_ai_response`: asks a configured assistant (OpenAI-compatible chat completions) about
//! a message, for one customer identifier. The customer's conversation with that assistant keeps
//! its history (`ai_conversations`, `ai_messages`); the answer is `steps.<id>.response`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::{ErrorClass, Step, StepContext, StepError, StepOutput};
use crate::{
    expr::Text,
    providers::llm::{Assistant, Assistants, ChatMessage, LlmError, Role},
    store::ai::{self, Speaker},
};

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateAiResponse {
    #[serde(default)]
    pub id: Option<String>,
    /// This step's retry policy (default: the workflow's `retry`, then the global one).
    #[serde(default)]
    pub retry: Option<super::RetryPolicy>,
    /// The assistant's name in the assistants file (`HERALD_ASSISTANTS`); checked when the step runs.
    pub assistant: String,
    /// The new message for the assistant, e.g. `{{ trigger.text }}`.
    pub message: Text,
    /// Whose conversation this is (phone, email or CRM id); defaults to `{{ trigger.customer_id }}`.
    #[serde(default = "default_customer")]
    pub customer: Text,
    /// Values given to the model as context (`Context: name=value, ...`).
    #[serde(default)]
    pub variables: BTreeMap<String, Text>,
}

fn default_customer() -> Text {
    Text::parse("{{ trigger.customer_id }}").unwrap_or_else(|_| unreachable!())
}

#[derive(Debug, Serialize)]
pub struct Input {
    pub assistant: String,
    pub customer: String,
    pub message: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
}

#[async_trait]
impl Step for GenerateAiResponse {
    type Input = Input;

    fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    fn retry(&self) -> Option<super::RetryPolicy> {
        self.retry
    }

    fn render(&self, ctx: &StepContext<'_>) -> Result<Input, StepError> {
        self.render_data(ctx.data)
    }

    async fn execute(&self, input: Input, ctx: &StepContext<'_>) -> Result<StepOutput, StepError> {
        let assistant = find(&ctx.services.assistants, &input.assistant)?;
        let pool = &ctx.services.pool;
        let conversation = find_conversation(pool, &assistant.name, &input.customer).await?;
        let history = match conversation {
            Some(id) => load_history(pool, id, assistant.max_history).await?,
            None => Vec::new(),
        };
        let messages = build_messages(&input.variables, history, &input.message);
        let answer = assistant
            .complete(&messages)
            .await
            .map_err(StepError::from)?;
        let conversation_id = store_turn(
            pool,
            &assistant.name,
            &input.customer,
            &input.message,
            &answer,
            ctx.run_id,
        )
        .await?;
        tracing::info!(
            run_id = %ctx.run_id, step = ctx.step_id, assistant = %assistant.name,
            model = %assistant.model, %conversation_id, messages = messages.len(),
            "assistant answered"
        );
        Ok(StepOutput::new(json!({
            "response": answer,
            "conversation_id": conversation_id,
            "assistant": assistant.name,
            "model": assistant.model,
        })))
    }
}

impl GenerateAiResponse {
    /// Renders message, customer and variables with the run's data.
    fn render_data(&self, data: &serde_json::Value) -> Result<Input, StepError> {
        let message = self.message.render(data)?;
        if message.trim().is_empty() {
            return Err(StepError::new(
                ErrorClass::ProviderError,
                "message is empty",
            ));
        }
        let customer = self.customer.render(data)?.trim().to_string();
        if customer.is_empty() {
            return Err(StepError::new(
                ErrorClass::ProviderError,
                "customer is empty: give the customer identifier (phone, email or CRM id)",
            ));
        }
        let variables = self
            .variables
            .iter()
            .map(|(name, text)| Ok((name.clone(), text.render(data)?)))
            .collect::<Result<_, StepError>>()?;
        Ok(Input {
            assistant: self.assistant.clone(),
            customer,
            message,
            variables,
        })
    }
}

/// The named assistant, or a permanent "Unknown assistant" error listing the configured ones.
fn find<'a>(assistants: &'a Assistants, name: &str) -> Result<&'a Assistant, StepError> {
    assistants.get(name).ok_or_else(|| {
        let names: Vec<&str> = assistants.names().collect();
        let configured = if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        };
        StepError::new(
            ErrorClass::ProviderError,
            format!("Unknown assistant '{name}' (configured: {configured})"),
        )
        .permanent()
    })
}

/// The request's messages after the system prompt: the context, the history, the new message.
fn build_messages(
    variables: &BTreeMap<String, String>,
    history: Vec<ChatMessage>,
    message: &str,
) -> Vec<ChatMessage> {
    let mut messages = Vec::with_capacity(history.len() + 2);
    if !variables.is_empty() {
        let context: Vec<String> = variables.iter().map(|(k, v)| format!("{k}={v}")).collect();
        messages.push(ChatMessage::new(
            Role::System,
            format!("Context: {}", context.join(", ")),
        ));
    }
    messages.extend(history);
    messages.push(ChatMessage::new(Role::User, message));
    messages
}

fn db_error(what: &str, e: sqlx::Error) -> StepError {
    StepError::new(ErrorClass::ProviderError, format!("{what}: {e}"))
}

async fn find_conversation(
    pool: &PgPool,
    assistant: &str,
    customer: &str,
) -> Result<Option<Uuid>, StepError> {
    ai::find_conversation(pool, assistant, customer)
        .await
        .map_err(|e| db_error("find the AI conversation", e))
}

/// The last `limit` messages of the conversation, oldest first.
async fn load_history(
    pool: &PgPool,
    conversation_id: Uuid,
    limit: usize,
) -> Result<Vec<ChatMessage>, StepError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let turns = ai::history(
        pool,
        conversation_id,
        i64::try_from(limit).unwrap_or(i64::MAX),
    )
    .await
    .map_err(|e| db_error("load the AI conversation's history", e))?;
    Ok(turns
        .into_iter()
        .map(|t| {
            let role = match t.role {
                Speaker::User => Role::User,
                Speaker::Assistant => Role::Assistant,
            };
            ChatMessage::new(role, t.content)
        })
        .collect())
}

/// Finds or creates the conversation and appends the message and the answer, in one transaction.
async fn store_turn(
    pool: &PgPool,
    assistant: &str,
    customer: &str,
    message: &str,
    answer: &str,
    run_id: Uuid,
) -> Result<Uuid, StepError> {
    ai::add_turn(pool, assistant, customer, message, answer, run_id)
        .await
        .map_err(|e| db_error("store the AI conversation", e))
}

impl From<LlmError> for StepError {
    fn from(e: LlmError) -> Self {
        let error = StepError::from_provider(
            e.class,
            format!("{}: {}", e.class, e.message),
            e.http_status,
            None,
            e.retry_after,
        );
        if e.permanent {
            error.permanent()
        } else {
            error
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(yaml: &str) -> Result<GenerateAiResponse, String> {
        serde_saphyr::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn the_step_parses_with_the_default_customer() {
        let s = step("assistant: support\nmessage: \"{{ trigger.text }}\"\n").unwrap();
        assert_eq!(s.customer.source(), "{{ trigger.customer_id }}");
        assert!(s.variables.is_empty());
        assert!(step("assistant: a\nmessage: x\nprompt: y\n").is_err());
        assert!(step("assistant: a\n").is_err());
    }

    #[test]
    fn variables_become_a_context_message_before_the_history_and_the_new_message() {
        let vars = BTreeMap::from([
            ("plan".to_string(), "gold".to_string()),
            ("customer_name".to_string(), "Ana".to_string()),
        ]);
        let history = vec![
            ChatMessage::new(Role::User, "hi"),
            ChatMessage::new(Role::Assistant, "hello"),
        ];
        let messages = build_messages(&vars, history, "and now?");
        assert_eq!(
            messages,
            vec![
                ChatMessage::new(Role::System, "Context: customer_name=Ana, plan=gold"),
                ChatMessage::new(Role::User, "hi"),
                ChatMessage::new(Role::Assistant, "hello"),
                ChatMessage::new(Role::User, "and now?"),
            ]
        );
        let plain = build_messages(&BTreeMap::new(), Vec::new(), "x");
        assert_eq!(plain, vec![ChatMessage::new(Role::User, "x")]);
    }

    #[test]
    fn an_unknown_assistant_names_the_configured_ones() {
        let none = Assistants::default();
        let e = find(&none, "support").unwrap_err();
        assert_eq!(e.class, ErrorClass::ProviderError);
        assert_eq!(e.message, "Unknown assistant 'support' (configured: none)");
        let yaml = "assistants:\n  b:\n    base_url: http://x/v1\n    model: m\n    system_prompt: s\n    api_key_env: K\n  a:\n    base_url: http://x/v1\n    model: m\n    system_prompt: s\n    api_key_env: K\n";
        let two = Assistants::parse(yaml, |_| Some("k".into())).unwrap();
        let e = find(&two, "x").unwrap_err();
        assert_eq!(e.message, "Unknown assistant 'x' (configured: a, b)");
        assert!(find(&two, "a").is_ok());
    }

    #[test]
    fn render_fills_message_customer_and_variables_and_reports_a_missing_one() {
        let s = step(
            "assistant: support\nmessage: \"{{ trigger.text }}\"\nvariables:\n  name: \"{{ contact.name | default('unknown') }}\"\n",
        )
        .unwrap();
        let data =
            json!({"trigger": {"text": "hi", "customer_id": "4915112345678"}, "contact": {}});
        let input = s.render_data(&data).unwrap();
        assert_eq!(input.message, "hi");
        assert_eq!(input.customer, "4915112345678");
        assert_eq!(input.variables["name"], "unknown");
        let e = s
            .render_data(&json!({"trigger": {"customer_id": "1"}}))
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::MissingVariable);
        assert_eq!(e.message, "Missing variable trigger.text");
    }
}
