//! `herald runs list|show` and `herald dead-letters list|show|retry`.

use anyhow::bail;
use clap::Subcommand;
use serde_json::json;

use super::{output, when};
use crate::{
    bus::Bus,
    config::Config,
    db,
    runs::{self, RunFilter, RunStatus, dead_letters},
};

#[derive(Subcommand, Debug)]
pub enum RunsCommand {
    /// The newest runs.
    List {
        #[arg(long)]
        workflow: Option<String>,
        #[arg(long)]
        status: Option<RunStatus>,
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// One run with its trigger, steps and messages (the id or a prefix of it).
    Show { run: String },
}

#[derive(Subcommand, Debug)]
pub enum DeadLettersCommand {
    List {
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    Show {
        id: uuid::Uuid,
    },
    /// Continue the run at the failed step (a new attempt).
    Retry {
        id: uuid::Uuid,
    },
}

pub(super) async fn runs_command(
    config: &Config,
    cmd: RunsCommand,
    json: bool,
) -> anyhow::Result<()> {
    let pool = db::connect(&config.database_url, 2).await?;
    match cmd {
        RunsCommand::List {
            workflow,
            status,
            limit,
        } => {
            let filter = RunFilter {
                workflow,
                status,
                limit,
                ..Default::default()
            };
            let list = runs::list(&pool, &filter).await?;
            if json {
                return output::json(&list);
            }
            let mut table = output::table(["RUN", "WORKFLOW", "STATUS", "CUSTOMER", "CREATED"]);
            for r in list {
                table.add_row([
                    r.id.to_string(),
                    r.workflow,
                    r.status.to_string(),
                    r.customer_id.unwrap_or_default(),
                    when(r.created_at),
                ]);
            }
            output::print_table(&table);
        }
        RunsCommand::Show { run } => {
            let Some(detail) = runs::show(&pool, &run).await? else {
                bail!("no run {run}");
            };
            if json {
                return output::json(&detail);
            }
            let r = &detail.run;
            println!("run       {}", r.id);
            println!("workflow  {}", r.workflow);
            println!("status    {}", r.status);
            println!("trigger   {} {}", detail.event_type, detail.trigger);
            if let Some(e) = &r.error {
                println!("error     {e}");
            }
            println!("steps:");
            for s in &detail.steps {
                println!(
                    "  #{} {} ({}) attempt {}: {}",
                    s.step_index, s.step_id, s.step_type, s.attempt, s.state
                );
                if let Some(i) = &s.input {
                    println!("      input  {i}");
                }
                if let Some(o) = &s.output {
                    println!("      output {o}");
                }
                if let Some(e) = &s.error {
                    println!("      error  {e}");
                }
            }
            println!("messages:");
            for m in &detail.messages {
                println!(
                    "  {} {} -> {} via {} [{}] {}",
                    m.kind,
                    m.sender_id,
                    m.recipient,
                    m.provider,
                    m.status,
                    m.wamid.as_deref().unwrap_or("-")
                );
                println!("      {}", m.request);
            }
        }
    }
    Ok(())
}

pub(super) async fn dead_letters_command(
    config: &Config,
    cmd: DeadLettersCommand,
    json: bool,
) -> anyhow::Result<()> {
    let pool = db::connect(&config.database_url, 2).await?;
    match cmd {
        DeadLettersCommand::List { limit } => {
            let list = dead_letters::list(&pool, limit).await?;
            if json {
                return output::json(&list);
            }
            let mut table = output::table([
                "DEAD LETTER",
                "WORKFLOW",
                "STEP",
                "ERROR",
                "RETRIED",
                "CREATED",
            ]);
            for d in list {
                table.add_row([
                    d.id.to_string(),
                    d.workflow,
                    d.step_id,
                    d.error["class"].as_str().unwrap_or("-").to_string(),
                    if d.retried_at.is_some() { "yes" } else { "no" }.to_string(),
                    when(d.created_at),
                ]);
            }
            output::print_table(&table);
        }
        DeadLettersCommand::Show { id } => {
            let Some(d) = dead_letters::show(&pool, id).await? else {
                bail!("no dead letter {id}");
            };
            if json {
                return output::json(&d);
            }
            println!("dead letter {}", d.id);
            println!(
                "run         {} ({}), step {} ({})",
                d.run_id, d.workflow, d.step_id, d.step_type
            );
            println!("contact     {}", d.customer_id.as_deref().unwrap_or("-"));
            println!("attempts    {}", d.attempts);
            println!("error       {}", d.error);
            println!(
                "input       {}",
                d.input
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or("-".into())
            );
            println!("created     {}", d.created_at);
            if let Some(at) = d.retried_at {
                println!("retried     {at}");
            }
        }
        DeadLettersCommand::Retry { id } => {
            let bus = Bus::new(config);
            let run = dead_letters::retry(&pool, &bus, id).await?;
            bus.close().await;
            if json {
                println!(
                    "{}",
                    json!({"dead_letter": id, "run": run, "status": "queued"})
                );
            } else {
                println!("run {run} continues at the failed step");
            }
        }
    }
    Ok(())
}
