//! The `herald` command line: the parser and the dispatch to one file per command group (serve
//! and migrate, workflows, simulate, runs and dead letters, quarantine, trigger and dispatches,
//! senders, contacts and groups). On top of every other module; none imports it.

mod contacts;
mod dispatches;
mod output;
mod quarantine;
mod runs;
mod senders;
mod serve;
mod simulate;
mod workflows;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use self::{
    contacts::{ContactsCommand, GroupsCommand},
    dispatches::{DispatchesCommand, TriggerArgs},
    quarantine::QuarantineCommand,
    runs::{DeadLettersCommand, RunsCommand},
    senders::SendersCommand,
    simulate::SimulateCommand,
    workflows::WorkflowsCommand,
};
use crate::config::Config;

#[derive(Parser, Debug)]
#[command(
    name = "herald",
    version,
    about = "Event-driven automation engine for WhatsApp",
    after_help = "Exit codes: 0 done; 1 the command failed (the reason is on stderr); 2 bad \
                  arguments or configuration. `trigger --wait` has its own (see its --help)."
)]
pub struct Cli {
    /// Print JSON on stdout instead of text and tables, for scripts (before or after the
    /// command).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
    /// Every command reads the same configuration; `herald <command> --help` lists it.
    #[command(flatten)]
    pub config: crate::config::ConfigArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run Herald: every role, or the roles given with --role.
    Serve {
        /// ingress, matcher, worker, scheduler or all (repeatable).
        #[arg(long = "role", value_enum, default_value = "all")]
        roles: Vec<crate::app::Role>,
    },
    /// Apply the database migrations.
    Migrate,
    /// Check or describe workflow files.
    #[command(subcommand)]
    Workflows(WorkflowsCommand),
    /// Inject events into a running Herald.
    #[command(subcommand)]
    Simulate(SimulateCommand),
    /// Runs and their history.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Webhook bodies Herald could not parse or route.
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
    /// Steps that failed for good; retry one after fixing the cause.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(DeadLettersCommand),
    /// Start a workflow for contacts (one run each, paced): --to +E164 (repeatable) or --group.
    #[command(after_help = dispatches::TRIGGER_EXIT_CODES)]
    Trigger(TriggerArgs),
    /// Dispatches: progress, contacts, pause, resume, cancel.
    #[command(subcommand)]
    Dispatches(DispatchesCommand),
    /// Our WhatsApp senders: status, quality, paused dispatches.
    #[command(subcommand)]
    Senders(SendersCommand),
    /// Contacts: list, show, add, import a CSV, opt out and in.
    #[command(subcommand)]
    Contacts(ContactsCommand),
    /// Groups of contacts.
    #[command(subcommand)]
    Groups(GroupsCommand),
}

/// Runs the command; the exit code is `trigger --wait`'s verdict, otherwise success (an error
/// is the caller's to report).
pub async fn run(cli: Cli, config: Config) -> anyhow::Result<ExitCode> {
    let json = cli.json;
    let done = match cli.command {
        Command::Serve { roles } => serve::serve(config, &roles).await,
        Command::Migrate => serve::migrate(&config, json).await,
        Command::Workflows(cmd) => workflows::command(&config, cmd, json),
        Command::Simulate(cmd) => simulate::command(&config, cmd, json).await,
        Command::Runs(cmd) => runs::runs_command(&config, cmd, json).await,
        Command::Quarantine(cmd) => quarantine::command(&config, cmd, json).await,
        Command::DeadLetters(cmd) => runs::dead_letters_command(&config, cmd, json).await,
        Command::Trigger(args) => return dispatches::trigger(&config, args, json).await,
        Command::Dispatches(cmd) => dispatches::command(&config, cmd, json).await,
        Command::Senders(cmd) => senders::command(&config, cmd, json).await,
        Command::Contacts(cmd) => contacts::contacts_command(&config, cmd, json).await,
        Command::Groups(cmd) => contacts::groups_command(&config, cmd, json).await,
    };
    done.map(|()| ExitCode::SUCCESS)
}

/// Parses `key=value`.
pub fn parse_key_value(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("'{raw}' is not key=value")),
    }
}

/// A time as the tables and details print it.
fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn json_is_accepted_before_and_after_the_command() {
        for args in [
            ["herald", "--json", "runs", "list"],
            ["herald", "runs", "--json", "list"],
            ["herald", "runs", "list", "--json"],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            assert!(cli.json, "{args:?}");
            assert!(matches!(
                cli.command,
                Command::Runs(RunsCommand::List { .. })
            ));
        }
        assert!(
            !Cli::try_parse_from(["herald", "runs", "list"])
                .unwrap()
                .json
        );
    }
}
