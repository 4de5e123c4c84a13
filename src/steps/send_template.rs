//! `send_template`: sends an approved template to a recipient (E.164), with positional
//! (`{{1}}`, `{{2}}`, ...) or named body variables, an optional header parameter (text, image,
//! video or document) and button parameters by index (quick-reply payloads, URL suffixes, a FLOW
//! button with its `flow_token` and `flow_action_data`), all rendered from the run's data.
//! Before the call to Meta the send is checked against the run-time template catalog (known,
//! APPROVED, the right variables) and the recipient's opt-out (no MARKETING template).

use std::collections::BTreeMap;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ErrorClass, Recipient, Sent, Step, StepContext, StepError, StepOutput, sender};
use crate::{
    domain::{LanguageCode, PhoneNumber, TemplateName},
    expr::Text,
    providers::whatsapp::{Message, request_body},
    templates::catalog::Variables,
};

/// A template has at most 10 buttons.
pub const MAX_BUTTONS: usize = 10;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendTemplate {
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
    /// The recipient's name, kept by Herald in the step's input and output (the Cloud API has
    /// no name field on a send).
    #[serde(default)]
    pub recipient_name: Option<Text>,
    pub template: TemplateName,
    pub language: LanguageCode,
    /// The header's parameter, for a template whose header has a variable or media.
    #[serde(default)]
    pub header: Option<Header>,
    /// The body's variables: a list for `{{1}}`, `{{2}}`, ... or a map for named parameters.
    #[serde(default)]
    pub variables: Variables,
    /// Button parameters by the button's position in the template: the first entry is button
    /// 0, the second button 1, ... A `~` (null) entry skips a button that takes no parameter.
    #[serde(default)]
    pub buttons: Buttons,
}

/// A header parameter as written: exactly one of `text`, `image`, `video`, `document`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderSpec {
    /// The text header's variable.
    #[serde(default)]
    pub text: Option<Text>,
    /// The text variable's name, for a template with named parameters.
    #[serde(default)]
    pub parameter_name: Option<String>,
    #[serde(default)]
    pub image: Option<Media>,
    #[serde(default)]
    pub video: Option<Media>,
    #[serde(default)]
    pub document: Option<Media>,
}

/// A header parameter, checked when the workflow loads.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "HeaderSpec")]
pub enum Header {
    Text {
        text: Text,
        parameter_name: Option<String>,
    },
    Image(Media),
    Video(Media),
    Document(Media),
}

impl TryFrom<HeaderSpec> for Header {
    type Error = String;
    fn try_from(spec: HeaderSpec) -> Result<Self, String> {
        if spec.parameter_name.is_some() && spec.text.is_none() {
            return Err("header: `parameter_name` goes with a `text` header only".into());
        }
        let no_filename = |media: Media| {
            if media.filename.is_some() {
                Err("header: `filename` goes with a `document` only".to_string())
            } else {
                Ok(media)
            }
        };
        Ok(match (spec.text, spec.image, spec.video, spec.document) {
            (Some(text), None, None, None) => Header::Text {
                text,
                parameter_name: spec.parameter_name,
            },
            (None, Some(image), None, None) => Header::Image(no_filename(image)?),
            (None, None, Some(video), None) => Header::Video(no_filename(video)?),
            (None, None, None, Some(document)) => Header::Document(document),
            _ => {
                return Err(
                    "header: give exactly one of `text`, `image`, `video` or `document`".into(),
                );
            }
        })
    }
}

/// A header's media as written: a public `link` or an uploaded media `id` (exactly one), and for
/// a document an optional `filename`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MediaSpec {
    #[serde(default)]
    pub link: Option<Text>,
    #[serde(default)]
    pub id: Option<Text>,
    #[serde(default)]
    pub filename: Option<Text>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "MediaSpec")]
pub struct Media {
    pub source: MediaSource,
    pub filename: Option<Text>,
}

#[derive(Debug, Clone)]
pub enum MediaSource {
    Link(Text),
    Id(Text),
}

impl TryFrom<MediaSpec> for Media {
    type Error = String;
    fn try_from(spec: MediaSpec) -> Result<Self, String> {
        let source = match (spec.link, spec.id) {
            (Some(link), None) => MediaSource::Link(link),
            (None, Some(id)) => MediaSource::Id(id),
            _ => return Err("header media: give exactly one of `link` or `id`".into()),
        };
        Ok(Media {
            source,
            filename: spec.filename,
        })
    }
}

/// One button's parameter.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Button {
    /// A quick-reply button's payload (it comes back as `trigger.button_payload`).
    QuickReply(Text),
    /// The variable suffix of a dynamic URL button.
    Url(Text),
    /// A FLOW button (`flow:` alone, or with `flow_token` / `flow_action_data`).
    Flow(Option<FlowButton>),
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowButton {
    /// Comes back with the Flow's answer (`whatsapp.flow_completed`); defaults to
    /// `<run id>.<step id>`.
    #[serde(default)]
    pub flow_token: Option<Text>,
    /// Data for the Flow's first screen.
    #[serde(default)]
    pub flow_action_data: Option<BTreeMap<String, Text>>,
}

/// The buttons' parameters, at most [`MAX_BUTTONS`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(try_from = "Vec<Option<Button>>")]
pub struct Buttons(pub Vec<Option<Button>>);

impl TryFrom<Vec<Option<Button>>> for Buttons {
    type Error = String;
    fn try_from(buttons: Vec<Option<Button>>) -> Result<Self, String> {
        if buttons.len() > MAX_BUTTONS {
            return Err(format!(
                "buttons: {} given; a template has at most {MAX_BUTTONS}",
                buttons.len()
            ));
        }
        Ok(Buttons(buttons))
    }
}

/// These types are written as their spec (checked by `try_from` when the workflow loads).
macro_rules! schema_as {
    ($($t:ty => $spec:ty,)*) => {$(
        impl JsonSchema for $t {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($t).into()
            }
            fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
                <$spec as JsonSchema>::json_schema(generator)
            }
        }
    )*};
}
schema_as! {
    Header => HeaderSpec,
    Media => MediaSpec,
    Buttons => Vec<Option<Button>>,
}

/// A rendered header parameter. Its JSON (recorded with the step's input) is `{"type": ...}`
/// plus the Cloud API's parameter fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HeaderParam {
    Text {
        text: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        parameter_name: Option<String>,
    },
    Image(MediaParam),
    Video(MediaParam),
    Document(MediaParam),
}

/// A rendered media object: exactly the Cloud API's `{"link" | "id", "filename"?}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MediaParam {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

impl HeaderParam {
    /// The Cloud API `header` component.
    pub fn component(&self) -> Value {
        let parameter = match self {
            HeaderParam::Text {
                text,
                parameter_name,
            } => {
                let mut p = json!({"type": "text", "text": text});
                if let Some(name) = parameter_name {
                    p["parameter_name"] = json!(name);
                }
                p
            }
            HeaderParam::Image(m) => json!({"type": "image", "image": m}),
            HeaderParam::Video(m) => json!({"type": "video", "video": m}),
            HeaderParam::Document(m) => json!({"type": "document", "document": m}),
        };
        json!({"type": "header", "parameters": [parameter]})
    }
}

/// A rendered button parameter (recorded with the step's input).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ButtonParam {
    QuickReply {
        payload: String,
    },
    Url {
        text: String,
    },
    Flow {
        flow_token: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        flow_action_data: Option<BTreeMap<String, String>>,
    },
}

impl ButtonParam {
    /// The Cloud API `button` component for the template's button number `index`.
    pub fn component(&self, index: usize) -> Value {
        let (sub_type, parameter) = match self {
            ButtonParam::QuickReply { payload } => (
                "quick_reply",
                json!({"type": "payload", "payload": payload}),
            ),
            ButtonParam::Url { text } => ("url", json!({"type": "text", "text": text})),
            ButtonParam::Flow {
                flow_token,
                flow_action_data,
            } => {
                let mut action = json!({"flow_token": flow_token});
                if let Some(data) = flow_action_data {
                    action["flow_action_data"] = json!(data);
                }
                ("flow", json!({"type": "action", "action": action}))
            }
        };
        json!({
            "type": "button",
            "sub_type": sub_type,
            "index": index.to_string(),
            "parameters": [parameter],
        })
    }
}

/// The Cloud API components in order: header, body, then one per button with a parameter
/// (skipped buttons keep their index).
pub fn components(
    header: Option<&HeaderParam>,
    body: Vec<Value>,
    buttons: &[Option<ButtonParam>],
) -> Vec<Value> {
    let mut components = Vec::new();
    if let Some(header) = header {
        components.push(header.component());
    }
    if !body.is_empty() {
        components.push(json!({"type": "body", "parameters": body}));
    }
    components.extend(
        buttons
            .iter()
            .enumerate()
            .filter_map(|(index, b)| b.as_ref().map(|b| b.component(index))),
    );
    components
}

/// The flow token when the step gives none: `<run id>.<step id>`, so that the Flow's answer
/// (`whatsapp.flow_completed`) names the run and step that sent it.
pub fn default_flow_token(run_id: uuid::Uuid, step_id: &str) -> String {
    format!("{run_id}.{step_id}")
}

fn invalid(message: String) -> StepError {
    StepError::new(ErrorClass::ProviderError, message)
}

fn render_media(media: &Media, data: &Value) -> Result<MediaParam, StepError> {
    let (link, id) = match &media.source {
        MediaSource::Link(link) => (Some(link.render(data)?), None),
        MediaSource::Id(id) => (None, Some(id.render(data)?)),
    };
    if link.iter().chain(id.iter()).any(|v| v.trim().is_empty()) {
        return Err(invalid("header media: the link or id is empty".into()));
    }
    let filename = media
        .filename
        .as_ref()
        .map(|f| f.render(data))
        .transpose()?;
    Ok(MediaParam { link, id, filename })
}

impl Header {
    pub fn render(&self, data: &Value) -> Result<HeaderParam, StepError> {
        Ok(match self {
            Header::Text {
                text,
                parameter_name,
            } => HeaderParam::Text {
                text: text.render(data)?,
                parameter_name: parameter_name.clone(),
            },
            Header::Image(m) => HeaderParam::Image(render_media(m, data)?),
            Header::Video(m) => HeaderParam::Video(render_media(m, data)?),
            Header::Document(m) => HeaderParam::Document(render_media(m, data)?),
        })
    }
}

impl Button {
    pub fn render(&self, data: &Value, default_token: &str) -> Result<ButtonParam, StepError> {
        Ok(match self {
            Button::QuickReply(payload) => ButtonParam::QuickReply {
                payload: payload.render(data)?,
            },
            Button::Url(text) => ButtonParam::Url {
                text: text.render(data)?,
            },
            Button::Flow(flow) => {
                let flow = flow.clone().unwrap_or_default();
                let flow_token = match &flow.flow_token {
                    Some(t) => t.render(data)?,
                    None => default_token.to_string(),
                };
                if flow_token.trim().is_empty() {
                    return Err(invalid("flow button: flow_token is empty".into()));
                }
                let flow_action_data = flow
                    .flow_action_data
                    .as_ref()
                    .map(|map| {
                        map.iter()
                            .map(|(k, v)| Ok((k.clone(), v.render(data)?)))
                            .collect::<Result<BTreeMap<_, _>, StepError>>()
                    })
                    .transpose()?;
                ButtonParam::Flow {
                    flow_token,
                    flow_action_data,
                }
            }
        })
    }
}

#[derive(Debug, Serialize)]
pub struct Input {
    pub sender: String,
    pub to: PhoneNumber,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient_name: Option<String>,
    pub template: String,
    pub language: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderParam>,
    pub variables: Value,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<Option<ButtonParam>>,
    /// The FLOW button's token, when the template has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_token: Option<String>,
    #[serde(skip)]
    pub message: Message,
}

impl SendTemplate {
    /// `render` without the context: the run's data and the default flow token.
    pub fn render_with(
        &self,
        sender: String,
        data: &Value,
        default_token: &str,
    ) -> Result<Input, StepError> {
        let to = self.to.render(data)?;
        let recipient_name = self
            .recipient_name
            .as_ref()
            .map(|n| n.render(data))
            .transpose()?;
        let header = self.header.as_ref().map(|h| h.render(data)).transpose()?;
        let (variables, parameters) = match &self.variables {
            Variables::Positional(list) => {
                let values = list
                    .iter()
                    .map(|t| t.render(data))
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
                    let v = text.render(data)?;
                    params.push(json!({"type": "text", "parameter_name": name, "text": v}));
                    values.insert(name.clone(), Value::String(v));
                }
                (Value::Object(values), params)
            }
        };
        let buttons = self
            .buttons
            .0
            .iter()
            .map(|b| {
                b.as_ref()
                    .map(|b| b.render(data, default_token))
                    .transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let flow_token = buttons.iter().flatten().find_map(|b| match b {
            ButtonParam::Flow { flow_token, .. } => Some(flow_token.clone()),
            _ => None,
        });
        Ok(Input {
            sender,
            to,
            recipient_name,
            template: self.template.to_string(),
            language: self.language.to_string(),
            message: Message::Template {
                name: self.template.to_string(),
                language: self.language.to_string(),
                components: components(header.as_ref(), parameters, &buttons),
            },
            header,
            variables,
            buttons,
            flow_token,
        })
    }
}

impl SendTemplate {
    /// Fails "Template not found" when the catalog has rows and this template is unknown, not
    /// APPROVED or takes other variables; "Opted out" when it is a MARKETING template and the
    /// recipient opted out. An empty catalog checks nothing (and knows no category).
    async fn check_catalog_and_opt_out(
        &self,
        to: &PhoneNumber,
        ctx: &StepContext<'_>,
    ) -> Result<(), StepError> {
        let facts = ctx
            .services
            .facts
            .send_facts(self.template.as_str(), self.language.as_str(), to)
            .await
            .map_err(|e| {
                super::database_away("reading the template catalog and the contact's opt-out", &e)
            })?;
        if facts.catalog {
            crate::templates::catalog::check_send(
                facts.template.as_ref(),
                &self.template,
                &self.language,
                &self.variables,
            )
            .map_err(|reason| StepError::new(ErrorClass::TemplateNotFound, reason))?;
        }
        let marketing = facts
            .template
            .as_ref()
            .is_some_and(|t| t.category == crate::domain::TemplateCategory::Marketing);
        if marketing && facts.opted_out {
            return Err(StepError::new(
                ErrorClass::OptedOut,
                format!(
                    "Opted out: {to} unsubscribed; the marketing template '{}' ({}) was not sent",
                    self.template, self.language
                ),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Step for SendTemplate {
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
            &default_flow_token(ctx.run_id, ctx.step_id),
        )
        .map(Box::new)
    }

    async fn execute(
        &self,
        input: Box<Input>,
        ctx: &StepContext<'_>,
    ) -> Result<StepOutput, StepError> {
        self.check_catalog_and_opt_out(&input.to, ctx).await?;
        let request = request_body(&input.to, &input.message);
        let receipt = ctx
            .services
            .senders
            .send(&ctx.services.whatsapp, &input.sender, &input.to, &request)
            .await?;
        let mut output = json!({
            "message_id": receipt.wamid,
            "to": input.to,
            "template": input.template,
            "language": input.language,
            "variables": input.variables,
        });
        if let Some(name) = &input.recipient_name {
            output["recipient_name"] = json!(name);
        }
        if let Some(token) = &input.flow_token {
            output["flow_token"] = json!(token);
        }
        Ok(StepOutput::new(output).with_sent(Sent {
            sender_id: input.sender,
            recipient: input.to.to_string(),
            kind: input.message.kind(),
            provider: receipt.provider,
            request,
            wamid: receipt.wamid,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0190a0b0-0000-7000-8000-000000000001.survey";

    fn step(yaml: &str) -> SendTemplate {
        serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    fn load_error(yaml: &str) -> String {
        serde_saphyr::from_str::<SendTemplate>(yaml)
            .map(|_| ())
            .expect_err("should not load")
            .to_string()
    }

    fn data() -> Value {
        json!({"trigger": {
            "customer_phone": "+5511987650001",
            "contact_name": "Ana Souza",
            "agent_name": "Bia",
            "order_id": "A-17",
        }})
    }

    fn render(yaml: &str) -> Input {
        step(yaml)
            .render_with("113355779900224".into(), &data(), TOKEN)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn components_of(input: &Input) -> Vec<Value> {
        match &input.message {
            Message::Template { components, .. } => components.clone(),
            other => panic!("not a template: {other:?}"),
        }
    }

    const BASE: &str = "template: csat_survey\nlanguage: pt_BR\n";

    #[test]
    fn a_template_without_parameters_has_no_components() {
        let input = render(BASE);
        assert!(components_of(&input).is_empty());
        assert_eq!(input.flow_token, None);
        assert_eq!(input.recipient_name, None);
        let recorded = serde_json::to_value(&input).unwrap();
        assert!(recorded.get("buttons").is_none());
        assert!(recorded.get("header").is_none());
    }

    #[test]
    fn a_text_header_renders_its_variable() {
        let input = render(&format!(
            "{BASE}header:\n  text: \"{{{{ trigger.agent_name }}}}\"\n"
        ));
        assert_eq!(
            components_of(&input),
            vec![json!({"type": "header", "parameters": [{"type": "text", "text": "Bia"}]})]
        );
        let named = render(&format!(
            "{BASE}header:\n  text: Bia\n  parameter_name: agent\n"
        ));
        assert_eq!(
            components_of(&named)[0]["parameters"][0],
            json!({"type": "text", "parameter_name": "agent", "text": "Bia"})
        );
    }

    #[test]
    fn media_headers_take_a_link_or_an_id() {
        let image = render(&format!(
            "{BASE}header:\n  image: {{ link: \"https://cdn.example.com/{{{{ trigger.order_id }}}}.png\" }}\n"
        ));
        assert_eq!(
            components_of(&image)[0],
            json!({"type": "header", "parameters": [
                {"type": "image", "image": {"link": "https://cdn.example.com/A-17.png"}}
            ]})
        );
        let video = render(&format!("{BASE}header:\n  video: {{ id: \"1234\" }}\n"));
        assert_eq!(
            components_of(&video)[0]["parameters"][0],
            json!({"type": "video", "video": {"id": "1234"}})
        );
        let document = render(&format!(
            "{BASE}header:\n  document: {{ link: \"https://x.example/i.pdf\", filename: \"invoice-{{{{ trigger.order_id }}}}.pdf\" }}\n"
        ));
        assert_eq!(
            components_of(&document)[0]["parameters"][0],
            json!({"type": "document", "document": {
                "link": "https://x.example/i.pdf", "filename": "invoice-A-17.pdf"
            }})
        );
        assert_eq!(
            serde_json::to_value(&document.header).unwrap(),
            json!({"type": "document", "link": "https://x.example/i.pdf", "filename": "invoice-A-17.pdf"})
        );
    }

    #[test]
    fn a_bad_header_is_caught_when_loading() {
        for (yaml, expected) in [
            ("header: {}\n", "exactly one of `text`"),
            (
                "header:\n  text: a\n  image: { id: '1' }\n",
                "exactly one of `text`",
            ),
            ("header:\n  image: {}\n", "exactly one of `link` or `id`"),
            (
                "header:\n  image: { id: '1', link: 'https://x' }\n",
                "exactly one of `link` or `id`",
            ),
            (
                "header:\n  image: { id: '1', filename: a.png }\n",
                "`filename` goes with a `document`",
            ),
            (
                "header:\n  image: { id: '1' }\n  parameter_name: x\n",
                "`parameter_name` goes with a `text`",
            ),
            ("header:\n  audio: { id: '1' }\n", "audio"),
        ] {
            let error = load_error(&format!("{BASE}{yaml}"));
            assert!(error.contains(expected), "{yaml}: {error}");
        }
    }

    #[test]
    fn buttons_are_numbered_by_position_and_skipped_ones_keep_their_index() {
        let input = render(&format!(
            "{BASE}buttons:\n  - quick_reply: CALLBACK_YES\n  - ~\n  - url: \"order/{{{{ trigger.order_id }}}}\"\n  - quick_reply: \"NO_{{{{ trigger.order_id }}}}\"\n"
        ));
        assert_eq!(
            components_of(&input),
            vec![
                json!({"type": "button", "sub_type": "quick_reply", "index": "0",
                       "parameters": [{"type": "payload", "payload": "CALLBACK_YES"}]}),
                json!({"type": "button", "sub_type": "url", "index": "2",
                       "parameters": [{"type": "text", "text": "order/A-17"}]}),
                json!({"type": "button", "sub_type": "quick_reply", "index": "3",
                       "parameters": [{"type": "payload", "payload": "NO_A-17"}]}),
            ]
        );
        assert_eq!(
            serde_json::to_value(&input.buttons).unwrap(),
            json!([
                {"type": "quick_reply", "payload": "CALLBACK_YES"},
                null,
                {"type": "url", "text": "order/A-17"},
                {"type": "quick_reply", "payload": "NO_A-17"},
            ])
        );
        assert_eq!(input.flow_token, None);
    }

    #[test]
    fn a_flow_button_defaults_its_token_to_run_and_step() {
        for yaml in ["buttons:\n  - flow:\n", "buttons:\n  - flow: {}\n"] {
            let input = render(&format!("{BASE}{yaml}"));
            assert_eq!(
                components_of(&input),
                vec![json!({"type": "button", "sub_type": "flow", "index": "0",
                            "parameters": [{"type": "action", "action": {"flow_token": TOKEN}}]})],
                "{yaml}"
            );
            assert_eq!(input.flow_token.as_deref(), Some(TOKEN));
        }
        assert_eq!(
            default_flow_token(uuid::Uuid::nil(), "survey"),
            "00000000-0000-0000-0000-000000000000.survey"
        );
    }

    #[test]
    fn a_flow_button_carries_its_token_and_action_data() {
        let input = render(&format!(
            "{BASE}buttons:\n  - url: x\n  - flow:\n      flow_token: \"csat-{{{{ trigger.order_id }}}}\"\n      flow_action_data: {{ customer: \"{{{{ trigger.contact_name }}}}\", order: \"{{{{ trigger.order_id }}}}\" }}\n"
        ));
        assert_eq!(
            components_of(&input)[1],
            json!({"type": "button", "sub_type": "flow", "index": "1", "parameters": [
                {"type": "action", "action": {
                    "flow_token": "csat-A-17",
                    "flow_action_data": {"customer": "Ana Souza", "order": "A-17"}
                }}
            ]})
        );
        assert_eq!(input.flow_token.as_deref(), Some("csat-A-17"));
    }

    #[test]
    fn header_body_and_buttons_come_in_that_order_with_the_recipient_name_recorded() {
        let input = render(&format!(
            "{BASE}recipient_name: \"{{{{ trigger.contact_name }}}}\"\nbuttons:\n  - quick_reply: Y\nvariables: {{ name: \"{{{{ trigger.contact_name }}}}\" }}\nheader:\n  text: T\n"
        ));
        let types: Vec<_> = components_of(&input)
            .iter()
            .map(|c| c["type"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(types, ["header", "body", "button"]);
        assert_eq!(
            components_of(&input)[1]["parameters"][0],
            json!({"type": "text", "parameter_name": "name", "text": "Ana Souza"})
        );
        assert_eq!(input.recipient_name.as_deref(), Some("Ana Souza"));
        let recorded = serde_json::to_value(&input).unwrap();
        assert_eq!(recorded["recipient_name"], "Ana Souza");
        assert_eq!(recorded["header"], json!({"type": "text", "text": "T"}));
    }

    #[test]
    fn bad_buttons_are_caught_when_loading() {
        let eleven = "  - quick_reply: A\n".repeat(11);
        assert!(load_error(&format!("{BASE}buttons:\n{eleven}")).contains("at most 10"));
        assert!(load_error(&format!("{BASE}buttons:\n  - phone: '+1'\n")).contains("phone"));
        assert!(
            load_error(&format!("{BASE}buttons:\n  - flow: {{ token: x }}\n")).contains("token")
        );
    }

    #[test]
    fn a_missing_variable_in_a_button_fails_naming_it() {
        let error = step(&format!(
            "{BASE}buttons:\n  - url: \"{{{{ trigger.nope }}}}\"\n"
        ))
        .render_with("1".into(), &data(), TOKEN)
        .unwrap_err();
        assert_eq!(error.message, "Missing variable trigger.nope");
        assert_eq!(error.class, ErrorClass::MissingVariable);
    }
}
