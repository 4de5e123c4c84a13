//! WhatsApp Cloud API (Graph API) sends, and the sandbox that records instead of sending; the
//! WABA's template list. The only module that knows the Graph API's JSON shapes and error codes.

use std::{collections::BTreeMap, time::Duration};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    config::Secret,
    domain::PhoneNumber,
    failure::{ErrorClass, StepError},
};

/// A message to send, in Herald's terms.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Message {
    Template {
        name: String,
        language: String,
        /// Graph API `components` (header, body, button parameters).
        components: Vec<Value>,
    },
    Text {
        body: String,
    },
    /// An interactive WhatsApp Flow message (only inside the 24-hour window).
    Flow(Box<FlowMessage>),
}

impl Message {
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Template { .. } => "template",
            Message::Text { .. } => "text",
            Message::Flow(_) => "flow",
        }
    }
}

/// An interactive Flow message, rendered: what `request_body` turns into
/// `{"type": "interactive", "interactive": {"type": "flow", ...}}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FlowMessage {
    /// `flow_id` or `flow_name`.
    #[serde(flatten)]
    pub flow: FlowRef,
    pub body: String,
    /// The button's text (`flow_cta`).
    pub cta: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub footer: Option<String>,
    /// Comes back in the Flow's `nfm_reply` (`whatsapp.flow_completed`'s `flow_token`).
    pub flow_token: String,
    pub mode: FlowMode,
    /// The first screen and its data (`flow_action: navigate`); the Flow's own first screen
    /// when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_action_payload: Option<FlowActionPayload>,
}

/// Which Flow to open: by id or by name.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowRef {
    FlowId(String),
    FlowName(String),
}

/// A Flow's mode: `published` (the default) or `draft` (for testing an unpublished Flow).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FlowMode {
    #[default]
    Published,
    Draft,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FlowActionPayload {
    pub screen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<BTreeMap<String, String>>,
}

/// The Graph API `interactive` object of a Flow message (whatsapp-cloud-api.md §6).
fn flow_interactive(flow: &FlowMessage) -> Value {
    let mut parameters = json!({
        "flow_message_version": "3",
        "flow_cta": flow.cta,
        "flow_token": flow.flow_token,
        "mode": flow.mode,
        "flow_action": "navigate",
    });
    match &flow.flow {
        FlowRef::FlowId(id) => parameters["flow_id"] = json!(id),
        FlowRef::FlowName(name) => parameters["flow_name"] = json!(name),
    }
    if let Some(payload) = &flow.flow_action_payload {
        parameters["flow_action_payload"] = json!(payload);
    }
    let mut interactive = json!({
        "type": "flow",
        "body": { "text": flow.body },
        "action": { "name": "flow", "parameters": parameters },
    });
    if let Some(header) = &flow.header {
        interactive["header"] = json!({ "type": "text", "text": header });
    }
    if let Some(footer) = &flow.footer {
        interactive["footer"] = json!({ "text": footer });
    }
    interactive
}

/// The Graph API request body for a message.
pub fn request_body(to: &PhoneNumber, message: &Message) -> Value {
    match message {
        Message::Template {
            name,
            language,
            components,
        } => {
            let mut template = json!({ "name": name, "language": { "policy": "deterministic", "code": language } });
            if !components.is_empty() {
                template["components"] = Value::Array(components.clone());
            }
            json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": to.digits(),
                "type": "template",
                "template": template,
            })
        }
        Message::Text { body } => json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to.digits(),
            "type": "text",
            "text": { "preview_url": false, "body": body },
        }),
        Message::Flow(flow) => json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to.digits(),
            "type": "interactive",
            "interactive": flow_interactive(flow),
        }),
    }
}

/// What the provider answered for an accepted message.
#[derive(Clone, Debug)]
pub struct Receipt {
    /// Meta's message id; [`UNKNOWN_WAMID`] then a unique suffix when Meta accepted the message
    /// (a 2xx) but its answer could not be read or named no id.
    pub wamid: String,
    pub provider: &'static str,
}

/// How the wamid of a message Meta accepted without naming its id begins (`unknown.<uuid>`):
/// unique, so that each such send keeps its own outbound row, and never a real wamid
/// (those begin `wamid.`), so that no status webhook ever matches it.
pub const UNKNOWN_WAMID: &str = "unknown.";

impl Receipt {
    /// Whether Meta named the message's id.
    pub fn wamid_known(&self) -> bool {
        !self.wamid.starts_with(UNKNOWN_WAMID)
    }
}

/// A failed send, classified.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{class}: {message}")]
pub struct SendError {
    pub class: ErrorClass,
    pub code: Option<i64>,
    pub http_status: Option<u16>,
    pub message: String,
    /// Seconds the provider asked us to wait (Retry-After), if any.
    pub retry_after: Option<Duration>,
}

impl From<SendError> for StepError {
    fn from(e: SendError) -> Self {
        StepError::from_provider(
            e.class,
            format!("{}: {}", e.class, e.message),
            e.http_status,
            e.code,
            e.retry_after,
        )
    }
}

/// Sends through the Graph API, or records in the sandbox when no access token is configured.
#[derive(Clone)]
pub enum WhatsApp {
    Sandbox,
    Graph(GraphClient),
}

#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    base_url: String,
    token: Secret,
}

impl WhatsApp {
    pub fn graph(base_url: &str, token: Secret, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(WhatsApp::Graph(GraphClient {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            token,
        }))
    }

    pub fn provider_name(&self) -> &'static str {
        match self {
            WhatsApp::Sandbox => "sandbox",
            WhatsApp::Graph(_) => "whatsapp",
        }
    }

    /// Sends `body` (from [`request_body`]) from the sender `phone_number_id`.
    pub async fn send(&self, phone_number_id: &str, body: &Value) -> Result<Receipt, SendError> {
        match self {
            WhatsApp::Sandbox => {
                let wamid = format!("wamid.sandbox.{}", uuid::Uuid::now_v7().simple());
                tracing::info!(
                    sender = phone_number_id,
                    to = body["to"].as_str().unwrap_or_default(),
                    kind = body["type"].as_str().unwrap_or_default(),
                    template = body["template"]["name"].as_str(),
                    language = body["template"]["language"]["code"].as_str(),
                    request = %body,
                    wamid,
                    "sandbox sent"
                );
                Ok(Receipt {
                    wamid,
                    provider: "sandbox",
                })
            }
            WhatsApp::Graph(client) => client.send(phone_number_id, body).await,
        }
    }
}

impl GraphClient {
    async fn send(&self, phone_number_id: &str, body: &Value) -> Result<Receipt, SendError> {
        let url = format!("{}/{}/messages", self.base_url, phone_number_id);
        let response = self
            .http
            .post(&url)
            .bearer_auth(self.token.expose())
            .json(body)
            .send()
            .await
            .map_err(|e| SendError {
                class: ErrorClass::ProviderError,
                code: None,
                http_status: None,
                message: if e.is_timeout() {
                    "Graph API timed out".into()
                } else {
                    format!("Graph API unreachable: {}", without_url(&e))
                },
                retry_after: None,
            })?;
        let status = response.status();
        let retry_after = super::retry_after(response.headers());
        let read = response.bytes().await;
        if status.is_success() {
            return Ok(accepted(status, read));
        }
        let bytes = read.unwrap_or_default();
        let (code, message) = parse_error_body(&bytes);
        Err(SendError {
            class: classify(code, status.as_u16()),
            code,
            http_status: Some(status.as_u16()),
            message: message.unwrap_or_else(|| format!("Graph API answered HTTP {status}")),
            retry_after,
        })
    }
}

/// The receipt of a send Meta answered with a 2xx. A 2xx means the message was accepted and
/// will be delivered: even when the answer cannot be read or names no id, the send happened,
/// and retrying it would send the message twice. It is recorded as sent with an unknown wamid.
fn accepted(status: reqwest::StatusCode, read: Result<bytes::Bytes, reqwest::Error>) -> Receipt {
    let problem = match &read {
        Err(e) => format!("its body could not be read: {}", without_url(e)),
        Ok(bytes) => match serde_json::from_slice::<Value>(bytes) {
            Err(e) => format!("its body is not JSON: {e}"),
            Ok(parsed) => match parsed["messages"][0]["id"].as_str() {
                Some(id) if !id.is_empty() => {
                    return Receipt {
                        wamid: id.to_string(),
                        provider: "whatsapp",
                    };
                }
                _ => "it names no message id".to_string(),
            },
        },
    };
    let wamid = format!("{UNKNOWN_WAMID}{}", uuid::Uuid::now_v7().simple());
    metrics::counter!("herald_whatsapp_sent_unknown_total").increment(1);
    tracing::warn!(
        http_status = status.as_u16(),
        problem,
        wamid,
        "Graph API accepted the message but its answer is unreadable; recorded as sent with an \
         unknown wamid (not retried: that would send it twice)"
    );
    Receipt {
        wamid,
        provider: "whatsapp",
    }
}

/// One template of the WABA's list (`GET /{waba-id}/message_templates`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedTemplate {
    pub name: String,
    /// `en_US` (a `-` is written `_`).
    pub language: String,
    /// `APPROVED`, `PENDING`, `REJECTED`, `PAUSED`, `DISABLED`, ...
    pub status: String,
    /// `MARKETING`, `UTILITY` or `AUTHENTICATION`.
    pub category: String,
    /// Positional body parameters (`{{1}}`..`{{n}}`): n.
    pub body_parameters: usize,
    /// Named body parameters (`{{name}}`), in order of appearance.
    pub named_parameters: Vec<String>,
}

/// The template list could not be read (the last known catalog stays).
#[derive(Debug, thiserror::Error)]
#[error("template list: {0}")]
pub struct ListTemplatesError(String);

/// Templates per page asked of the Graph API.
const TEMPLATE_PAGE_SIZE: usize = 100;
/// A bound on the pages read in one sync (100 x 100 templates), against a paging loop.
const MAX_TEMPLATE_PAGES: usize = 100;

impl WhatsApp {
    /// Every template of the WhatsApp Business Account `waba_id`, following the pages. The
    /// sandbox has none to list.
    pub async fn list_templates(
        &self,
        waba_id: &str,
    ) -> Result<Vec<ListedTemplate>, ListTemplatesError> {
        match self {
            WhatsApp::Sandbox => Err(ListTemplatesError(
                "the sandbox sender has no template list (set WHATSAPP_ACCESS_TOKEN)".into(),
            )),
            WhatsApp::Graph(client) => client.list_templates(waba_id).await,
        }
    }
}

impl GraphClient {
    async fn list_templates(
        &self,
        waba_id: &str,
    ) -> Result<Vec<ListedTemplate>, ListTemplatesError> {
        let url = format!("{}/{}/message_templates", self.base_url, waba_id);
        let limit = TEMPLATE_PAGE_SIZE.to_string();
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_TEMPLATE_PAGES {
            let mut query = vec![
                (
                    "fields",
                    "name,language,status,category,components,parameter_format",
                ),
                ("limit", limit.as_str()),
            ];
            if let Some(cursor) = &after {
                query.push(("after", cursor.as_str()));
            }
            let page_url = reqwest::Url::parse_with_params(&url, &query)
                .map_err(|e| ListTemplatesError(format!("bad Graph API URL: {e}")))?;
            let response = self
                .http
                .get(page_url)
                .bearer_auth(self.token.expose())
                .send()
                .await
                .map_err(|e| {
                    ListTemplatesError(format!("Graph API unreachable: {}", without_url(&e)))
                })?;
            let status = response.status();
            let bytes = response.bytes().await.map_err(|e| {
                ListTemplatesError(format!("reading the answer: {}", without_url(&e)))
            })?;
            if !status.is_success() {
                let (code, message) = parse_error_body(&bytes);
                return Err(ListTemplatesError(format!(
                    "Graph API answered HTTP {status}{}{}",
                    code.map(|c| format!(" (code {c})")).unwrap_or_default(),
                    message.map(|m| format!(": {m}")).unwrap_or_default()
                )));
            }
            let page: Value = serde_json::from_slice(&bytes)
                .map_err(|e| ListTemplatesError(format!("answer is not JSON: {e}")))?;
            let (mut templates, next) = parse_template_page(&page).map_err(ListTemplatesError)?;
            all.append(&mut templates);
            match next {
                Some(cursor) => after = Some(cursor),
                None => return Ok(all),
            }
        }
        Err(ListTemplatesError(format!(
            "more than {MAX_TEMPLATE_PAGES} pages; stopped"
        )))
    }
}

/// Reads one page of the template list: `{"data": [{name, language, status, category,
/// components: [{type: "BODY", text}], parameter_format?}], "paging": {"cursors": {"after"},
/// "next"?}}`. Returns the templates and the cursor of the next page (only when `next` says
/// there is one). Entries without a name or language are skipped.
pub fn parse_template_page(page: &Value) -> Result<(Vec<ListedTemplate>, Option<String>), String> {
    let data = page
        .get("data")
        .and_then(Value::as_array)
        .ok_or("the answer has no `data` list")?;
    let text = |t: &Value, key: &str| t.get(key).and_then(Value::as_str).map(str::to_string);
    let templates = data
        .iter()
        .filter_map(|t| {
            let name = text(t, "name")?;
            let language = text(t, "language")?.replace('-', "_");
            let body = t
                .get("components")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|c| {
                    c.get("type")
                        .and_then(Value::as_str)
                        .is_some_and(|k| k.eq_ignore_ascii_case("body"))
                })
                .and_then(|c| text(c, "text"))
                .unwrap_or_default();
            let (body_parameters, named_parameters) = body_placeholders(&body);
            Some(ListedTemplate {
                name,
                language,
                status: text(t, "status").unwrap_or_default().to_ascii_uppercase(),
                category: text(t, "category").unwrap_or_default().to_ascii_uppercase(),
                body_parameters,
                named_parameters,
            })
        })
        .collect();
    let next = page
        .get("paging")
        .filter(|p| p.get("next").and_then(Value::as_str).is_some())
        .and_then(|p| p.get("cursors"))
        .and_then(|c| c.get("after"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok((templates, next))
}

/// The body's placeholders: `{{1}}`..`{{n}}` give (n, []), `{{name}}` give (0, [names...]).
fn body_placeholders(body: &str) -> (usize, Vec<String>) {
    let mut numbers = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let inner = after[..end].trim();
        if let Ok(n) = inner.parse::<usize>() {
            numbers.push(n);
        } else if !inner.is_empty() && !names.iter().any(|n| n == inner) {
            names.push(inner.to_string());
        }
        rest = &after[end + 2..];
    }
    if names.is_empty() {
        (numbers.into_iter().max().unwrap_or(0), names)
    } else {
        (0, names)
    }
}

/// reqwest's errors name the URL; the URL is not secret, but keep messages short.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(url.as_str(), "<graph>");
    }
    s
}

/// Reads `{"error": {"code", "message", "error_data": {"details"}}}`.
pub fn parse_error_body(bytes: &[u8]) -> (Option<i64>, Option<String>) {
    let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
        return (None, None);
    };
    let error = &v["error"];
    let code = error["code"].as_i64();
    let message = error["message"].as_str().map(|m| {
        let m = match (m.strip_prefix("(#"), code) {
            (Some(rest), Some(_)) => rest.split_once(") ").map(|(_, t)| t).unwrap_or(m),
            _ => m,
        };
        match error["error_data"]["details"].as_str() {
            Some(d) if !d.is_empty() => format!("{m}: {d}"),
            _ => m.to_string(),
        }
    });
    (code, message)
}

/// The Graph API's error codes in Herald's error classes (see whatsapp-cloud-api.md §7.2).
/// Unknown codes and 5xx are "Provider error", which is retryable.
pub const ERROR_TABLE: &[(i64, ErrorClass)] = &[
    (4, ErrorClass::RateLimited),
    (80007, ErrorClass::RateLimited),
    (130429, ErrorClass::RateLimited),
    (131056, ErrorClass::RateLimited),
    (133016, ErrorClass::RateLimited),
    (131047, ErrorClass::OutsideWindow),
    (131026, ErrorClass::InvalidPhoneNumber),
    (132000, ErrorClass::TemplateNotFound),
    (132001, ErrorClass::TemplateNotFound),
    (132012, ErrorClass::TemplateNotFound),
    (132015, ErrorClass::TemplateNotFound),
    (132016, ErrorClass::TemplateNotFound),
    (131050, ErrorClass::OptedOut),
    // The number cannot send until someone acts: not registered (133010), business account
    // locked (131031), temporarily blocked for policy violations (368). The send path records
    // the sender as offline / restricted so later sends fail fast (see `senders`).
    (133010, ErrorClass::SenderOffline),
    (131031, ErrorClass::SenderOffline),
    (368, ErrorClass::SenderOffline),
];

pub fn classify(code: Option<i64>, http_status: u16) -> ErrorClass {
    if let Some(code) = code
        && let Some((_, class)) = ERROR_TABLE.iter().find(|(c, _)| *c == code)
    {
        return *class;
    }
    if http_status == 429 {
        return ErrorClass::RateLimited;
    }
    ErrorClass::ProviderError
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_body_has_the_cloud_api_shape() {
        let to = PhoneNumber::parse("+4915112345678").unwrap();
        let body = request_body(
            &to,
            &Message::Template {
                name: "welcome".into(),
                language: "en_US".into(),
                components: vec![
                    json!({"type": "body", "parameters": [{"type": "text", "text": "Ana"}]}),
                ],
            },
        );
        assert_eq!(body["messaging_product"], "whatsapp");
        assert_eq!(body["to"], "4915112345678");
        assert_eq!(body["type"], "template");
        assert_eq!(body["template"]["name"], "welcome");
        assert_eq!(body["template"]["language"]["code"], "en_US");
        assert_eq!(
            body["template"]["components"][0]["parameters"][0]["text"],
            "Ana"
        );
    }

    fn flow(payload: Option<FlowActionPayload>) -> FlowMessage {
        FlowMessage {
            flow: FlowRef::FlowId("1234567890".into()),
            body: "Rate your call".into(),
            cta: "Rate now".into(),
            header: None,
            footer: None,
            flow_token: "run.step".into(),
            mode: FlowMode::Published,
            flow_action_payload: payload,
        }
    }

    #[test]
    fn flow_body_has_the_cloud_api_shape() {
        let to = PhoneNumber::parse("+4915112345678").unwrap();
        let mut message = flow(Some(FlowActionPayload {
            screen: "RATING".into(),
            data: Some(BTreeMap::from([("agent".into(), "Bia".into())])),
        }));
        message.header = Some("Quick survey".into());
        message.footer = Some("Takes 30 seconds".into());
        let message = Message::Flow(Box::new(message));
        assert_eq!(message.kind(), "flow");
        assert_eq!(
            request_body(&to, &message),
            json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": "4915112345678",
                "type": "interactive",
                "interactive": {
                    "type": "flow",
                    "header": {"type": "text", "text": "Quick survey"},
                    "body": {"text": "Rate your call"},
                    "footer": {"text": "Takes 30 seconds"},
                    "action": {"name": "flow", "parameters": {
                        "flow_message_version": "3",
                        "flow_id": "1234567890",
                        "flow_cta": "Rate now",
                        "flow_token": "run.step",
                        "mode": "published",
                        "flow_action": "navigate",
                        "flow_action_payload": {"screen": "RATING", "data": {"agent": "Bia"}},
                    }},
                },
            })
        );
    }

    #[test]
    fn a_minimal_flow_body_leaves_the_optional_parts_out() {
        let to = PhoneNumber::parse("+4915112345678").unwrap();
        let mut message = flow(None);
        message.flow = FlowRef::FlowName("csat".into());
        message.mode = FlowMode::Draft;
        let body = request_body(&to, &Message::Flow(Box::new(message)));
        let interactive = &body["interactive"];
        assert!(interactive.get("header").is_none());
        assert!(interactive.get("footer").is_none());
        let parameters = &interactive["action"]["parameters"];
        assert_eq!(parameters["flow_name"], "csat");
        assert!(parameters.get("flow_id").is_none());
        assert_eq!(parameters["mode"], "draft");
        assert!(parameters.get("flow_action_payload").is_none());
    }

    #[test]
    fn graph_error_fixtures_are_classified() {
        let rate = include_bytes!(
            "../../tests/fixtures/whatsapp/graph-errors/130429-throughput-rate-limit.json"
        );
        let (code, message) = parse_error_body(rate);
        assert_eq!(code, Some(130429));
        assert_eq!(classify(code, 400), ErrorClass::RateLimited);
        assert!(message.unwrap().starts_with("Rate limit hit"));
        let missing = include_bytes!(
            "../../tests/fixtures/whatsapp/graph-errors/132001-template-not-found.json"
        );
        let (code, _) = parse_error_body(missing);
        assert_eq!(classify(code, 404), ErrorClass::TemplateNotFound);
    }

    #[test]
    fn numbers_that_cannot_send_are_sender_offline_code_by_code() {
        for (code, status) in [(133010, 400), (131031, 400), (368, 403)] {
            let body = format!(
                r#"{{"error": {{"message": "(#{code}) refused", "type": "OAuthException", "code": {code}}}}}"#
            );
            let (parsed, message) = parse_error_body(body.as_bytes());
            assert_eq!(parsed, Some(code));
            assert_eq!(message.as_deref(), Some("refused"));
            assert_eq!(
                classify(parsed, status),
                ErrorClass::SenderOffline,
                "code {code}"
            );
        }
        assert!(ErrorClass::SenderOffline.retryable());
    }

    #[test]
    fn unknown_codes_and_server_errors_are_provider_errors() {
        assert_eq!(classify(Some(999_999), 400), ErrorClass::ProviderError);
        assert_eq!(classify(None, 503), ErrorClass::ProviderError);
        assert_eq!(classify(None, 429), ErrorClass::RateLimited);
        assert_eq!(parse_error_body(b"<html>"), (None, None));
    }

    #[test]
    fn a_template_list_page_gives_names_statuses_categories_and_body_parameters() {
        let page = json!({
            "data": [
                {"name": "welcome_message", "language": "en_US", "status": "APPROVED", "category": "UTILITY",
                 "components": [{"type": "HEADER", "format": "TEXT", "text": "Hi {{1}}"},
                                {"type": "BODY", "text": "Hello {{1}}, your order {{2}} ships on {{2}}."}],
                 "id": "1"},
                {"name": "conversation_ack", "language": "pt-BR", "status": "PAUSED", "category": "MARKETING",
                 "parameter_format": "NAMED",
                 "components": [{"type": "BODY", "text": "Oi {{ name }}, recebemos \"{{first_message}}\" {{name}}"}]},
                {"name": "no_body", "language": "de", "status": "REJECTED", "category": "authentication",
                 "components": []},
                {"language": "en_US", "status": "APPROVED"}
            ],
            "paging": {"cursors": {"before": "QVFI", "after": "QVFIUm"},
                       "next": "https://graph.facebook.com/v24.0/102290129340398/message_templates?after=QVFIUm"}
        });
        let (templates, next) = parse_template_page(&page).unwrap();
        assert_eq!(next.as_deref(), Some("QVFIUm"));
        assert_eq!(templates.len(), 3, "the entry without a name is skipped");
        assert_eq!(
            templates[0],
            ListedTemplate {
                name: "welcome_message".into(),
                language: "en_US".into(),
                status: "APPROVED".into(),
                category: "UTILITY".into(),
                body_parameters: 2,
                named_parameters: vec![],
            }
        );
        assert_eq!(templates[1].language, "pt_BR");
        assert_eq!(templates[1].named_parameters, ["name", "first_message"]);
        assert_eq!(templates[1].body_parameters, 0);
        assert_eq!(templates[2].category, "AUTHENTICATION");
        assert_eq!(templates[2].body_parameters, 0);
    }

    #[test]
    fn the_last_page_has_no_next_cursor_and_a_page_without_data_is_refused() {
        let last = json!({"data": [], "paging": {"cursors": {"before": "a", "after": "b"}}});
        assert_eq!(parse_template_page(&last).unwrap(), (vec![], None));
        let err = parse_template_page(&json!({"error": {"code": 100}})).unwrap_err();
        assert!(err.contains("no `data`"), "{err}");
    }
}
