//! Expressions in workflows: `Text` (minijinja templates over the run's data) and `Condition`
//! (CEL). Both are compiled where a workflow is parsed; steps only render and evaluate them.
//! Below workflows and steps, which both use them; no I/O.

pub mod condition;
pub mod text;

pub use condition::Condition;
pub use text::{RenderError, Text};
