//! LLM provider: OpenAI-compatible chat completions for the assistants named in the configuration
//! (`assistants.yaml`, `HERALD_ASSISTANTS`). The only module that knows the chat-completions JSON
//! shapes; API keys are read once at start, kept in [`Secret`] and never logged or returned.

use std::{
    collections::BTreeMap,
    fmt,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::outbound::{Guard, Outbound, SendError};
use crate::{config::Secret, domain::HumanDuration, failure::ErrorClass};

/// Default timeout of one chat-completions call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of history messages sent with a new message.
pub const DEFAULT_MAX_HISTORY: usize = 20;
/// Longest provider error text kept in a step error.
const MAX_ERROR_CHARS: usize = 500;

/// The assistants named in the configuration, by name.
#[derive(Clone, Debug, Default)]
pub struct Assistants {
    by_name: BTreeMap<String, Assistant>,
}

/// One configured assistant: where to ask, which model, with which system prompt.
#[derive(Clone)]
pub struct Assistant {
    pub name: String,
    pub base_url: String,
    pub model: String,
    pub system_prompt: String,
    /// Messages of history sent with a new message.
    pub max_history: usize,
    pub timeout: Duration,
    /// `None` only in sandbox mode when the key variable is unset: the assistant then answers
    /// with a canned sandbox reply instead of calling the API.
    key: Option<Secret>,
    key_env: String,
    /// Watched by the outbound guard: an inside base URL needs `HERALD_HTTP_ALLOW`.
    http: Outbound,
}

impl fmt::Debug for Assistant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Assistant")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("max_history", &self.max_history)
            .field("timeout", &self.timeout)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// `assistants.yaml` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AssistantsFile {
    #[serde(default)]
    assistants: BTreeMap<String, AssistantSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AssistantSpec {
    /// OpenAI-compatible API root, e.g. `https://api.openai.com/v1`.
    base_url: String,
    model: String,
    system_prompt: String,
    /// The environment variable holding the API key.
    api_key_env: String,
    /// `30s`, `500ms`, `2m`; default 30s.
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    max_history: Option<usize>,
}

impl Assistants {
    /// Reads `path`; a missing file means no assistants. API keys come from the environment.
    /// No inside base URL is allowed (see [`Assistants::load_for`]).
    pub fn load(path: &Path) -> anyhow::Result<Assistants> {
        Self::load_with(path, |key| std::env::var(key).ok())
    }

    /// Like [`Assistants::load`], with calls watched by `guard` (`HERALD_HTTP_ALLOW`); with
    /// `sandbox` (no WhatsApp credentials), an assistant whose key variable is unset answers with
    /// a canned sandbox reply instead of stopping start-up.
    pub fn load_for(path: &Path, sandbox: bool, guard: &Guard) -> anyhow::Result<Assistants> {
        Self::load_inner(path, |key| std::env::var(key).ok(), sandbox, guard)
    }

    /// [`Assistants::load`] with the environment given as a lookup.
    pub fn load_with(
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Assistants> {
        Self::load_inner(path, env, false, &Guard::default())
    }

    fn load_inner(
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
        sandbox: bool,
        guard: &Guard,
    ) -> anyhow::Result<Assistants> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(file = %path.display(), "no assistants file; no AI assistants configured");
                return Ok(Assistants::default());
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "read the assistants file {} (HERALD_ASSISTANTS)",
                        path.display()
                    )
                });
            }
        };
        let assistants = Self::parse_inner(&text, env, sandbox, guard)
            .with_context(|| format!("assistants file {} (HERALD_ASSISTANTS)", path.display()))?;
        tracing::info!(file = %path.display(), assistants = ?assistants.names().collect::<Vec<_>>(), "assistants loaded");
        Ok(assistants)
    }

    /// Parses the YAML text of an assistants file (no inside base URL allowed).
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Assistants> {
        Self::parse_inner(text, env, false, &Guard::default())
    }

    fn parse_inner(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
        sandbox: bool,
        guard: &Guard,
    ) -> anyhow::Result<Assistants> {
        if text.trim().is_empty() {
            return Ok(Assistants::default());
        }
        // The library's message starts with the line and column; keep its first line.
        let file: AssistantsFile = serde_saphyr::from_str(text).map_err(|e| {
            let reason = e.to_string();
            anyhow::anyhow!("{}", reason.lines().next().unwrap_or_default())
        })?;
        let mut by_name = BTreeMap::new();
        for (name, spec) in file.assistants {
            let assistant = Assistant::build(&name, spec, &env, sandbox, guard)
                .with_context(|| format!("assistant '{name}'"))?;
            by_name.insert(name, assistant);
        }
        Ok(Assistants { by_name })
    }

    pub fn get(&self, name: &str) -> Option<&Assistant> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// The longest timeout of any assistant: a step lease must outlast it.
    pub fn longest_timeout(&self) -> Option<Duration> {
        self.by_name.values().map(|a| a.timeout).max()
    }
}

impl Assistant {
    fn build(
        name: &str,
        spec: AssistantSpec,
        env: &impl Fn(&str) -> Option<String>,
        sandbox: bool,
        guard: &Guard,
    ) -> anyhow::Result<Assistant> {
        if name.trim().is_empty() {
            bail!("an assistant name must not be empty");
        }
        let base_url = spec.base_url.trim().trim_end_matches('/').to_string();
        let url = reqwest::Url::parse(&base_url)
            .map_err(|e| anyhow::anyhow!("base_url '{base_url}' is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!("base_url '{base_url}' must start with https:// or http://");
        }
        // An address is checked now; a name each time it is resolved.
        guard
            .check_url(&url)
            .map_err(|e| anyhow::anyhow!("base_url: {e}"))?;
        if spec.model.trim().is_empty() {
            bail!("model must not be empty");
        }
        let var = spec.api_key_env.trim();
        if var.is_empty() {
            bail!("api_key_env must name an environment variable");
        }
        let key = match env(var).filter(|k| !k.trim().is_empty()) {
            Some(k) => Some(Secret::new(k.trim())),
            None if sandbox => {
                tracing::warn!(
                    assistant = name,
                    variable = var,
                    "API key not set: the sandbox answers for this assistant"
                );
                None
            }
            None => bail!(
                "the environment variable {var} (api_key_env) is not set; it must hold the API key"
            ),
        };
        let timeout = match &spec.timeout {
            None => DEFAULT_TIMEOUT,
            Some(t) => parse_timeout(t).map_err(|e| anyhow::anyhow!("timeout: {e}"))?,
        };
        let http = Outbound::build(guard.clone(), |builder| {
            builder
                .timeout(timeout)
                .connect_timeout(timeout.min(Duration::from_secs(5)))
        })?;
        Ok(Assistant {
            name: name.to_string(),
            base_url,
            model: spec.model.trim().to_string(),
            system_prompt: spec.system_prompt,
            max_history: spec.max_history.unwrap_or(DEFAULT_MAX_HISTORY),
            timeout,
            key,
            key_env: var.to_string(),
            http,
        })
    }

    /// The request body for `messages` (system prompt first, then the given ones).
    pub fn request_body(&self, messages: &[ChatMessage]) -> Value {
        let mut all = Vec::with_capacity(messages.len() + 1);
        all.push(ChatMessage::new(Role::System, self.system_prompt.clone()));
        all.extend_from_slice(messages);
        json!({ "model": self.model, "messages": all })
    }

    /// Asks the model: `POST {base_url}/chat/completions`; the answer is
    /// `choices[0].message.content`.
    pub async fn complete(&self, messages: &[ChatMessage]) -> Result<String, LlmError> {
        let Some(key) = &self.key else {
            let said = messages
                .last()
                .map(|m| m.content.as_str())
                .unwrap_or_default();
            return Ok(format!(
                "[sandbox assistant '{}': set {} for real answers] You said: {said}",
                self.name, self.key_env
            ));
        };
        let url = format!("{}/chat/completions", self.base_url);
        let started = Instant::now();
        let unreachable = |e: &reqwest::Error| {
            let message = if e.is_timeout() {
                format!("timed out after {}", show_duration(self.timeout))
            } else {
                format!("unreachable: {}", self.scrub(&without_url(e)))
            };
            self.error(ErrorClass::ProviderError, None, message, None)
        };
        let request = self
            .http
            .request(reqwest::Method::POST, &url)
            .bearer_auth(key.expose())
            .json(&self.request_body(messages))
            .build()
            .map_err(|e| unreachable(&e))?;
        let response = self.http.send(request, false).await.map_err(|e| match e {
            SendError::Http(e) => unreachable(&e),
            refused => LlmError {
                permanent: true,
                ..self.error(
                    ErrorClass::ProviderError,
                    None,
                    format!("refused: {refused}"),
                    None,
                )
            },
        })?;
        let status = response.status();
        let retry_after = super::retry_after(response.headers());
        let bytes = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                let message = if e.is_timeout() {
                    format!("timed out after {}", show_duration(self.timeout))
                } else {
                    format!("answer could not be read: {}", self.scrub(&without_url(&e)))
                };
                return Err(self.error(
                    ErrorClass::ProviderError,
                    Some(status.as_u16()),
                    message,
                    None,
                ));
            }
        };
        metrics::histogram!("herald_llm_latency_seconds", "assistant" => self.name.clone())
            .record(started.elapsed().as_secs_f64());
        if !status.is_success() {
            let class = if status.as_u16() == 429 {
                ErrorClass::RateLimited
            } else {
                ErrorClass::ProviderError
            };
            let detail = error_message(&bytes)
                .map(|m| format!(": {}", self.scrub(&m)))
                .unwrap_or_default();
            return Err(self.error(
                class,
                Some(status.as_u16()),
                format!("answered HTTP {}{detail}", status.as_u16()),
                retry_after.filter(|_| class == ErrorClass::RateLimited),
            ));
        }
        answer_text(&bytes).map_err(|reason| {
            self.error(
                ErrorClass::ProviderError,
                Some(status.as_u16()),
                reason,
                None,
            )
        })
    }

    fn error(
        &self,
        class: ErrorClass,
        http_status: Option<u16>,
        detail: String,
        retry_after: Option<Duration>,
    ) -> LlmError {
        LlmError {
            class,
            http_status,
            message: format!(
                "assistant '{}' (model {}) {}",
                self.name,
                self.model,
                truncate(&detail)
            ),
            retry_after,
            permanent: false,
        }
    }

    /// Removes the API key from a text that came from the provider or the network.
    fn scrub(&self, text: &str) -> String {
        let Some(key) = self.key.as_ref().map(Secret::expose) else {
            return text.to_string();
        };
        if key.len() >= 4 {
            text.replace(key, "***")
        } else {
            text.to_string()
        }
    }
}

/// Who wrote a message of the conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "system" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            _ => None,
        }
    }
}

/// One message of a chat-completions request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
        }
    }
}

/// A failed chat-completions call, classified. Never contains the API key.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{class}: {message}")]
pub struct LlmError {
    pub class: ErrorClass,
    pub http_status: Option<u16>,
    pub message: String,
    /// How long the provider asked us to wait (Retry-After), for a 429.
    pub retry_after: Option<Duration>,
    /// No retry can change it (a base URL the outbound guard refuses).
    pub permanent: bool,
}

/// `choices[0].message.content`: a string, or a list of text parts.
fn answer_text(bytes: &[u8]) -> Result<String, String> {
    let body: Value = serde_json::from_slice(bytes)
        .map_err(|_| "answered with a body that is not JSON".to_string())?;
    let choice = &body["choices"][0];
    let content = &choice["message"]["content"];
    let text = match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ if choice.is_null() => return Err("answered without choices[0]".into()),
        _ => String::new(),
    };
    if text.trim().is_empty() {
        let reason = choice["finish_reason"].as_str().unwrap_or("unknown");
        return Err(format!(
            "answered without text in choices[0].message.content (finish_reason: {reason})"
        ));
    }
    Ok(text)
}

/// The provider's reason: `{"error": {"message"}}`, `{"error": "..."}` or `{"message": "..."}`.
fn error_message(bytes: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let message = v["error"]["message"]
        .as_str()
        .or_else(|| v["error"].as_str())
        .or_else(|| v["message"].as_str())?;
    let message = message.trim();
    (!message.is_empty()).then(|| message.to_string())
}

/// reqwest's errors name the URL; keep messages short.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(url.as_str(), "<llm>");
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

fn truncate(s: &str) -> String {
    if s.chars().count() <= MAX_ERROR_CHARS {
        return s.to_string();
    }
    let mut t: String = s.chars().take(MAX_ERROR_CHARS).collect();
    t.push_str("...");
    t
}

/// `30s`, `500ms`, `2m` (any duration Herald reads, more than zero), or a bare number of seconds.
fn parse_timeout(raw: &str) -> Result<Duration, String> {
    let bare = raw.trim();
    let raw = if !bare.is_empty() && bare.bytes().all(|b| b.is_ascii_digit()) {
        format!("{bare}s")
    } else {
        raw.to_string()
    };
    let bounds = Duration::from_millis(1)..=HumanDuration::MAX;
    HumanDuration::parse_within(&raw, "timeout", bounds).map(HumanDuration::get)
}

fn show_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use wiremock::{
        Mock, MockServer, ResponseTemplate,
        matchers::{header, method, path},
    };

    const GOOD: &str = r#"
assistants:
  support:
    base_url: https://api.openai.com/v1/
    model: gpt-4o-mini
    system_prompt: "You are the support assistant of ACME. Answer briefly."
    api_key_env: OPENAI_API_KEY
  sales:
    base_url: http://127.0.0.1:11434/v1
    model: llama3
    system_prompt: Sell.
    api_key_env: LOCAL_KEY
    timeout: 500ms
    max_history: 4
"#;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    /// [`Assistants::parse`] with calls to 127.0.0.1 allowed (`HERALD_HTTP_ALLOW=127.0.0.1`):
    /// the fakes listen there.
    fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Assistants> {
        Assistants::parse_inner(text, env, false, &loopback())
    }

    fn loopback() -> Guard {
        Guard::new(crate::domain::HttpAllowList::parse("127.0.0.1").unwrap())
    }

    #[test]
    fn a_base_url_on_an_inside_address_is_refused_unless_allowed() {
        let err = Assistants::parse(GOOD, with_keys()).unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("assistant 'sales'"), "{err}");
        assert!(err.contains("127.0.0.1 is a loopback address"), "{err}");
        assert!(err.contains("HERALD_HTTP_ALLOW"), "{err}");
        let metadata = GOOD.replace("127.0.0.1:11434", "169.254.169.254");
        assert!(parse(&metadata, with_keys()).is_err());
        assert!(parse(GOOD, with_keys()).is_ok());
    }

    #[tokio::test]
    async fn a_base_url_whose_name_resolves_inside_is_refused_for_good_when_called() {
        let server = MockServer::start().await;
        let yaml = format!(
            "assistants:\n  a:\n    base_url: http://localhost:{}/v1\n    model: m\n    system_prompt: s\n    api_key_env: K\n",
            server.address().port()
        );
        let a = Assistants::parse(&yaml, env(&[("K", "k-123")])).unwrap();
        let err = a
            .get("a")
            .unwrap()
            .complete(&[ChatMessage::new(Role::User, "hi")])
            .await
            .unwrap_err();
        assert!(err.permanent, "{err:?}");
        assert_eq!(err.class, ErrorClass::ProviderError);
        assert!(
            err.message.contains("localhost resolves to 127.0.0.1"),
            "{}",
            err.message
        );
        assert!(err.message.contains("HERALD_HTTP_ALLOW"), "{}", err.message);
        assert!(server.received_requests().await.unwrap().is_empty());
    }

    fn with_keys() -> impl Fn(&str) -> Option<String> {
        env(&[
            ("OPENAI_API_KEY", "sk-test-123"),
            ("LOCAL_KEY", "local-456"),
        ])
    }

    #[test]
    fn in_sandbox_mode_an_assistant_without_its_key_answers_from_the_sandbox() {
        let a = Assistants::parse_inner(GOOD, |_| None, true, &loopback()).unwrap();
        let support = a.get("support").unwrap();
        let answer = futures::executor::block_on(
            support.complete(&[ChatMessage::new(Role::User, "hi there".to_string())]),
        )
        .unwrap();
        assert!(
            answer.contains("sandbox") && answer.contains("hi there"),
            "{answer}"
        );
        assert!(Assistants::parse_inner(GOOD, |_| None, false, &loopback()).is_err());
    }

    #[test]
    fn a_good_file_loads_every_assistant_with_its_defaults() {
        let a = parse(GOOD, with_keys()).unwrap();
        assert_eq!(a.names().collect::<Vec<_>>(), ["sales", "support"]);
        let support = a.get("support").unwrap();
        assert_eq!(support.base_url, "https://api.openai.com/v1");
        assert_eq!(support.model, "gpt-4o-mini");
        assert_eq!(support.timeout, DEFAULT_TIMEOUT);
        assert_eq!(support.max_history, DEFAULT_MAX_HISTORY);
        assert_eq!(support.key.as_ref().unwrap().expose(), "sk-test-123");
        let sales = a.get("sales").unwrap();
        assert_eq!(sales.timeout, Duration::from_millis(500));
        assert_eq!(sales.max_history, 4);
        assert_eq!(a.longest_timeout(), Some(DEFAULT_TIMEOUT));
        assert!(a.get("billing").is_none());
    }

    #[test]
    fn an_unknown_field_is_an_error_naming_it() {
        let text = GOOD.replace("max_history: 4", "max_histroy: 4");
        let err = parse(&text, with_keys()).unwrap_err();
        assert!(format!("{err:#}").contains("max_histroy"), "{err:#}");
    }

    #[test]
    fn a_missing_key_variable_is_an_error_naming_it_and_the_assistant() {
        let err = parse(GOOD, env(&[("OPENAI_API_KEY", "sk-test-123")])).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("LOCAL_KEY") && text.contains("'sales'"),
            "{text}"
        );
    }

    #[test]
    fn a_bad_timeout_or_url_is_an_error() {
        let text = GOOD.replace("500ms", "soon");
        let err = parse(&text, with_keys()).unwrap_err();
        assert!(format!("{err:#}").contains("timeout"), "{err:#}");
        let text = GOOD.replace("http://127.0.0.1:11434/v1", "ftp://x");
        let err = parse(&text, with_keys()).unwrap_err();
        assert!(format!("{err:#}").contains("base_url"), "{err:#}");
    }

    #[test]
    fn a_missing_file_means_no_assistants_and_a_bad_one_names_the_file() {
        let dir = std::env::temp_dir().join(format!("herald-llm-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = Assistants::load_with(&dir.join("none.yaml"), with_keys()).unwrap();
        assert_eq!(missing.names().count(), 0);
        let bad = dir.join("assistants.yaml");
        std::fs::write(&bad, "assistants: [1, 2").unwrap();
        let err = Assistants::load_with(&bad, with_keys()).unwrap_err();
        assert!(
            format!("{err:#}").contains(&bad.display().to_string()),
            "{err:#}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let a = parse(GOOD, with_keys()).unwrap();
        let printed = format!("{a:?}");
        assert!(!printed.contains("sk-test-123") && !printed.contains("local-456"));
    }

    #[test]
    fn timeouts_parse_in_seconds_milliseconds_and_minutes() {
        assert_eq!(parse_timeout("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_timeout("45").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_timeout("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_timeout("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("3 days").is_err());
    }

    #[test]
    fn the_answer_is_the_first_choice_content() {
        let ok = br#"{"choices":[{"message":{"role":"assistant","content":"Hi!"}}]}"#;
        assert_eq!(answer_text(ok).unwrap(), "Hi!");
        let parts = br#"{"choices":[{"message":{"content":[{"type":"text","text":"A"},{"type":"text","text":"B"}]}}]}"#;
        assert_eq!(answer_text(parts).unwrap(), "AB");
        assert!(answer_text(b"<html>").is_err());
        assert!(answer_text(br#"{"choices":[]}"#).is_err());
        let filtered =
            br#"{"choices":[{"message":{"content":null},"finish_reason":"content_filter"}]}"#;
        assert!(
            answer_text(filtered)
                .unwrap_err()
                .contains("content_filter")
        );
    }

    async fn assistant_at(server: &MockServer, timeout: &str) -> Assistant {
        let yaml = format!(
            "assistants:\n  support:\n    base_url: {}/v1\n    model: m1\n    system_prompt: Be brief.\n    api_key_env: K\n    timeout: {timeout}\n",
            server.uri()
        );
        parse(&yaml, env(&[("K", "sk-secret-key")]))
            .unwrap()
            .get("support")
            .unwrap()
            .clone()
    }

    fn user(text: &str) -> Vec<ChatMessage> {
        vec![ChatMessage::new(Role::User, text)]
    }

    #[tokio::test]
    async fn a_completion_sends_the_model_system_prompt_messages_and_bearer_key() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .and(header("authorization", "Bearer sk-secret-key"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}]
            })))
            .mount(&server)
            .await;
        let a = assistant_at(&server, "5s").await;
        assert_eq!(a.complete(&user("hi")).await.unwrap(), "Hello!");
        let sent: Value =
            serde_json::from_slice(&server.received_requests().await.unwrap()[0].body).unwrap();
        assert_eq!(
            sent,
            json!({"model": "m1", "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hi"},
            ]})
        );
    }

    async fn failing(status: u16, body: Value, retry_after: Option<&str>) -> LlmError {
        let server = MockServer::start().await;
        let mut response = ResponseTemplate::new(status).set_body_json(body);
        if let Some(r) = retry_after {
            response = response.insert_header("retry-after", r);
        }
        Mock::given(method("POST"))
            .respond_with(response)
            .mount(&server)
            .await;
        assistant_at(&server, "5s")
            .await
            .complete(&user("hi"))
            .await
            .unwrap_err()
    }

    #[tokio::test]
    async fn http_429_is_rate_limited_with_the_retry_after() {
        let e = failing(429, json!({"error": {"message": "slow down"}}), Some("7")).await;
        assert_eq!(e.class, ErrorClass::RateLimited);
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(e.http_status, Some(429));
        assert!(e.message.contains("slow down"), "{}", e.message);
    }

    #[tokio::test]
    async fn client_and_server_errors_are_provider_errors_with_the_reason_and_no_key() {
        let e = failing(
            401,
            json!({"error": {"message": "Incorrect API key provided: sk-secret-key", "type": "invalid_request_error"}}),
            None,
        )
        .await;
        assert_eq!(e.class, ErrorClass::ProviderError);
        assert_eq!(e.http_status, Some(401));
        assert!(
            e.message.contains("Incorrect API key provided"),
            "{}",
            e.message
        );
        assert!(!e.message.contains("sk-secret-key"), "{}", e.message);
        let e = failing(500, json!({"oops": true}), Some("3")).await;
        assert_eq!(e.class, ErrorClass::ProviderError);
        assert_eq!(e.retry_after, None);
        assert!(e.message.contains("HTTP 500"), "{}", e.message);
        let e = failing(404, json!({"error": "model not found"}), None).await;
        assert!(e.message.contains("model not found"), "{}", e.message);
    }

    #[tokio::test]
    async fn a_slow_or_unparseable_answer_is_a_provider_error() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(2)))
            .mount(&server)
            .await;
        let e = assistant_at(&server, "200ms")
            .await
            .complete(&user("hi"))
            .await
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::ProviderError);
        assert!(e.message.contains("timed out after 200ms"), "{}", e.message);

        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_string("not json"))
            .mount(&server)
            .await;
        let e = assistant_at(&server, "5s")
            .await
            .complete(&user("hi"))
            .await
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::ProviderError);
        assert!(e.message.contains("not JSON"), "{}", e.message);
    }

    #[tokio::test]
    async fn an_unreachable_provider_is_a_provider_error() {
        let yaml = "assistants:\n  a:\n    base_url: http://127.0.0.1:9/v1\n    model: m\n    system_prompt: s\n    api_key_env: K\n    timeout: 2s\n";
        let a = parse(yaml, env(&[("K", "k-123")])).unwrap();
        let e = a.get("a").unwrap().complete(&user("hi")).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::ProviderError);
        assert!(e.message.contains("unreachable"), "{}", e.message);
    }
}
