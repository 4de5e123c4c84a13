//! Steps: one file per step type; its YAML key = file name. The registry at the bottom of this
//! file is the table of contents: adding a step is one new file plus one line there.
//!
//! A step runs in two phases so that the worker can record its intent before any side effect:
//! `render` (pure: variables -> typed input) and `execute` (the call to the outside world).

pub mod branch;
pub mod delay;
pub mod generate_ai_response;
pub mod http_request;
pub mod notify;
pub mod send_flow;
pub mod send_template;
pub mod send_text;
pub mod update_contact;
pub mod wait_for_response;

use std::{fmt, time::Duration};

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    domain::{InvalidPhoneNumber, PhoneNumber},
    providers::whatsapp::{SendError, WhatsApp},
    workflow::{Text, template::RenderError},
};

/// The error classes every failure a user sees is named by (PRODUCT.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorClass {
    #[serde(rename = "Template not found")]
    TemplateNotFound,
    #[serde(rename = "Sender offline")]
    SenderOffline,
    #[serde(rename = "Invalid phone number")]
    InvalidPhoneNumber,
    #[serde(rename = "Outside 24-hour window")]
    OutsideWindow,
    #[serde(rename = "Rate limited")]
    RateLimited,
    #[serde(rename = "Opted out")]
    OptedOut,
    #[serde(rename = "Provider error")]
    ProviderError,
    /// The workflow reads a value the run does not have.
    #[serde(rename = "Missing variable")]
    MissingVariable,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::TemplateNotFound => "Template not found",
            ErrorClass::SenderOffline => "Sender offline",
            ErrorClass::InvalidPhoneNumber => "Invalid phone number",
            ErrorClass::OutsideWindow => "Outside 24-hour window",
            ErrorClass::RateLimited => "Rate limited",
            ErrorClass::OptedOut => "Opted out",
            ErrorClass::ProviderError => "Provider error",
            ErrorClass::MissingVariable => "Missing variable",
        }
    }

    /// Whether waiting and trying again can help.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorClass::SenderOffline | ErrorClass::RateLimited | ErrorClass::ProviderError
        )
    }

    /// What the user should do about it.
    pub fn advice(self) -> &'static str {
        match self {
            ErrorClass::TemplateNotFound => {
                "check the template is approved and its name and language are right"
            }
            ErrorClass::SenderOffline => "check the sender's status and connection",
            ErrorClass::InvalidPhoneNumber => "format as +[country code][number]",
            ErrorClass::OutsideWindow => "use a template message",
            ErrorClass::RateLimited => "Herald paces and retries by itself",
            ErrorClass::OptedOut => "none: the contact unsubscribed",
            ErrorClass::ProviderError => "see the recorded detail",
            ErrorClass::MissingVariable => "give the value in the event or use the default filter",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed step. The class decides retry versus dead letter; never the message text.
#[derive(Clone, Debug, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    pub class: ErrorClass,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(skip)]
    pub retry_after: Option<Duration>,
    /// Set when no retry can fix this error even though its class is retryable (a configuration
    /// mistake, an answer that will not change).
    #[serde(skip)]
    pub permanent: bool,
    /// Not a failure: the sender's next send slot is `retry_after` away, so the step is put
    /// off (a durable timer) without recording an attempt.
    #[serde(skip)]
    pub deferred: bool,
}

impl StepError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        StepError {
            class,
            message: message.into(),
            provider_code: None,
            http_status: None,
            retry_after: None,
            permanent: false,
            deferred: false,
        }
    }

    /// The send's slot is `after` away: run the step again then, without using an attempt.
    pub fn deferred(after: Duration) -> Self {
        let mut e = StepError::new(
            ErrorClass::RateLimited,
            format!("Rate limited: paced, next send slot in {after:?}"),
        );
        e.retry_after = Some(after);
        e.deferred = true;
        e
    }

    /// Marks the error as one no retry can fix.
    pub fn permanent(mut self) -> Self {
        self.permanent = true;
        self
    }

    /// Whether waiting and trying again can help: the class says so, and the error is not a
    /// client error of an outside API without a provider code (a wrong URL, a refused request:
    /// those answer the same every time; 408 and 429 excepted).
    pub fn retryable(&self) -> bool {
        let client_error = self.provider_code.is_none()
            && self
                .http_status
                .is_some_and(|s| (400..500).contains(&s) && s != 408 && s != 429);
        self.class.retryable() && !self.permanent && !client_error
    }

    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        v["retryable"] = Value::Bool(self.retryable());
        v["advice"] = Value::from(self.class.advice());
        v
    }
}

impl From<RenderError> for StepError {
    fn from(e: RenderError) -> Self {
        StepError::new(ErrorClass::MissingVariable, e.to_string())
    }
}

impl From<InvalidPhoneNumber> for StepError {
    fn from(e: InvalidPhoneNumber) -> Self {
        StepError::new(ErrorClass::InvalidPhoneNumber, e.to_string())
    }
}

impl From<SendError> for StepError {
    fn from(e: SendError) -> Self {
        StepError {
            class: e.class,
            message: format!("{}: {}", e.class, e.message),
            provider_code: e.code,
            http_status: e.http_status,
            retry_after: e.retry_after,
            permanent: false,
            deferred: false,
        }
    }
}

/// What the steps can reach.
#[derive(Clone)]
pub struct Services {
    pub pool: PgPool,
    pub whatsapp: WhatsApp,
    /// The named AI assistants (`generate_ai_response`).
    pub assistants: std::sync::Arc<crate::providers::llm::Assistants>,
    /// Team notifications (`notify`).
    pub notifier: crate::providers::notify::Notifier,
    /// Outbound HTTP for `http_request` (timeouts per request).
    pub http: reqwest::Client,
    /// The default retry policy (workflows may set their own).
    pub retry: RetryPolicy,
    /// How long a recorded intent protects a step from being taken over by another worker:
    /// longer than any provider call can take.
    pub lease: Duration,
    /// The one send path of the send steps: sender status and pacing, then `whatsapp`.
    pub senders: crate::senders::Senders,
    /// The template catalog's entry and the recipient's opt-out, read at send time.
    pub facts: crate::templates::Facts,
}

/// How often and how long apart a failed step is tried again. Written on a step, a workflow,
/// or globally (`HERALD_RETRY_ATTEMPTS`, `HERALD_RETRY_WAIT`); the step's wins, then the
/// workflow's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (2 = one retry; 0 and 1: no retry), at most 100.
    /// Rate limits do not count (up to 20).
    #[schemars(range(max = 100))]
    pub attempts: u32,
    /// The wait before each retry (`60s`, at least 1s); a provider's Retry-After wins for
    /// rate limits.
    pub wait: crate::domain::HumanDuration,
}

impl RetryPolicy {
    /// The most attempts a policy may ask for.
    pub const MAX_ATTEMPTS: u32 = 100;

    /// What serde cannot check, run when the workflow loads.
    pub fn check(&self) -> Result<(), String> {
        if self.attempts > Self::MAX_ATTEMPTS {
            return Err(format!(
                "retry: attempts {} is more than {}",
                self.attempts,
                Self::MAX_ATTEMPTS
            ));
        }
        if self.wait.get() < Duration::from_secs(1) {
            return Err(format!("retry: wait {} is shorter than 1s", self.wait));
        }
        Ok(())
    }

    /// The policy for a step: its own, else its workflow's, else the global one.
    pub fn for_step(
        step: Option<RetryPolicy>,
        workflow: Option<RetryPolicy>,
        global: RetryPolicy,
    ) -> RetryPolicy {
        step.or(workflow).unwrap_or(global)
    }
}

/// One step's view of its run.
pub struct StepContext<'a> {
    pub run_id: Uuid,
    pub step_id: &'a str,
    /// Our sender (phone_number_id) the run belongs to, when the trigger had one.
    pub sender_id: Option<&'a str>,
    /// The customer the run is about, when the trigger had one.
    pub customer_id: Option<&'a str>,
    /// `{trigger, event, contact, steps}`.
    pub data: &'a Value,
    pub services: &'a Services,
}

/// A message a step sent, recorded with the attempt.
#[derive(Clone, Debug, Serialize)]
pub struct Sent {
    pub sender_id: String,
    pub recipient: String,
    pub kind: &'static str,
    pub provider: &'static str,
    pub request: Value,
    pub wamid: String,
}

/// What a step produced: its output (`steps.<id>.*`), any message it sent, and where the run
/// goes next.
#[derive(Clone, Debug)]
pub struct StepOutput {
    pub output: Value,
    pub sent: Option<Sent>,
    pub next: Next,
}

impl StepOutput {
    /// An output; the run continues with the next step.
    pub fn new(output: Value) -> Self {
        StepOutput {
            output,
            sent: None,
            next: Next::Continue,
        }
    }
    pub fn with_sent(mut self, sent: Sent) -> Self {
        self.sent = Some(sent);
        self
    }
    pub fn with_next(mut self, next: Next) -> Self {
        self.next = next;
        self
    }
}

/// Where the run goes after a step.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Next {
    /// The step after this one.
    #[default]
    Continue,
    /// The first step of arm `n` of this step (a branch's `when` n, or its `else` after them).
    Arm(usize),
    /// Continue with the next step at this time (a durable timer).
    SleepUntil(chrono::DateTime<chrono::Utc>),
    /// Pause until the contact replies; on timeout, take arm 0 (the timeout steps).
    WaitForReply {
        timeout_at: Option<chrono::DateTime<chrono::Utc>>,
    },
}

#[async_trait]
pub trait Step: Send + Sync {
    /// The rendered input, recorded before `execute` runs.
    type Input: Serialize + Send + Sync;
    fn id(&self) -> Option<&str>;
    /// The step's own retry policy (`retry:`), which wins over the workflow's and the global one.
    fn retry(&self) -> Option<RetryPolicy>;
    /// Variables -> typed input. Pure: no I/O.
    fn render(&self, ctx: &StepContext<'_>) -> Result<Self::Input, StepError>;
    /// Nested step lists (a branch's arms, a wait's timeout steps), in arm order.
    fn arms(&self) -> Vec<&[StepKind]> {
        Vec::new()
    }
    /// Checks that serde cannot express, run when the workflow loads.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
    /// True when running the step twice has no effect outside Herald (so a step interrupted by
    /// a crash is simply run again); false for steps that send or call out (never repeated).
    fn repeatable(&self) -> bool {
        false
    }
    async fn execute(
        &self,
        input: Self::Input,
        ctx: &StepContext<'_>,
    ) -> Result<StepOutput, StepError>;
}

/// A recipient: a phone number written in the workflow, or variables that render to one.
/// A static number is checked when the workflow loads; a rendered one when the step runs.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "String")]
pub struct Recipient(Text);

impl Recipient {
    pub fn render(&self, data: &Value) -> Result<PhoneNumber, StepError> {
        Ok(PhoneNumber::parse(&self.0.render(data)?)?)
    }
}

impl TryFrom<String> for Recipient {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        let text = Text::parse(&value)?;
        if text.variables().next().is_none() {
            PhoneNumber::parse(&value).map_err(|e| e.to_string())?;
        }
        Ok(Recipient(text))
    }
}

impl Default for Recipient {
    /// The customer who triggered the run.
    fn default() -> Self {
        Recipient(Text::parse("{{ trigger.customer_phone }}").unwrap_or_else(|_| unreachable!()))
    }
}

/// A read or write of Herald's own database that a send needs failed before anything was sent:
/// not a failed attempt. The step is put off for a second (recorded once the database is back),
/// like a send waiting for its slot.
pub(crate) fn database_away(what: &str, e: &sqlx::Error) -> StepError {
    tracing::warn!(error = %e, "{what} failed; step put off, nothing sent");
    let mut deferred = StepError::deferred(std::time::Duration::from_secs(1));
    deferred.message = format!("not sent: {what} failed: {e}");
    deferred
}

/// Fails with "Outside 24-hour window" unless `to` wrote to `sender` in the last 24 hours.
pub(crate) async fn require_window(
    pool: &PgPool,
    sender: &str,
    to: &PhoneNumber,
    advice: &str,
) -> Result<(), StepError> {
    let open: Option<bool> = sqlx::query_scalar(
        "SELECT window_expires_at > now() FROM conversations
         WHERE sender_id = $1 AND customer_id = $2",
    )
    .bind(sender)
    .bind(to.digits())
    .fetch_optional(pool)
    .await
    .map_err(|e| database_away("checking the 24-hour window", &e))?;
    if open == Some(true) {
        return Ok(());
    }
    Err(StepError::new(
        ErrorClass::OutsideWindow,
        format!(
            "Outside 24-hour window: {to} has not written to sender {sender} in the last 24 hours; {advice}"
        ),
    ))
}

/// The sender to send from: the step's `sender`, or the one the trigger came in on.
pub fn sender<'a>(
    step_sender: Option<&'a str>,
    ctx: &'a StepContext<'_>,
) -> Result<&'a str, StepError> {
    step_sender.or(ctx.sender_id).ok_or_else(|| {
        StepError::new(
            ErrorClass::SenderOffline,
            "no sender: the trigger has none and the step names none (set `sender:`)",
        )
    })
}

macro_rules! registry {
    ($($variant:ident => $module:ident :: $ty:ident,)*) => {
        /// Every step type, keyed in YAML by its snake_case name.
        #[derive(Debug, Clone, Deserialize, JsonSchema)]
        #[serde(rename_all = "snake_case", deny_unknown_fields)]
        pub enum StepKind {
            $($variant($module::$ty),)*
        }

        /// A step's rendered input, ready to execute (short-lived: size differences don't matter).
        #[allow(clippy::large_enum_variant)]
        pub enum Rendered {
            $($variant(<$module::$ty as Step>::Input),)*
        }

        impl StepKind {
            /// Every step type's YAML key.
            pub const TYPE_NAMES: &'static [&'static str] = &[$(stringify!($module),)*];

            pub fn type_name(&self) -> &'static str {
                match self { $(StepKind::$variant(_) => stringify!($module),)* }
            }
            pub fn id(&self) -> Option<&str> {
                match self { $(StepKind::$variant(s) => s.id(),)* }
            }
            pub fn retry(&self) -> Option<RetryPolicy> {
                match self { $(StepKind::$variant(s) => s.retry(),)* }
            }
            pub fn arms(&self) -> Vec<&[StepKind]> {
                match self { $(StepKind::$variant(s) => s.arms(),)* }
            }
            pub fn check(&self) -> Result<(), String> {
                match self { $(StepKind::$variant(s) => s.check(),)* }
            }
            pub fn repeatable(&self) -> bool {
                match self { $(StepKind::$variant(s) => s.repeatable(),)* }
            }
            pub fn render(&self, ctx: &StepContext<'_>) -> Result<(Rendered, Value), StepError> {
                match self {
                    $(StepKind::$variant(s) => {
                        let input = s.render(ctx)?;
                        let json = serde_json::to_value(&input).unwrap_or(Value::Null);
                        Ok((Rendered::$variant(input), json))
                    })*
                }
            }
            pub async fn execute(
                &self,
                input: Rendered,
                ctx: &StepContext<'_>,
            ) -> Result<StepOutput, StepError> {
                match (self, input) {
                    $((StepKind::$variant(s), Rendered::$variant(i)) => s.execute(i, ctx).await,)*
                    #[allow(unreachable_patterns)]
                    _ => Err(StepError::new(ErrorClass::ProviderError, "internal: input of another step type")),
                }
            }
        }
    };
}

registry! {
    Branch => branch::Branch,
    Delay => delay::Delay,
    GenerateAiResponse => generate_ai_response::GenerateAiResponse,
    HttpRequest => http_request::HttpRequest,
    Notify => notify::Notify,
    SendFlow => send_flow::SendFlow,
    SendTemplate => send_template::SendTemplate,
    SendText => send_text::SendText,
    UpdateContact => update_contact::UpdateContact,
    WaitForResponse => wait_for_response::WaitForResponse,
}

crate::string_schema!(Recipient);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_follows_the_class_except_permanent_and_plain_client_errors() {
        assert!(StepError::new(ErrorClass::ProviderError, "5xx").retryable());
        assert!(!StepError::new(ErrorClass::TemplateNotFound, "x").retryable());
        assert!(
            !StepError::new(ErrorClass::ProviderError, "x")
                .permanent()
                .retryable()
        );
        let mut client = StepError::new(ErrorClass::ProviderError, "404");
        client.http_status = Some(404);
        assert!(
            !client.retryable(),
            "a 404 from an outside API answers the same next time"
        );
        client.provider_code = Some(999_999);
        assert!(client.retryable(), "an unknown Graph code stays retryable");
        let mut limited = StepError::new(ErrorClass::RateLimited, "429");
        limited.http_status = Some(429);
        assert!(limited.retryable());
        assert_eq!(
            StepError::new(ErrorClass::OptedOut, "x").to_json()["retryable"],
            false
        );
    }

    #[test]
    fn the_steps_retry_policy_wins_over_the_workflows_which_wins_over_the_global_one() {
        let policy = |attempts, secs| RetryPolicy {
            attempts,
            wait: crate::domain::HumanDuration::from(Duration::from_secs(secs)),
        };
        let (step, workflow, global) = (policy(3, 1), policy(5, 30), policy(2, 60));
        assert_eq!(
            RetryPolicy::for_step(Some(step), Some(workflow), global),
            step
        );
        assert_eq!(
            RetryPolicy::for_step(None, Some(workflow), global),
            workflow
        );
        assert_eq!(RetryPolicy::for_step(None, None, global), global);
        assert_eq!(policy(0, 1).check(), Ok(()));
        assert!(
            policy(101, 1)
                .check()
                .unwrap_err()
                .contains("more than 100")
        );
    }

    #[test]
    fn the_json_schema_offers_retry_on_every_step_type() {
        let schema =
            serde_json::to_value(schemars::schema_for!(crate::workflow::WorkflowSpec)).unwrap();
        let defs = &schema["$defs"];
        for step in ["SendText", "SendTemplate", "Delay", "Branch", "Notify"] {
            assert_eq!(
                defs[step]["properties"]["retry"]["anyOf"][0]["$ref"], "#/$defs/RetryPolicy",
                "{step}"
            );
        }
        assert_eq!(
            defs["RetryPolicy"]["properties"]["attempts"]["maximum"],
            100
        );
    }
}
