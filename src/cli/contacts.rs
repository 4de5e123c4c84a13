//! `herald contacts list|show|add|import|opt-out|opt-in|erase|delete` and `herald groups
//! list|create|delete|members`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;

use super::{output, parse_key_value, when};
use crate::{
    config::Config,
    contacts::{self, Contact, ContactFilter, ContactKey, Erasure, GroupName, NewContact, import},
    db,
    domain::PhoneNumber,
};

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
    },
    /// One contact (by phone, contact id or customer id).
    Show { contact: String },
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
    },
    /// Import a CSV file: columns phone (required), name, groups (`;`-separated), opted_out,
    /// any other column a custom field. Bad rows are skipped and reported by line.
    Import {
        file: PathBuf,
        /// A group every imported contact joins.
        #[arg(long)]
        group: Option<String>,
    },
    /// Stop every message to a contact (sends to it are refused).
    #[command(name = "opt-out")]
    OptOut { contact: String },
    /// Allow messages to a contact again.
    #[command(name = "opt-in")]
    OptIn { contact: String },
    /// Erase a contact: delete it and remove its personal data (phone, name, message texts)
    /// from every event, run, step, message, AI conversation, quarantined body and dispatch.
    /// The rows stay, so counts still add up; prints what was erased per table.
    Erase { contact: String },
    /// The same as `erase`.
    Delete { contact: String },
}

#[derive(Subcommand, Debug)]
pub enum GroupsCommand {
    /// Every group with its member counts.
    List,
    /// Create an empty group.
    Create {
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete a group (its contacts stay, without it).
    Delete { name: String },
    /// The members of a group.
    Members { name: String },
}

fn print_contacts(list: &[Contact]) {
    let mut table = output::table(["PHONE", "NAME", "OPTED OUT", "GROUPS", "LAST SEEN"]);
    for c in list {
        table.add_row([
            c.phone.as_deref().unwrap_or(&c.customer_id).to_string(),
            c.name.as_deref().unwrap_or("-").to_string(),
            if c.opted_out { "yes" } else { "no" }.to_string(),
            c.groups.join(","),
            c.last_seen_at.map_or_else(|| "-".into(), when),
        ]);
    }
    output::print_table(&table);
}

fn print_contact(c: &Contact, json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(c);
    }
    println!("contact    {}", c.id);
    println!("phone      {}", c.phone.as_deref().unwrap_or("-"));
    println!("customer   {}", c.customer_id);
    println!("name       {}", c.name.as_deref().unwrap_or("-"));
    println!("groups     {}", c.groups.join(", "));
    println!("opted out  {}", if c.opted_out { "yes" } else { "no" });
    println!("fields     {}", c.fields);
    println!("created    {}", when(c.created_at));
    if let Some(t) = c.last_seen_at {
        println!("last seen  {}", when(t));
    }
    Ok(())
}

fn print_erasure(erasure: &Erasure) {
    let c = &erasure.contact;
    println!(
        "erased {} (contact {})",
        c.phone.as_deref().unwrap_or(&c.customer_id),
        c.id
    );
    let mut table = output::table(["TABLE", "ROWS"]);
    output::align_right(&mut table, &[1]);
    for (name, rows) in erasure.erased.rows() {
        table.add_row([name.to_string(), rows.to_string()]);
    }
    output::print_table(&table);
}

pub(super) async fn contacts_command(
    config: &Config,
    cmd: ContactsCommand,
    json: bool,
) -> anyhow::Result<()> {
    let pool = db::connect(&config.database_url, 2).await?;
    let opt_out = matches!(cmd, ContactsCommand::OptOut { .. });
    match cmd {
        ContactsCommand::List {
            group,
            opted_out,
            search,
            limit,
            offset,
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
                return output::json(&list);
            }
            print_contacts(&list);
        }
        ContactsCommand::Show { contact } => {
            let c = contacts::get(&pool, &ContactKey::parse(&contact)?).await?;
            print_contact(&c, json)?;
        }
        ContactsCommand::Add {
            phone,
            name,
            groups,
            fields,
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
                return output::json(&upserted);
            }
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
        ContactsCommand::Import { file, group } => {
            let group = group.as_deref().map(GroupName::parse).transpose()?;
            let bytes = std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
            let bar = output::progress_bar(0, "contacts written", json);
            let report =
                import::import_csv_with_progress(&pool, &bytes, group.as_ref(), |done, total| {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                })
                .await
                .with_context(|| format!("import {}", file.display()));
            bar.finish_and_clear();
            let report = report?;
            if json {
                return output::json(&report);
            }
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
        ContactsCommand::OptOut { contact } | ContactsCommand::OptIn { contact } => {
            let c = contacts::set_opted_out(&pool, &ContactKey::parse(&contact)?, opt_out).await?;
            if json {
                return output::json(&c);
            }
            println!(
                "{} {}",
                c.phone.as_deref().unwrap_or(&c.customer_id),
                if opt_out { "opted out" } else { "opted in" }
            );
        }
        ContactsCommand::Erase { contact } | ContactsCommand::Delete { contact } => {
            let erasure = contacts::erase(&pool, &ContactKey::parse(&contact)?).await?;
            if json {
                return output::json(&erasure);
            }
            print_erasure(&erasure);
        }
    }
    Ok(())
}

pub(super) async fn groups_command(
    config: &Config,
    cmd: GroupsCommand,
    json: bool,
) -> anyhow::Result<()> {
    let pool = db::connect(&config.database_url, 2).await?;
    match cmd {
        GroupsCommand::List => {
            let list = contacts::list_groups(&pool).await?;
            if json {
                return output::json(&list);
            }
            let mut table = output::table(["GROUP", "MEMBERS", "OPTED OUT", "DESCRIPTION"]);
            output::align_right(&mut table, &[1, 2]);
            for g in list {
                table.add_row([
                    g.name.to_string(),
                    g.members.to_string(),
                    g.opted_out.to_string(),
                    g.description.unwrap_or_default(),
                ]);
            }
            output::print_table(&table);
        }
        GroupsCommand::Create { name, description } => {
            let g =
                contacts::create_group(&pool, &GroupName::parse(&name)?, description.as_deref())
                    .await?;
            if json {
                return output::json(&g);
            }
            println!("created group {}", g.name);
        }
        GroupsCommand::Delete { name } => {
            let removed = contacts::delete_group(&pool, &GroupName::parse(&name)?).await?;
            if json {
                return output::json(&json!({"group": name, "removed_from": removed}));
            }
            println!("deleted group {name} (removed from {removed} contacts)");
        }
        GroupsCommand::Members { name } => {
            let list = contacts::members(&pool, &GroupName::parse(&name)?).await?;
            if json {
                return output::json(&list);
            }
            print_contacts(&list);
        }
    }
    Ok(())
}
