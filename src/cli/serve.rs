//! `herald serve` and `herald migrate`.

use serde_json::json;

use super::{output, workflows::load_workflows};
use crate::{
    app::{self, Role},
    config::Config,
    db,
};

/// Runs the given roles until a signal asks them to stop.
pub(super) async fn serve(config: Config, roles: &[Role]) -> anyhow::Result<()> {
    let workflows = load_workflows(&config.workflows_dir, &config.templates_file)?;
    let running = app::start(config, roles, workflows).await?;
    app::cancel_on_signal(running.shutdown_token());
    running.wait().await;
    Ok(())
}

pub(super) async fn migrate(config: &Config, json: bool) -> anyhow::Result<()> {
    let pool = db::connect(&config.database_url, 2).await?;
    db::migrate(&pool).await?;
    if json {
        output::json(&json!({"migrations": "applied"}))
    } else {
        println!("migrations applied");
        Ok(())
    }
}
