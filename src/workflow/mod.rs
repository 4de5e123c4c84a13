//! Workflows: the YAML model, loader and validator for `workflows/`.
//! A file is parsed into typed values (conditions compiled, templates checked) before anything runs.

pub mod condition;
mod loader;
pub mod template;

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;

pub use condition::Condition;
pub use loader::{LoadError, Workflows, load_dir, load_file, parse_workflow};
pub use template::Text;

use crate::{domain::EventType, steps::StepKind};

/// One workflow file as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSpec {
    /// Unique name; runs are listed under it.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Set to false to keep the file without running it.
    #[serde(default = "yes")]
    pub enabled: bool,
    pub trigger: TriggerSpec,
    /// The steps, run in order.
    pub steps: Vec<StepKind>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerSpec {
    /// The event type that starts this workflow.
    pub event: EventType,
    /// A CEL condition over `trigger`, `event` and `contact`; the workflow runs only when it is true.
    #[serde(default)]
    pub filter: Option<Condition>,
}

/// A loaded, checked workflow. Steps carry their ids (generated where omitted).
#[derive(Debug, Clone)]
pub struct Workflow {
    pub name: String,
    pub description: Option<String>,
    pub enabled: bool,
    pub trigger: TriggerSpec,
    pub steps: Vec<(String, StepKind)>,
    pub file: std::path::PathBuf,
}

pub type SharedWorkflows = Arc<Workflows>;
