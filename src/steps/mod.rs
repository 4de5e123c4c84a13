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

use std::time::Duration;

use crate::failure::{ErrorClass, RetryPolicy, StepError};

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    domain::PhoneNumber, expr::Text, failure::database_away, providers::whatsapp::WhatsApp,
};

/// What the steps can reach.
#[derive(Clone)]
pub struct Services {
    pub pool: PgPool,
    pub whatsapp: WhatsApp,
    /// The named AI assistants (`generate_ai_response`).
    pub assistants: std::sync::Arc<crate::providers::llm::Assistants>,
    /// Team notifications (`notify`).
    pub notifier: crate::providers::notify::Notifier,
    /// Outbound HTTP for `http_request`, watched by the outbound guard (timeouts per request).
    pub http: crate::providers::outbound::Outbound,
    /// The default retry policy (workflows may set their own).
    pub retry: RetryPolicy,
    /// How long a recorded intent protects a step from being taken over by another worker:
    /// longer than any provider call can take.
    pub lease: Duration,
    /// A later run of a contact waits at most this long behind an earlier one that nothing
    /// moved (`HERALD_STRANDED_AFTER`): such a run is swept, not waited for.
    pub stranded_after: Duration,
    /// The one send path of the send steps: sender status and pacing, then `whatsapp`.
    pub senders: crate::senders::Senders,
    /// The template catalog's entry and the recipient's opt-out, read at send time.
    pub facts: crate::templates::Facts,
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

pub use crate::store::messages::Sent;

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

/// Fails with "Outside 24-hour window" unless `to` wrote to `sender` in the last 24 hours.
pub(crate) async fn require_window(
    pool: &PgPool,
    sender: &str,
    to: &PhoneNumber,
    advice: &str,
) -> Result<(), StepError> {
    let open = crate::store::messages::window_open(pool, sender, to.digits())
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
