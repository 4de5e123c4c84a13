//! `herald senders list|show|resume|set-status`: our WhatsApp senders.

use anyhow::bail;
use clap::Subcommand;
use serde_json::json;

use super::{output, when};
use crate::{config::Config, db, senders};

#[derive(Subcommand, Debug)]
pub enum SendersCommand {
    /// Every sender Herald knows, with status, quality and whether dispatches are paused.
    List,
    /// One sender (its phone_number_id or display number).
    Show { sender: String },
    /// Resume the sender's bulk dispatches after a quality pause.
    Resume { sender: String },
    /// Set the sender's status by hand (connected, offline, disconnected, flagged, restricted).
    SetStatus { sender: String, status: String },
}

pub(super) async fn command(
    config: &Config,
    cmd: SendersCommand,
    json: bool,
) -> anyhow::Result<()> {
    let pool = db::connect(&config.database_url, 2).await?;
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    match cmd {
        SendersCommand::List => {
            let list = senders::list(&pool).await?;
            if json {
                return output::json(&list);
            }
            let mut table = output::table(["SENDER", "DISPLAY", "STATUS", "QUALITY", "DISPATCHES"]);
            for s in list {
                table.add_row([
                    s.id,
                    opt(&s.display_phone_number),
                    s.status.to_string(),
                    opt(&s.quality_rating.map(|r| r.to_string())),
                    if s.dispatch_paused {
                        format!("paused: {}", opt(&s.paused_reason))
                    } else {
                        "running".into()
                    },
                ]);
            }
            output::print_table(&table);
        }
        SendersCommand::Show { sender } => {
            let Some(s) = senders::show(&pool, &sender).await? else {
                bail!("no sender '{sender}' (see `herald senders list`)");
            };
            if json {
                return output::json(&s);
            }
            println!("sender      {}", s.id);
            println!("display     {}", opt(&s.display_phone_number));
            println!(
                "status      {} ({}, since {})",
                s.status,
                opt(&s.status_detail),
                s.status_changed_at.map_or("-".into(), when)
            );
            println!(
                "quality     {} (last event {})",
                opt(&s.quality_rating.map(|r| r.to_string())),
                opt(&s.quality_event)
            );
            if s.dispatch_paused {
                println!(
                    "dispatches  paused since {}: {}",
                    s.paused_at.map_or("-".into(), when),
                    opt(&s.paused_reason)
                );
            } else {
                println!("dispatches  running");
            }
        }
        SendersCommand::Resume { sender } => {
            let done = senders::resume(&pool, &sender).await?;
            if json {
                output::json(&done)?;
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
            if json {
                output::json(&json!({"sender": sender, "status": status}))?;
            } else {
                println!("sender {sender}: status {status}");
            }
        }
    }
    Ok(())
}
