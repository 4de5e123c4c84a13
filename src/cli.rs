//! The `herald` command line: serve, migrate, workflows, simulate, runs, quarantine, senders,
//! trigger, dispatches, contacts, groups.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::{
    app::{self, Role},
    bus::Bus,
    config::{Config, SANDBOX_PHONE_NUMBER_ID},
    db,
    domain::PhoneNumber,
    ingress::{quarantine, signature, simulate::text_message_body},
    runs::{self, RunFilter},
    workflow::{self, WorkflowSpec},
};

#[derive(Parser, Debug)]
#[command(
    name = "herald",
    version,
    about = "Event-driven automation engine for WhatsApp"
)]
pub struct Cli {
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
        roles: Vec<Role>,
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

#[derive(Subcommand, Debug)]
pub enum SendersCommand {
    /// Every sender Herald knows, with status, quality and whether dispatches are paused.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One sender (its phone_number_id or display number).
    Show {
        sender: String,
        #[arg(long)]
        json: bool,
    },
    /// Resume the sender's bulk dispatches after a quality pause.
    Resume {
        sender: String,
        #[arg(long)]
        json: bool,
    },
    /// Set the sender's status by hand (connected, offline, disconnected, flagged, restricted).
    SetStatus { sender: String, status: String },
}

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
    /// Wait until the dispatch completes, printing its progress.
    #[arg(long)]
    pub wait: bool,
    #[arg(long)]
    pub json: bool,
}

/// Parses `key=value`.
pub fn parse_key_value(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("'{raw}' is not key=value")),
    }
}

#[derive(Subcommand, Debug)]
pub enum DispatchesCommand {
    /// The newest dispatches with their progress.
    List {
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// One dispatch and its progress.
    Show {
        id: uuid::Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Its contacts, optionally in one state (pending, running, waiting, completed, failed,
    /// skipped_opted_out, cancelled).
    Contacts {
        id: uuid::Uuid,
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
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

#[derive(Subcommand, Debug)]
pub enum WorkflowsCommand {
    /// Report every mistake in DIR (default: HERALD_WORKFLOWS) with file, line and reason.
    Validate { dir: Option<PathBuf> },
    /// Print the JSON Schema of the workflow format.
    Schema,
}

#[derive(Subcommand, Debug)]
pub enum SimulateCommand {
    /// Post a signed WhatsApp text message webhook to Herald.
    Message(SimulateMessage),
    /// Post a call-ended event to Herald's call webhook (with the configured token or secret).
    #[command(name = "call-ended")]
    CallEnded(SimulateCallEnded),
}

#[derive(Args, Debug)]
pub struct SimulateMessage {
    /// The customer's phone number (E.164).
    #[arg(long)]
    pub from: String,
    #[arg(long)]
    pub text: String,
    /// The customer's profile name.
    #[arg(long, default_value = "Sandbox Customer")]
    pub name: String,
    /// Our sender's phone_number_id.
    #[arg(long, default_value = SANDBOX_PHONE_NUMBER_ID)]
    pub sender: String,
    /// The message id (wamid); repeat one to simulate a duplicate delivery.
    #[arg(long)]
    pub wamid: Option<String>,
    /// Herald's base URL (default: http://HERALD_LISTEN).
    #[arg(long)]
    pub url: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum RunsCommand {
    /// The newest runs.
    List {
        #[arg(long)]
        workflow: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// One run with its trigger, steps and messages (the id or a prefix of it).
    Show {
        run: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum DeadLettersCommand {
    List {
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    Show {
        id: uuid::Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Continue the run at the failed step (a new attempt).
    Retry {
        id: uuid::Uuid,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum QuarantineCommand {
    List {
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Parse and store a quarantined body again.
    Replay {
        id: uuid::Uuid,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cli: Cli, config: Config) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { roles } => {
            let workflows = load_workflows(&config.workflows_dir, &config.templates_file)?;
            let running = app::start(config, &roles, workflows).await?;
            app::cancel_on_signal(running.shutdown_token());
            running.wait().await;
            Ok(())
        }
        Command::Migrate => {
            let pool = db::connect(&config.database_url, 2).await?;
            db::migrate(&pool).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Workflows(WorkflowsCommand::Validate { dir }) => {
            let dir = dir.unwrap_or(config.workflows_dir);
            let workflows = load_workflows(&dir, &config.templates_file)?;
            println!(
                "{}: {} workflows valid",
                dir.display(),
                workflows.all().len()
            );
            Ok(())
        }
        Command::Workflows(WorkflowsCommand::Schema) => {
            let schema = schemars::schema_for!(WorkflowSpec);
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(())
        }
        Command::Simulate(SimulateCommand::Message(m)) => simulate_message(&config, m).await,
        Command::Runs(cmd) => runs_command(&config, cmd).await,
        Command::Quarantine(cmd) => quarantine_command(&config, cmd).await,
        Command::DeadLetters(cmd) => dead_letters_command(&config, cmd).await,
        Command::Trigger(args) => trigger(&config, args).await,
        Command::Dispatches(cmd) => dispatches_command(&config, cmd).await,
        Command::Senders(cmd) => senders_command(&config, cmd).await,
        Command::Simulate(SimulateCommand::CallEnded(c)) => simulate_call_ended(&config, c).await,
        Command::Contacts(cmd) => contacts_command(&config, cmd).await,
        Command::Groups(cmd) => groups_command(&config, cmd).await,
    }
}

async fn senders_command(config: &Config, cmd: SendersCommand) -> anyhow::Result<()> {
    use crate::senders;
    let pool = db::connect(&config.database_url, 2).await?;
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    match cmd {
        SendersCommand::List { json } => {
            let list = senders::list(&pool).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            println!(
                "{:<20}  {:<14}  {:<12}  {:<8}  DISPATCHES",
                "SENDER", "DISPLAY", "STATUS", "QUALITY"
            );
            for s in list {
                println!(
                    "{:<20}  {:<14}  {:<12}  {:<8}  {}",
                    s.id,
                    opt(&s.display_phone_number),
                    s.status,
                    opt(&s.quality_rating.map(|r| r.to_string())),
                    if s.dispatch_paused {
                        format!("paused: {}", opt(&s.paused_reason))
                    } else {
                        "running".into()
                    }
                );
            }
        }
        SendersCommand::Show { sender, json } => {
            let Some(s) = senders::show(&pool, &sender).await? else {
                bail!("no sender '{sender}' (see `herald senders list`)");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
                return Ok(());
            }
            println!("sender      {}", s.id);
            println!("display     {}", opt(&s.display_phone_number));
            println!(
                "status      {} ({}, since {})",
                s.status,
                opt(&s.status_detail),
                s.status_changed_at
                    .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            );
            println!(
                "quality     {} (last event {})",
                opt(&s.quality_rating.map(|r| r.to_string())),
                opt(&s.quality_event)
            );
            if s.dispatch_paused {
                println!(
                    "dispatches  paused since {}: {}",
                    s.paused_at
                        .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string()),
                    opt(&s.paused_reason)
                );
            } else {
                println!("dispatches  running");
            }
        }
        SendersCommand::Resume { sender, json } => {
            let done = senders::resume(&pool, &sender).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&done)?);
            } else if done.was_paused {
                println!(
                    "sender {}: bulk dispatches resumed (they were paused: {})",
                    done.sender,
                    opt(&done.paused_reason)
                );
            } else {
                println!(
                    "sender {}: bulk dispatches were not paused; nothing to do",
                    done.sender
                );
            }
        }
        SendersCommand::SetStatus { sender, status } => {
            senders::set_status_by_operator(&pool, &sender, &status).await?;
            println!("sender {sender}: status {status}");
        }
    }
    Ok(())
}

/// Loads the workflows (checked against the template catalog when `templates` exists) or fails
/// with every mistake, one per line.
pub fn load_workflows(
    dir: &std::path::Path,
    templates: &std::path::Path,
) -> anyhow::Result<workflow::Workflows> {
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

async fn simulate_message(config: &Config, m: SimulateMessage) -> anyhow::Result<()> {
    let from = PhoneNumber::parse(&m.from)?;
    let wamid = m
        .wamid
        .unwrap_or_else(|| format!("wamid.simulated.{}", uuid::Uuid::now_v7().simple()));
    let body = text_message_body(&from, &m.name, &m.text, &m.sender, &wamid);
    let secret = config.require_app_secret("`herald simulate` signs the webhook with it")?;
    let sig = signature::sign(secret.expose().as_bytes(), &body);
    let base = m.url.unwrap_or_else(|| format!("http://{}", config.listen));
    let url = format!("{}/webhooks/whatsapp", base.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sig)
        .body(body)
        .send()
        .await
        .with_context(|| format!("post to {url}: is `herald serve` running?"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    println!("{status} {text}");
    println!("wamid: {wamid}");
    if !status.is_success() {
        bail!("Herald answered {status}");
    }
    Ok(())
}

async fn runs_command(config: &Config, cmd: RunsCommand) -> anyhow::Result<()> {
    let pool = db::connect(&config.database_url, 2).await?;
    match cmd {
        RunsCommand::List {
            workflow,
            status,
            limit,
            json,
        } => {
            let list = runs::list(
                &pool,
                &RunFilter {
                    workflow,
                    status,
                    limit,
                    ..Default::default()
                },
            )
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            println!(
                "{:<36}  {:<24}  {:<10}  {:<16}  CREATED",
                "RUN", "WORKFLOW", "STATUS", "CUSTOMER"
            );
            for r in list {
                println!(
                    "{:<36}  {:<24}  {:<10}  {:<16}  {}",
                    r.id,
                    r.workflow,
                    r.status,
                    r.customer_id.unwrap_or_default(),
                    r.created_at.format("%Y-%m-%d %H:%M:%S")
                );
            }
        }
        RunsCommand::Show { run, json } => {
            let Some(detail) = runs::show(&pool, &run).await? else {
                bail!("no run {run}");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&detail)?);
                return Ok(());
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

async fn dead_letters_command(config: &Config, cmd: DeadLettersCommand) -> anyhow::Result<()> {
    use crate::runs::dead_letters;
    let pool = db::connect(&config.database_url, 2).await?;
    match cmd {
        DeadLettersCommand::List { limit, json } => {
            let list = dead_letters::list(&pool, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            println!(
                "{:<36}  {:<20}  {:<16}  {:<22}  {:<9}  CREATED",
                "DEAD LETTER", "WORKFLOW", "STEP", "ERROR", "RETRIED"
            );
            for d in list {
                println!(
                    "{:<36}  {:<20}  {:<16}  {:<22}  {:<9}  {}",
                    d.id,
                    d.workflow,
                    d.step_id,
                    d.error["class"].as_str().unwrap_or("-"),
                    if d.retried_at.is_some() { "yes" } else { "no" },
                    d.created_at.format("%Y-%m-%d %H:%M:%S")
                );
            }
        }
        DeadLettersCommand::Show { id, json } => {
            let Some(d) = dead_letters::show(&pool, id).await? else {
                bail!("no dead letter {id}");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
                return Ok(());
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
        DeadLettersCommand::Retry { id, json } => {
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

async fn quarantine_command(config: &Config, cmd: QuarantineCommand) -> anyhow::Result<()> {
    let pool = db::connect(&config.database_url, 2).await?;
    match cmd {
        QuarantineCommand::List { limit, json } => {
            let list = quarantine::list(&pool, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            for e in list {
                println!(
                    "{}  {}  {} bytes  {}  {}",
                    e.id,
                    e.received_at.format("%Y-%m-%d %H:%M:%S"),
                    e.size,
                    e.reason,
                    e.replay_result
                        .map(|r| format!("(replayed: {r})"))
                        .unwrap_or_default()
                );
            }
        }
        QuarantineCommand::Replay { id, json } => {
            let bus = Bus::new(config);
            let result = quarantine::replay(&pool, &bus, id, &config.opt_out_keywords).await?;
            bus.close().await;
            if json {
                println!("{}", json!({"id": id, "result": result}));
            } else {
                println!("{id}: {result}");
            }
        }
    }
    Ok(())
}

async fn trigger(config: &Config, args: TriggerArgs) -> anyhow::Result<()> {
    use crate::dispatch::{self, NewDispatch, Source, Target};
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
        print_dispatch(&created, args.json)?;
        if !args.json {
            println!("(runs are started by the scheduler of a running `herald serve`)");
        }
        return Ok(());
    }
    loop {
        let d = dispatch::show(&pool, created.id)
            .await?
            .context("dispatch disappeared")?;
        if matches!(
            d.status,
            dispatch::DispatchStatus::Completed | dispatch::DispatchStatus::Cancelled
        ) {
            print_dispatch(&d, args.json)?;
            return Ok(());
        }
        if !args.json {
            let p = &d.progress;
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
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

fn print_dispatch(d: &crate::dispatch::Dispatch, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(d)?);
        return Ok(());
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

async fn dispatches_command(config: &Config, cmd: DispatchesCommand) -> anyhow::Result<()> {
    use crate::dispatch::{self, Action};
    let pool = db::connect(&config.database_url, 2).await?;
    match cmd {
        DispatchesCommand::List { limit, json } => {
            let list = dispatch::list(&pool, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for d in &list {
                    print_dispatch(d, false)?;
                }
            }
        }
        DispatchesCommand::Show { id, json } => {
            let d = dispatch::show(&pool, id)
                .await?
                .with_context(|| format!("dispatch {id} not found"))?;
            print_dispatch(&d, json)?;
        }
        DispatchesCommand::Contacts {
            id,
            state,
            limit,
            json,
        } => {
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
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for c in &list {
                    let error = c
                        .error
                        .as_ref()
                        .and_then(|e| e.get("class"))
                        .and_then(|c| c.as_str())
                        .unwrap_or("");
                    let run = c.run_id.map(|r| r.to_string()).unwrap_or_default();
                    println!(
                        "{:>5}  {:<18} {:<18} {run} {error}",
                        c.position, c.to, c.state
                    );
                }
            }
        }
        DispatchesCommand::Pause { id } => {
            print_dispatch(&dispatch::act(&pool, id, Action::Pause).await?, false)?
        }
        DispatchesCommand::Resume { id } => {
            print_dispatch(&dispatch::act(&pool, id, Action::Resume).await?, false)?
        }
        DispatchesCommand::Cancel { id } => {
            print_dispatch(&dispatch::act(&pool, id, Action::Cancel).await?, false)?
        }
    }
    Ok(())
}

// ---- call-ended simulation, contacts and groups ------------------------------------------------

#[derive(Args, Debug)]
pub struct SimulateCallEnded {
    /// The customer's phone number (E.164).
    #[arg(long)]
    pub phone: String,
    /// The call's outcome (e.g. booked, no_answer, callback_requested).
    #[arg(long)]
    pub outcome: String,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub agent: Option<String>,
    #[arg(long)]
    pub duration: Option<u64>,
    /// The call id; repeat one to simulate a duplicate delivery.
    #[arg(long = "call-id")]
    pub call_id: Option<String>,
    /// Our sender's phone_number_id (default: HERALD_CALLS_SENDER).
    #[arg(long)]
    pub sender: Option<String>,
    /// An extra field, `key=value` (repeatable): reachable as `trigger.key`.
    #[arg(long = "field", value_parser = parse_key_value)]
    pub fields: Vec<(String, String)>,
    /// Herald's base URL (default: http://HERALD_LISTEN).
    #[arg(long)]
    pub url: Option<String>,
}

/// The call webhook's body for `herald simulate call-ended`.
pub fn call_ended_body(c: &SimulateCallEnded, phone: &PhoneNumber) -> serde_json::Value {
    let mut body = serde_json::Map::new();
    for (k, v) in &c.fields {
        body.insert(k.clone(), json!(v));
    }
    let call_id = c
        .call_id
        .clone()
        .unwrap_or_else(|| format!("call-simulated-{}", uuid::Uuid::now_v7().simple()));
    body.insert("call_id".into(), json!(call_id));
    body.insert("customer_phone".into(), json!(phone.as_str()));
    body.insert("outcome".into(), json!(c.outcome));
    body.insert("ended_at".into(), json!(chrono::Utc::now().to_rfc3339()));
    for (key, value) in [
        ("customer_name", &c.name),
        ("agent_name", &c.agent),
        ("sender", &c.sender),
    ] {
        if let Some(v) = value {
            body.insert(key.into(), json!(v));
        }
    }
    if let Some(d) = c.duration {
        body.insert("duration_seconds".into(), json!(d));
    }
    serde_json::Value::Object(body)
}

async fn simulate_call_ended(config: &Config, c: SimulateCallEnded) -> anyhow::Result<()> {
    let phone = PhoneNumber::parse(&c.phone)?;
    let body = call_ended_body(&c, &phone);
    let call_id = body["call_id"].as_str().unwrap_or_default().to_string();
    let body = serde_json::to_vec(&body)?;
    let base = c
        .url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.listen));
    let url = format!("{}/webhooks/calls", base.trim_end_matches('/'));
    let mut request = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json");
    if let Some(secret) = &config.calls_secret {
        request = request.header(
            crate::ingress::calls::SIGNATURE_HEADER,
            signature::sign(secret.expose().as_bytes(), &body),
        );
    } else if let Some(token) = &config.calls_token {
        request = request.bearer_auth(token.expose());
    } else {
        bail!(
            "set HERALD_CALLS_TOKEN or HERALD_CALLS_SECRET (the call webhook refuses calls without)"
        );
    }
    let response = request
        .body(body)
        .send()
        .await
        .with_context(|| format!("post to {url}: is `herald serve` running?"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    println!("{status} {text}");
    println!("call_id: {call_id}");
    if !status.is_success() {
        bail!("Herald answered {status}");
    }
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum ContactsCommand {
    /// Contacts, oldest first.
    List {
        #[arg(long)]
        group: Option<String>,
        /// Only opted-out (true) or only reachable (false) contacts.
        #[arg(long = "opted-out")]
        opted_out: Option<bool>,
        /// Part of a name, phone or customer id.
        #[arg(long)]
        search: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long, default_value_t = 0)]
        offset: i64,
        #[arg(long)]
        json: bool,
    },
    /// One contact (by phone, contact id or customer id).
    Show {
        contact: String,
        #[arg(long)]
        json: bool,
    },
    /// Create a contact or merge into the existing one.
    Add {
        phone: String,
        #[arg(long)]
        name: Option<String>,
        /// A group to put the contact in (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// A custom field, `key=value` (repeatable).
        #[arg(long = "field", value_parser = parse_key_value)]
        fields: Vec<(String, String)>,
        #[arg(long)]
        json: bool,
    },
    /// Import a CSV file: columns phone (required), name, groups (`;`-separated), opted_out,
    /// any other column a custom field. Bad rows are skipped and reported by line.
    Import {
        file: PathBuf,
        /// A group every imported contact joins.
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Stop every message to a contact (sends to it are refused).
    #[command(name = "opt-out")]
    OptOut {
        contact: String,
        #[arg(long)]
        json: bool,
    },
    /// Allow messages to a contact again.
    #[command(name = "opt-in")]
    OptIn {
        contact: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a contact (its run history stays).
    Delete {
        contact: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum GroupsCommand {
    /// Every group with its member counts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Create an empty group.
    Create {
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete a group (its contacts stay, without it).
    Delete { name: String },
    /// The members of a group.
    Members {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

fn print_contacts(list: &[crate::contacts::Contact]) {
    println!(
        "{:<16}  {:<24}  {:<9}  {:<30}  LAST SEEN",
        "PHONE", "NAME", "OPTED OUT", "GROUPS"
    );
    for c in list {
        println!(
            "{:<16}  {:<24}  {:<9}  {:<30}  {}",
            c.phone.as_deref().unwrap_or(&c.customer_id),
            c.name.as_deref().unwrap_or("-"),
            if c.opted_out { "yes" } else { "no" },
            c.groups.join(","),
            c.last_seen_at
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|| "-".into())
        );
    }
}

fn print_contact(c: &crate::contacts::Contact, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(c)?);
        return Ok(());
    }
    println!("contact    {}", c.id);
    println!("phone      {}", c.phone.as_deref().unwrap_or("-"));
    println!("customer   {}", c.customer_id);
    println!("name       {}", c.name.as_deref().unwrap_or("-"));
    println!("groups     {}", c.groups.join(", "));
    println!("opted out  {}", if c.opted_out { "yes" } else { "no" });
    println!("fields     {}", c.fields);
    println!("created    {}", c.created_at.format("%Y-%m-%d %H:%M:%S"));
    if let Some(t) = c.last_seen_at {
        println!("last seen  {}", t.format("%Y-%m-%d %H:%M:%S"));
    }
    Ok(())
}

async fn contacts_command(config: &Config, cmd: ContactsCommand) -> anyhow::Result<()> {
    use crate::contacts::{self, ContactFilter, ContactKey, GroupName, NewContact, import};
    let pool = db::connect(&config.database_url, 2).await?;
    let opt_out = matches!(cmd, ContactsCommand::OptOut { .. });
    match cmd {
        ContactsCommand::List {
            group,
            opted_out,
            search,
            limit,
            offset,
            json,
        } => {
            let filter = ContactFilter {
                group: group.as_deref().map(GroupName::parse).transpose()?,
                opted_out,
                search,
                limit: Some(limit),
                offset: Some(offset),
            };
            let list = contacts::list(&pool, &filter).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print_contacts(&list);
            }
        }
        ContactsCommand::Show { contact, json } => {
            let c = contacts::get(&pool, &ContactKey::parse(&contact)?).await?;
            print_contact(&c, json)?;
        }
        ContactsCommand::Add {
            phone,
            name,
            groups,
            fields,
            json,
        } => {
            let contact = NewContact {
                phone: PhoneNumber::parse(&phone)?,
                name,
                fields: fields
                    .into_iter()
                    .map(|(k, v)| (k, serde_json::Value::String(v)))
                    .collect(),
                groups: groups
                    .iter()
                    .map(|g| GroupName::parse(g))
                    .collect::<Result<_, _>>()?,
                opted_out: None,
            };
            let upserted = contacts::upsert(&pool, &contact).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&upserted)?);
            } else {
                println!(
                    "{} {}",
                    if upserted.created {
                        "created"
                    } else {
                        "updated"
                    },
                    upserted.contact.phone.as_deref().unwrap_or_default()
                );
            }
        }
        ContactsCommand::Import { file, group, json } => {
            let group = group.as_deref().map(GroupName::parse).transpose()?;
            let bytes = std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
            let report = import::import_csv(&pool, &bytes, group.as_ref())
                .await
                .with_context(|| format!("import {}", file.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "imported {}, updated {}, skipped {}",
                    report.imported,
                    report.updated,
                    report.skipped.len()
                );
                for s in &report.skipped {
                    println!("  line {}: {}", s.line, s.reason);
                }
            }
        }
        ContactsCommand::OptOut { contact, json } | ContactsCommand::OptIn { contact, json } => {
            let c = contacts::set_opted_out(&pool, &ContactKey::parse(&contact)?, opt_out).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                println!(
                    "{} {}",
                    c.phone.as_deref().unwrap_or(&c.customer_id),
                    if opt_out { "opted out" } else { "opted in" }
                );
            }
        }
        ContactsCommand::Delete { contact, json } => {
            let c = contacts::delete(&pool, &ContactKey::parse(&contact)?).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                println!("deleted {}", c.phone.as_deref().unwrap_or(&c.customer_id));
            }
        }
    }
    Ok(())
}

async fn groups_command(config: &Config, cmd: GroupsCommand) -> anyhow::Result<()> {
    use crate::contacts::{self, GroupName};
    let pool = db::connect(&config.database_url, 2).await?;
    match cmd {
        GroupsCommand::List { json } => {
            let list = contacts::list_groups(&pool).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            println!(
                "{:<32}  {:>8}  {:>9}  DESCRIPTION",
                "GROUP", "MEMBERS", "OPTED OUT"
            );
            for g in list {
                println!(
                    "{:<32}  {:>8}  {:>9}  {}",
                    g.name,
                    g.members,
                    g.opted_out,
                    g.description.unwrap_or_default()
                );
            }
        }
        GroupsCommand::Create { name, description } => {
            let g =
                contacts::create_group(&pool, &GroupName::parse(&name)?, description.as_deref())
                    .await?;
            println!("created group {}", g.name);
        }
        GroupsCommand::Delete { name } => {
            let removed = contacts::delete_group(&pool, &GroupName::parse(&name)?).await?;
            println!("deleted group {name} (removed from {removed} contacts)");
        }
        GroupsCommand::Members { name, json } => {
            let list = contacts::members(&pool, &GroupName::parse(&name)?).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print_contacts(&list);
            }
        }
    }
    Ok(())
}
