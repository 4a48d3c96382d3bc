//! `receipts-projector`: runs stage 1 on its own. See the library for what it does.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use receipts_projector::ProjectorConfig;
use receipts_runtime::{config, metrics, shutdown, telemetry};
use tokio_util::sync::CancellationToken;

/// mimalloc: the services allocate and free many small buffers per record, which glibc's
/// allocator serves slowly and, with one arena per thread, holds on to.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Consumes delivery events, keeps exactly-once receipts in sled and publishes every change.
///
/// Configuration: compiled defaults, then the file given with --config, then RECEIPTS_* environment
/// variables (nested keys joined by `__`, e.g. RECEIPTS_KAFKA__BOOTSTRAP_SERVERS).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "RECEIPTS_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the projector (the default).
    Run,
    /// List the status reports still waiting for their registration, oldest first
    /// (stop the projector first: sled allows one process per data dir).
    Parked,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config: ProjectorConfig =
        config::load(args.config.as_deref()).context("loading configuration")?;
    if let Some(Command::Parked) = args.command {
        return receipts_projector::print_parked(
            &config.data_dir,
            &config.storage,
            &mut std::io::stdout(),
        );
    }
    let telemetry = telemetry::init(&config.telemetry, "receipts-projector")
        .context("initialising telemetry")?;
    let shutdown = CancellationToken::new();
    shutdown::spawn_signal_handler(shutdown.clone()).context("installing signal handlers")?;
    let registry = metrics::Metrics::new();
    metrics::spawn_endpoint(&config.metrics_listen, &registry, shutdown.clone()).await?;
    let result = receipts_projector::run(config, &registry, shutdown)
        .await
        .context("projector failed");
    // The last spans are exported before the process exits.
    telemetry.shutdown_async().await;
    result
}
