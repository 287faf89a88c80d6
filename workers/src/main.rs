use std::process::ExitCode;

use workers::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = domain::config::parse_or_exit();
    let _telemetry = match domain::telemetry::init(&cli.telemetry, "workers") {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let outcome = match cli.command {
        Command::Simulate(args) => workers::simulate::run(args).await,
        Command::Ingest(args) => workers::ingest::run(args).await,
        Command::Index(args) => workers::index::run(args).await,
        Command::Relay(args) => workers::relay::run(args).await,
        Command::Consume(command) => workers::consume::run(command).await,
        Command::Sync(args) => workers::sync::run(args).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
