//! `receipts bench dispatcher`: `onDeliveryUpdated` webhooks delivered per second to a local sink
//! (an axum server that answers 200 at once), beside a bare HTTP POST loop sending the same body
//! to the same sink with the same number of requests in flight as the dispatcher allows one
//! endpoint (`endpoint_concurrency`).
//!
//! `receipts bench end-to-end`: ingest, projector and dispatcher in this process. Status reports
//! are posted to ingest's canonical endpoint at a fixed offered rate (open loop: one request per
//! tick whatever the answers do), each for a receipt of its own; the latency of a report is from
//! the moment its POST started (ingest answers 2xx only once Kafka acknowledged it) until the
//! sink received the webhook with that receipt's `DeliveryReceiptSid`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use receipts_bus::KafkaSettings;
use receipts_dispatcher::DispatcherConfig;
use receipts_domain::{
    AccountSid, Channel, ChannelMessageId, ConversationSid, DeliveryEvent, DeliveryEventKind,
    DeliveryStatus, MessageSid, ParticipantSid, Registration, StatusReport, StatusSource,
    Timestamp,
};
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use receipts_runtime::config::Secret;
use receipts_runtime::metrics::Metrics;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::broker::{StageBroker, produce_all};
use super::progress::WARMUP_FRACTION;
use super::{BenchArgs, Bound, ScratchDir, Stage, StageReport, quantile};
use receipts_runtime::demo::{DEMO_ACCOUNT, DEMO_TOKEN};

/// What the sink saw.
#[derive(Default)]
struct Sink {
    received: AtomicU64,
    /// The first body received, replayed by the bare POST loop.
    sample: Mutex<Option<Bytes>>,
    /// `DeliveryReceiptSid` → when its `delivered` webhook arrived (end-to-end only).
    delivered: Mutex<Option<HashMap<String, Instant>>>,
}

async fn receive(State(sink): State<Arc<Sink>>, body: Bytes) -> &'static str {
    let at = Instant::now();
    sink.received.fetch_add(1, Ordering::Relaxed);
    if let Some(delivered) = sink.delivered.lock().expect("sink lock").as_mut() {
        let mut receipt = None;
        let mut status = None;
        for (key, value) in form_urlencoded::parse(&body) {
            match key.as_ref() {
                "DeliveryReceiptSid" => receipt = Some(value.into_owned()),
                "Status" => status = Some(value),
                _ => {}
            }
        }
        if let (Some(receipt), Some("delivered")) = (receipt, status.as_deref()) {
            delivered.entry(receipt).or_insert(at);
        }
    }
    let mut sample = sink.sample.lock().expect("sink lock");
    if sample.is_none() {
        *sample = Some(body);
    }
    "ok"
}

async fn start_sink(sink: Arc<Sink>, shutdown: CancellationToken) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let router = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(sink);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    Ok(address)
}

/// An account-wide post-webhook for `onDeliveryUpdated` to `url`, written to `webhook-configs`.
async fn configure_webhook(kafka: &KafkaSettings, topic: &str, url: &str) -> anyhow::Result<()> {
    let mut config = v1::WebhookConfig {
        account_sid: DEMO_ACCOUNT.into(),
        method: "POST".into(),
        filters: vec!["onDeliveryUpdated".into()],
        post_webhook_url: url.into(),
        target: "webhook".into(),
        ..Default::default()
    };
    config.set_scope(v1::WebhookScope::Account);
    let key = receipts_proto::webhooks::webhook_key(&config);
    produce_all(
        kafka,
        topic,
        vec![(key.into_bytes(), codec::encode(&config, Encoding::Protobuf))],
    )
    .await?;
    Ok(())
}

fn dispatcher_config(
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
    let broker = StageBroker::start(args.kafka.as_deref(), "dispatcher", args.partitions).await?;
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
                rate: super::per_sec(received - from.1, done - from.0),
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
    Ok(super::per_sec(requests, started.elapsed()))
}

pub async fn run_end_to_end(args: &BenchArgs) -> anyhow::Result<StageReport> {
    let mut report = StageReport::new(
        Stage::EndToEnd,
        json!({
            "rate": args.rate,
            "secs": args.e2e_secs,
            "partitions": args.partitions,
            "path": "ingest /v1/events (canonical) -> projector -> dispatcher -> sink",
        }),
    );
    anyhow::ensure!(args.rate > 0, "--rate must be at least 1");
    let broker = StageBroker::start(args.kafka.as_deref(), "end-to-end", args.partitions).await?;
    let shutdown = CancellationToken::new();
    let result = measure_end_to_end(args, &broker, &mut report, &shutdown).await;
    shutdown.cancel();
    // Let the services store their last batches before the topics go.
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.finish().await;
    result?;
    Ok(report)
}

fn receipt_events(count: usize, offset: usize) -> (Vec<DeliveryEvent>, Vec<DeliveryEvent>) {
    let account = AccountSid::parse(DEMO_ACCOUNT).expect("the demo account sid is valid");
    let at = 1_764_000_000_000_i64;
    let mut registrations = Vec::with_capacity(count);
    let mut reports = Vec::with_capacity(count);
    for n in offset..offset + count {
        let conversation = ConversationSid::derive(&["e2e", &(n / 20).to_string()]);
        let message = MessageSid::derive(&["e2e", &n.to_string()]);
        let id = ChannelMessageId::parse(&format!("SM{n:032x}")).expect("a valid sid");
        registrations.push(DeliveryEvent {
            event_id: format!("reg:{id}"),
            kind: DeliveryEventKind::Registered(Registration {
                account: account.clone(),
                chat_service: None,
                conversation,
                message: message.clone(),
                message_index: (n % 20) as u64,
                participant: ParticipantSid::derive(&[message.as_str()]),
                channel: Channel::Sms,
                channel_message_id: id.clone(),
                expected_receipts: 1,
                registered_at: Timestamp::from_unix_millis(at),
            }),
        });
        reports.push(DeliveryEvent {
            event_id: format!("dlr:{id}"),
            kind: DeliveryEventKind::Reported(StatusReport {
                account: account.clone(),
                channel_message_id: id,
                status: DeliveryStatus::Delivered,
                raw_status: "delivered".into(),
                error_code: None,
                provider_time: Timestamp::from_unix_millis(at + 2_000),
                source: StatusSource::TwilioMessaging,
            }),
        });
    }
    (registrations, reports)
}

fn batch_body(events: &[DeliveryEvent]) -> anyhow::Result<String> {
    let events: Vec<v1::Envelope> = events.iter().map(v1::Envelope::from).collect();
    Ok(serde_json::to_string(&json!({ "events": events }))?)
}

async fn measure_end_to_end(
    args: &BenchArgs,
    broker: &StageBroker,
    report: &mut StageReport,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let sink = Arc::new(Sink::default());
    *sink.delivered.lock().expect("sink lock") = Some(HashMap::new());
    let address = start_sink(sink.clone(), shutdown.clone()).await?;
    configure_webhook(
        &broker.kafka,
        &broker.topics.webhook_configs,
        &format!("http://{address}/hook"),
    )
    .await?;

    let dir = ScratchDir::new(args, "end-to-end")?;
    let accounts = BTreeMap::from([(DEMO_ACCOUNT.to_owned(), Secret::new(DEMO_TOKEN))]);
    let ingest_listener = TcpListener::bind("127.0.0.1:0").await?;
    let ingest_url = format!("http://{}/v1/events", ingest_listener.local_addr()?);
    let ingest = receipts_ingest::IngestConfig {
        kafka: broker.kafka.clone(),
        topics: broker.topics.clone(),
        public_base_url: format!("http://{}", ingest_listener.local_addr()?),
        accounts: accounts.clone(),
        create_topics_partitions: 0,
        metrics_listen: String::new(),
        ..Default::default()
    };
    let projector = receipts_projector::ProjectorConfig {
        kafka: broker.kafka.clone(),
        topics: broker.topics.clone(),
        group_id: format!("receipts-bench-e2e-{:08x}", rand::random::<u32>()),
        data_dir: dir.path().join("projector"),
        create_topics_partitions: 0,
        metrics_listen: String::new(),
        ..Default::default()
    };
    let dispatcher = dispatcher_config(broker, &dir.path().join("dispatcher"))?;
    let registry = Metrics::new();
    let services = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let (i, p, d) = tokio::join!(
                receipts_ingest::run(ingest, ingest_listener, &registry, shutdown.clone()),
                receipts_projector::run(projector, &registry, shutdown.clone()),
                receipts_dispatcher::run(dispatcher, &registry, shutdown.clone()),
            );
            i.context("ingest")?;
            p.context("projector")?;
            d.context("dispatcher")?;
            anyhow::Ok(())
        }
    });

    let client = reqwest::Client::new();
    let post = |body: String| {
        client
            .post(&ingest_url)
            .basic_auth(DEMO_ACCOUNT, Some(DEMO_TOKEN))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // Warm-up: a tenth as many receipts, registered and reported, all the way to the sink.
    let measured = (args.rate as f64 * args.e2e_secs).round().max(1.0) as usize;
    let warmup = (measured / 10).max(1);
    let (warm_registrations, warm_reports) = receipt_events(warmup, 0);
    let (registrations, reports) = receipt_events(measured, warmup);
    for chunk in warm_registrations
        .chunks(500)
        .chain(registrations.chunks(500))
    {
        post(batch_body(chunk)?).await?.error_for_status()?;
    }
    for chunk in warm_reports.chunks(500) {
        post(batch_body(chunk)?).await?.error_for_status()?;
    }
    let delivered_count = |sink: &Sink| {
        sink.delivered
            .lock()
            .expect("sink lock")
            .as_ref()
            .map_or(0, |d| d.len())
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while delivered_count(&sink) < warmup {
        anyhow::ensure!(
            Instant::now() < deadline && !services.is_finished(),
            "the warm-up reports did not reach the sink"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The measured phase: one report per tick, each its own request, never waiting for answers.
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let failed = Arc::new(AtomicU64::new(0));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut requests = Vec::with_capacity(reports.len());
    for event in &reports {
        ticker.tick().await;
        let receipt = event.receipt_key().receipt_sid();
        let body = batch_body(std::slice::from_ref(event))?;
        let (sent, failed) = (sent.clone(), failed.clone());
        let request = post(body);
        requests.push(tokio::spawn(async move {
            sent.lock()
                .expect("sent lock")
                .insert(receipt.to_string(), Instant::now());
            match request.await.and_then(|r| r.error_for_status()) {
                Ok(_) => {}
                Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let offered_for = started.elapsed();
    for request in requests {
        request.await?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered_count(&sink) < warmup + measured && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut latencies: Vec<u64> = {
        let sent = sent.lock().expect("sent lock");
        let delivered = sink.delivered.lock().expect("sink lock");
        let delivered = delivered.as_ref().expect("the sink records deliveries");
        sent.iter()
            .filter_map(|(receipt, at)| {
                delivered
                    .get(receipt)
                    .map(|got| got.saturating_duration_since(*at).as_micros() as u64)
            })
            .collect()
    };
    latencies.sort_unstable();
    let ms = |us: u64| us as f64 / 1000.0;
    report.metric("reports offered", measured as f64, "reports");
    report.metric(
        "offered rate achieved",
        super::per_sec(measured as u64, offered_for),
        "reports/s",
    );
    report.metric(
        "ingest requests not accepted",
        failed.load(Ordering::Relaxed) as f64,
        "requests",
    );
    report.metric(
        "webhooks received for them",
        latencies.len() as f64,
        "webhooks",
    );
    report.metric("latency p50", ms(quantile(&latencies, 0.50)), "ms");
    let p99 = report.metric("latency p99", ms(quantile(&latencies, 0.99)), "ms");
    report.metric(
        "latency max",
        ms(latencies.last().copied().unwrap_or(0)),
        "ms",
    );
    if latencies.len() < measured {
        report.note = format!(
            "{} of {measured} webhooks did not arrive within 30 s of the last report; p99 counts only those that did",
            measured - latencies.len()
        );
    }
    report.goal(
        "end-to-end p99 at the offered rate",
        Bound::AtMost,
        100.0,
        p99,
        "ms",
    );
    if services.is_finished() {
        services.await??;
    }
    Ok(())
}
