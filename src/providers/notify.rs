//! Team notifications: a Slack-compatible incoming webhook (`HERALD_NOTIFY_WEBHOOK_URL`) and the log.
//!
//! Every notification is logged at info (`team notified`); when a webhook URL is configured it is
//! also POSTed as Slack's incoming-webhook JSON (`{"text": ...}`), which Slack, Mattermost,
//! Rocket.Chat and Discord's `/slack` endpoint all accept. The URL itself is a secret (anyone who
//! has it can post to the channel), so it never appears in logs or `Debug` output.

use std::{fmt, time::Duration};

use serde_json::json;

use crate::{config::Secret, failure::ErrorClass};

/// How long one webhook call may take.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an error answer is kept in the message.
const EXCERPT_CHARS: usize = 200;

/// Sends notifications to the team.
#[derive(Clone, Default)]
pub struct Notifier {
    url: Option<Secret>,
    http: reqwest::Client,
}

/// A webhook call that failed, classified like every provider error.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{class}: {message}")]
pub struct NotifyError {
    pub class: ErrorClass,
    pub http_status: Option<u16>,
    pub message: String,
    /// How long the webhook asked us to wait (Retry-After), if it did.
    pub retry_after: Option<Duration>,
}

impl NotifyError {
    fn provider(message: String, http_status: Option<u16>) -> Self {
        NotifyError {
            class: ErrorClass::ProviderError,
            http_status,
            message,
            retry_after: None,
        }
    }
}

/// The HTTP client of the team webhook: 5 s to connect, at most 5 redirects, a 30 s overall
/// limit. The operator sets the webhook's URL, so it may be an inside address (a Mattermost on
/// the company network): the outbound guard of workflow calls does not apply.
pub fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::limited(5))
        .build()
        .map_err(|e| anyhow::anyhow!("build the team webhook's HTTP client: {e}"))
}

impl Notifier {
    /// `url`: the incoming webhook; `None` (or blank) logs only.
    pub fn new(url: Option<String>, http: reqwest::Client) -> Self {
        let url = url.filter(|u| !u.trim().is_empty()).map(Secret::new);
        Notifier { url, http }
    }

    /// True when notifications go to a webhook, not only to the log.
    pub fn has_webhook(&self) -> bool {
        self.url.is_some()
    }

    /// Tells the team `text`. `fields` (e.g. `("workflow", name)`, `("error", ...)`) are logged
    /// as structured context and appended to the message as `key: value` lines.
    pub async fn send(&self, text: &str, fields: &[(&str, String)]) -> Result<(), NotifyError> {
        let message = compose(text, fields);
        let context = fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        let Some(url) = &self.url else {
            tracing::info!(notification = text, fields = %context, delivered = "log", "team notified");
            return Ok(());
        };
        let response = self
            .http
            .post(url.expose())
            .timeout(WEBHOOK_TIMEOUT)
            .json(&json!({ "text": message }))
            .send()
            .await
            .map_err(|e| {
                let what = if e.is_timeout() {
                    format!("timed out after {}s", WEBHOOK_TIMEOUT.as_secs())
                } else if e.is_connect() {
                    "could not connect".to_string()
                } else {
                    // reqwest's error text names the URL, which is a secret: drop it.
                    e.without_url().to_string()
                };
                NotifyError::provider(format!("notification webhook: {what}"), None)
            })?;
        let status = response.status();
        if status.is_success() {
            tracing::info!(notification = text, fields = %context, delivered = "webhook", "team notified");
            return Ok(());
        }
        let retry_after = super::retry_after(response.headers());
        let body = response.text().await.unwrap_or_default();
        let excerpt: String = body.trim().chars().take(EXCERPT_CHARS).collect();
        let message = format!(
            "notification webhook answered {}: {excerpt}",
            status.as_u16()
        );
        tracing::warn!(notification = text, fields = %context, status = status.as_u16(), "team notification failed");
        if status.as_u16() == 429 {
            return Err(NotifyError {
                class: ErrorClass::RateLimited,
                http_status: Some(429),
                message,
                retry_after,
            });
        }
        Err(NotifyError::provider(message, Some(status.as_u16())))
    }
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("webhook", &self.url.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The message as sent: the text, then one `key: value` line per field.
pub fn compose(text: &str, fields: &[(&str, String)]) -> String {
    let mut message = text.to_string();
    for (key, value) in fields {
        message.push('\n');
        message.push_str(key);
        message.push_str(": ");
        message.push_str(value);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_appended_as_lines() {
        assert_eq!(compose("hi", &[]), "hi");
        assert_eq!(
            compose(
                "Step failed",
                &[("workflow", "w".into()), ("error", "x".into())]
            ),
            "Step failed\nworkflow: w\nerror: x"
        );
    }

    #[test]
    fn the_webhook_url_never_shows_in_debug_output() {
        let n = Notifier::new(
            Some("https://hooks.slack.com/services/T0/B0/secret".into()),
            reqwest::Client::new(),
        );
        assert!(n.has_webhook());
        assert!(!format!("{n:?}").contains("secret"));
        assert!(!Notifier::new(Some("  ".into()), reqwest::Client::new()).has_webhook());
    }
}
