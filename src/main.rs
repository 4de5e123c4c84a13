use clap::{CommandFactory, FromArgMatches};
use herald::{cli, config, telemetry};

/// mimalloc instead of the system allocator: under load glibc's malloc/free (with its chunk
/// consolidation) took over a quarter of the process's CPU time in `herald-bench`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut command = config::ignore_blank_env(cli::Cli::command());
    let parsed = command
        .try_get_matches_from_mut(std::env::args_os())
        .and_then(|matches| cli::Cli::from_arg_matches(&matches))
        .map_err(|e| e.format(&mut command));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => match config::value_error(&e) {
            Some(e) => return configuration_error(e),
            None => e.exit(),
        },
    };
    let config = match cli.config.clone().into_config() {
        Ok(c) => c,
        Err(e) => return configuration_error(e),
    };
    telemetry::init_logs(config.log_json);
    match cli::run(cli, config).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("herald: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn configuration_error(e: anyhow::Error) -> std::process::ExitCode {
    eprintln!("herald: configuration: {e:#}");
    std::process::ExitCode::from(2)
}
