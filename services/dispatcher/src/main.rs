//! `receipts-dispatcher`: runs the dispatcher, or replays its dead-letter topic.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use receipts_dispatcher::{DispatcherConfig, ReplayFilter};
use receipts_runtime::{config, metrics, shutdown, telemetry};
use tokio_util::sync::CancellationToken;

/// mimalloc: the services allocate and free many small buffers per record, which glibc's
/// allocator serves slowly and, with one arena per thread, holds on to.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sends signed onDeliveryUpdated webhooks for receipt changes, with durable retries.
///
/// Configuration: compiled defaults, then the file given with --config, then RECEIPTS_* environment
/// variables (nested keys joined by `__`). Auth tokens go in the file's [accounts] table.
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
    /// Run the dispatcher (the default).
    Run,
    /// Send dead-lettered deliveries back to the retry topic, due now; each entry only once.
    ReplayDlq(ReplayFilter),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config: DispatcherConfig =
        config::load(args.config.as_deref()).context("loading configuration")?;
    let telemetry = telemetry::init(&config.telemetry, "receipts-dispatcher")
        .context("initialising telemetry")?;
    if let Some(Command::ReplayDlq(filter)) = args.command {
        let clock = receipts_runtime::clock::SystemClock;
        let report =
            receipts_dispatcher::replay_dlq(&config.kafka, &config.topics, &filter, &clock, |_| {})
                .await
                .context("replaying the dead-letter topic")?;
        eprintln!("{report:?}");
        return Ok(());
    }
    let shutdown = CancellationToken::new();
    shutdown::spawn_signal_handler(shutdown.clone()).context("installing signal handlers")?;
    let registry = metrics::Metrics::new();
    metrics::spawn_endpoint(&config.metrics_listen, &registry, shutdown.clone()).await?;
    let result = receipts_dispatcher::run(config, &registry, shutdown)
        .await
        .context("dispatcher failed");
    // The last spans are exported before the process exits.
    telemetry.shutdown_async().await;
    result
}
