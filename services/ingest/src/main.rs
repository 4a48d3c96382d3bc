//! `receipts-ingest`: the HTTP gateway on its own. See the library for what it does.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use receipts_ingest::IngestConfig;
use receipts_runtime::{config, metrics, shutdown, telemetry};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// mimalloc: the services allocate and free many small buffers per record, which glibc's
/// allocator serves slowly and, with one arena per thread, holds on to.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Receives Twilio, WhatsApp Cloud, SMPP and canonical status reports over HTTP and stores them
/// as delivery events on Kafka.
///
/// Configuration: compiled defaults, then the file given with --config, then RECEIPTS_* environment
/// variables (nested keys joined by `__`, e.g. RECEIPTS_KAFKA__BOOTSTRAP_SERVERS).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "RECEIPTS_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config: IngestConfig =
        config::load(args.config.as_deref()).context("loading configuration")?;
    let telemetry =
        telemetry::init(&config.telemetry, "receipts-ingest").context("initialising telemetry")?;
    let shutdown = CancellationToken::new();
    shutdown::spawn_signal_handler(shutdown.clone()).context("installing signal handlers")?;
    let registry = metrics::Metrics::new();
    metrics::spawn_endpoint(&config.metrics_listen, &registry, shutdown.clone()).await?;
    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let result = receipts_ingest::run(config, listener, &registry, shutdown)
        .await
        .context("ingest gateway failed");
    // The last spans are exported before the process exits.
    telemetry.shutdown_async().await;
    result
}
