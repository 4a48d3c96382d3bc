//! `receipts bench tracing`: what traces cost. The projector and dispatcher stages run three
//! times each — traces off (no OpenTelemetry layer, no exporter), on with sampling 0.01, and on
//! with sampling 1.0 — and the report gives each rate and its ratio to the rate with traces off.
//!
//! A process installs its subscriber once, so every run is a child `receipts bench <stage>
//! --traces MODE` of this one, with the same sizes and seed. With traces on, the child exports
//! over OTLP/HTTP to a sink of its own that reads and discards every export: the spans are made,
//! sampled, batched, encoded and sent as in production, and no collector's speed is measured.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use receipts_runtime::config::{OtlpProtocol, TelemetryConfig};
use receipts_runtime::telemetry::{self, Telemetry, TraceExport};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{BenchArgs, ScratchDir, Stage, StageReport};

/// How a child run traces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TraceMode {
    Off,
    Sampled(f64),
}

impl std::str::FromStr for TraceMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "off" {
            return Ok(TraceMode::Off);
        }
        match text.parse::<f64>() {
            Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(TraceMode::Sampled(ratio)),
            _ => Err(format!(
                "{text:?} is neither `off` nor a ratio between 0 and 1"
            )),
        }
    }
}

impl std::fmt::Display for TraceMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TraceMode::Off => f.write_str("off"),
            TraceMode::Sampled(ratio) => write!(f, "{ratio:?}"),
        }
    }
}

const MODES: [TraceMode; 3] = [
    TraceMode::Off,
    TraceMode::Sampled(0.01),
    TraceMode::Sampled(1.0),
];

/// The stages compared, with the rate each reports.
const STAGES: [(Stage, &str); 2] = [
    (Stage::Projector, "projector applied end to end"),
    (Stage::Dispatcher, "dispatcher webhooks delivered"),
];

/// Counts what the OTLP sink received.
#[derive(Debug, Default)]
struct Received {
    exports: AtomicU64,
    bytes: AtomicU64,
}

async fn receive(State(received): State<Arc<Received>>, body: Bytes) -> &'static str {
    received.exports.fetch_add(1, Ordering::Relaxed);
    received
        .bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    ""
}

/// The telemetry of one child run: traces off, or exported to a sink of its own. The sink lives
/// until `shutdown` is cancelled.
pub async fn init(mode: TraceMode, shutdown: CancellationToken) -> anyhow::Result<Telemetry> {
    let logs = TelemetryConfig {
        log_filter: "warn".into(),
        ..TelemetryConfig::default()
    };
    let TraceMode::Sampled(ratio) = mode else {
        return Ok(telemetry::init_with(&logs, None)?);
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address: SocketAddr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/v1/traces", post(receive))
        .with_state(Arc::new(Received::default()));
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    });
    let export = TraceExport::to(
        OtlpProtocol::HttpProtobuf,
        &format!("http://{address}"),
        "receipts-bench",
    )
    .sampled(ratio);
    Ok(telemetry::init_with(&logs, Some(&export))?)
}

/// Runs every stage in every mode, each in a child process, and compares the rates.
pub async fn run(args: &BenchArgs) -> anyhow::Result<StageReport> {
    let mut report = StageReport::new(
        Stage::Tracing,
        json!({
            "reports": args.reports,
            "webhooks": args.webhooks,
            "partitions": args.partitions,
            "seed": args.seed,
            "modes": MODES.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "export": "OTLP/HTTP protobuf to a local sink, batch span processor defaults",
        }),
    );
    report.note = "each rate from a child `receipts bench <stage> --traces MODE`; ratios are to \
                   the same stage with traces off"
        .into();
    let scratch = ScratchDir::new(args, "tracing")?;
    let program = std::env::current_exe().context("finding the receipts binary")?;
    for (stage, rate_name) in STAGES {
        let mut off = None;
        for mode in MODES {
            let json_out = scratch.path().join(format!("{}-{mode}.json", stage.name()));
            let rate = child_rate(&program, args, stage, mode, &json_out, rate_name)
                .await
                .with_context(|| format!("bench {} with traces {mode}", stage.name()))?;
            let label = match mode {
                TraceMode::Off => format!("{}, traces off", stage.name()),
                TraceMode::Sampled(ratio) => format!("{}, sampling {ratio:?}", stage.name()),
            };
            let unit = if stage == Stage::Projector {
                "reports/s"
            } else {
                "webhooks/s"
            };
            report.metric(&label, rate, unit);
            match (mode, off) {
                (TraceMode::Off, _) => off = Some(rate),
                (TraceMode::Sampled(ratio), Some(base)) => {
                    report.metric(
                        &format!("{}, sampling {ratio:?} / off", stage.name()),
                        rate / base,
                        "x",
                    );
                }
                (TraceMode::Sampled(_), None) => unreachable!("off runs first"),
            }
        }
    }
    Ok(report)
}

async fn child_rate(
    program: &Path,
    args: &BenchArgs,
    stage: Stage,
    mode: TraceMode,
    json_out: &Path,
    rate_name: &str,
) -> anyhow::Result<f64> {
    let mut command = Command::new(program);
    command
        .arg("bench")
        .arg(stage.name())
        .args(["--traces", &mode.to_string()])
        .args(["--partitions", &args.partitions.to_string()])
        .args(["--reports", &args.reports.to_string()])
        .args(["--webhooks", &args.webhooks.to_string()])
        .args(["--seed", &args.seed.to_string()])
        .arg("--json-out")
        .arg(json_out);
    if let Some(kafka) = &args.kafka {
        command.args(["--kafka", kafka]);
    }
    if let Some(dir) = &args.data_dir {
        command.arg("--data-dir").arg(dir);
    }
    // The child's table goes to stderr with this run's progress; its figures come as JSON.
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    if !output.status.success() {
        bail!(
            "the child run failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(json_out)
            .with_context(|| format!("reading {}", json_out.display()))?,
    )?;
    report["stages"][0]["metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == rate_name)
        .and_then(|m| m["value"].as_f64())
        .with_context(|| format!("the child's report has no {rate_name:?}"))
}
