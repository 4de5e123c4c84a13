//! Configuration: read once from the environment in `main`, passed down.
//! Secrets are wrapped in [`Secret`] so that `Debug` never prints them.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context, bail};

/// A value that must never appear in logs or in the API.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The app secret used when Herald runs with the sandbox sender and no `WHATSAPP_APP_SECRET`:
/// `herald simulate` signs with the same value, so a new user needs no set-up.
pub const SANDBOX_APP_SECRET: &str = "herald-sandbox-secret";
/// The phone_number_id that `herald simulate` uses when none is given.
pub const SANDBOX_PHONE_NUMBER_ID: &str = "100000000000001";
/// The call webhook's bearer token when Herald runs in sandbox mode and neither
/// `HERALD_CALLS_TOKEN` nor `HERALD_CALLS_SECRET` is set (`herald simulate call-ended` uses it).
pub const SANDBOX_CALLS_TOKEN: &str = "herald-sandbox-calls-token";

/// Queue type for Herald's durable queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueType {
    Quorum,
    Classic,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: String,
    pub amqp_url: String,
    /// Prefix of every exchange and queue name (`herald` -> `herald.events`, `herald.jobs`).
    pub amqp_prefix: String,
    pub amqp_queue_type: QueueType,
    /// Queues are deleted after this long unused (`x-expires`); for tests, unset in production.
    pub amqp_queue_expires_ms: Option<u64>,
    pub listen: SocketAddr,
    pub workflows_dir: PathBuf,
    pub app_secret: Secret,
    pub verify_token: Option<Secret>,
    pub access_token: Option<Secret>,
    pub api_base_url: String,
    /// Largest webhook body accepted, in bytes.
    pub max_body_bytes: usize,
    pub log_json: bool,
    /// Jobs a worker holds at once (RabbitMQ prefetch).
    pub worker_prefetch: u16,
    /// Events a matcher holds at once (RabbitMQ prefetch).
    pub matcher_prefetch: u16,
    /// How often the outbox relay looks for rows that were stored but not published.
    pub outbox_interval: Duration,
    /// Timeout of one call to the Graph API.
    pub provider_timeout: Duration,
    pub db_max_connections: u32,
    /// Slack-compatible incoming webhook for team notifications (`notify`, failures).
    pub notify_webhook_url: Option<String>,
    /// YAML file naming the AI assistants (`generate_ai_response`).
    pub assistants_file: PathBuf,
    /// The template catalog (`templates.yaml`): approved templates and their parameters.
    pub templates_file: PathBuf,
    /// The default retry policy: the wait before a retry (`HERALD_RETRY_WAIT`, default 60s) and
    /// the number of attempts in all (`HERALD_RETRY_ATTEMPTS`, default 2: one retry).
    pub retry_wait: Duration,
    pub retry_attempts: u32,
    /// How often the scheduler looks for due timers (delays, waits, retries).
    pub timer_interval: Duration,
    /// The sender (phone_number_id) of runs that no WhatsApp message started (dispatches,
    /// schedules) when they name none (`HERALD_DEFAULT_SENDER`, default the sandbox's).
    pub default_sender: String,
    /// Runs a dispatch starts per second at most unless it says otherwise (`HERALD_DISPATCH_RATE`).
    pub dispatch_rate: f64,
    /// How often the scheduler starts dispatch runs and fires schedules (`HERALD_DISPATCH_INTERVAL_MS`).
    pub dispatch_interval: Duration,
    /// Bearer token of `/api/v1` (`HERALD_API_TOKEN`). Without one the API refuses every
    /// request, except in sandbox mode, where it is `herald-sandbox-api-token`.
    pub api_token: Option<Secret>,
    /// Inbound keywords that opt a contact out of marketing templates, or back in
    /// (`HERALD_OPT_OUT_KEYWORDS`, `HERALD_OPT_IN_KEYWORDS`, comma-separated).
    pub opt_out_keywords: crate::domain::OptOutKeywords,
    /// The WhatsApp Business Account whose templates are synced from the Graph API
    /// (`WHATSAPP_BUSINESS_ACCOUNT_ID`; with an access token).
    pub business_account_id: Option<String>,
    /// How often the template catalog is synced from the Graph API.
    pub template_sync_interval: Duration,
    /// Senders: messages per second of every sender (`HERALD_SENDER_RATE`, default 80), the
    /// gap between two messages to one recipient once `recipient_burst` went out back to back
    /// (`HERALD_RECIPIENT_GAP` 6s, `HERALD_RECIPIENT_BURST` 5), per-sender overrides
    /// (`HERALD_SENDERS`, `senders.yaml`), the longest a send sleeps for its slot before it is
    /// deferred (`HERALD_PACING_MAX_WAIT` 3s), and how often an offline sender is probed
    /// (`HERALD_SENDER_RECHECK` 5m).
    pub sender_rate: crate::domain::Rate,
    pub recipient_gap: Duration,
    pub recipient_burst: u32,
    pub senders_file: PathBuf,
    pub pacing_max_wait: Duration,
    pub sender_recheck: Duration,
    /// `POST /webhooks/calls`: the bearer token (`HERALD_CALLS_TOKEN`) and/or the HMAC secret of
    /// `X-Herald-Signature-256` (`HERALD_CALLS_SECRET`); neither set outside the sandbox: the
    /// endpoint refuses every call. The sender a call's follow-up goes out on by default.
    pub calls_token: Option<Secret>,
    pub calls_secret: Option<Secret>,
    pub calls_sender: String,
}

/// The API token when Herald runs in sandbox mode without `HERALD_API_TOKEN`.
pub const SANDBOX_API_TOKEN: &str = "herald-sandbox-api-token";

impl Config {
    /// Reads the configuration from `HERALD_*` and `WHATSAPP_*` variables.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let var = |key: &str| get(key).filter(|v| !v.trim().is_empty());
        let access_token = var("WHATSAPP_ACCESS_TOKEN").map(Secret::new);
        let access_token_set = access_token.is_some();
        let app_secret = match var("WHATSAPP_APP_SECRET") {
            Some(s) => Secret::new(s),
            None if access_token.is_none() => Secret::new(SANDBOX_APP_SECRET),
            None => bail!(
                "WHATSAPP_APP_SECRET is required when WHATSAPP_ACCESS_TOKEN is set \
                 (webhooks are verified with the Meta app secret)"
            ),
        };
        let listen = var("HERALD_LISTEN").unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen
            .parse()
            .with_context(|| format!("HERALD_LISTEN: '{listen}' is not host:port"))?;
        let queue_type = match var("HERALD_AMQP_QUEUE_TYPE").as_deref() {
            None | Some("quorum") => QueueType::Quorum,
            Some("classic") => QueueType::Classic,
            Some(other) => bail!("HERALD_AMQP_QUEUE_TYPE: '{other}' is not quorum or classic"),
        };
        let number = |key: &str, default: u64| -> anyhow::Result<u64> {
            match var(key) {
                None => Ok(default),
                Some(v) => v
                    .parse()
                    .with_context(|| format!("{key}: '{v}' is not a whole number")),
            }
        };
        let duration = |key: &str, default: Duration| -> anyhow::Result<Duration> {
            match var(key) {
                None => Ok(default),
                Some(v) => Ok(crate::domain::HumanDuration::parse(&v)
                    .map_err(|e| anyhow::anyhow!("{key}: {e}"))?
                    .get()),
            }
        };
        let log_json = match var("HERALD_LOG_FORMAT").as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => bail!("HERALD_LOG_FORMAT: '{other}' is not json or text"),
        };
        let calls_secret = var("HERALD_CALLS_SECRET").map(Secret::new);
        let calls_token = match var("HERALD_CALLS_TOKEN") {
            Some(t) => Some(Secret::new(t)),
            None if calls_secret.is_none() && access_token.is_none() => {
                Some(Secret::new(SANDBOX_CALLS_TOKEN))
            }
            None => None,
        };
        Ok(Config {
            calls_token,
            calls_secret,
            calls_sender: var("HERALD_CALLS_SENDER")
                .unwrap_or_else(|| SANDBOX_PHONE_NUMBER_ID.into()),
            database_url: var("HERALD_DATABASE_URL")
                .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/herald".into()),
            amqp_url: var("HERALD_AMQP_URL")
                .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
            amqp_prefix: var("HERALD_AMQP_PREFIX").unwrap_or_else(|| "herald".into()),
            amqp_queue_type: queue_type,
            amqp_queue_expires_ms: match var("HERALD_AMQP_QUEUE_EXPIRES_MS") {
                None => None,
                Some(v) => Some(v.parse().with_context(|| {
                    format!("HERALD_AMQP_QUEUE_EXPIRES_MS: '{v}' is not a whole number")
                })?),
            },
            listen,
            workflows_dir: var("HERALD_WORKFLOWS")
                .unwrap_or_else(|| "workflows".into())
                .into(),
            app_secret,
            verify_token: var("WHATSAPP_VERIFY_TOKEN").map(Secret::new),
            access_token,
            api_base_url: var("WHATSAPP_API_BASE_URL")
                .unwrap_or_else(|| "https://graph.facebook.com/v24.0".into())
                .trim_end_matches('/')
                .to_string(),
            max_body_bytes: number("HERALD_MAX_BODY_BYTES", 4 * 1024 * 1024)? as usize,
            log_json,
            worker_prefetch: number("HERALD_WORKER_PREFETCH", 256)?.clamp(1, 65535) as u16,
            matcher_prefetch: number("HERALD_MATCHER_PREFETCH", 256)?.clamp(1, 65535) as u16,
            outbox_interval: Duration::from_millis(number("HERALD_OUTBOX_INTERVAL_MS", 1000)?),
            provider_timeout: Duration::from_millis(number("HERALD_PROVIDER_TIMEOUT_MS", 10_000)?),
            db_max_connections: number("HERALD_DB_MAX_CONNECTIONS", 32)? as u32,
            notify_webhook_url: var("HERALD_NOTIFY_WEBHOOK_URL"),
            assistants_file: var("HERALD_ASSISTANTS")
                .unwrap_or_else(|| "assistants.yaml".into())
                .into(),
            templates_file: var("HERALD_TEMPLATES")
                .unwrap_or_else(|| "templates.yaml".into())
                .into(),
            retry_wait: match var("HERALD_RETRY_WAIT") {
                None => Duration::from_secs(60),
                Some(v) => crate::domain::HumanDuration::parse(&v)
                    .map_err(|e| anyhow::anyhow!("HERALD_RETRY_WAIT: {e}"))?
                    .get(),
            },
            retry_attempts: number("HERALD_RETRY_ATTEMPTS", 2)?.clamp(1, 100) as u32,
            timer_interval: Duration::from_millis(number("HERALD_TIMER_INTERVAL_MS", 250)?),
            default_sender: var("HERALD_DEFAULT_SENDER")
                .unwrap_or_else(|| SANDBOX_PHONE_NUMBER_ID.into()),
            dispatch_rate: match var("HERALD_DISPATCH_RATE") {
                None => 80.0,
                Some(v) => match v.parse::<f64>() {
                    Ok(r) if (0.01..=1000.0).contains(&r) => r,
                    _ => bail!(
                        "HERALD_DISPATCH_RATE: '{v}' is not a rate between 0.01 and 1000 per second"
                    ),
                },
            },
            dispatch_interval: Duration::from_millis(
                number("HERALD_DISPATCH_INTERVAL_MS", 200)?.max(10),
            ),
            api_token: match var("HERALD_API_TOKEN") {
                Some(t) => Some(Secret::new(t)),
                None if access_token_set => None,
                None => Some(Secret::new(SANDBOX_API_TOKEN)),
            },
            opt_out_keywords: crate::domain::OptOutKeywords::parse(
                &var("HERALD_OPT_OUT_KEYWORDS")
                    .unwrap_or_else(|| crate::domain::OptOutKeywords::DEFAULT_OPT_OUT.into()),
                &var("HERALD_OPT_IN_KEYWORDS")
                    .unwrap_or_else(|| crate::domain::OptOutKeywords::DEFAULT_OPT_IN.into()),
            )
            .map_err(|e| {
                anyhow::anyhow!("HERALD_OPT_OUT_KEYWORDS / HERALD_OPT_IN_KEYWORDS: {e}")
            })?,
            business_account_id: var("WHATSAPP_BUSINESS_ACCOUNT_ID"),
            template_sync_interval: match var("HERALD_TEMPLATE_SYNC_INTERVAL") {
                None => Duration::from_secs(15 * 60),
                Some(v) => crate::domain::HumanDuration::parse(&v)
                    .map_err(|e| anyhow::anyhow!("HERALD_TEMPLATE_SYNC_INTERVAL: {e}"))?
                    .get()
                    .max(Duration::from_secs(1)),
            },
            sender_rate: match var("HERALD_SENDER_RATE") {
                None => crate::domain::Rate::try_from(80.0).map_err(anyhow::Error::msg)?,
                Some(v) => crate::domain::Rate::parse(&v)
                    .map_err(|e| anyhow::anyhow!("HERALD_SENDER_RATE: {e}"))?,
            },
            recipient_gap: duration("HERALD_RECIPIENT_GAP", Duration::from_secs(6))?,
            recipient_burst: match number("HERALD_RECIPIENT_BURST", 5)? {
                0 => bail!("HERALD_RECIPIENT_BURST: must be at least 1"),
                n => n.min(10_000) as u32,
            },
            senders_file: var("HERALD_SENDERS")
                .unwrap_or_else(|| "senders.yaml".into())
                .into(),
            pacing_max_wait: duration("HERALD_PACING_MAX_WAIT", Duration::from_secs(3))?,
            sender_recheck: duration("HERALD_SENDER_RECHECK", Duration::from_secs(300))?,
        })
    }

    /// True when sends go to the sandbox instead of the Graph API.
    pub fn sandbox(&self) -> bool {
        self.access_token.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> anyhow::Result<Config> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_point_at_the_local_services_and_the_sandbox() {
        let c = config(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url, "postgres://postgres@127.0.0.1:5432/herald");
        assert!(c.sandbox());
        assert_eq!(c.app_secret.expose(), SANDBOX_APP_SECRET);
        assert_eq!(c.max_body_bytes, 4 * 1024 * 1024);
    }

    #[test]
    fn an_access_token_without_app_secret_is_refused() {
        let err = config(&[("WHATSAPP_ACCESS_TOKEN", "t")]).unwrap_err();
        assert!(err.to_string().contains("WHATSAPP_APP_SECRET"));
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let c = config(&[
            ("WHATSAPP_ACCESS_TOKEN", "tok-123"),
            ("WHATSAPP_APP_SECRET", "sec-456"),
        ])
        .unwrap();
        let printed = format!("{c:?}");
        assert!(!printed.contains("tok-123") && !printed.contains("sec-456"));
    }

    #[test]
    fn sender_limits_have_defaults_and_bad_values_name_the_variable() {
        let c = config(&[]).unwrap();
        assert_eq!(c.sender_rate.get(), 80.0);
        assert_eq!(c.recipient_gap, Duration::from_secs(6));
        assert_eq!(c.recipient_burst, 5);
        let c = config(&[
            ("HERALD_SENDER_RATE", "10"),
            ("HERALD_RECIPIENT_GAP", "500ms"),
        ])
        .unwrap();
        assert_eq!(c.sender_rate.get(), 10.0);
        assert_eq!(c.recipient_gap, Duration::from_millis(500));
        for (key, value) in [
            ("HERALD_SENDER_RATE", "0"),
            ("HERALD_SENDER_RATE", "lots"),
            ("HERALD_RECIPIENT_GAP", "6 seconds"),
            ("HERALD_RECIPIENT_BURST", "0"),
            ("HERALD_PACING_MAX_WAIT", "x"),
            ("HERALD_SENDER_RECHECK", "5"),
        ] {
            let err = config(&[(key, value)]).unwrap_err();
            assert!(err.to_string().contains(key), "{key}={value}: {err}");
        }
    }

    #[test]
    fn the_call_webhook_has_a_sandbox_token_only_in_sandbox_mode() {
        let sandbox = config(&[]).unwrap();
        assert_eq!(
            sandbox.calls_token.as_ref().map(Secret::expose),
            Some(SANDBOX_CALLS_TOKEN)
        );
        assert_eq!(sandbox.calls_sender, SANDBOX_PHONE_NUMBER_ID);
        let live = config(&[("WHATSAPP_ACCESS_TOKEN", "t"), ("WHATSAPP_APP_SECRET", "s")]).unwrap();
        assert!(live.calls_token.is_none() && live.calls_secret.is_none());
        let secret_only = config(&[
            ("HERALD_CALLS_SECRET", "hmac"),
            ("HERALD_CALLS_SENDER", "42"),
        ])
        .unwrap();
        assert!(secret_only.calls_token.is_none());
        assert_eq!(secret_only.calls_sender, "42");
    }

    #[test]
    fn a_bad_listen_address_names_the_variable() {
        let err = config(&[("HERALD_LISTEN", "nope")]).unwrap_err();
        assert!(err.to_string().contains("HERALD_LISTEN"));
    }

    #[test]
    fn opt_out_keywords_and_the_template_sync_are_configurable_and_checked() {
        let c = config(&[]).unwrap();
        assert_eq!(c.opt_out_keywords, crate::domain::OptOutKeywords::default());
        assert_eq!(c.business_account_id, None);
        assert_eq!(c.template_sync_interval, Duration::from_secs(900));
        let c = config(&[
            ("HERALD_OPT_OUT_KEYWORDS", "baja"),
            ("WHATSAPP_BUSINESS_ACCOUNT_ID", "102290129340398"),
            ("HERALD_TEMPLATE_SYNC_INTERVAL", "5m"),
        ])
        .unwrap();
        assert_eq!(
            c.opt_out_keywords.decide("text", Some("Baja")),
            Some(crate::domain::OptOutChange::OptedOut)
        );
        assert_eq!(c.business_account_id.as_deref(), Some("102290129340398"));
        assert_eq!(c.template_sync_interval, Duration::from_secs(300));
        let err = config(&[("HERALD_OPT_IN_KEYWORDS", "stop")]).unwrap_err();
        assert!(err.to_string().contains("HERALD_OPT_IN_KEYWORDS"), "{err}");
        let err = config(&[("HERALD_TEMPLATE_SYNC_INTERVAL", "often")]).unwrap_err();
        assert!(
            err.to_string().contains("HERALD_TEMPLATE_SYNC_INTERVAL"),
            "{err}"
        );
    }
}
