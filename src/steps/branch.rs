//! `branch`: ordered `when` conditions (CEL over the run's data), each with its steps, and an
//! `else`. The first true condition wins; with none true, `else` runs (or nothing).

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ErrorClass, Next, Step, StepContext, StepError, StepKind, StepOutput};
use crate::expr::Condition;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Branch {
    #[serde(default)]
    pub id: Option<String>,
    /// This step's retry policy (default: the workflow's `retry`, then the global one).
    #[serde(default)]
    pub retry: Option<super::RetryPolicy>,
    /// Tried in order.
    pub when: Vec<When>,
    /// Steps when no condition is true.
    #[serde(default, rename = "else")]
    pub otherwise: Vec<StepKind>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// A CEL condition, e.g. `trigger.outcome == "booked"`.
    pub condition: Condition,
    pub steps: Vec<StepKind>,
}

#[derive(Debug, Serialize)]
pub struct Input {
    /// The arm taken: `when[i]` is `i`, `else` is `when.len()`.
    pub arm: usize,
    pub matched: String,
}

#[async_trait]
impl Step for Branch {
    type Input = Input;

    fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    fn retry(&self) -> Option<super::RetryPolicy> {
        self.retry
    }

    fn repeatable(&self) -> bool {
        true
    }

    fn arms(&self) -> Vec<&[StepKind]> {
        self.when
            .iter()
            .map(|w| w.steps.as_slice())
            .chain(std::iter::once(self.otherwise.as_slice()))
            .collect()
    }

    fn check(&self) -> Result<(), String> {
        if self.when.is_empty() {
            return Err("branch needs at least one `when`".into());
        }
        Ok(())
    }

    fn render(&self, ctx: &StepContext<'_>) -> Result<Input, StepError> {
        for (i, w) in self.when.iter().enumerate() {
            let matched = w.condition.evaluate(ctx.data).map_err(|reason| {
                StepError::new(
                    ErrorClass::MissingVariable,
                    format!("{reason} (use has(...) for fields that may be missing)"),
                )
            })?;
            if matched {
                return Ok(Input {
                    arm: i,
                    matched: w.condition.source().to_string(),
                });
            }
        }
        Ok(Input {
            arm: self.when.len(),
            matched: "else".into(),
        })
    }

    async fn execute(&self, input: Input, _ctx: &StepContext<'_>) -> Result<StepOutput, StepError> {
        Ok(
            StepOutput::new(json!({ "arm": input.arm, "matched": input.matched }))
                .with_next(Next::Arm(input.arm)),
        )
    }
}
