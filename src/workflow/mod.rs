//! Workflows: the YAML model, loader and validator for `workflows/`.
//! A file is parsed into typed values (conditions compiled, templates checked) before anything runs.

mod loader;

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;

pub use loader::{
    LoadError, Workflows, load_dir, load_dir_with, load_file, parse_workflow, parse_workflow_with,
};

use crate::{domain::EventType, expr::Condition, steps::StepKind};

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
    /// This workflow's retry policy for failed steps (default: the global one, 2 attempts 60s apart).
    #[serde(default)]
    pub retry: Option<crate::failure::RetryPolicy>,
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
    /// For `event: schedule`: when it fires (5-field cron).
    #[serde(default)]
    pub cron: Option<crate::domain::CronExpr>,
    /// For `event: schedule`: the IANA time zone of the cron expression (default UTC).
    #[serde(default)]
    pub timezone: Option<crate::domain::TimeZone>,
    /// For `event: schedule`: what happens to ticks missed while no scheduler ran: `fire_once`
    /// (default: the latest missed tick fires once when a scheduler is back) or `skip`.
    #[serde(default)]
    pub missed: Missed,
    /// For `event: schedule`: start one run per contact of a group (paced like a dispatch)
    /// instead of one run per tick.
    #[serde(default)]
    pub for_each: Option<ForEach>,
}

/// What a schedule does with ticks that passed while no scheduler was running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// The latest missed tick fires once on catch-up (earlier missed ticks do not).
    #[default]
    FireOnce,
    /// Ticks more than a minute late are skipped.
    Skip,
}

/// The contacts a scheduled workflow runs for.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForEach {
    /// Every contact in this group.
    pub group: String,
    /// Only contacts for whom this CEL condition over `contact` (name, phone, fields, groups,
    /// opted_out) is true.
    #[serde(default)]
    pub filter: Option<Condition>,
    /// Runs started per second at most (default: HERALD_DISPATCH_RATE).
    #[serde(default)]
    pub rate: Option<f64>,
}

/// A loaded, checked workflow. Nested steps (branch arms, timeout steps) are laid out in one
/// flat list, each knowing where the run goes next, so a run's position is one index.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub name: String,
    pub description: Option<String>,
    pub enabled: bool,
    pub trigger: TriggerSpec,
    pub retry: Option<crate::failure::RetryPolicy>,
    pub steps: Vec<FlatStep>,
    pub file: std::path::PathBuf,
}

/// One step at its place in the flat layout.
#[derive(Debug, Clone)]
pub struct FlatStep {
    /// Unique in the workflow; generated as `<type>_<n>` where omitted.
    pub id: String,
    pub kind: StepKind,
    /// The step that follows when this one completes (`None`: the run completes).
    pub next: Option<usize>,
    /// Where each arm starts (`None`: an empty arm continues with `next`'s target... the run
    /// completes when that is `None` too).
    pub arms: Vec<Option<usize>>,
}

impl Workflow {
    /// Where the run goes after step `index` takes arm `arm`.
    pub fn arm_target(&self, index: usize, arm: usize) -> Option<usize> {
        let step = self.steps.get(index)?;
        match step.arms.get(arm) {
            Some(target) => *target,
            None => step.next,
        }
    }
}

/// Lays `steps` (and every nested list) out flat. Returns the indices of the top-level steps.
pub(crate) fn flatten(steps: &[StepKind]) -> Vec<FlatStep> {
    fn lay(
        list: &[StepKind],
        out: &mut Vec<FlatStep>,
        arm_tops: &mut Vec<Vec<Vec<usize>>>,
    ) -> Vec<usize> {
        let mut tops = Vec::new();
        for step in list {
            let index = out.len();
            tops.push(index);
            out.push(FlatStep {
                id: step
                    .id()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{}_{}", step.type_name(), index + 1)),
                kind: step.clone(),
                next: None,
                arms: Vec::new(),
            });
            arm_tops.push(Vec::new());
            for arm in step.arms() {
                let t = lay(arm, out, arm_tops);
                arm_tops[index].push(t);
            }
        }
        tops
    }
    fn link(
        out: &mut [FlatStep],
        arm_tops: &[Vec<Vec<usize>>],
        tops: &[usize],
        after: Option<usize>,
    ) {
        for (k, &i) in tops.iter().enumerate() {
            let next = tops.get(k + 1).copied().or(after);
            out[i].next = next;
            for arm in &arm_tops[i] {
                out[i].arms.push(arm.first().copied().or(next));
                link(out, arm_tops, arm, next);
            }
        }
    }
    let mut out = Vec::new();
    let mut arm_tops = Vec::new();
    let tops = lay(steps, &mut out, &mut arm_tops);
    link(&mut out, &arm_tops, &tops, None);
    out
}

pub type SharedWorkflows = Arc<Workflows>;
