//! Configuration: declared once in [`ConfigArgs`] (a flag and an environment variable each, so
//! `herald --help` lists every setting with its default), read once in `main`, passed down as a
//! typed [`Config`]. Secrets are wrapped in [`Secret`] so that `Debug` never prints them.

use std::{convert::Infallible, fmt, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use clap::{
    Arg, Args, Command, FromArgMatches, ValueEnum,
    error::{ContextKind, ContextValue, ErrorKind},
};

use crate::domain::{HttpAllowList, OptOutKeywords, Rate};

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
/// The API token when Herald runs in sandbox mode without `HERALD_API_TOKEN`.
pub const SANDBOX_API_TOKEN: &str = "herald-sandbox-api-token";

/// Queue type for Herald's durable queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
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
    /// Sandbox mode (`HERALD_SANDBOX`): sends are recorded, not sent; public default credentials.
    pub sandbox: bool,
    pub workflows_dir: PathBuf,
    /// Meta's app secret (the ingress verifies webhooks with it); in the sandbox, its default.
    pub app_secret: Option<Secret>,
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
    /// Bearer token of /metrics and /readyz's details (`HERALD_OPS_TOKEN`); unset, both are open.
    pub ops_token: Option<Secret>,
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
    /// Inside hosts and ranges that `http_request` and assistants may reach
    /// (`HERALD_HTTP_ALLOW`); empty: none (loopback, private, link-local and metadata
    /// addresses are refused).
    pub http_allow: HttpAllowList,
    /// History older than this is deleted by the scheduler (`HERALD_RETENTION`, default 90d, at
    /// least 7d: the dedup of Meta's redeliveries needs the events of the last 7 days).
    pub retention: Duration,
    /// A run queued or running that nothing moved for this long, with no job, timer or outbox
    /// row, is given its job again (`HERALD_STRANDED_AFTER`); a later run of its contact stops
    /// waiting for it after this long too.
    pub stranded_after: Duration,
    /// How long a dead-lettered message waits before it is put back (`HERALD_REINJECT_AFTER`).
    pub reinject_after: Duration,
    /// The HTTP doors' limits (`HERALD_HTTP_*`, `HERALD_MAX_IMPORT_BYTES`; see `ingress::limits`).
    pub http: HttpLimits,
}

/// Limits on the HTTP doors (the webhooks and the API): requests handled at once, the time to
/// send a request's headers and to be answered, and the largest CSV import.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    pub concurrency: usize,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub max_import_bytes: usize,
}

/// Every setting, declared once: a flag and an environment variable each (the variables are how
/// Herald is configured; the flags override them). `--help` lists them with their defaults,
/// [`Config::from_lookup`] reads them from any lookup, [`ConfigArgs::into_config`] makes the
/// [`Config`]. Values are parsed here, at the edge; an error names the variable.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Configuration (each flag can be set by its environment variable)")]
pub struct ConfigArgs {
    /// PostgreSQL. Without sslmode the connection uses TLS when the server offers it; on the
    /// loopback ?sslmode=disable saves that CPU.
    #[arg(
        long,
        env = "HERALD_DATABASE_URL",
        global = true,
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/herald"
    )]
    database_url: String,
    /// RabbitMQ.
    #[arg(
        long,
        env = "HERALD_AMQP_URL",
        global = true,
        hide_env_values = true,
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
    /// HTTP address, host:port (webhooks on the ingress; /healthz, /readyz and /metrics on every
    /// role).
    #[arg(
        long,
        env = "HERALD_LISTEN",
        global = true,
        default_value = "127.0.0.1:8080",
        value_parser = socket_addr
    )]
    listen: SocketAddr,
    /// The workflows folder.
    #[arg(
        long,
        env = "HERALD_WORKFLOWS",
        global = true,
        default_value = "workflows"
    )]
    workflows: PathBuf,
    /// Sandbox mode: sends are recorded by the sandbox sender instead of going to Meta, and
    /// unset credentials take public defaults (herald-sandbox-secret, herald-sandbox-api-token,
    /// herald-sandbox-calls-token). Only when asked; never with WHATSAPP_ACCESS_TOKEN.
    #[arg(
        long,
        env = "HERALD_SANDBOX",
        global = true,
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    sandbox: bool,
    /// Let the sandbox listen on a non-loopback address (its credentials are public defaults).
    #[arg(
        long,
        env = "HERALD_SANDBOX_PUBLIC",
        global = true,
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    sandbox_public: bool,
    /// Meta's app secret; verifies X-Hub-Signature-256 on webhooks. The ingress needs it outside
    /// the sandbox; in sandbox mode it defaults to herald-sandbox-secret (what `herald simulate`
    /// signs with).
    #[arg(
        long,
        env = "WHATSAPP_APP_SECRET",
        global = true,
        hide_env_values = true,
        value_parser = secret
    )]
    whatsapp_app_secret: Option<Secret>,
    /// Meta's verification handshake token; unset, the handshake answers 403.
    #[arg(
        long,
        env = "WHATSAPP_VERIFY_TOKEN",
        global = true,
        hide_env_values = true,
        value_parser = secret
    )]
    whatsapp_verify_token: Option<Secret>,
    /// Graph API bearer token; a worker needs it outside the sandbox.
    #[arg(
        long,
        env = "WHATSAPP_ACCESS_TOKEN",
        global = true,
        hide_env_values = true,
        value_parser = secret
    )]
    whatsapp_access_token: Option<Secret>,
    /// Graph API base URL.
    #[arg(
        long,
        env = "WHATSAPP_API_BASE_URL",
        global = true,
        default_value = "https://graph.facebook.com/v24.0",
        value_parser = base_url
    )]
    whatsapp_api_base_url: String,
    /// Log format; RUST_LOG filters (default info).
    #[arg(long, env = "HERALD_LOG_FORMAT", global = true, default_value = "text")]
    log_format: LogFormat,
    /// Largest webhook body in bytes (4 MiB); a larger one gets 413.
    #[arg(
        long,
        env = "HERALD_MAX_BODY_BYTES",
        global = true,
        default_value = "4194304",
        value_parser = whole_usize
    )]
    max_body_bytes: usize,
    /// Prefix of the exchange and queue names (herald -> herald.events, herald.jobs).
    #[arg(
        long,
        env = "HERALD_AMQP_PREFIX",
        global = true,
        default_value = "herald"
    )]
    amqp_prefix: String,
    /// Type of the durable queues.
    #[arg(
        long,
        env = "HERALD_AMQP_QUEUE_TYPE",
        global = true,
        default_value = "quorum"
    )]
    amqp_queue_type: QueueType,
    /// Delete queues unused for this many milliseconds (x-expires; for tests, unset in
    /// production).
    #[arg(long, env = "HERALD_AMQP_QUEUE_EXPIRES_MS", global = true, value_parser = whole_number)]
    amqp_queue_expires_ms: Option<u64>,
    /// Jobs a worker holds at once (RabbitMQ prefetch, 1 to 65535).
    #[arg(
        long,
        env = "HERALD_WORKER_PREFETCH",
        global = true,
        default_value = "256",
        value_parser = prefetch
    )]
    worker_prefetch: u16,
    /// Events a matcher holds at once (RabbitMQ prefetch, 1 to 65535).
    #[arg(
        long,
        env = "HERALD_MATCHER_PREFETCH",
        global = true,
        default_value = "256",
        value_parser = prefetch
    )]
    matcher_prefetch: u16,
    /// How often, in milliseconds, the outbox relay looks for rows stored but not published.
    #[arg(
        long,
        env = "HERALD_OUTBOX_INTERVAL_MS",
        global = true,
        default_value = "1000",
        value_parser = millis
    )]
    outbox_interval_ms: Duration,
    /// Timeout of one Graph API call in milliseconds (the step lease is this + 5 s).
    #[arg(
        long,
        env = "HERALD_PROVIDER_TIMEOUT_MS",
        global = true,
        default_value = "10000",
        value_parser = millis
    )]
    provider_timeout_ms: Duration,
    /// PostgreSQL pool size per process.
    #[arg(
        long,
        env = "HERALD_DB_MAX_CONNECTIONS",
        global = true,
        default_value = "32",
        value_parser = whole_u32
    )]
    db_max_connections: u32,
    /// The template catalog: approved templates and their parameters (checked by `workflows
    /// validate` when the file exists; seeds the run-time catalog at start).
    #[arg(
        long,
        env = "HERALD_TEMPLATES",
        global = true,
        default_value = "templates.yaml"
    )]
    templates: PathBuf,
    /// YAML file naming the AI assistants (generate_ai_response).
    #[arg(
        long,
        env = "HERALD_ASSISTANTS",
        global = true,
        default_value = "assistants.yaml"
    )]
    assistants: PathBuf,
    /// Slack-compatible incoming webhook for team notifications (notify, failures); unset, they
    /// are only logged.
    #[arg(
        long,
        env = "HERALD_NOTIFY_WEBHOOK_URL",
        global = true,
        hide_env_values = true,
        value_parser = secret
    )]
    notify_webhook_url: Option<Secret>,
    /// The wait before a failed step is retried (90s, 10m, 2h, 3d, 500ms).
    #[arg(
        long,
        env = "HERALD_RETRY_WAIT",
        global = true,
        default_value = "60s",
        value_parser = duration
    )]
    retry_wait: Duration,
    /// Attempts in all, 1 to 100 (2 = one retry).
    #[arg(
        long,
        env = "HERALD_RETRY_ATTEMPTS",
        global = true,
        default_value = "2",
        value_parser = retry_attempts
    )]
    retry_attempts: u32,
    /// How often, in milliseconds, the scheduler looks for due timers (delays, waits, retries).
    #[arg(
        long,
        env = "HERALD_TIMER_INTERVAL_MS",
        global = true,
        default_value = "250",
        value_parser = millis
    )]
    timer_interval_ms: Duration,
    /// Sender (phone_number_id) of dispatch and schedule runs whose steps name none (default:
    /// the sandbox's).
    #[arg(
        long,
        env = "HERALD_DEFAULT_SENDER",
        global = true,
        default_value = SANDBOX_PHONE_NUMBER_ID
    )]
    default_sender: String,
    /// Runs a dispatch starts per second (0.01 to 1000) unless it says otherwise.
    #[arg(
        long,
        env = "HERALD_DISPATCH_RATE",
        global = true,
        default_value = "80",
        value_parser = dispatch_rate
    )]
    dispatch_rate: f64,
    /// How often, in milliseconds (at least 10), the scheduler starts dispatch runs and fires
    /// schedules.
    #[arg(
        long,
        env = "HERALD_DISPATCH_INTERVAL_MS",
        global = true,
        default_value = "200",
        value_parser = dispatch_interval
    )]
    dispatch_interval_ms: Duration,
    /// Bearer token of /api/v1. Unset, the API refuses every request, except in sandbox mode,
    /// where it is herald-sandbox-api-token.
    #[arg(
        long,
        env = "HERALD_API_TOKEN",
        global = true,
        hide_env_values = true,
        value_parser = secret
    )]
    api_token: Option<Secret>,
    /// Bearer token that /metrics and the details of /readyz require when set (unset: both
    /// open, as on a private network; /readyz never shows driver errors either way).
    #[arg(
        long,
        env = "HERALD_OPS_TOKEN",
        global = true,
        hide_env_values = true,
        value_parser = secret
    )]
    ops_token: Option<Secret>,
    /// Comma-separated; an inbound text or button that is exactly one of them (trimmed, any
    /// case) opts the contact out of marketing templates.
    #[arg(
        long,
        env = "HERALD_OPT_OUT_KEYWORDS",
        global = true,
        default_value = OptOutKeywords::DEFAULT_OPT_OUT
    )]
    opt_out_keywords: String,
    /// Comma-separated; an inbound text or button that is exactly one of them opts the contact
    /// back in (a word may not be in both lists).
    #[arg(
        long,
        env = "HERALD_OPT_IN_KEYWORDS",
        global = true,
        default_value = OptOutKeywords::DEFAULT_OPT_IN
    )]
    opt_in_keywords: String,
    /// The WhatsApp Business Account whose template list is synced into the run-time template
    /// catalog (with an access token); unset, no sync.
    #[arg(long, env = "WHATSAPP_BUSINESS_ACCOUNT_ID", global = true)]
    whatsapp_business_account_id: Option<String>,
    /// How often the scheduler syncs the template catalog from the Graph API (at least 1s).
    #[arg(
        long,
        env = "HERALD_TEMPLATE_SYNC_INTERVAL",
        global = true,
        default_value = "15m",
        value_parser = template_sync_interval
    )]
    template_sync_interval: Duration,
    /// Messages per second of each sender, shared by every worker process (per-sender
    /// overrides in HERALD_SENDERS).
    #[arg(
        long,
        env = "HERALD_SENDER_RATE",
        global = true,
        default_value = "80",
        value_parser = Rate::parse
    )]
    sender_rate: Rate,
    /// Time between two messages to the same customer on the same sender once the burst is
    /// used (Meta's pair limit, about 1 per 6 s); 0s turns it off.
    #[arg(
        long,
        env = "HERALD_RECIPIENT_GAP",
        global = true,
        default_value = "6s",
        value_parser = duration
    )]
    recipient_gap: Duration,
    /// Messages to one customer allowed back to back before the gap applies (at least 1).
    #[arg(
        long,
        env = "HERALD_RECIPIENT_BURST",
        global = true,
        default_value = "5",
        value_parser = recipient_burst
    )]
    recipient_burst: u32,
    /// Optional per-sender settings (id, display_phone_number, messages_per_second,
    /// recipient_gap, recipient_burst).
    #[arg(
        long,
        env = "HERALD_SENDERS",
        global = true,
        default_value = "senders.yaml"
    )]
    senders: PathBuf,
    /// A send sleeps for its slot up to this long; a later slot defers the step (a durable
    /// timer, no attempt used).
    #[arg(
        long,
        env = "HERALD_PACING_MAX_WAIT",
        global = true,
        default_value = "3s",
        value_parser = duration
    )]
    pacing_max_wait: Duration,
    /// An offline sender fails fast; after this long, one send goes through as a probe
    /// (success reconnects it).
    #[arg(
        long,
        env = "HERALD_SENDER_RECHECK",
        global = true,
        default_value = "5m",
        value_parser = duration
    )]
    sender_recheck: Duration,
    /// Bearer token of POST /webhooks/calls. Unset in sandbox mode with HERALD_CALLS_SECRET
    /// unset too, it is herald-sandbox-calls-token.
    #[arg(
        long,
        env = "HERALD_CALLS_TOKEN",
        global = true,
        hide_env_values = true,
        value_parser = secret
    )]
    calls_token: Option<Secret>,
    /// HMAC-SHA256 secret of X-Herald-Signature-256 on POST /webhooks/calls; with neither it nor
    /// a calls token outside the sandbox, the endpoint answers 401.
    #[arg(
        long,
        env = "HERALD_CALLS_SECRET",
        global = true,
        hide_env_values = true,
        value_parser = secret
    )]
    calls_secret: Option<Secret>,
    /// The phone_number_id a call's follow-up goes out on when the call names no sender
    /// (default: the sandbox's).
    #[arg(
        long,
        env = "HERALD_CALLS_SENDER",
        global = true,
        default_value = SANDBOX_PHONE_NUMBER_ID
    )]
    calls_sender: String,
    /// Comma-separated hosts (crm.internal, *.corp.example), addresses and CIDR ranges
    /// (10.0.0.0/8) that http_request and assistants may reach although they are loopback,
    /// private, link-local or metadata addresses; unset, such calls are refused.
    #[arg(
        long,
        env = "HERALD_HTTP_ALLOW",
        global = true,
        value_parser = HttpAllowList::parse
    )]
    http_allow: Option<HttpAllowList>,
    /// Events, runs with their step attempts and messages, dead letters, AI history, quarantined
    /// bodies and sent notices older than this are deleted by the scheduler (at least 7d, the
    /// time Meta may deliver a webhook again and its dedup needs the event).
    #[arg(
        long,
        env = "HERALD_RETENTION",
        global = true,
        default_value = "90d",
        value_parser = retention
    )]
    retention: Duration,
    /// A run queued or running that nothing moved for this long, with no job, timer or outbox
    /// row waiting, is given its job again by the scheduler; a later run of the same contact
    /// waits at most this long behind it (1s to 1d).
    #[arg(
        long,
        env = "HERALD_STRANDED_AFTER",
        global = true,
        default_value = "10m",
        value_parser = stranded_after
    )]
    stranded_after: Duration,
    /// How long a message the matcher or a worker gave up on (dead-lettered) waits before the
    /// scheduler puts it back on its queue (1s to 1h); after 5 times it is parked.
    #[arg(
        long,
        env = "HERALD_REINJECT_AFTER",
        global = true,
        default_value = "30s",
        value_parser = reinject_after
    )]
    reinject_after: Duration,
    /// Requests the webhooks and the API handle at once (1 to 100000); one more is answered
    /// 503 with Retry-After at once. Probes and /metrics are not counted.
    #[arg(
        long,
        env = "HERALD_HTTP_CONCURRENCY",
        global = true,
        default_value = "1024",
        value_parser = http_concurrency
    )]
    http_concurrency: usize,
    /// The longest a client may take to send a request's headers (1ms to 5m); slower, the
    /// connection is closed.
    #[arg(
        long,
        env = "HERALD_HTTP_HEADER_TIMEOUT",
        global = true,
        default_value = "10s",
        value_parser = http_timeout
    )]
    http_header_timeout: Duration,
    /// The longest a webhook or API request may take, reading its body included (1ms to 5m);
    /// longer is answered 503.
    #[arg(
        long,
        env = "HERALD_HTTP_REQUEST_TIMEOUT",
        global = true,
        default_value = "60s",
        value_parser = http_timeout
    )]
    http_request_timeout: Duration,
    /// Largest CSV body of POST /api/v1/contacts/import in bytes (64 MiB); larger gets 413.
    #[arg(
        long,
        env = "HERALD_MAX_IMPORT_BYTES",
        global = true,
        default_value = "67108864",
        value_parser = whole_usize
    )]
    max_import_bytes: usize,
}

/// `HERALD_LOG_FORMAT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

fn secret(raw: &str) -> Result<Secret, Infallible> {
    Ok(Secret::new(raw))
}

fn socket_addr(raw: &str) -> anyhow::Result<SocketAddr> {
    raw.parse()
        .with_context(|| format!("'{raw}' is not host:port"))
}

fn base_url(raw: &str) -> Result<String, Infallible> {
    Ok(raw.trim_end_matches('/').to_string())
}

fn whole_number(raw: &str) -> anyhow::Result<u64> {
    raw.parse()
        .with_context(|| format!("'{raw}' is not a whole number"))
}

fn whole_usize(raw: &str) -> anyhow::Result<usize> {
    Ok(whole_number(raw)? as usize)
}

fn whole_u32(raw: &str) -> anyhow::Result<u32> {
    Ok(whole_number(raw)? as u32)
}

fn prefetch(raw: &str) -> anyhow::Result<u16> {
    Ok(whole_number(raw)?.clamp(1, 65535) as u16)
}

fn retry_attempts(raw: &str) -> anyhow::Result<u32> {
    Ok(whole_number(raw)?.clamp(1, 100) as u32)
}

fn recipient_burst(raw: &str) -> anyhow::Result<u32> {
    match whole_number(raw)? {
        0 => bail!("must be at least 1"),
        n => Ok(n.min(10_000) as u32),
    }
}

fn millis(raw: &str) -> anyhow::Result<Duration> {
    whole_number(raw).map(Duration::from_millis)
}

fn dispatch_interval(raw: &str) -> anyhow::Result<Duration> {
    Ok(Duration::from_millis(whole_number(raw)?.max(10)))
}

/// `90s`, `10m`, `2h`, `3d`, `500ms`.
fn duration(raw: &str) -> Result<Duration, String> {
    crate::domain::HumanDuration::parse(raw).map(|d| d.get())
}

fn http_concurrency(raw: &str) -> anyhow::Result<usize> {
    match whole_number(raw)? {
        0 => bail!("must be at least 1"),
        n => Ok(n.min(100_000) as usize),
    }
}

fn http_timeout(raw: &str) -> Result<Duration, String> {
    let bounds = Duration::from_millis(1)..=Duration::from_secs(300);
    crate::domain::HumanDuration::parse_within(raw, "timeout", bounds).map(|d| d.get())
}

fn stranded_after(raw: &str) -> Result<Duration, String> {
    let bounds = Duration::from_secs(1)..=Duration::from_secs(86_400);
    crate::domain::HumanDuration::parse_within(raw, "stranded-after", bounds).map(|d| d.get())
}

fn reinject_after(raw: &str) -> Result<Duration, String> {
    let bounds = Duration::from_secs(1)..=Duration::from_secs(3_600);
    crate::domain::HumanDuration::parse_within(raw, "reinject-after", bounds).map(|d| d.get())
}

fn template_sync_interval(raw: &str) -> Result<Duration, String> {
    Ok(duration(raw)?.max(Duration::from_secs(1)))
}

/// The shortest `HERALD_RETENTION`: Meta delivers a webhook again for up to 7 days, and an
/// event must be kept that long for the redelivery to be recognised.
pub const MIN_RETENTION: Duration = Duration::from_secs(7 * 86_400);

fn retention(raw: &str) -> Result<Duration, String> {
    let ten_years = Duration::from_secs(3650 * 86_400);
    let d =
        crate::domain::HumanDuration::parse_within(raw, "retention", Duration::ZERO..=ten_years)?
            .get();
    if d < MIN_RETENTION {
        return Err(format!(
            "'{raw}' is shorter than 7d: Meta delivers a webhook again for up to 7 days, and \
             only a stored event recognises the redelivery"
        ));
    }
    Ok(d)
}

fn dispatch_rate(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(r) if (0.01..=1000.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "'{raw}' is not a rate between 0.01 and 1000 per second"
        )),
    }
}

impl ConfigArgs {
    /// The typed [`Config`], with the defaults that depend on other settings (sandbox mode) and
    /// the checks across settings.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let sandbox = self.sandbox;
        if sandbox && self.whatsapp_access_token.is_some() {
            bail!(
                "HERALD_SANDBOX and WHATSAPP_ACCESS_TOKEN are both set: the sandbox never \
                 calls Meta; unset one of them"
            );
        }
        if sandbox && !self.listen.ip().is_loopback() && !self.sandbox_public {
            bail!(
                "HERALD_SANDBOX: the sandbox's credentials are public defaults, so it listens only \
                 on a loopback address (HERALD_LISTEN is {}); set HERALD_SANDBOX_PUBLIC=true to \
                 listen there anyway",
                self.listen
            );
        }
        let app_secret = match self.whatsapp_app_secret {
            Some(s) => Some(s),
            None if sandbox => Some(Secret::new(SANDBOX_APP_SECRET)),
            None => None,
        };
        let calls_token = match self.calls_token {
            Some(t) => Some(t),
            None if self.calls_secret.is_none() && sandbox => {
                Some(Secret::new(SANDBOX_CALLS_TOKEN))
            }
            None => None,
        };
        let api_token = match self.api_token {
            Some(t) => Some(t),
            None if sandbox => Some(Secret::new(SANDBOX_API_TOKEN)),
            None => None,
        };
        let opt_out_keywords = OptOutKeywords::parse(&self.opt_out_keywords, &self.opt_in_keywords)
            .map_err(|e| {
                anyhow::anyhow!("HERALD_OPT_OUT_KEYWORDS / HERALD_OPT_IN_KEYWORDS: {e}")
            })?;
        Ok(Config {
            database_url: self.database_url,
            amqp_url: self.amqp_url,
            amqp_prefix: self.amqp_prefix,
            amqp_queue_type: self.amqp_queue_type,
            amqp_queue_expires_ms: self.amqp_queue_expires_ms,
            listen: self.listen,
            sandbox,
            workflows_dir: self.workflows,
            app_secret,
            verify_token: self.whatsapp_verify_token,
            access_token: self.whatsapp_access_token,
            api_base_url: self.whatsapp_api_base_url,
            max_body_bytes: self.max_body_bytes,
            log_json: self.log_format == LogFormat::Json,
            worker_prefetch: self.worker_prefetch,
            matcher_prefetch: self.matcher_prefetch,
            outbox_interval: self.outbox_interval_ms,
            provider_timeout: self.provider_timeout_ms,
            db_max_connections: self.db_max_connections,
            notify_webhook_url: self.notify_webhook_url.map(|url| url.0),
            assistants_file: self.assistants,
            templates_file: self.templates,
            retry_wait: self.retry_wait,
            retry_attempts: self.retry_attempts,
            timer_interval: self.timer_interval_ms,
            default_sender: self.default_sender,
            dispatch_rate: self.dispatch_rate,
            dispatch_interval: self.dispatch_interval_ms,
            api_token,
            ops_token: self.ops_token,
            opt_out_keywords,
            business_account_id: self.whatsapp_business_account_id,
            template_sync_interval: self.template_sync_interval,
            sender_rate: self.sender_rate,
            recipient_gap: self.recipient_gap,
            recipient_burst: self.recipient_burst,
            senders_file: self.senders,
            pacing_max_wait: self.pacing_max_wait,
            sender_recheck: self.sender_recheck,
            calls_token,
            calls_secret: self.calls_secret,
            calls_sender: self.calls_sender,
            http_allow: self.http_allow.unwrap_or_default(),
            retention: self.retention,
            stranded_after: self.stranded_after,
            reinject_after: self.reinject_after,
            http: HttpLimits {
                concurrency: self.http_concurrency,
                header_timeout: self.http_header_timeout,
                request_timeout: self.http_request_timeout,
                max_import_bytes: self.max_import_bytes,
            },
        })
    }
}

/// One configuration variable as declared in [`ConfigArgs`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variable {
    /// The environment variable (`HERALD_LISTEN`).
    pub name: String,
    /// The flag (`--listen`).
    pub flag: String,
    /// Its default as written on the command line; `None`: unset.
    pub default: Option<String>,
}

/// Every configuration variable, in declaration order.
pub fn variables() -> Vec<Variable> {
    ConfigArgs::augment_args(Command::new("herald"))
        .get_arguments()
        .filter_map(|arg| {
            Some(Variable {
                name: arg.get_env()?.to_string_lossy().into_owned(),
                flag: format!("--{}", arg.get_long()?),
                default: match arg.get_default_values() {
                    [] => None,
                    values => Some(
                        values
                            .iter()
                            .map(|v| v.to_string_lossy())
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                },
            })
        })
        .collect()
}

/// `cmd` without the environment variables that are set but blank (or not UTF-8). Clap would hand
/// their value to the parser; Herald takes such a variable as unset, so its default applies.
/// (`--help` then shows no `[env: ...]` for that flag.)
pub fn ignore_blank_env(cmd: Command) -> Command {
    cmd.mut_args(|arg| {
        let blank = arg.get_env().is_some_and(|name| {
            std::env::var_os(name).is_some_and(|v| v.to_str().is_none_or(|v| v.trim().is_empty()))
        });
        if blank { arg.env(None) } else { arg }
    })
}

/// A clap error about a configuration value, as an error that names the variable and its flag
/// (`HERALD_LISTEN (--listen): 'x' is not host:port`); `None` for any other clap error (help,
/// usage, another command's argument).
pub fn value_error(err: &clap::Error) -> Option<anyhow::Error> {
    let Some(ContextValue::String(invalid)) = err.get(ContextKind::InvalidArg) else {
        return None;
    };
    let mut cmd = ConfigArgs::augment_args(Command::new("herald"));
    cmd.build();
    let arg: &Arg = cmd
        .get_arguments()
        .find(|arg| arg.to_string() == *invalid)?;
    let reason = match err.kind() {
        ErrorKind::ValueValidation => {
            let mut reason = String::new();
            let mut cause = std::error::Error::source(err);
            while let Some(e) = cause {
                if !reason.is_empty() {
                    reason.push_str(": ");
                }
                reason.push_str(&e.to_string());
                cause = e.source();
            }
            reason
        }
        ErrorKind::InvalidValue => {
            let value = match err.get(ContextKind::InvalidValue) {
                Some(ContextValue::String(v)) => v.as_str(),
                _ => "",
            };
            let valid = match err.get(ContextKind::ValidValue) {
                Some(ContextValue::Strings(v)) => v.join(" or "),
                _ => String::new(),
            };
            format!("'{value}' is not {valid}")
        }
        _ => return None,
    };
    Some(anyhow::anyhow!(
        "{} (--{}): {reason}",
        arg.get_env()?.to_string_lossy(),
        arg.get_long()?
    ))
}

impl Config {
    /// Reads the configuration from the process's `HERALD_*` and `WHATSAPP_*` variables.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Reads the configuration from `get` (variable -> value) instead of the process's
    /// environment, through the same declarations as the command line. A blank value is unset.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let cmd = ConfigArgs::augment_args(Command::new("herald").no_binary_name(true));
        // Each value set goes in as its flag; the process's environment is left out.
        let args: Vec<String> = cmd
            .get_arguments()
            .filter_map(|arg| {
                let value = get(arg.get_env()?.to_str()?).filter(|v| !v.trim().is_empty())?;
                Some(format!("--{}={value}", arg.get_long()?))
            })
            .collect();
        let mut cmd = cmd.mut_args(|arg| arg.env(None));
        let matches = cmd
            .try_get_matches_from_mut(args)
            .map_err(|e| value_error(&e).unwrap_or_else(|| anyhow::anyhow!("{}", e.render())))?;
        ConfigArgs::from_arg_matches(&matches)
            .map_err(|e| anyhow::anyhow!("{}", e.render()))?
            .into_config()
    }

    /// True when sends go to the sandbox instead of the Graph API.
    pub fn sandbox(&self) -> bool {
        self.sandbox
    }

    /// The app secret, or an error naming the variable: outside the sandbox it has no default.
    pub fn require_app_secret(&self, needed_for: &str) -> anyhow::Result<&Secret> {
        self.app_secret.as_ref().with_context(|| {
            format!(
                "WHATSAPP_APP_SECRET is not set: {needed_for} (or set HERALD_SANDBOX=true to \
                 try Herald with the sandbox's public defaults)"
            )
        })
    }

    /// Refuses to start `roles` that need a credential this configuration lacks, naming it.
    pub fn check_credentials_for(&self, ingress: bool, worker: bool) -> anyhow::Result<()> {
        if ingress {
            self.require_app_secret("the ingress verifies Meta's webhooks with it")?;
        }
        if worker && !self.sandbox && self.access_token.is_none() {
            bail!(
                "WHATSAPP_ACCESS_TOKEN is not set: a worker sends through the Graph API with it \
                 (or set HERALD_SANDBOX=true to record sends in the sandbox instead)"
            );
        }
        Ok(())
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
    fn blank_values_are_unset_and_out_of_range_numbers_are_clamped() {
        let blank = config(&[
            ("HERALD_LISTEN", "  "),
            ("HERALD_LOG_FORMAT", ""),
            ("WHATSAPP_ACCESS_TOKEN", "\t"),
            ("HERALD_RETRY_WAIT", " "),
        ])
        .unwrap();
        assert_eq!(blank.listen.to_string(), "127.0.0.1:8080");
        assert!(!blank.log_json);
        assert!(
            !blank.sandbox() && blank.access_token.is_none(),
            "a blank token (a secrets injector's empty value) is unset, and turns on no sandbox"
        );
        assert_eq!(blank.retry_wait, Duration::from_secs(60));
        let low = config(&[
            ("HERALD_WORKER_PREFETCH", "0"),
            ("HERALD_RETRY_ATTEMPTS", "0"),
            ("HERALD_DISPATCH_INTERVAL_MS", "9"),
            ("HERALD_TEMPLATE_SYNC_INTERVAL", "0s"),
        ])
        .unwrap();
        assert_eq!(low.worker_prefetch, 1);
        assert_eq!(low.retry_attempts, 1);
        assert_eq!(low.dispatch_interval, Duration::from_millis(10));
        assert_eq!(low.template_sync_interval, Duration::from_secs(1));
        let high = config(&[
            ("HERALD_MATCHER_PREFETCH", "70000"),
            ("HERALD_RETRY_ATTEMPTS", "1000"),
            ("HERALD_RECIPIENT_BURST", "20000"),
        ])
        .unwrap();
        assert_eq!(high.matcher_prefetch, 65535);
        assert_eq!(high.retry_attempts, 100);
        assert_eq!(high.recipient_burst, 10_000);
        let written = config(&[
            ("WHATSAPP_API_BASE_URL", "http://graph.test:1/"),
            ("WHATSAPP_ACCESS_TOKEN", "-starts-with-a-dash"),
            ("WHATSAPP_APP_SECRET", "a=b"),
        ])
        .unwrap();
        assert_eq!(written.api_base_url, "http://graph.test:1");
        assert_eq!(
            written.access_token.as_ref().map(Secret::expose),
            Some("-starts-with-a-dash")
        );
        assert_eq!(written.app_secret.as_ref().map(Secret::expose), Some("a=b"));
    }

    #[test]
    fn errors_name_the_variable_and_its_flag() {
        let err = config(&[("HERALD_AMQP_QUEUE_TYPE", "stream")]).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "HERALD_AMQP_QUEUE_TYPE (--amqp-queue-type): 'stream' is not quorum or classic"
        );
        let err = config(&[("HERALD_MAX_BODY_BYTES", "4 MiB")]).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "HERALD_MAX_BODY_BYTES (--max-body-bytes): '4 MiB' is not a whole number: \
             invalid digit found in string"
        );
    }

    #[test]
    fn every_flag_is_its_variable_in_lowercase_without_the_herald_prefix() {
        let variables = variables();
        assert!(variables.len() >= 41, "{variables:?}");
        for v in variables {
            let expected = v.name.trim_start_matches("HERALD_").to_lowercase();
            assert_eq!(v.flag, format!("--{}", expected.replace('_', "-")));
        }
    }

    #[test]
    fn the_command_line_declares_each_flag_once_and_hides_secrets() {
        use clap::{CommandFactory, Parser};
        crate::cli::Cli::command().debug_assert();
        let cli = crate::cli::Cli::try_parse_from([
            "herald",
            "--whatsapp-access-token=tok-123",
            "--whatsapp-app-secret=sec-456",
            "--notify-webhook-url=https://hooks.test/hook-789",
            "migrate",
        ])
        .unwrap();
        let printed = format!("{cli:?}");
        for secret in ["tok-123", "sec-456", "hook-789"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        let config = cli.config.into_config().unwrap();
        assert_eq!(
            config.access_token.as_ref().map(Secret::expose),
            Some("tok-123")
        );
        assert_eq!(
            config.notify_webhook_url.as_deref(),
            Some("https://hooks.test/hook-789")
        );
    }

    /// The rows of README.md's configuration table: each variable named in the first column,
    /// with the default column.
    fn readme_table(readme: &str) -> Vec<(String, String)> {
        const HEADER: &str = "| variable | default | meaning |";
        let mut lines = readme.lines().skip_while(|l| l.trim() != HEADER);
        assert!(
            lines.next().is_some(),
            "README.md has no table headed {HEADER}"
        );
        lines.next(); // |---|---|---|
        let mut rows = Vec::new();
        for line in lines.take_while(|l| l.starts_with('|')) {
            let cells: Vec<&str> = line
                .trim()
                .trim_matches('|')
                .split(" | ")
                .map(str::trim)
                .collect();
            assert_eq!(cells.len(), 3, "not a row of three cells: {line}");
            // `A` / `B`: the backticked words of the first cell.
            for name in cells[0].split('`').skip(1).step_by(2) {
                rows.push((name.to_string(), cells[1].to_string()));
            }
        }
        rows
    }

    #[test]
    fn the_readme_configuration_table_lists_every_variable_with_its_default() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let readme = std::fs::read_to_string(path).expect("read README.md");
        let table = readme_table(&readme);
        let declared = variables();
        let mut differences = Vec::new();
        for v in &declared {
            let default = match &v.default {
                Some(d) => format!("`{d}`"),
                None => "unset".to_string(),
            };
            let cells: Vec<&String> = table
                .iter()
                .filter(|(name, _)| *name == v.name)
                .map(|(_, cell)| cell)
                .collect();
            match cells[..] {
                [] => differences.push(format!(
                    "- {}: missing from the table (default: {default})",
                    v.name
                )),
                [cell] if !cell.starts_with(&default) => differences.push(format!(
                    "~ {}: the table's default is \"{cell}\"; it should begin with {default}",
                    v.name
                )),
                [_] => {}
                _ => differences.push(format!("~ {}: in the table more than once", v.name)),
            }
        }
        for (name, _) in &table {
            if !declared.iter().any(|v| v.name == *name) {
                differences.push(format!(
                    "+ {name}: in the table, but ConfigArgs declares no such variable"
                ));
            }
        }
        assert!(
            differences.is_empty(),
            "README.md's configuration table differs from ConfigArgs in src/config.rs \
             (- missing from the table, + not a variable, ~ default differs):\n{}",
            differences.join("\n")
        );
    }

    #[test]
    fn defaults_point_at_the_local_services_with_no_sandbox_and_no_default_credential() {
        let c = config(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url, "postgres://postgres@127.0.0.1:5432/herald");
        assert!(!c.sandbox(), "the sandbox only when asked");
        assert!(c.app_secret.is_none() && c.api_token.is_none() && c.calls_token.is_none());
        assert_eq!(c.max_body_bytes, 4 * 1024 * 1024);
        let sandbox = config(&[("HERALD_SANDBOX", "true")]).unwrap();
        assert!(sandbox.sandbox());
        assert_eq!(
            sandbox.app_secret.as_ref().map(Secret::expose),
            Some(SANDBOX_APP_SECRET)
        );
        assert_eq!(
            sandbox.api_token.as_ref().map(Secret::expose),
            Some(SANDBOX_API_TOKEN)
        );
    }

    #[test]
    fn a_role_lacking_its_credential_is_refused_naming_the_variable() {
        let bare = config(&[]).unwrap();
        let ingress = bare.check_credentials_for(true, false).unwrap_err();
        assert!(
            ingress.to_string().contains("WHATSAPP_APP_SECRET"),
            "{ingress}"
        );
        let worker = bare.check_credentials_for(false, true).unwrap_err();
        assert!(
            worker.to_string().contains("WHATSAPP_ACCESS_TOKEN"),
            "{worker}"
        );
        bare.check_credentials_for(false, false)
            .expect("a matcher or scheduler needs neither");
        let live = config(&[("WHATSAPP_ACCESS_TOKEN", "t"), ("WHATSAPP_APP_SECRET", "s")]).unwrap();
        live.check_credentials_for(true, true).unwrap();
        let sandbox = config(&[("HERALD_SANDBOX", "1")]).unwrap();
        sandbox.check_credentials_for(true, true).unwrap();
    }

    #[test]
    fn the_sandbox_refuses_a_token_and_a_public_address_unless_told() {
        let both =
            config(&[("HERALD_SANDBOX", "true"), ("WHATSAPP_ACCESS_TOKEN", "t")]).unwrap_err();
        assert!(both.to_string().contains("WHATSAPP_ACCESS_TOKEN"), "{both}");
        let public = config(&[
            ("HERALD_SANDBOX", "true"),
            ("HERALD_LISTEN", "0.0.0.0:8080"),
        ])
        .unwrap_err();
        assert!(
            public.to_string().contains("HERALD_SANDBOX_PUBLIC"),
            "{public}"
        );
        let told = config(&[
            ("HERALD_SANDBOX", "true"),
            ("HERALD_LISTEN", "0.0.0.0:8080"),
            ("HERALD_SANDBOX_PUBLIC", "true"),
        ])
        .unwrap();
        assert!(told.sandbox());
        let ipv6 = config(&[("HERALD_SANDBOX", "true"), ("HERALD_LISTEN", "[::1]:8080")]);
        assert!(ipv6.is_ok(), "the IPv6 loopback is a loopback");
        assert!(!config(&[("HERALD_SANDBOX", "false")]).unwrap().sandbox());
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
        let sandbox = config(&[("HERALD_SANDBOX", "true")]).unwrap();
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
    fn retention_defaults_to_90_days_and_refuses_less_than_the_7_days_of_dedup() {
        assert_eq!(
            config(&[]).unwrap().retention,
            Duration::from_secs(90 * 86_400)
        );
        let c = config(&[("HERALD_RETENTION", "7d")]).unwrap();
        assert_eq!(c.retention, MIN_RETENTION);
        let err = config(&[("HERALD_RETENTION", "3d")]).unwrap_err();
        assert!(
            format!("{err:#}")
                .starts_with("HERALD_RETENTION (--retention): '3d' is shorter than 7d"),
            "{err:#}"
        );
        let err = config(&[("HERALD_RETENTION", "forever")]).unwrap_err();
        assert!(err.to_string().contains("HERALD_RETENTION"), "{err}");
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

    #[test]
    fn the_outbound_allow_list_is_empty_by_default_and_a_bad_entry_names_the_variable() {
        assert!(config(&[]).unwrap().http_allow.is_empty());
        let c = config(&[("HERALD_HTTP_ALLOW", "crm.internal, 10.0.0.0/8")]).unwrap();
        assert!(c.http_allow.allows_host("crm.internal"));
        assert!(c.http_allow.allows_address("10.9.8.7".parse().unwrap()));
        let err = config(&[("HERALD_HTTP_ALLOW", "crm.internal:8080")]).unwrap_err();
        assert!(err.to_string().contains("HERALD_HTTP_ALLOW"), "{err}");
        assert!(err.to_string().contains("crm.internal:8080"), "{err}");
    }
}
