//! `herald quarantine list|replay`: webhook bodies Herald could not parse or route.

use clap::Subcommand;
use serde_json::json;

use super::{output, when};
use crate::{bus::Bus, config::Config, db, ingress::quarantine};

#[derive(Subcommand, Debug)]
pub enum QuarantineCommand {
    List {
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Parse and store a quarantined body again.
    Replay { id: uuid::Uuid },
}

pub(super) async fn command(
    config: &Config,
    cmd: QuarantineCommand,
    json: bool,
) -> anyhow::Result<()> {
    let pool = db::connect(&config.database_url, 2).await?;
    match cmd {
        QuarantineCommand::List { limit } => {
            let list = quarantine::list(&pool, limit).await?;
            if json {
                return output::json(&list);
            }
            let mut table = output::table(["ID", "RECEIVED", "BYTES", "REASON", "REPLAYED"]);
            output::align_right(&mut table, &[2]);
            for e in list {
                table.add_row([
                    e.id.to_string(),
                    when(e.received_at),
                    e.size.to_string(),
                    e.reason,
                    e.replay_result.unwrap_or_default(),
                ]);
            }
            output::print_table(&table);
        }
        QuarantineCommand::Replay { id } => {
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
