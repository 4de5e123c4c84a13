//! `http_request`: calls an external URL (a CRM, a sheet, an internal API) with a method, headers
//! and a JSON body built from the run's data; the response's status and JSON body become
//! `steps.<id>.status` / `steps.<id>.body.*` for later steps.
//!
//! Errors: a timeout, an unreachable host and a 5xx answer are `Provider error` (retryable); a 429
//! is `Rate limited` (with the server's Retry-After); any other non-2xx answer fails the step as
//! `Provider error` with the status and an excerpt of the body unless `expect_success: false`.
//! Calls go through the outbound guard: an inside address that `HERALD_HTTP_ALLOW` does not list
//! fails the step for good, and values in the URL are percent-encoded.

use std::{collections::BTreeMap, fmt, time::Duration};

use async_trait::async_trait;
use reqwest::{
    Url,
    header::{CONTENT_TYPE, HeaderName, HeaderValue},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize, Serializer, ser::SerializeMap};
use serde_json::{Value, json};

use super::{ErrorClass, Step, StepContext, StepError, StepOutput};
use crate::{
    domain::HumanDuration,
    expr::{RenderError, Text},
    providers::{
        outbound::{Guard, Outbound, SendError, masked_header, masked_url},
        retry_after,
    },
};

/// The most of a response body that is read; the rest is dropped (`truncated: true`).
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// The longest timeout a step may ask for: a worker holds the job that long.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// How much of an error answer's body goes into the error message.
const EXCERPT_CHARS: usize = 300;

#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "Spec")]
pub struct HttpRequest {
    id: Option<String>,
    retry: Option<super::RetryPolicy>,
    method: Method,
    url: UrlTemplate,
    headers: Vec<(HeaderName, Text)>,
    body: Option<JsonTemplate>,
    timeout: Timeout,
    expect_success: bool,
    follow_redirects: bool,
}

/// The outbound HTTP client of `http_request`, watched by `guard`: 5 s to connect, a 30 s
/// overall limit unless a request sets its own (`timeout:`); redirects only where a step asks.
pub fn client(guard: Guard) -> anyhow::Result<Outbound> {
    Outbound::build(guard, |builder| {
        builder
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
    })
}

/// The step as written in YAML.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    #[serde(default)]
    pub id: Option<String>,
    /// This step's retry policy (default: the workflow's `retry`, then the global one).
    #[serde(default)]
    pub retry: Option<super::RetryPolicy>,
    /// GET (default), POST, PUT, PATCH or DELETE.
    #[serde(default)]
    pub method: Method,
    /// An http(s) URL; may contain variables, which are percent-encoded (`{{ x | raw_url }}`
    /// writes a value that is itself a URL or a path as it is).
    pub url: UrlTemplate,
    /// Request headers; values may contain variables.
    #[serde(default)]
    pub headers: BTreeMap<String, Text>,
    /// A JSON body (any YAML value); every string in it may contain variables.
    #[serde(default)]
    pub body: Option<JsonTemplate>,
    /// `500ms`, `10s`, `2m`; default 10s, at most 5m.
    #[serde(default)]
    pub timeout: Timeout,
    /// Default true: an answer outside 2xx fails the step. With false, only 429 and 5xx do; the
    /// status is in `steps.<id>.status`.
    #[serde(default = "yes")]
    pub expect_success: bool,
    /// Default false: a redirect (3xx) is the answer. With true, up to 5 redirects are followed,
    /// each checked like the first call; a hop to another origin (or from https to http) leaves
    /// Authorization, Cookie and other credential headers behind.
    #[serde(default)]
    pub follow_redirects: bool,
}

fn yes() -> bool {
    true
}

impl JsonSchema for HttpRequest {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "HttpRequest".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        Spec::json_schema(generator)
    }
}

impl TryFrom<Spec> for HttpRequest {
    type Error = String;
    fn try_from(spec: Spec) -> Result<Self, Self::Error> {
        let mut headers = Vec::new();
        for (name, value) in spec.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("'{name}' is not a valid HTTP header name"))?;
            headers.push((header, value));
        }
        if spec.body.is_some() && spec.method == Method::Get {
            return Err("a GET request has no body: use POST, PUT or PATCH".into());
        }
        Ok(HttpRequest {
            id: spec.id,
            retry: spec.retry,
            method: spec.method,
            url: spec.url,
            headers,
            body: spec.body,
            timeout: spec.timeout,
            expect_success: spec.expect_success,
            follow_redirects: spec.follow_redirects,
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    #[default]
    #[serde(alias = "get")]
    Get,
    #[serde(alias = "post")]
    Post,
    #[serde(alias = "put")]
    Put,
    #[serde(alias = "patch")]
    Patch,
    #[serde(alias = "delete")]
    Delete,
}

impl Method {
    fn to_reqwest(self) -> reqwest::Method {
        match self {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
        }
    }
}

/// A request timeout written as `<n>ms`, `<n>s` or `<n>m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Timeout(Duration);

impl Timeout {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let bounds = Duration::from_millis(1)..=MAX_TIMEOUT;
        HumanDuration::parse_within(raw, "timeout", bounds).map(|d| Timeout(d.get()))
    }

    pub fn get(self) -> Duration {
        self.0
    }
}

impl Default for Timeout {
    fn default() -> Self {
        Timeout(Duration::from_secs(10))
    }
}

impl TryFrom<String> for Timeout {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Timeout::parse(&value)
    }
}

/// A URL that may contain variables. Without variables it is checked when the workflow loads;
/// with them, once rendered.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "String")]
pub struct UrlTemplate(Text);

impl UrlTemplate {
    /// The URL with its values percent-encoded: a value cannot add query parameters, path
    /// segments or a fragment, nor be a `.` or `..` segment.
    pub fn render(&self, data: &Value) -> Result<Url, StepError> {
        let url = self.0.render_url(data)?;
        let templated = self.0.variables().next().is_some() || self.0.source().contains("{%");
        let parsed = parse_url(&url).map_err(|mut e| {
            if templated {
                e.push_str(
                    " (values in a URL are percent-encoded: write {{ x | raw_url }} for a value \
                     that is itself a URL or a path)",
                );
            }
            StepError::new(ErrorClass::ProviderError, e)
        })?;
        if templated && has_dot_segment(&url) {
            return Err(StepError::new(
                ErrorClass::ProviderError,
                format!(
                    "the URL of '{}' has a '.' or '..' path segment once its values are filled in",
                    self.0.source()
                ),
            )
            .permanent());
        }
        Ok(parsed)
    }
}

/// Whether the path of `url` (as written, before a URL parser resolves it) has a `.` or `..`
/// segment, percent-encoded or not.
fn has_dot_segment(url: &str) -> bool {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .split_once('/')
        .map_or("", |(_, path)| path);
    path.split(['/', '\\']).any(|segment| {
        let segment = segment.to_ascii_lowercase().replace("%2e", ".");
        segment == "." || segment == ".."
    })
}

impl TryFrom<String> for UrlTemplate {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        let text = Text::parse(&value)?;
        if text.variables().next().is_none() && !value.contains("{%") {
            parse_url(&value)?;
        }
        Ok(UrlTemplate(text))
    }
}

/// An absolute http(s) URL with a host.
pub fn parse_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw.trim()).map_err(|e| format!("'{raw}' is not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("'{raw}' is not an http(s) URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("'{raw}' has no host"));
    }
    Ok(url)
}

/// A JSON value whose strings may contain variables: rendered leaf by leaf, so the structure
/// (objects, arrays, numbers, booleans) is kept and only the strings change.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "Value")]
pub enum JsonTemplate {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(Text),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
}

impl JsonTemplate {
    pub fn render(&self, data: &Value) -> Result<Value, RenderError> {
        Ok(match self {
            JsonTemplate::Null => Value::Null,
            JsonTemplate::Bool(b) => Value::Bool(*b),
            JsonTemplate::Number(n) => Value::Number(n.clone()),
            JsonTemplate::String(t) => Value::String(t.render(data)?),
            JsonTemplate::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| i.render(data))
                    .collect::<Result<_, _>>()?,
            ),
            JsonTemplate::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.render(data)?)))
                    .collect::<Result<_, RenderError>>()?,
            ),
        })
    }
}

impl TryFrom<Value> for JsonTemplate {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, Self::Error> {
        Ok(match value {
            Value::Null => JsonTemplate::Null,
            Value::Bool(b) => JsonTemplate::Bool(b),
            Value::Number(n) => JsonTemplate::Number(n),
            Value::String(s) => JsonTemplate::String(Text::parse(&s)?),
            Value::Array(items) => JsonTemplate::Array(
                items
                    .into_iter()
                    .map(JsonTemplate::try_from)
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => JsonTemplate::Object(
                map.into_iter()
                    .map(|(k, v)| Ok((k, JsonTemplate::try_from(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
        })
    }
}

impl JsonSchema for JsonTemplate {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "JsonTemplate".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // Any JSON value.
        schemars::Schema::default()
    }
}

/// Rendered request headers. Recorded with the attempt, but credentials are masked: the
/// history (`herald runs show`, the API, dead letters) must never show a token.
#[derive(Debug, Default)]
pub struct Headers(Vec<(HeaderName, HeaderValue)>);

impl Serialize for Headers {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name.as_str(), &masked_header(name, value))?;
        }
        map.end()
    }
}

/// The URL as recorded: credential-looking query parameters and a password are masked.
fn recorded_url<S: Serializer>(url: &Url, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&masked_url(url))
}

fn is_false(b: &bool) -> bool {
    !b
}

#[derive(Debug, Serialize)]
pub struct Input {
    pub method: Method,
    #[serde(serialize_with = "recorded_url")]
    pub url: Url,
    pub headers: Headers,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    pub timeout_ms: u64,
    pub expect_success: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub follow_redirects: bool,
}

#[async_trait]
impl Step for HttpRequest {
    type Input = Input;

    fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    fn retry(&self) -> Option<super::RetryPolicy> {
        self.retry
    }

    fn render(&self, ctx: &StepContext<'_>) -> Result<Input, StepError> {
        let url = self.url.render(ctx.data)?;
        let mut headers = Vec::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            let rendered = value.render(ctx.data)?;
            let value = HeaderValue::from_str(rendered.trim()).map_err(|_| {
                StepError::new(
                    ErrorClass::ProviderError,
                    format!("header {name}: the value is not valid in an HTTP header (line breaks or control characters)"),
                )
            })?;
            headers.push((name.clone(), value));
        }
        let body = self.body.as_ref().map(|b| b.render(ctx.data)).transpose()?;
        Ok(Input {
            method: self.method,
            url,
            headers: Headers(headers),
            body,
            timeout_ms: self.timeout.get().as_millis() as u64,
            expect_success: self.expect_success,
            follow_redirects: self.follow_redirects,
        })
    }

    async fn execute(&self, input: Input, ctx: &StepContext<'_>) -> Result<StepOutput, StepError> {
        let timeout = Duration::from_millis(input.timeout_ms);
        let target = describe_target(&input.url);
        let mut request = ctx
            .services
            .http
            .request(input.method.to_reqwest(), input.url.clone())
            .timeout(timeout);
        let has_content_type = input.headers.0.iter().any(|(n, _)| n == CONTENT_TYPE);
        for (name, value) in input.headers.0 {
            request = request.header(name, value);
        }
        if let Some(body) = &input.body {
            if !has_content_type {
                request = request.header(CONTENT_TYPE, "application/json");
            }
            request = request.body(serde_json::to_vec(body).unwrap_or_default());
        }
        let http = &ctx.services.http;
        let follow = input.follow_redirects;
        let call = async {
            let request = request.build()?;
            let response = http.send(request, follow).await?;
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let retry_after = retry_after(response.headers());
            let redirect = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| response.url().join(l).ok())
                .map(|to| describe_target(&to))
                .filter(|_| !follow);
            let (bytes, truncated) = read_limited(response, MAX_RESPONSE_BYTES).await?;
            Ok::<_, SendError>(Answer {
                status,
                content_type,
                retry_after,
                redirect,
                bytes,
                truncated,
            })
        };
        let method = input.method;
        let answer = match tokio::time::timeout(timeout, call).await {
            Err(_) => return Err(timed_out(&target, timeout)),
            Ok(Err(SendError::Http(e))) if e.is_timeout() => {
                return Err(timed_out(&target, timeout));
            }
            Ok(Err(SendError::Http(e))) => {
                return Err(StepError::new(
                    ErrorClass::ProviderError,
                    format!("{method} {target} failed: {}", chain(&e)),
                ));
            }
            Ok(Err(e)) => {
                let what = match e {
                    SendError::Refused(_) => "refused",
                    _ => "failed",
                };
                return Err(StepError::new(
                    ErrorClass::ProviderError,
                    format!("{method} {target} {what}: {e}"),
                )
                .permanent());
            }
            Ok(Ok(answer)) => answer,
        };
        check_status(&answer, input.expect_success, input.method, &target)?;
        Ok(StepOutput::new(answer.output()))
    }
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A response, read.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: Option<String>,
    retry_after: Option<Duration>,
    /// Where a redirect points (host and path), when the answer is one.
    redirect: Option<String>,
    bytes: Vec<u8>,
    truncated: bool,
}

impl Answer {
    /// `{status, body, text, headers}`: `body` is the parsed JSON (else null), `text` the raw
    /// body when it is not JSON (else null).
    fn output(&self) -> Value {
        let parsed = if self.truncated || self.bytes.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            serde_json::from_slice::<Value>(&self.bytes).ok()
        };
        let (body, text) = match parsed {
            Some(json) => (json, Value::Null),
            None => (
                Value::Null,
                Value::String(String::from_utf8_lossy(&self.bytes).into_owned()),
            ),
        };
        let mut headers = serde_json::Map::new();
        if let Some(ct) = &self.content_type {
            headers.insert("content-type".into(), Value::from(ct.as_str()));
        }
        let mut out = json!({
            "status": self.status,
            "body": body,
            "text": text,
            "headers": headers,
        });
        if self.truncated {
            out["truncated"] = Value::Bool(true);
        }
        out
    }

    fn excerpt(&self) -> String {
        let text = String::from_utf8_lossy(&self.bytes);
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut excerpt: String = flat.chars().take(EXCERPT_CHARS).collect();
        if flat.chars().count() > EXCERPT_CHARS {
            excerpt.push_str("...");
        }
        excerpt
    }
}

/// 429 and 5xx always fail (waiting can help); other non-2xx answers fail with `expect_success`.
/// A redirect that was not followed fails for good: it will point the same way next time.
fn check_status(
    answer: &Answer,
    expect_success: bool,
    method: Method,
    target: &str,
) -> Result<(), StepError> {
    let status = answer.status;
    let failed =
        status == 429 || status >= 500 || (expect_success && !(200..300).contains(&status));
    if !failed {
        return Ok(());
    }
    let excerpt = answer.excerpt();
    let mut message = format!("{method} {target} answered HTTP {status}");
    let redirect = (300..400).contains(&status);
    if let (true, Some(to)) = (redirect, &answer.redirect) {
        message.push_str(&format!(
            " (a redirect to {to}; follow_redirects: true follows it)"
        ));
    } else if !excerpt.is_empty() {
        message.push_str(": ");
        message.push_str(&excerpt);
    }
    let class = if status == 429 {
        ErrorClass::RateLimited
    } else {
        ErrorClass::ProviderError
    };
    let retry_after = answer.retry_after.filter(|_| status == 429);
    let error = StepError::from_provider(class, message, Some(status), None, retry_after);
    Err(if redirect { error.permanent() } else { error })
}

fn timed_out(target: &str, timeout: Duration) -> StepError {
    StepError::new(
        ErrorClass::ProviderError,
        format!("{target} did not answer within {}", show_duration(timeout)),
    )
}

fn show_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Host and path, for messages: the query string may carry a token.
fn describe_target(url: &Url) -> String {
    let mut target = url.host_str().unwrap_or_default().to_string();
    if let Some(port) = url.port() {
        target.push_str(&format!(":{port}"));
    }
    target.push_str(url.path());
    target
}

/// An error and its causes, without the URL (its query may carry a token).
fn chain(e: &reqwest::Error) -> String {
    let mut parts = vec![if e.is_connect() {
        "could not connect".to_string()
    } else if e.is_body() || e.is_decode() {
        "reading the response failed".to_string()
    } else {
        "the request failed".to_string()
    }];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// Reads at most `limit` bytes of the body; true when more was sent (and dropped).
async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - bytes.len();
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            return Ok((bytes, true));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((bytes, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(yaml: &str) -> Result<HttpRequest, String> {
        serde_saphyr::from_str::<HttpRequest>(yaml).map_err(|e| e.to_string())
    }

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            content_type: Some("application/json".into()),
            retry_after: Some(Duration::from_secs(3)),
            redirect: None,
            bytes: body.as_bytes().to_vec(),
            truncated: false,
        }
    }

    #[test]
    fn timeouts_parse_in_ms_s_and_m() {
        assert_eq!(
            Timeout::parse("500ms").unwrap().get(),
            Duration::from_millis(500)
        );
        assert_eq!(
            Timeout::parse("10s").unwrap().get(),
            Duration::from_secs(10)
        );
        assert_eq!(
            Timeout::parse(" 2m ").unwrap().get(),
            Duration::from_secs(120)
        );
        assert_eq!(Timeout::default().get(), Duration::from_secs(10));
        for bad in [
            "",
            "10",
            "s",
            "1.5s",
            "10h",
            "0s",
            "6m",
            "-1s",
            "99999999999999999999m",
        ] {
            assert!(Timeout::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_must_be_absolute_http_or_https_with_a_host() {
        assert!(parse_url("https://crm.example.com/leads/1?x=y").is_ok());
        assert!(parse_url("http://127.0.0.1:8080/").is_ok());
        for bad in [
            "crm.example.com/leads",
            "ftp://example.com/",
            "file:///etc/passwd",
            "https://",
            "/leads",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_static_url_is_checked_at_load_and_a_templated_one_once_rendered() {
        assert!(step("url: 'not a url'").is_err());
        let s = step("url: 'https://crm.example.com/leads/{{ trigger.customer_id }}'").unwrap();
        let url = s
            .url
            .render(&json!({"trigger": {"customer_id": "4915112345678"}}))
            .unwrap();
        assert_eq!(url.as_str(), "https://crm.example.com/leads/4915112345678");
        let s = step("url: '{{ trigger.target }}'").unwrap();
        let err = s
            .url
            .render(&json!({"trigger": {"target": "nope"}}))
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::ProviderError);
        assert!(err.message.contains("not a valid URL"), "{}", err.message);
    }

    #[test]
    fn the_yaml_is_checked_strictly() {
        let s = step(
            "id: crm\nmethod: POST\nurl: https://x.example/\nheaders: { Authorization: 'Bearer t' }\nbody: { a: 1 }\ntimeout: 2s\nexpect_success: false",
        )
        .unwrap();
        assert_eq!(s.method, Method::Post);
        assert_eq!(s.timeout.get(), Duration::from_secs(2));
        assert!(!s.expect_success);
        assert_eq!(s.headers[0].0.as_str(), "authorization");
        let s = step("url: https://x.example/").unwrap();
        assert_eq!(
            (s.method, s.expect_success, s.follow_redirects),
            (Method::Get, true, false)
        );
        assert!(
            step("url: https://x.example/\nfollow_redirects: true")
                .unwrap()
                .follow_redirects
        );
        assert!(step("url: https://x.example/\ncolour: red").is_err());
        assert!(step("url: https://x.example/\nmethod: FETCH").is_err());
        assert!(step("url: https://x.example/\ntimeout: 10").is_err());
        assert!(step("url: https://x.example/\nheaders: { 'bad header': x }").is_err());
        assert!(
            step("url: https://x.example/\nbody: { a: 1 }").is_err(),
            "GET with a body"
        );
        assert!(step("url: https://x.example/\nmethod: POST\nbody: { a: '{{ x' }").is_err());
    }

    #[test]
    fn the_body_keeps_its_structure_and_renders_every_string() {
        let body: JsonTemplate = serde_saphyr::from_str(
            "name: '{{ contact.name }}'\nsource: whatsapp\nscore: 5\nvip: true\nnote: null\ntags: ['{{ trigger.text }}', x]\nnested: { id: 'c-{{ trigger.customer_id }}' }",
        )
        .unwrap();
        let data =
            json!({"contact": {"name": "Ana"}, "trigger": {"text": "hi", "customer_id": "49"}});
        assert_eq!(
            body.render(&data).unwrap(),
            json!({"name": "Ana", "source": "whatsapp", "score": 5, "vip": true, "note": null,
                   "tags": ["hi", "x"], "nested": {"id": "c-49"}})
        );
        let err = body.render(&json!({"trigger": {}})).unwrap_err();
        assert_eq!(err.to_string(), "Missing variable contact.name");
    }

    #[test]
    fn credentials_are_masked_in_the_recorded_input() {
        let headers = Headers(vec![
            (
                HeaderName::from_static("authorization"),
                HeaderValue::from_static("Bearer s3cret"),
            ),
            (
                HeaderName::from_static("x-api-key"),
                HeaderValue::from_static("s3cret"),
            ),
            (
                HeaderName::from_static("accept"),
                HeaderValue::from_static("application/json"),
            ),
        ]);
        let input = Input {
            method: Method::Post,
            url: Url::parse("https://user:s3cret@crm.example.com/x").unwrap(),
            headers,
            body: None,
            timeout_ms: 1000,
            expect_success: true,
            follow_redirects: false,
        };
        let recorded = serde_json::to_value(&input).unwrap();
        assert!(!recorded.to_string().contains("s3cret"), "{recorded}");
        assert_eq!(recorded["headers"]["accept"], "application/json");
        assert_eq!(recorded["headers"]["authorization"], "***");
        assert_eq!(recorded["method"], "POST");
    }

    #[test]
    fn credential_query_parameters_are_masked_in_the_recorded_input() {
        let input = Input {
            method: Method::Get,
            url: Url::parse(
                "https://crm.example.com/x?api_key=s3cret&page=2&access_token=s3cret&sig=s3cret&Signature=s3cret&q=hello%20world",
            )
            .unwrap(),
            headers: Headers::default(),
            body: None,
            timeout_ms: 1000,
            expect_success: true,
            follow_redirects: false,
        };
        let recorded = serde_json::to_value(&input).unwrap();
        assert!(!recorded.to_string().contains("s3cret"), "{recorded}");
        assert_eq!(
            recorded["url"],
            "https://crm.example.com/x?api_key=***&page=2&access_token=***&sig=***&Signature=***&q=hello%20world"
        );
    }

    #[test]
    fn values_in_the_url_are_percent_encoded_unless_marked_raw_url() {
        let data = json!({"trigger": {"id": "7/../../admin", "text": "a b&role=admin#x?", "n": 5,
                          "next": "https://crm.example.com/page/2?cursor=abc"}});
        let s = step(
            "url: 'https://crm.example.com/leads/{{ trigger.id }}?q={{ trigger.text }}&n={{ trigger.n }}'",
        )
        .unwrap();
        let url = s.url.render(&data).unwrap();
        assert_eq!(
            url.as_str(),
            "https://crm.example.com/leads/7%2F..%2F..%2Fadmin?q=a%20b%26role%3Dadmin%23x%3F&n=5"
        );
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs[0], ("q".into(), "a b&role=admin#x?".into()));
        assert_eq!(pairs.len(), 2);
        // Through the template engine (a filter) too.
        let s = step("url: 'https://crm.example.com/leads/{{ trigger.id | lower }}'").unwrap();
        assert_eq!(
            s.url.render(&data).unwrap().as_str(),
            "https://crm.example.com/leads/7%2F..%2F..%2Fadmin"
        );
        // A value that is a whole URL is written as such with raw_url.
        let s = step("url: '{{ trigger.next | raw_url }}'").unwrap();
        assert_eq!(
            s.url.render(&data).unwrap().as_str(),
            "https://crm.example.com/page/2?cursor=abc"
        );
        // Without it, the error says so.
        let s = step("url: '{{ trigger.next }}'").unwrap();
        let err = s.url.render(&data).unwrap_err();
        assert!(err.message.contains("raw_url"), "{}", err.message);
    }

    #[test]
    fn a_value_that_is_a_dot_segment_is_refused() {
        let s = step("url: 'https://crm.example.com/leads/{{ trigger.id }}/notes'").unwrap();
        for bad in ["..", ".", "%2e%2e"] {
            let data = json!({"trigger": {"id": bad}});
            match s.url.render(&data) {
                Ok(url) => assert_eq!(url.path_segments().unwrap().count(), 3, "{bad}: {url}"),
                Err(e) => assert!(e.message.contains("'.' or '..'"), "{bad}: {}", e.message),
            }
        }
        let data = json!({"trigger": {"id": ".."}});
        assert!(s.url.render(&data).is_err());
    }

    #[test]
    fn statuses_map_to_error_classes() {
        let ok = answer(200, "{}");
        assert!(check_status(&ok, true, Method::Get, "x/").is_ok());
        let limited = check_status(&answer(429, ""), false, Method::Get, "x/").unwrap_err();
        assert_eq!(limited.class, ErrorClass::RateLimited);
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(3)));
        let down = check_status(&answer(503, "down"), false, Method::Get, "x/").unwrap_err();
        assert_eq!(
            (down.class, down.http_status),
            (ErrorClass::ProviderError, Some(503))
        );
        let missing = check_status(
            &answer(404, "{\"error\": \"no such lead\"}"),
            true,
            Method::Get,
            "crm/x",
        )
        .unwrap_err();
        assert_eq!(missing.class, ErrorClass::ProviderError);
        assert!(missing.message.contains("HTTP 404"), "{}", missing.message);
        assert!(
            missing.message.contains("no such lead"),
            "{}",
            missing.message
        );
        assert!(check_status(&answer(404, ""), false, Method::Get, "x/").is_ok());
        let mut moved = answer(302, "");
        moved.redirect = Some("crm.example.com/new".into());
        let moved = check_status(&moved, true, Method::Get, "x/").unwrap_err();
        assert_eq!(moved.http_status, Some(302));
        assert!(
            !moved.retryable(),
            "a redirect points the same way next time"
        );
        assert_eq!(
            moved.message,
            "GET x/ answered HTTP 302 (a redirect to crm.example.com/new; follow_redirects: true follows it)"
        );
        assert!(check_status(&answer(302, ""), false, Method::Get, "x/").is_ok());
    }

    #[test]
    fn the_output_has_parsed_json_or_the_raw_text() {
        let out = answer(201, "{\"id\": 7}").output();
        assert_eq!(
            out,
            json!({"status": 201, "body": {"id": 7}, "text": null, "headers": {"content-type": "application/json"}})
        );
        let out = answer(200, "plain ok").output();
        assert_eq!(
            (&out["body"], &out["text"]),
            (&Value::Null, &json!("plain ok"))
        );
        let mut big = answer(200, "{\"a\": 1");
        big.truncated = true;
        assert_eq!(big.output()["truncated"], true);
    }
}

crate::string_schema!(UrlTemplate);
crate::string_schema!(Timeout);
