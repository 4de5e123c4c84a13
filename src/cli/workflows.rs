//! `herald workflows validate|schema`, and the workflow loading every command shares.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde_json::json;

use super::output;
use crate::{
    config::Config,
    workflow::{self, WorkflowSpec},
};

#[derive(Subcommand, Debug)]
pub enum WorkflowsCommand {
    /// Report every mistake in DIR (default: HERALD_WORKFLOWS) with file, line and reason.
    Validate { dir: Option<PathBuf> },
    /// Print the JSON Schema of the workflow format.
    Schema,
}

pub(super) fn command(config: &Config, cmd: WorkflowsCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        WorkflowsCommand::Validate { dir } => {
            let dir = dir.unwrap_or_else(|| config.workflows_dir.clone());
            let workflows = load_workflows(&dir, &config.templates_file)?;
            let valid = workflows.all().len();
            if json {
                return output::json(&json!({"dir": dir, "valid": valid}));
            }
            println!("{}: {valid} workflows valid", dir.display());
            Ok(())
        }
        // JSON either way.
        WorkflowsCommand::Schema => output::json(&schemars::schema_for!(WorkflowSpec)),
    }
}

/// Loads the workflows (checked against the template catalog when `templates` exists) or fails
/// with every mistake, one per line.
pub fn load_workflows(dir: &Path, templates: &Path) -> anyhow::Result<workflow::Workflows> {
    let catalog =
        crate::templates::catalog::Catalog::load(templates).map_err(|e| anyhow::anyhow!(e))?;
    workflow::load_dir_with(dir, catalog.as_ref()).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!(
            "{} mistake(s) in the workflows:\n{}",
            errors.len(),
            lines.join("\n")
        )
    })
}
