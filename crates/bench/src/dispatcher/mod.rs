//! `receipts bench dispatcher`: `onDeliveryUpdated` webhooks delivered per second to a local sink
//! (an axum server that answers 200 at once), beside a bare HTTP POST loop sending the same body
//! to the same sink with the same number of requests in flight as the dispatcher allows one
//! endpoint (`endpoint_concurrency`).
//!
//! Layout: this file is the dispatcher stage; [`sink`] the endpoint both webhook stages deliver
//! to; [`end_to_end`] the `end-to-end` stage.

pub mod end_to_end;
mod sink;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Bytes;
use receipts_dispatcher::DispatcherConfig;
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use receipts_runtime::config::Secret;
use receipts_runtime::demo::{DEMO_ACCOUNT, DEMO_TOKEN};
use receipts_runtime::metrics::Metrics;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::broker::{StageBroker, produce_all};
use crate::progress::WARMUP_FRACTION;
use crate::{BenchArgs, Bound, ScratchDir, Stage, StageReport};

use sink::{Sink, configure_webhook, start_sink};

pub(super) fn dispatcher_config(
    broker: &StageBroker,
    data_dir: &std::path::Path,
) -> anyhow::Result<DispatcherConfig> {
    Ok(DispatcherConfig {
        kafka: broker.kafka.clone(),
        topics: broker.topics.clone(),
        group_id: format!("receipts-bench-dispatcher-{:08x}", rand::random::<u32>()),
        data_dir: data_dir.to_owned(),
        accounts: BTreeMap::from([(DEMO_ACCOUNT.to_owned(), Secret::new(DEMO_TOKEN))]),
        // The sink is on the loopback interface, which the SSRF policy refuses by default.
        ssrf: serde_json::from_value(json!({ "allow": ["127.0.0.0/8"] }))?,
        create_topics_partitions: 0,
        metrics_listen: String::new(),
        ..Default::default()
    })
}

pub async fn run(args: &BenchArgs) -> anyhow::Result<StageReport> {
    let defaults = DispatcherConfig::default();
    let mut report = StageReport::new(
        Stage::Dispatcher,
        json!({
            "updates": args.webhooks,
            "partitions": args.partitions,
            "seed": args.seed,
            "endpoint_concurrency": defaults.endpoint_concurrency,
            "batch_max_records": defaults.batch_max_records,
            "warmup_fraction": WARMUP_FRACTION,
        }),
    );
    let broker = StageBroker::start(args, "dispatcher", args.partitions).await?;
    let shutdown = CancellationToken::new();
    let result = measure_dispatcher(args, &broker, &mut report, &shutdown).await;
    shutdown.cancel();
    broker.finish().await;
    result?;
    Ok(report)
}

async fn measure_dispatcher(
    args: &BenchArgs,
    broker: &StageBroker,
    report: &mut StageReport,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let sink = Arc::new(Sink::default());
    let address = start_sink(sink.clone(), shutdown.clone()).await?;
    let url = format!("http://{address}/hook");
    configure_webhook(&broker.kafka, &broker.topics.webhook_configs, &url).await?;

    // Receipt changes as the projector publishes them. The dispatcher fires a webhook only when
    // a receipt's status or error code changed (never for a queued one) and drops a delivery
    // whose receipt already got a newer version through, so how many webhooks arrive is its call.
    let changes = super::read_model::updates(args.webhooks, args.seed);
    let total = changes.len() as u64;
    let records = changes
        .iter()
        .map(|change| {
            (
                change
                    .receipt
                    .registration
                    .conversation
                    .as_str()
                    .as_bytes()
                    .to_vec(),
                codec::encode(&v1::ReceiptUpdated::from(change), Encoding::Protobuf),
            )
        })
        .collect();
    produce_all(&broker.kafka, &broker.topics.receipt_updates, records).await?;
    report.metric("receipt updates produced", total as f64, "updates");

    let dir = ScratchDir::new(args, "dispatcher")?;
    let config = dispatcher_config(broker, dir.path())?;
    let concurrency = config.endpoint_concurrency;
    let metrics = Metrics::new();
    let stop = shutdown.child_token();
    let running = tokio::spawn({
        let (stop, metrics) = (stop.clone(), metrics.clone());
        async move { receipts_dispatcher::run(config, &metrics, stop).await }
    });
    let settled = wait_until_settled(&sink, &metrics, total, &running).await;
    stop.cancel();
    let stopped = running.await;
    let settled = settled?;
    stopped??;
    report.metric("webhooks fired", settled.fired as f64, "webhooks");
    report.metric(
        "webhooks delivered to the sink",
        settled.received as f64,
        "webhooks",
    );
    report.metric(
        "deliveries dropped (stale, …)",
        settled.dropped as f64,
        "deliveries",
    );
    let rate = report.metric("dispatcher webhooks delivered", settled.rate, "webhooks/s");
    report.metric(
        "dispatcher start to last webhook",
        settled.total.as_secs_f64(),
        "s",
    );
    let expected = settled.received;

    // The same body to the same sink, `endpoint_concurrency` requests in flight, nothing else.
    let body = sink
        .sample
        .lock()
        .expect("sink lock")
        .clone()
        .context("the sink received no webhook")?;
    let bare = bare_post_loop(&url, body, concurrency, expected.max(1)).await?;
    let bare_rate = report.metric("bare POST loop, same sink and body", bare, "requests/s");
    let ratio = report.metric("dispatcher / bare POST loop", rate / bare_rate, "x");
    report.goal(
        "dispatcher throughput",
        Bound::AtLeast,
        10_000.0,
        rate,
        "webhooks/s",
    );
    report.goal(
        "dispatcher / bare POST loop",
        Bound::AtLeast,
        0.6,
        ratio,
        "x",
    );
    Ok(())
}

/// How a dispatcher run through its backlog went.
struct Settled {
    fired: u64,
    dropped: u64,
    received: u64,
    /// Webhooks received per second after the first [`WARMUP_FRACTION`] of them.
    rate: f64,
    total: Duration,
}

/// The sum of the samples of counter `name` whose labels contain `label` (all if empty).
fn counter(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            let metric = line.split(['{', ' ']).next().unwrap_or_default();
            metric == name && line.contains(label)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Waits until the dispatcher has read all `total` updates and every webhook it fired was
/// either received by the sink or dropped, sampling the sink's count to time the deliveries.
async fn wait_until_settled(
    sink: &Sink,
    metrics: &Metrics,
    total: u64,
    running: &tokio::task::JoinHandle<Result<(), receipts_dispatcher::DispatcherError>>,
) -> anyhow::Result<Settled> {
    let started = Instant::now();
    let mut samples: Vec<(Instant, u64)> = Vec::new();
    let (mut last, mut last_change) = (u64::MAX, Instant::now());
    loop {
        let received = sink.received.load(Ordering::Relaxed);
        let now = Instant::now();
        samples.push((now, received));
        let text = metrics.render();
        let read = counter(&text, "receipts_dispatcher_updates_total", "");
        let fired = counter(
            &text,
            "receipts_dispatcher_updates_total",
            "outcome=\"fired\"",
        );
        let delivered = counter(
            &text,
            "receipts_dispatcher_attempts_total",
            "outcome=\"delivered\"",
        );
        let dropped = counter(&text, "receipts_dispatcher_dropped_total", "");
        if read >= total && delivered + dropped >= fired && received >= delivered {
            let from = samples
                .iter()
                .find(|(_, n)| *n as f64 >= received as f64 * WARMUP_FRACTION && *n > 0)
                .copied()
                .filter(|(_, n)| *n < received)
                .unwrap_or((started, 0));
            let done = samples
                .iter()
                .find(|(_, n)| *n >= received)
                .map_or(now, |(at, _)| *at);
            return Ok(Settled {
                fired,
                dropped,
                received,
                rate: crate::per_sec(received - from.1, done - from.0),
                total: done - started,
            });
        }
        let progress = read + received + dropped;
        if progress != last {
            (last, last_change) = (progress, now);
        }
        anyhow::ensure!(
            now - last_change < Duration::from_secs(60) && !running.is_finished(),
            "the dispatcher stopped making progress: read {read} of {total} updates, fired {fired}, \
             delivered {delivered}, dropped {dropped}, the sink received {received}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Requests per second of `concurrency` loops each POSTing `body` and awaiting the answer, over
/// `requests` requests after a warm-up of a tenth as many.
async fn bare_post_loop(
    url: &str,
    body: Bytes,
    concurrency: usize,
    requests: u64,
) -> anyhow::Result<f64> {
    let client = reqwest::Client::new();
    let post = |n: u64| {
        let (client, url, body) = (client.clone(), url.to_owned(), body.clone());
        async move {
            let next = Arc::new(AtomicU64::new(0));
            let mut tasks = Vec::new();
            for _ in 0..concurrency.max(1) {
                let (client, url, body, next) =
                    (client.clone(), url.clone(), body.clone(), next.clone());
                tasks.push(tokio::spawn(async move {
                    while next.fetch_add(1, Ordering::Relaxed) < n {
                        client
                            .post(&url)
                            .header("content-type", "application/x-www-form-urlencoded")
                            .body(body.clone())
                            .send()
                            .await?
                            .error_for_status()?;
                    }
                    anyhow::Ok(())
                }));
            }
            for task in tasks {
                task.await??;
            }
            anyhow::Ok(())
        }
    };
    post(requests / 10 + 1).await?;
    let started = Instant::now();
    post(requests).await?;
    Ok(crate::per_sec(requests, started.elapsed()))
}
