use clap::Parser;
use herald::{cli, config::Config, telemetry};

/// mimalloc instead of the system allocator: under load glibc's malloc/free (with its chunk
/// consolidation) took over a quarter of the process's CPU time in `herald bench`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("herald: configuration: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    telemetry::init_logs(config.log_json);
    match cli::run(cli, config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
