//! WhatsApp Cloud API (Graph API) sends, and the sandbox that records instead of sending.
//! The only module that knows the Graph API's JSON shapes and error codes.

use std::{collections::BTreeMap, time::Duration};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{config::Secret, domain::PhoneNumber, steps::ErrorClass};

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
    pub wamid: String,
    pub provider: &'static str,
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
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response.bytes().await.unwrap_or_default();
        if status.is_success() {
            let parsed: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return match parsed["messages"][0]["id"].as_str() {
                Some(id) => Ok(Receipt {
                    wamid: id.to_string(),
                    provider: "whatsapp",
                }),
                None => Err(SendError {
                    class: ErrorClass::ProviderError,
                    code: None,
                    http_status: Some(status.as_u16()),
                    message: "Graph API answered without a message id".into(),
                    retry_after,
                }),
            };
        }
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
}
