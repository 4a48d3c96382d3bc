//! `receipts bench end-to-end`: ingest, projector and dispatcher in this process. Status reports
//! are posted to ingest's canonical endpoint at a fixed offered rate (open loop: one request per
//! tick whatever the answers do), each for a receipt of its own; the latency of a report is from
//! the moment its POST started (ingest answers 2xx only once Kafka acknowledged it) until the
//! sink received the webhook with that receipt's `DeliveryReceiptSid`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use receipts_domain::{
    AccountSid, Channel, ChannelMessageId, ConversationSid, DeliveryEvent, DeliveryEventKind,
    DeliveryStatus, MessageSid, ParticipantSid, Registration, StatusReport, StatusSource,
    Timestamp,
};
use receipts_proto::v1;
use receipts_runtime::config::Secret;
use receipts_runtime::demo::{DEMO_ACCOUNT, DEMO_TOKEN};
use receipts_runtime::metrics::Metrics;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::StageBroker;
use crate::{BenchArgs, Bound, ScratchDir, Stage, StageReport, quantile};

use super::dispatcher_config;
use super::sink::{Sink, configure_webhook, start_sink};

pub async fn run(args: &BenchArgs) -> anyhow::Result<StageReport> {
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
    let broker = StageBroker::start(args, "end-to-end", args.partitions).await?;
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
        crate::per_sec(measured as u64, offered_for),
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
