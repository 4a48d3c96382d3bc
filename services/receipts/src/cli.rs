//! The `receipts` command line: its subcommands and what each one runs.

use anyhow::Context;
use clap::{Parser, Subcommand};
use receipts_runtime::config::TelemetryConfig;
use receipts_runtime::{shutdown, telemetry};
use tokio_util::sync::CancellationToken;

/// Delivery receipts for conversational messaging: run the whole system locally, or query one.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run ingest, projector, query and dispatcher in one process on an embedded Kafka broker
    /// (or --kafka).
    /// Ctrl-C stops everything cleanly, storing what was applied.
    Dev(crate::dev::DevArgs),
    /// Drive realistic traffic through the ingest endpoints, then check every message's
    /// summary against the query API (exit status 1 if any differs).
    Simulate(crate::simulate::SimulateArgs),
    /// Receive onDeliveryUpdated webhooks, check their X-Twilio-Signature and print each one.
    Sink(crate::sink::SinkArgs),
    /// Read delivery state from a running system over gRPC.
    Get {
        #[command(flatten)]
        connection: crate::get::Connection,
        #[command(subcommand)]
        what: crate::get::What,
    },
    /// Measure a stage's throughput and latency beside its raw limit (see BENCHMARKS.md).
    Bench(receipts_bench::BenchArgs),
    /// Print the event contracts: the AsyncAPI document of the topics, or the protobuf
    /// descriptor set of their payloads.
    Contracts(crate::contracts::ContractsArgs),
    /// The webhook dead-letter topic: list, show and replay dead-lettered deliveries.
    Dlq {
        #[command(flatten)]
        ops: crate::ops::OpsArgs,
        #[command(subcommand)]
        command: crate::ops::dlq::DlqCommand,
    },
    /// How far each consumer group is behind, per topic and partition.
    Lag {
        #[command(flatten)]
        ops: crate::ops::OpsArgs,
        #[command(flatten)]
        args: crate::ops::lag::LagArgs,
    },
    /// Status reports waiting for their registration, oldest first.
    Parked {
        #[command(flatten)]
        ops: crate::ops::OpsArgs,
        #[command(flatten)]
        args: crate::ops::parked::ParkedArgs,
    },
    /// Webhook configuration, and every attempt made for a receipt.
    Webhooks {
        #[command(flatten)]
        ops: crate::ops::OpsArgs,
        #[command(subcommand)]
        command: crate::ops::webhooks::WebhooksCommand,
    },
}

/// Runs one subcommand to its end.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dev(args) => {
            let mut logs = TelemetryConfig {
                log_filter: "warn,receipts=info".into(),
                ..Default::default()
            };
            if let Some(endpoint) = &args.otlp {
                logs.traces.endpoint = endpoint.clone();
                logs.traces.protocol = args.otlp_protocol;
            }
            let telemetry = telemetry::init(&logs, "receipts").context("initialising telemetry")?;
            let token = CancellationToken::new();
            shutdown::spawn_signal_handler(token.clone()).context("installing signal handlers")?;
            let embedded = args.kafka.is_none();
            // The commands to try name this very binary, wherever cargo put it.
            let program = std::env::current_exe()
                .ok()
                .and_then(|path| {
                    let cwd = std::env::current_dir().ok()?;
                    Some(
                        path.strip_prefix(&cwd)
                            .map(|p| p.to_path_buf())
                            .unwrap_or(path),
                    )
                })
                .map_or_else(|| "receipts".to_owned(), |path| path.display().to_string());
            let result = crate::dev::run(args, token, |addresses| {
                use std::io::Write;
                let _ = write!(
                    std::io::stdout(),
                    "{}",
                    crate::dev::banner(addresses, embedded, &program)
                );
            })
            .await;
            telemetry.shutdown_async().await;
            result
        }
        Command::Simulate(args) => {
            let report = crate::simulate::run(args, &mut std::io::stdout()).await?;
            if !report.mismatches.is_empty() {
                anyhow::bail!(
                    "{} message summaries differ from what was sent",
                    report.mismatches.len()
                );
            }
            Ok(())
        }
        Command::Sink(args) => {
            let listener = tokio::net::TcpListener::bind(&args.listen)
                .await
                .with_context(|| format!("binding {}", args.listen))?;
            let url = args
                .url
                .unwrap_or_else(|| format!("http://{}{}", args.listen, crate::sink::PATH));
            let token = CancellationToken::new();
            shutdown::spawn_signal_handler(token.clone()).context("installing signal handlers")?;
            let (lines, mut received) = tokio::sync::mpsc::unbounded_channel();
            eprintln!("receiving webhooks on {url}");
            let counts = std::sync::Arc::new(crate::sink::SinkCounts::default());
            let server = tokio::spawn(crate::sink::serve(
                listener, url, args.token, counts, lines, token,
            ));
            while let Some(line) = received.recv().await {
                use std::io::Write;
                writeln!(std::io::stdout(), "{line}")?;
            }
            Ok(server.await??)
        }
        Command::Get { connection, what } => {
            use std::io::Write;
            let out = crate::get::run(&connection, what).await?;
            std::io::stdout().write_all(out.as_bytes())?;
            Ok(())
        }
        Command::Bench(args) => {
            use std::io::Write;
            let sink = CancellationToken::new();
            let telemetry = match args.traces {
                Some(mode) => Some(receipts_bench::trace_cost::init(mode, sink.clone()).await?),
                None => None,
            };
            let report = receipts_bench::run(&args, &mut |line| eprintln!("{line}")).await;
            if let Some(telemetry) = telemetry {
                telemetry.shutdown_async().await;
            }
            sink.cancel();
            std::io::stdout().write_all(receipts_bench::table(&report?).as_bytes())?;
            Ok(())
        }
        Command::Contracts(args) => crate::contracts::run(&args),
        Command::Dlq { ops, command } => {
            let out = crate::ops::dlq::run(&ops.load()?, command, ops.json).await?;
            print(&out)
        }
        Command::Lag { ops, args } => {
            let out = crate::ops::lag::run(&ops.load()?, args, ops.json).await?;
            print(&out)
        }
        Command::Parked { ops, args } => {
            let out = crate::ops::parked::run(&ops.load()?, args, ops.json).await?;
            print(&out)
        }
        Command::Webhooks {
            ops,
            command: crate::ops::webhooks::WebhooksCommand::Secrets(args),
        } => print(&crate::ops::secrets::run(&args, ops.json).await?),
        Command::Webhooks { ops, command } => {
            let out = crate::ops::webhooks::run(&ops.load()?, command, ops.json).await?;
            print(&out)
        }
    }
}

fn print(out: &str) -> anyhow::Result<()> {
    use std::io::Write;
    std::io::stdout()
        .write_all(out.as_bytes())
        .context("writing to standard output")
}
