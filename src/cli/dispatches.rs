//! `herald trigger` (start a workflow for contacts: a dispatch) and `herald dispatches
//! list|show|contacts|pause|resume|cancel`.

use std::{process::ExitCode, time::Duration};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::{output, parse_key_value, workflows::load_workflows};
use crate::{
    app,
    config::Config,
    db,
    dispatch::{self, Action, Dispatch, DispatchStatus, NewDispatch, Source, Target},
};

/// `herald trigger --help`, after the options.
pub(super) const TRIGGER_EXIT_CODES: &str = "\
Exit codes:
  0  without --wait: the dispatch was created; with --wait: every run completed
     (contacts skipped because they opted out do not count against it)
  1  with --wait: at least one run failed; or the command itself failed (reason on stderr)
  2  bad arguments or configuration
  3  with --wait: the dispatch or one of its runs was cancelled, and no run failed";

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["to", "group"])))]
pub struct TriggerArgs {
    /// The workflow's name.
    pub workflow: String,
    /// A contact's phone number (E.164); repeat for several.
    #[arg(long)]
    pub to: Vec<String>,
    /// Every contact of this group.
    #[arg(long)]
    pub group: Option<String>,
    /// `key=value`, reachable as `{{ trigger.key }}`; repeatable.
    #[arg(long = "var", value_parser = parse_key_value)]
    pub vars: Vec<(String, String)>,
    /// Runs started per second at most (default HERALD_DISPATCH_RATE).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Our sender's phone_number_id (default HERALD_DEFAULT_SENDER).
    #[arg(long)]
    pub sender: Option<String>,
    /// Wait until the dispatch completes, showing its progress; the exit code then says whether
    /// every run completed (see below).
    #[arg(long)]
    pub wait: bool,
}

#[derive(Subcommand, Debug)]
pub enum DispatchesCommand {
    /// The newest dispatches with their progress.
    List {
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// One dispatch and its progress.
    Show {
        id: uuid::Uuid,
    },
    /// Its contacts, optionally in one state (pending, running, waiting, completed, failed,
    /// skipped_opted_out, cancelled).
    Contacts {
        id: uuid::Uuid,
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Start no new runs until resumed.
    Pause {
        id: uuid::Uuid,
    },
    Resume {
        id: uuid::Uuid,
    },
    /// Start no new runs and cancel the runs still waiting, sleeping or queued.
    Cancel {
        id: uuid::Uuid,
    },
}

pub(super) async fn trigger(
    config: &Config,
    args: TriggerArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let workflows = load_workflows(&config.workflows_dir, &config.templates_file)?;
    let pool = db::connect(&config.database_url, 2).await?;
    db::migrate(&pool).await?;
    let target = match args.group {
        Some(name) => Target::Group { name, filter: None },
        None => Target::To(args.to),
    };
    let vars = args
        .vars
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    let created = dispatch::create(
        &pool,
        &workflows,
        &app::dispatch_defaults(config),
        NewDispatch {
            workflow: args.workflow,
            target,
            vars,
            rate: args.rate,
            sender: args.sender,
            source: Source::Cli,
            started_by: std::env::var("USER").ok().map(|u| format!("cli:{u}")),
        },
    )
    .await?;
    if !args.wait {
        print_dispatch(&created, json)?;
        if !json {
            println!("(runs are started by the scheduler of a running `herald serve`)");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let bar = output::progress_bar(created.progress.total.max(0) as u64, "contacts", json);
    loop {
        let d = dispatch::show(&pool, created.id)
            .await?
            .context("dispatch disappeared")?;
        if matches!(
            d.status,
            DispatchStatus::Completed | DispatchStatus::Cancelled
        ) {
            bar.finish_and_clear();
            print_dispatch(&d, json)?;
            return Ok(ExitCode::from(wait_exit_code(&d)));
        }
        let p = &d.progress;
        if output::draws_progress(json) {
            let finished = p.completed + p.failed + p.skipped_opted_out + p.cancelled;
            bar.set_length(p.total.max(0) as u64);
            bar.set_position(finished.max(0) as u64);
            let paused = if d.status == DispatchStatus::Paused {
                "paused, "
            } else {
                ""
            };
            bar.set_message(format!(
                "({paused}{} running, {} waiting, {} failed)",
                p.running, p.waiting, p.failed
            ));
        } else if !json {
            println!(
                "{}: {} pending, {} running, {} waiting, {} completed, {} failed, {} skipped (opted out)",
                d.status,
                p.pending,
                p.running,
                p.waiting,
                p.completed,
                p.failed,
                p.skipped_opted_out
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `trigger --wait`'s exit code for a finished dispatch (see [`TRIGGER_EXIT_CODES`]).
fn wait_exit_code(d: &Dispatch) -> u8 {
    if d.progress.failed > 0 {
        1
    } else if d.status == DispatchStatus::Cancelled || d.progress.cancelled > 0 {
        3
    } else {
        0
    }
}

fn print_dispatch(d: &Dispatch, json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(d);
    }
    let p = &d.progress;
    println!(
        "dispatch {} of {} ({}, {} runs/s, sender {}{})",
        d.id,
        d.workflow,
        d.status,
        d.rate,
        d.sender_id,
        if d.sender_paused {
            ": PAUSED by the sender's quality, see `herald senders`"
        } else {
            ""
        }
    );
    println!(
        "  {} contacts: {} pending, {} running, {} waiting for reply, {} completed, {} failed, {} skipped (opted out), {} cancelled",
        p.total,
        p.pending,
        p.running,
        p.waiting,
        p.completed,
        p.failed,
        p.skipped_opted_out,
        p.cancelled
    );
    Ok(())
}

pub(super) async fn command(
    config: &Config,
    cmd: DispatchesCommand,
    json: bool,
) -> anyhow::Result<()> {
    let pool = db::connect(&config.database_url, 2).await?;
    match cmd {
        DispatchesCommand::List { limit } => {
            let list = dispatch::list(&pool, limit).await?;
            if json {
                return output::json(&list);
            }
            for d in &list {
                print_dispatch(d, false)?;
            }
        }
        DispatchesCommand::Show { id } => {
            let d = dispatch::show(&pool, id)
                .await?
                .with_context(|| format!("dispatch {id} not found"))?;
            print_dispatch(&d, json)?;
        }
        DispatchesCommand::Contacts { id, state, limit } => {
            if let Some(s) = &state
                && !dispatch::CONTACT_STATES.contains(&s.as_str())
            {
                bail!(
                    "unknown state '{s}' (one of {})",
                    dispatch::CONTACT_STATES.join(", ")
                );
            }
            let list = dispatch::contacts(&pool, id, state.as_deref(), limit, 0).await?;
            if json {
                return output::json(&list);
            }
            let mut table = output::table(["#", "CONTACT", "STATE", "RUN", "ERROR"]);
            output::align_right(&mut table, &[0]);
            for c in list {
                let error = c
                    .error
                    .as_ref()
                    .and_then(|e| e.get("class"))
                    .and_then(|c| c.as_str())
                    .unwrap_or("")
                    .to_string();
                table.add_row([
                    c.position.to_string(),
                    c.to,
                    c.state.to_string(),
                    c.run_id.map(|r| r.to_string()).unwrap_or_default(),
                    error,
                ]);
            }
            output::print_table(&table);
        }
        DispatchesCommand::Pause { id } => {
            print_dispatch(&dispatch::act(&pool, id, Action::Pause).await?, json)?
        }
        DispatchesCommand::Resume { id } => {
            print_dispatch(&dispatch::act(&pool, id, Action::Resume).await?, json)?
        }
        DispatchesCommand::Cancel { id } => {
            print_dispatch(&dispatch::act(&pool, id, Action::Cancel).await?, json)?
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::Progress;

    fn finished(
        status: DispatchStatus,
        completed: i64,
        failed: i64,
        skipped: i64,
        cancelled: i64,
    ) -> u8 {
        let d = Dispatch {
            id: uuid::Uuid::nil(),
            workflow: "announce".into(),
            sender_id: "1".into(),
            source: Source::Cli,
            started_by: None,
            target: serde_json::Value::Null,
            vars: serde_json::Value::Null,
            rate: 1.0,
            status,
            sender_paused: false,
            progress: Progress {
                total: completed + failed + skipped + cancelled,
                completed,
                failed,
                skipped_opted_out: skipped,
                cancelled,
                ..Progress::default()
            },
            created_at: chrono::Utc::now(),
            finished_at: None,
        };
        wait_exit_code(&d)
    }

    #[test]
    fn trigger_wait_exits_0_only_when_every_run_completed() {
        assert_eq!(finished(DispatchStatus::Completed, 3, 0, 0, 0), 0);
        assert_eq!(
            finished(DispatchStatus::Completed, 2, 0, 1, 0),
            0,
            "opted out: skipped"
        );
        assert_eq!(finished(DispatchStatus::Completed, 2, 1, 0, 0), 1);
        assert_eq!(
            finished(DispatchStatus::Cancelled, 1, 1, 0, 2),
            1,
            "a failure comes first"
        );
        assert_eq!(finished(DispatchStatus::Cancelled, 1, 0, 0, 2), 3);
        assert_eq!(
            finished(DispatchStatus::Completed, 2, 0, 0, 1),
            3,
            "a run was cancelled"
        );
    }
}
