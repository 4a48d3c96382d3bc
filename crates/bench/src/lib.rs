//! `receipts bench <stage>`: measured throughput and latency of every stage, each beside the raw
//! limit it is bounded by, so a figure says how much of the machine the stage uses (issue 8).
//!
//! Every stage runs the services' own code in this process — `Projector`, the query service's
//! `ReadModel` and `run`, the sled stores — on a fresh set of topics, on the embedded broker (the
//! default, a quick look) or on a real one (`--kafka HOST:PORT`, what `BENCHMARKS.md` quotes).
//! Each stage warms up first and reports only what it measured in that run: a table on stdout,
//! every goal beside its measurement, and the same as JSON with `--json-out`.
//!
//! Layout: [`workload`] makes realistic records; [`broker`] the topics (and the embedded broker);
//! [`progress`] times a backlog; one module per stage ([`projector`], [`read_model`], [`grpc`],
//! [`storage`], and [`dispatcher`] for both webhook stages); [`trace_cost`] runs the projector
//! and dispatcher stages with traces off and on and compares them. This file holds the arguments,
//! the report shape and the table.

pub mod broker;
pub mod dispatcher;
pub mod grpc;
pub mod progress;
pub mod projector;
pub mod read_model;
pub mod scale;
pub mod storage;
pub mod trace_cost;
pub mod workload;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use receipts_store::StorageEngine;
use serde::Serialize;

/// What to measure and how much.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The stage to measure; `all` runs each in turn.
    #[arg(value_enum)]
    pub stage: Stage,
    /// A real Kafka broker (HOST:PORT). Without it an embedded broker is started (quick look:
    /// it shares the CPU with the stage it serves).
    #[arg(long)]
    pub kafka: Option<String>,
    /// A librdkafka setting, as KEY=VALUE (e.g. queued.min.messages=20000), for every Kafka
    /// client in this process: all the stages' but `scale`'s service processes, which read their
    /// own configuration. Repeat it for more.
    #[arg(long, value_parser = kafka_property)]
    pub kafka_property: Vec<(String, String)>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Partitions of every topic a stage creates.
    #[arg(long, default_value_t = 8)]
    pub partitions: i32,
    /// projector: reports (registrations and statuses) produced up front.
    #[arg(long, default_value_t = 200_000)]
    pub reports: usize,
    /// read-model: receipt updates produced up front.
    #[arg(long, default_value_t = 200_000)]
    pub updates: usize,
    /// grpc: receipt updates loaded into the read model before the lookups.
    #[arg(long, default_value_t = 50_000)]
    pub grpc_updates: usize,
    /// grpc: calls in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// grpc: seconds each handler is called before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup_secs: f64,
    /// grpc: seconds each handler is measured.
    #[arg(long, default_value_t = 10.0)]
    pub secs: f64,
    /// dispatcher: receipt updates produced up front (queued ones fire no webhook).
    #[arg(long, default_value_t = 20_000)]
    pub webhooks: usize,
    /// end-to-end: status reports per second offered to ingest.
    #[arg(long, default_value_t = 1_000)]
    pub rate: u32,
    /// end-to-end: seconds the rate is offered.
    #[arg(long, default_value_t = 10.0)]
    pub e2e_secs: f64,
    /// storage: receipts stored.
    #[arg(long, default_value_t = 100_000)]
    pub receipts: usize,
    /// scale: the receipts each run feeds the service processes, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [100_000, 1_000_000, 5_000_000])]
    pub scale: Vec<usize>,
    /// projector, read-model and scale: the engines the projector's state and the read model are
    /// kept in, one run after the other, comma-separated: `sled`, `fjall` (`storage.engine`).
    #[arg(long, value_delimiter = ',', default_values_t = [StorageEngine::Sled])]
    pub engines: Vec<StorageEngine>,
    /// Seed of the generated workload, to repeat a run exactly.
    #[arg(long, default_value_t = 8)]
    pub seed: u64,
    /// Where stages keep their sled databases (a fresh directory per stage, removed after).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Trace while measuring: `off` (logs only), or a sampling ratio with spans exported over
    /// OTLP to a local sink. `bench tracing` runs the stages with `off`, `0.01` and `1.0`.
    #[arg(long)]
    pub traces: Option<trace_cost::TraceMode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Projector,
    ReadModel,
    Grpc,
    Dispatcher,
    EndToEnd,
    Storage,
    /// Not part of `all`: the service processes at 100 k to 5 M receipts take many minutes.
    Scale,
    /// The projector and dispatcher with traces off, sampled at 0.01 and at 1.0 (not in `all`).
    Tracing,
    All,
}

impl Stage {
    const EACH: [Stage; 6] = [
        Stage::Storage,
        Stage::Projector,
        Stage::ReadModel,
        Stage::Grpc,
        Stage::Dispatcher,
        Stage::EndToEnd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Projector => "projector",
            Stage::ReadModel => "read-model",
            Stage::Grpc => "grpc",
            Stage::Dispatcher => "dispatcher",
            Stage::EndToEnd => "end-to-end",
            Stage::Storage => "storage",
            Stage::Scale => "scale",
            Stage::Tracing => "tracing",
            Stage::All => "all",
        }
    }
}

/// One measured quantity.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

/// Which way a goal points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    AtLeast,
    AtMost,
}

/// A goal of issue 8 beside the measurement it is about.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    pub name: String,
    pub bound: Bound,
    pub target: f64,
    pub measured: f64,
    pub unit: String,
    pub met: bool,
}

/// What one stage measured.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    pub stage: &'static str,
    /// Anything a reader of the figures must know (empty when nothing).
    pub note: String,
    pub seconds: f64,
    pub params: serde_json::Value,
    pub metrics: Vec<Measurement>,
    pub goals: Vec<Goal>,
}

impl StageReport {
    pub fn new(stage: Stage, params: serde_json::Value) -> Self {
        StageReport {
            stage: stage.name(),
            note: String::new(),
            seconds: 0.0,
            params,
            metrics: Vec::new(),
            goals: Vec::new(),
        }
    }

    /// Adds the figures of `run`, a run of this stage on `engine`; on another engine than sled
    /// each name says which.
    pub fn take_from(&mut self, run: StageReport, engine: StorageEngine) {
        let name = |name: String| match engine {
            StorageEngine::Sled => name,
            other => format!("on {other}: {name}"),
        };
        for mut metric in run.metrics {
            metric.name = name(metric.name);
            self.metrics.push(metric);
        }
        for mut goal in run.goals {
            goal.name = name(goal.name);
            self.goals.push(goal);
        }
        if !run.note.is_empty() {
            self.note = name(run.note);
        }
    }

    pub fn metric(&mut self, name: &str, value: f64, unit: &str) -> f64 {
        self.metrics.push(Measurement {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
        });
        value
    }

    pub fn goal(&mut self, name: &str, bound: Bound, target: f64, measured: f64, unit: &str) {
        let met = match bound {
            Bound::AtLeast => measured >= target,
            Bound::AtMost => measured <= target,
        };
        self.goals.push(Goal {
            name: name.to_owned(),
            bound,
            target,
            measured,
            unit: unit.to_owned(),
            met,
        });
    }
}

/// The machine a run was made on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub started_unix_secs: u64,
    pub cpus: usize,
    /// `/proc/loadavg` (1, 5, 15 minutes) when the run started and when it ended.
    pub load_before: String,
    pub load_after: String,
    pub broker: String,
    pub build: &'static str,
}

/// Everything a `receipts bench` run writes as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub machine: Machine,
    pub stages: Vec<StageReport>,
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Process-wide figures from `/proc/self/status`, in bytes (`VmRSS`, `VmHWM`, …).
pub(crate) fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The `q`-quantile (0..=1) of sorted samples.
pub(crate) fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub(crate) fn per_sec(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(f64::EPSILON)
}

/// A directory of its own for one stage, under `--data-dir` or the system's temporary directory.
/// `KEY=VALUE` of `--kafka-property`.
fn kafka_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

pub(crate) struct ScratchDir(PathBuf);

impl ScratchDir {
    pub(crate) fn new(args: &BenchArgs, stage: &str) -> anyhow::Result<Self> {
        let base = args.data_dir.clone().unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!(
            "receipts-bench-{stage}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(ScratchDir(dir))
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the stage(s) `args` names and returns what they measured. `progress` receives a line as
/// each stage starts.
pub async fn run(args: &BenchArgs, progress: &mut dyn FnMut(&str)) -> anyhow::Result<BenchReport> {
    let machine = Machine {
        started_unix_secs: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_before: loadavg(),
        load_after: String::new(),
        broker: args
            .kafka
            .clone()
            .unwrap_or_else(|| "embedded (librdkafka mock cluster, in this process)".into()),
        build: if cfg!(debug_assertions) {
            "debug (figures are not representative: use a release build)"
        } else {
            "release"
        },
    };
    let stages: Vec<Stage> = match args.stage {
        Stage::All => Stage::EACH.to_vec(),
        stage => vec![stage],
    };
    let mut reports = Vec::new();
    for stage in stages {
        progress(&format!("bench {}: running", stage.name()));
        let started = std::time::Instant::now();
        let mut report = match stage {
            Stage::Projector => projector::run(args).await,
            Stage::ReadModel => read_model::run(args).await,
            Stage::Grpc => grpc::run(args).await,
            Stage::Storage => storage::run(args).await,
            Stage::Scale => scale::run(args).await,
            Stage::Dispatcher => dispatcher::run(args).await,
            Stage::EndToEnd => dispatcher::end_to_end::run(args).await,
            Stage::Tracing => trace_cost::run(args).await,
            Stage::All => unreachable!("`all` is expanded above"),
        }
        .with_context(|| format!("bench {}", stage.name()))?;
        report.seconds = started.elapsed().as_secs_f64();
        reports.push(report);
    }
    let mut report = BenchReport {
        machine,
        stages: reports,
    };
    report.machine.load_after = loadavg();
    if let Some(path) = &args.json_out {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

fn number(value: f64) -> String {
    if value.abs() >= 100.0 || value == value.trunc() {
        let rounded = value.round() as i64;
        let digits = rounded.unsigned_abs().to_string();
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                grouped.push('_');
            }
            grouped.push(c);
        }
        if rounded < 0 {
            format!("-{grouped}")
        } else {
            grouped
        }
    } else {
        format!("{value:.3}")
    }
}

/// The human-readable table of a run: every metric, then every goal with met/missed.
pub fn table(report: &BenchReport) -> String {
    let m = &report.machine;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "receipts bench: {} cpus, load {} -> {}, broker {}, {} build",
        m.cpus, m.load_before, m.load_after, m.broker, m.build
    );
    for stage in &report.stages {
        let _ = writeln!(out, "\n== {} ({:.1} s)", stage.stage, stage.seconds);
        if !stage.note.is_empty() {
            let _ = writeln!(out, "   {}", stage.note);
        }
        let width = stage
            .metrics
            .iter()
            .map(|x| x.name.len())
            .max()
            .unwrap_or(0);
        for x in &stage.metrics {
            let _ = writeln!(
                out,
                "   {:<width$}  {:>14} {}",
                x.name,
                number(x.value),
                x.unit
            );
        }
        for goal in &stage.goals {
            let op = match goal.bound {
                Bound::AtLeast => ">=",
                Bound::AtMost => "<=",
            };
            let _ = writeln!(
                out,
                "   goal {:<40} {} {:>10}  measured {:>12} {:<10} {}",
                goal.name,
                op,
                number(goal.target),
                number(goal.measured),
                goal.unit,
                if goal.met { "met" } else { "MISSED" }
            );
        }
    }
    out
}
