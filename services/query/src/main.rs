//! `receipts-query`: the read model and its gRPC API on their own. See the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use receipts_query::QueryConfig;
use receipts_runtime::{config, metrics, shutdown, telemetry};
use tokio_util::sync::CancellationToken;

/// mimalloc: the services allocate and free many small buffers per record, which glibc's
/// allocator serves slowly and, with one arena per thread, holds on to.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keeps the read model of receipt updates and serves it over gRPC (receipts.v1.DeliveryQuery,
/// with health and reflection) and a Twilio-compatible REST facade (RECEIPTS_REST_LISTEN).
///
/// Configuration: compiled defaults, then the file given with --config, then RECEIPTS_* environment
/// variables (nested keys joined by `__`, e.g. RECEIPTS_GRPC_LISTEN). Accounts and their auth
/// tokens go in the file's [accounts] table.
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
    let config: QueryConfig =
        config::load(args.config.as_deref()).context("loading configuration")?;
    let telemetry =
        telemetry::init(&config.telemetry, "receipts-query").context("initialising telemetry")?;
    let shutdown = CancellationToken::new();
    shutdown::spawn_signal_handler(shutdown.clone()).context("installing signal handlers")?;
    let registry = metrics::Metrics::new();
    metrics::spawn_endpoint(&config.metrics_listen, &registry, shutdown.clone()).await?;
    let grpc = tokio::net::TcpListener::bind(&config.grpc_listen)
        .await
        .with_context(|| format!("binding gRPC {}", config.grpc_listen))?;
    let rest = if config.rest_listen.is_empty() {
        None
    } else {
        let listener = tokio::net::TcpListener::bind(&config.rest_listen)
            .await
            .with_context(|| format!("binding REST {}", config.rest_listen))?;
        Some(listener)
    };
    let result = receipts_query::run(config, grpc, rest, &registry, shutdown)
        .await
        .context("query service failed");
    // The last spans are exported before the process exits.
    telemetry.shutdown_async().await;
    result
}
