//! `receipts bench scale`: the projector and the query service as an operator runs them — the
//! `receipts-projector` and `receipts-query` release binaries next to this one, each its own
//! process with its default configuration — fed `N` receipts for every `N` of `--scale`.
//!
//! For each `N` the workload is produced to fresh topics up front (in chunks, so the bench itself
//! never holds it all); then the projector runs alone until every update it owes is on
//! `receipt-updates` and its lag is zero, then the query service alone until it has applied them
//! all. Reported per process: its rate (after the first 5 % of its work), the most memory it held
//! (`VmRSS`, sampled every 200 ms) and its database's size on disk per receipt.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use receipts_bus::{KafkaSettings, TopicNames};
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;

use super::broker::{StageBroker, produce_all};
use super::progress::WARMUP_FRACTION;
use receipts_store::StorageEngine;

use super::{BenchArgs, Bound, ScratchDir, Stage, StageReport, workload};

/// Records generated and produced at a time.
const CHUNK_REPORTS: usize = 300_000;
/// Records the workload holds per receipt, rounded down (3.1 on average): the last chunks are
/// sized to what is missing and fall just short, until a small one tops them up.
const RECORDS_PER_RECEIPT: usize = 3;
/// The memory bound a service process is held to, whatever it stores.
const RSS_GOAL_MB: f64 = 512.0;
const DISK_GOAL_BYTES: f64 = 500.0;
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
const GIVE_UP_AFTER: Duration = Duration::from_secs(3600);

pub async fn run(args: &BenchArgs) -> anyhow::Result<StageReport> {
    let mut report = StageReport::new(
        Stage::Scale,
        serde_json::json!({"receipts": args.scale, "partitions": args.partitions, "seed": args.seed, "engines": args.engines}),
    );
    anyhow::ensure!(
        args.kafka.is_some(),
        "bench scale measures service processes against a real broker: give --kafka HOST:PORT"
    );
    let binaries = Binaries::beside_this_one()?;
    let mut rates: Vec<(usize, f64, f64)> = Vec::new();
    for &receipts in &args.scale {
        let broker = StageBroker::start(args, "scale", args.partitions).await?;
        let dir = ScratchDir::new(args, "scale")?;
        let fed = feed(&broker.kafka, &broker.topics, receipts, args.seed).await?;
        let label = |what: &str| format!("{} receipts: {what}", thousands(fed.receipts));
        report.metric(&label("records produced"), fed.records as f64, "records");

        let projector = binaries.run(
            &binaries.projector,
            &broker,
            &dir.path().join("projector"),
            &[],
        )?;
        let ran = watch(projector, "projector_records_total{", "", fed.records).await?;
        let projector_rate = ran.rate;
        let projector_rss = ran.max_rss_mb;
        report.metric(
            &label("projector, reports applied"),
            projector_rate,
            "reports/s",
        );
        report.metric(&label("projector, max RSS"), projector_rss, "MB");
        let projector_disk = dir_bytes(&dir.path().join("projector")) as f64 / fed.receipts as f64;
        report.metric(
            &label("projector, disk per receipt"),
            projector_disk,
            "bytes",
        );

        report.goal(
            &label("projector RSS"),
            Bound::AtMost,
            RSS_GOAL_MB,
            projector_rss,
            "MB",
        );
        report.goal(
            &label("projector disk per receipt"),
            Bound::AtMost,
            DISK_GOAL_BYTES,
            projector_disk,
            "bytes",
        );
        let mut query_rate = None;
        for &engine in &args.engines {
            // The query service on sled is "query"; on another engine it says which.
            let service = match engine {
                StorageEngine::Sled => "query".to_owned(),
                other => format!("query on {other}"),
            };
            let data_dir = dir.path().join(service.replace(' ', "-"));
            let grpc = free_port()?;
            let query = binaries.run(
                &binaries.query,
                &broker,
                &data_dir,
                &[
                    ("RECEIPTS_GRPC_LISTEN", format!("127.0.0.1:{grpc}")),
                    ("RECEIPTS_REST_LISTEN", String::new()),
                    ("RECEIPTS_STORAGE__ENGINE", engine.to_string()),
                ],
            )?;
            let ran = watch(query, "query_updates_total{", "applied", fed.updates).await?;
            report.metric(
                &label(&format!("{service}, updates applied")),
                ran.rate,
                "updates/s",
            );
            report.metric(&label(&format!("{service}, max RSS")), ran.max_rss_mb, "MB");
            let disk = dir_bytes(&data_dir) as f64 / fed.receipts as f64;
            report.metric(
                &label(&format!("{service}, disk per receipt")),
                disk,
                "bytes",
            );
            report.goal(
                &label(&format!("{service} RSS")),
                Bound::AtMost,
                RSS_GOAL_MB,
                ran.max_rss_mb,
                "MB",
            );
            report.goal(
                &label(&format!("{service} disk per receipt")),
                Bound::AtMost,
                DISK_GOAL_BYTES,
                disk,
                "bytes",
            );
            query_rate.get_or_insert(ran.rate);
        }
        rates.push((fed.receipts, projector_rate, query_rate.unwrap_or(0.0)));
        broker.finish().await;
    }
    if let (Some(first), Some(last)) = (rates.first(), rates.last())
        && rates.len() > 1
    {
        for (service, at_first, at_last) in
            [("projector", first.1, last.1), ("query", first.2, last.2)]
        {
            report.goal(
                &format!(
                    "{service} rate at {} / at {} receipts",
                    thousands(last.0),
                    thousands(first.0)
                ),
                Bound::AtLeast,
                0.8,
                at_last / at_first,
                "x",
            );
        }
    }
    Ok(report)
}

/// 1 000 000 as "1 000 000".
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// What was produced for one run.
struct Fed {
    records: u64,
    receipts: usize,
    /// The receipt updates the domain merge predicts for them.
    updates: u64,
}

/// Produces chunks of workload to `delivery-events` until they hold `receipts` receipts.
async fn feed(
    kafka: &KafkaSettings,
    topics: &TopicNames,
    receipts: usize,
    seed: u64,
) -> anyhow::Result<Fed> {
    let mut fed = Fed {
        records: 0,
        receipts: 0,
        updates: 0,
    };
    let mut chunk = 0u64;
    while fed.receipts < receipts {
        // Each chunk draws its own ids, so no receipt spans two chunks.
        let missing = (receipts - fed.receipts).saturating_mul(RECORDS_PER_RECEIPT);
        let reports = missing.clamp(1_000, CHUNK_REPORTS);
        let events = workload::generate(reports, seed.wrapping_add(chunk)).events;
        chunk += 1;
        fed.receipts += workload::receipts(&events);
        fed.updates += workload::changes(&events).len() as u64;
        fed.records += events.len() as u64;
        let records = events
            .iter()
            .map(|event| {
                (
                    event.receipt_key().to_string().into_bytes(),
                    codec::encode(&v1::Envelope::from(event), Encoding::Protobuf),
                )
            })
            .collect();
        produce_all(kafka, &topics.delivery_events, records).await?;
    }
    Ok(fed)
}

/// The service binaries of this build.
struct Binaries {
    projector: PathBuf,
    query: PathBuf,
}

/// A service process and where its metrics are served.
struct Service {
    name: String,
    child: Child,
    metrics: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Binaries {
    fn beside_this_one() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating this binary")?;
        let dir = exe.parent().context("this binary has no directory")?;
        let binaries = Binaries {
            projector: dir.join("receipts-projector"),
            query: dir.join("receipts-query"),
        };
        for binary in [&binaries.projector, &binaries.query] {
            if !binary.exists() {
                bail!(
                    "{} is missing: build the services beside this binary (cargo build --release)",
                    binary.display()
                );
            }
        }
        Ok(binaries)
    }

    /// Starts `binary` on the run's topics with its state in `data_dir`; its log goes to
    /// `data_dir.log`.
    fn run(
        &self,
        binary: &Path,
        broker: &StageBroker,
        data_dir: &Path,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Service> {
        let port = free_port()?;
        let log = std::fs::File::create(data_dir.with_extension("log"))?;
        let mut command = Command::new(binary);
        command
            .env(
                "RECEIPTS_KAFKA__BOOTSTRAP_SERVERS",
                &broker.kafka.bootstrap_servers,
            )
            .env("RECEIPTS_DATA_DIR", data_dir)
            .env("RECEIPTS_METRICS_LISTEN", format!("127.0.0.1:{port}"))
            .env("RECEIPTS_CREATE_TOPICS_PARTITIONS", "0")
            .env("RECEIPTS_GROUP_ID", fresh_group())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let names = serde_json::to_value(&broker.topics)?;
        for (field, name) in names.as_object().context("topic names are an object")? {
            if let Some(name) = name.as_str() {
                command.env(format!("RECEIPTS_TOPICS__{}", field.to_uppercase()), name);
            }
        }
        for (key, value) in extra {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Service {
            name: binary
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            child,
            metrics: format!("http://127.0.0.1:{port}/metrics"),
        })
    }
}

/// A consumer group no earlier run used.
fn fresh_group() -> String {
    format!("bench-scale-{}", uuid::Uuid::new_v4().simple())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// How one service process ran.
struct Ran {
    rate: f64,
    max_rss_mb: f64,
}

/// Samples the service's counter `series` (the lines naming it and `label`, summed) and its memory
/// until the counter reaches `total`, then stops the process.
async fn watch(mut service: Service, series: &str, label: &str, total: u64) -> anyhow::Result<Ran> {
    let pid = service.child.id();
    let started = Instant::now();
    let mut max_rss = 0u64;
    let mut warm: Option<(Instant, u64)> = None;
    loop {
        if let Some(status) = service.child.try_wait()? {
            bail!(
                "{} exited with {status} before it was done; see its log beside its data",
                service.name
            );
        }
        max_rss = max_rss.max(rss_bytes(pid).unwrap_or(0));
        let done = counter(&service.metrics, series, label).await.unwrap_or(0);
        if warm.is_none() && done as f64 >= total as f64 * WARMUP_FRACTION {
            warm = Some((Instant::now(), done));
        }
        if done >= total {
            let (from, at) = warm.unwrap_or((started, 0));
            let rate = done.saturating_sub(at) as f64 / from.elapsed().as_secs_f64().max(1e-3);
            receipts_runtime::process::terminate(&mut service.child, Duration::from_secs(30));
            return Ok(Ran {
                rate,
                max_rss_mb: max_rss as f64 / 1e6,
            });
        }
        if started.elapsed() > GIVE_UP_AFTER {
            bail!(
                "{} did only {done} of {total} in {GIVE_UP_AFTER:?}",
                service.name
            );
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

/// `VmRSS` of process `pid`.
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The sum of a counter's series in a service's metrics whose lines name `series` and `label`
/// (0 until it serves them).
async fn counter(metrics: &str, series: &str, label: &str) -> anyhow::Result<u64> {
    let text = reqwest::get(metrics).await?.text().await?;
    Ok(text
        .lines()
        .filter(|line| !line.starts_with('#') && line.contains(series) && line.contains(label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}
