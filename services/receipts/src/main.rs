//! `receipts`: see `receipts --help`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use receipts_runtime::config::TelemetryConfig;
use receipts_runtime::{shutdown, telemetry};
use tokio_util::sync::CancellationToken;

/// Delivery receipts for conversational messaging: run the whole system locally, or query one.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run ingest, projector and query in one process on an embedded Kafka broker (or --kafka).
    /// Ctrl-C stops everything cleanly, storing what was applied.
    Dev(receipts::dev::DevArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Dev(args) => {
            let logs = TelemetryConfig {
                log_filter: "warn,receipts=info".into(),
                ..Default::default()
            };
            telemetry::init_tracing(&logs).context("initialising logs")?;
            let token = CancellationToken::new();
            shutdown::spawn_signal_handler(token.clone()).context("installing signal handlers")?;
            let embedded = args.kafka.is_none();
            receipts::dev::run(args, token, |addresses| {
                use std::io::Write;
                let _ = write!(
                    std::io::stdout(),
                    "{}",
                    receipts::dev::banner(addresses, embedded)
                );
            })
            .await
        }
    }
}
