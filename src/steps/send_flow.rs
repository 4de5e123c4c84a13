//! `send_flow`: a WhatsApp Flow as an interactive message, no template needed; only inside the
//! 24-hour customer-service window that the customer's last message opened (otherwise
//! "Outside 24-hour window", as for `send_text`). Outside the window, use `send_template` with a
//! FLOW button.

use std::collections::BTreeMap;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    ErrorClass, Recipient, Sent, Step, StepContext, StepError, StepOutput, send_template, sender,
};
use crate::{
    domain::PhoneNumber,
    expr::Text,
    providers::whatsapp::{
        FlowActionPayload, FlowMessage, FlowMode, FlowRef, Message, request_body,
    },
};

/// Limits of an interactive message (whatsapp-cloud-api.md §6).
pub const MAX_BODY_CHARS: usize = 1024;
pub const MAX_CTA_CHARS: usize = 30;
pub const MAX_HEADER_CHARS: usize = 60;
pub const MAX_FOOTER_CHARS: usize = 60;

/// `send_flow` as written in YAML.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendFlowSpec {
    #[serde(default)]
    pub id: Option<String>,
    /// This step's retry policy (default: the workflow's `retry`, then the global one).
    #[serde(default)]
    pub retry: Option<super::RetryPolicy>,
    /// Our sender's phone_number_id; defaults to the one the trigger came in on.
    #[serde(default)]
    pub sender: Option<String>,
    /// Recipient in E.164; defaults to `{{ trigger.customer_phone }}`.
    #[serde(default)]
    pub to: Recipient,
    /// The Flow's id (give this or `flow_name`).
    #[serde(default)]
    pub flow_id: Option<Text>,
    /// The Flow's name (give this or `flow_id`).
    #[serde(default)]
    pub flow_name: Option<Text>,
    /// The message text, at most 1024 characters.
    pub body: Text,
    /// The button that opens the Flow, at most 30 characters.
    pub cta: Text,
    /// A text header, at most 60 characters.
    #[serde(default)]
    pub header: Option<Text>,
    /// A footer, at most 60 characters.
    #[serde(default)]
    pub footer: Option<Text>,
    /// The first screen to open (`flow_action: navigate`); the Flow's own first screen when
    /// omitted.
    #[serde(default)]
    pub screen: Option<Text>,
    /// Data for that first screen (needs `screen`).
    #[serde(default)]
    pub data: Option<BTreeMap<String, Text>>,
    /// Comes back with the Flow's answer (`whatsapp.flow_completed`); defaults to
    /// `<run id>.<step id>`.
    #[serde(default)]
    pub flow_token: Option<Text>,
    /// `published` (default) or `draft`.
    #[serde(default)]
    pub mode: FlowMode,
}

/// `send_flow`, checked when the workflow loads.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "SendFlowSpec")]
pub struct SendFlow {
    pub id: Option<String>,
    retry: Option<super::RetryPolicy>,
    pub sender: Option<String>,
    pub to: Recipient,
    pub flow: Flow,
    pub body: Text,
    pub cta: Text,
    pub header: Option<Text>,
    pub footer: Option<Text>,
    pub start: Option<Start>,
    pub flow_token: Option<Text>,
    pub mode: FlowMode,
}

impl JsonSchema for SendFlow {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SendFlow".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        SendFlowSpec::json_schema(generator)
    }
}

#[derive(Debug, Clone)]
pub enum Flow {
    Id(Text),
    Name(Text),
}

/// The first screen and its data.
#[derive(Debug, Clone)]
pub struct Start {
    pub screen: Text,
    pub data: Option<BTreeMap<String, Text>>,
}

impl SendFlow {
    /// The texts with a length limit: (field, limit, text).
    fn limited(&self) -> impl Iterator<Item = (&'static str, usize, &Text)> {
        [
            ("body", MAX_BODY_CHARS, Some(&self.body)),
            ("cta", MAX_CTA_CHARS, Some(&self.cta)),
            ("header", MAX_HEADER_CHARS, self.header.as_ref()),
            ("footer", MAX_FOOTER_CHARS, self.footer.as_ref()),
        ]
        .into_iter()
        .filter_map(|(name, max, text)| text.map(|t| (name, max, t)))
    }
}

/// Checks a rendered part: not empty, not longer than its limit.
fn check_length(name: &str, value: &str, max: usize) -> Result<(), String> {
    let chars = value.chars().count();
    if value.trim().is_empty() {
        return Err(format!("send_flow: `{name}` is empty"));
    }
    if chars > max {
        let quoted: String = if chars <= 80 {
            value.to_string()
        } else {
            value.chars().take(60).chain("...".chars()).collect()
        };
        return Err(format!(
            "send_flow: `{name}` is {chars} characters (\"{quoted}\"); WhatsApp allows at most {max}"
        ));
    }
    Ok(())
}

impl TryFrom<SendFlowSpec> for SendFlow {
    type Error = String;
    fn try_from(spec: SendFlowSpec) -> Result<Self, String> {
        let flow = match (spec.flow_id, spec.flow_name) {
            (Some(id), None) => Flow::Id(id),
            (None, Some(name)) => Flow::Name(name),
            (Some(_), Some(_)) => {
                return Err("send_flow: give `flow_id` or `flow_name`, not both".into());
            }
            (None, None) => return Err("send_flow: give `flow_id` or `flow_name`".into()),
        };
        let start = match (spec.screen, spec.data) {
            (Some(screen), data) => Some(Start { screen, data }),
            (None, None) => None,
            (None, Some(_)) => {
                return Err(
                    "send_flow: `data` needs `screen` (the first screen the data is for)".into(),
                );
            }
        };
        let step = SendFlow {
            id: spec.id,
            retry: spec.retry,
            sender: spec.sender,
            to: spec.to,
            flow,
            body: spec.body,
            cta: spec.cta,
            header: spec.header,
            footer: spec.footer,
            start,
            flow_token: spec.flow_token,
            mode: spec.mode,
        };
        // Text without variables is checked now; the rest when the step runs.
        for (name, max, text) in step.limited() {
            if text.variables().next().is_none()
                && let Ok(value) = text.render(&json!({}))
            {
                check_length(name, &value, max)?;
            }
        }
        Ok(step)
    }
}

#[derive(Debug, Serialize)]
pub struct Input {
    pub sender: String,
    pub to: PhoneNumber,
    #[serde(flatten)]
    pub message: FlowMessage,
}

fn invalid(message: String) -> StepError {
    StepError::new(ErrorClass::ProviderError, message)
}

fn not_empty(name: &str, value: String) -> Result<String, StepError> {
    if value.trim().is_empty() {
        Err(invalid(format!("send_flow: `{name}` is empty")))
    } else {
        Ok(value)
    }
}

impl SendFlow {
    /// `render` without the context: the run's data and the default flow token.
    pub fn render_with(
        &self,
        sender: String,
        data: &Value,
        default_token: &str,
    ) -> Result<Input, StepError> {
        let to = self.to.render(data)?;
        let flow = match &self.flow {
            Flow::Id(id) => FlowRef::FlowId(not_empty("flow_id", id.render(data)?)?),
            Flow::Name(name) => FlowRef::FlowName(not_empty("flow_name", name.render(data)?)?),
        };
        let part = |name: &str, max: usize, text: &Text| -> Result<String, StepError> {
            let value = text.render(data)?;
            check_length(name, &value, max).map_err(invalid)?;
            Ok(value)
        };
        let body = part("body", MAX_BODY_CHARS, &self.body)?;
        let cta = part("cta", MAX_CTA_CHARS, &self.cta)?;
        let header = (self.header.as_ref())
            .map(|t| part("header", MAX_HEADER_CHARS, t))
            .transpose()?;
        let footer = (self.footer.as_ref())
            .map(|t| part("footer", MAX_FOOTER_CHARS, t))
            .transpose()?;
        let flow_token = match &self.flow_token {
            Some(t) => not_empty("flow_token", t.render(data)?)?,
            None => default_token.to_string(),
        };
        let flow_action_payload = match &self.start {
            None => None,
            Some(start) => Some(FlowActionPayload {
                screen: not_empty("screen", start.screen.render(data)?)?,
                data: start
                    .data
                    .as_ref()
                    .map(|map| {
                        map.iter()
                            .map(|(k, v)| Ok((k.clone(), v.render(data)?)))
                            .collect::<Result<BTreeMap<_, _>, StepError>>()
                    })
                    .transpose()?,
            }),
        };
        Ok(Input {
            sender,
            to,
            message: FlowMessage {
                flow,
                body,
                cta,
                header,
                footer,
                flow_token,
                mode: self.mode,
                flow_action_payload,
            },
        })
    }
}

#[async_trait]
impl Step for SendFlow {
    /// Boxed: the rendered message is large next to other steps' inputs.
    type Input = Box<Input>;

    fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    fn retry(&self) -> Option<super::RetryPolicy> {
        self.retry
    }

    fn render(&self, ctx: &StepContext<'_>) -> Result<Box<Input>, StepError> {
        let sender = sender(self.sender.as_deref(), ctx)?.to_string();
        self.render_with(
            sender,
            ctx.data,
            &send_template::default_flow_token(ctx.run_id, ctx.step_id),
        )
        .map(Box::new)
    }

    async fn execute(
        &self,
        input: Box<Input>,
        ctx: &StepContext<'_>,
    ) -> Result<StepOutput, StepError> {
        let Input {
            sender,
            to,
            message,
        } = *input;
        super::require_window(
            &ctx.services.pool,
            &sender,
            &to,
            "a Flow message needs an open window (use send_template with a FLOW button)",
        )
        .await?;
        let flow_token = message.flow_token.clone();
        let message = Message::Flow(Box::new(message));
        let request = request_body(&to, &message);
        let receipt = ctx
            .services
            .senders
            .send(&ctx.services.whatsapp, &sender, &to, &request)
            .await?;
        Ok(StepOutput::new(json!({
            "message_id": receipt.wamid,
            "to": to,
            "flow_token": flow_token,
        }))
        .with_sent(Sent {
            sender_id: sender,
            recipient: to.to_string(),
            kind: message.kind(),
            provider: receipt.provider,
            request,
            wamid: receipt.wamid,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0190a0b0-0000-7000-8000-000000000001.rate";

    fn load(yaml: &str) -> Result<SendFlow, String> {
        serde_saphyr::from_str(yaml).map_err(|e| e.to_string())
    }

    fn data() -> Value {
        json!({"trigger": {
            "customer_phone": "+5511987650001",
            "agent_name": "Bia",
            "text": "x".repeat(31),
        }})
    }

    fn render(yaml: &str) -> Result<Input, StepError> {
        load(yaml).unwrap_or_else(|e| panic!("{e}")).render_with(
            "113355779900224".into(),
            &data(),
            TOKEN,
        )
    }

    fn body(input: &Input) -> Value {
        request_body(&input.to, &Message::Flow(Box::new(input.message.clone())))
    }

    const MINIMAL: &str = "flow_id: '1234567890'\nbody: Rate your call\ncta: Rate now\n";

    #[test]
    fn a_minimal_flow_message_defaults_token_and_mode() {
        let input = render(MINIMAL).unwrap();
        let sent = body(&input);
        assert_eq!(sent["to"], "5511987650001");
        assert_eq!(sent["type"], "interactive");
        assert_eq!(
            sent["interactive"],
            json!({
                "type": "flow",
                "body": {"text": "Rate your call"},
                "action": {"name": "flow", "parameters": {
                    "flow_message_version": "3",
                    "flow_id": "1234567890",
                    "flow_cta": "Rate now",
                    "flow_token": TOKEN,
                    "mode": "published",
                    "flow_action": "navigate",
                }},
            })
        );
    }

    #[test]
    fn every_field_renders_from_the_run_data() {
        let input = render(
            "flow_name: csat\nbody: \"Hi, rate {{ trigger.agent_name }}\"\ncta: Rate now\nheader: Quick survey\nfooter: Takes 30 seconds\nscreen: RATING\ndata: { agent: \"{{ trigger.agent_name }}\" }\nflow_token: \"csat-{{ trigger.agent_name }}\"\nmode: draft\n",
        )
        .unwrap();
        let interactive = &body(&input)["interactive"];
        assert_eq!(
            interactive["header"],
            json!({"type": "text", "text": "Quick survey"})
        );
        assert_eq!(interactive["body"], json!({"text": "Hi, rate Bia"}));
        assert_eq!(interactive["footer"], json!({"text": "Takes 30 seconds"}));
        let parameters = &interactive["action"]["parameters"];
        assert_eq!(parameters["flow_name"], "csat");
        assert!(parameters.get("flow_id").is_none());
        assert_eq!(parameters["flow_token"], "csat-Bia");
        assert_eq!(parameters["mode"], "draft");
        assert_eq!(
            parameters["flow_action_payload"],
            json!({"screen": "RATING", "data": {"agent": "Bia"}})
        );
        // The recorded input names the same things in Herald's terms.
        let recorded = serde_json::to_value(&input).unwrap();
        assert_eq!(recorded["flow_name"], "csat");
        assert_eq!(recorded["cta"], "Rate now");
        assert_eq!(recorded["flow_token"], "csat-Bia");
        assert_eq!(recorded["flow_action_payload"]["screen"], "RATING");
    }

    #[test]
    fn a_screen_without_data_navigates_to_it() {
        let input = render(&format!("{MINIMAL}screen: START\n")).unwrap();
        assert_eq!(
            body(&input)["interactive"]["action"]["parameters"]["flow_action_payload"],
            json!({"screen": "START"})
        );
    }

    #[test]
    fn mistakes_are_caught_when_loading() {
        let long_cta = "x".repeat(31);
        for (yaml, expected) in [
            (
                "body: b\ncta: c\n".to_string(),
                "give `flow_id` or `flow_name`",
            ),
            (
                format!("{MINIMAL}flow_name: n\n"),
                "`flow_id` or `flow_name`, not both",
            ),
            (
                format!("{MINIMAL}data: {{ a: b }}\n"),
                "`data` needs `screen`",
            ),
            (
                format!("flow_id: '1'\nbody: b\ncta: {long_cta}\n"),
                "`cta` is 31 characters",
            ),
            (
                format!("{MINIMAL}header: {}\n", "h".repeat(61)),
                "`header` is 61 characters",
            ),
            (
                format!(
                    "flow_id: '1'\nbody: b\ncta: c\nfooter: {}\n",
                    "f".repeat(61)
                ),
                "`footer` is 61 characters",
            ),
            (
                format!("flow_id: '1'\ncta: c\nbody: {}\n", "b".repeat(1025)),
                "`body` is 1025 characters",
            ),
            (
                "flow_id: '1'\nbody: ' '\ncta: c\n".into(),
                "`body` is empty",
            ),
            (format!("{MINIMAL}mode: live\n"), "live"),
            (format!("{MINIMAL}colour: red\n"), "colour"),
        ] {
            let error = load(&yaml).map(|_| ()).expect_err(&yaml);
            assert!(error.contains(expected), "{yaml}: {error}");
        }
        let exactly_30 = format!("flow_id: '1'\nbody: b\ncta: {}\n", "x".repeat(30));
        assert!(load(&exactly_30).is_ok());
    }

    #[test]
    fn a_rendered_cta_over_30_characters_fails_clearly() {
        let error = render("flow_id: '1'\nbody: b\ncta: \"{{ trigger.text }}\"\n").unwrap_err();
        assert_eq!(error.class, ErrorClass::ProviderError);
        assert!(
            error
                .message
                .contains("`cta` is 31 characters (\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"); WhatsApp allows at most 30"),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_missing_variable_fails_naming_it() {
        let error =
            render(&format!("{MINIMAL}screen: \"{{{{ trigger.screen }}}}\"\n")).unwrap_err();
        assert_eq!(error.class, ErrorClass::MissingVariable);
        assert_eq!(error.message, "Missing variable trigger.screen");
    }
}
