//! `receipts bench projector`: reports applied per second by the projector end to end — consumed,
//! merged, published on `receipt-updates` with every acknowledgement awaited, stored in sled with
//! the offsets — beside the raw rate of a bare consumer decoding the same topic in the same run.
//!
//! The input (registrations and statuses with realistic keys) is produced up front to a fresh
//! topic; with `--engines sled,fjall`, once per engine, each run on topics of its own. The projector is done when its stored offsets reach the end of every partition; that
//! happens only after the batch's derived events were acknowledged (DESIGN §4).

use std::time::Duration;

use receipts_domain::DeliveryEvent;
use receipts_projector::{BatchConfig, ProjectorConfig};
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use receipts_runtime::metrics::Metrics;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::broker::{StageBroker, end_offsets, produce_backlog};
use super::progress::{WARMUP_FRACTION, raw_consume, stored_offsets, track_stored_offsets};
use receipts_store::{StorageConfig, StorageEngine};

use super::{BenchArgs, Bound, ScratchDir, Stage, StageReport, workload};

pub async fn run(args: &BenchArgs) -> anyhow::Result<StageReport> {
    let batch = BatchConfig::default();
    let mut report = StageReport::new(
        Stage::Projector,
        json!({
            "reports": args.reports,
            "partitions": args.partitions,
            "seed": args.seed,
            "batch_max_records": batch.max_records,
            "batch_max_wait_ms": batch.max_wait_ms,
            "warmup_fraction": WARMUP_FRACTION,
            "engines": args.engines,
        }),
    );
    // Each engine on fresh topics: a projector finding its changelog already written would
    // restore its state from it instead of doing the work.
    for &engine in &args.engines {
        let mut run = StageReport::new(Stage::Projector, json!(null));
        let broker = StageBroker::start(args, "projector", args.partitions).await?;
        let result = measure(args, &broker, &mut run, engine).await;
        broker.finish().await;
        result?;
        report.take_from(run, engine);
    }
    Ok(report)
}

async fn measure(
    args: &BenchArgs,
    broker: &StageBroker,
    report: &mut StageReport,
    engine: StorageEngine,
) -> anyhow::Result<()> {
    let topics = &broker.topics;
    let workload = workload::generate(args.reports, args.seed);
    let expected_updates = workload::changes(&workload.events).len() as u64;
    report.metric(
        "receipts in the input",
        workload::receipts(&workload.events) as f64,
        "receipts",
    );
    report.metric(
        "updates the input yields",
        expected_updates as f64,
        "updates",
    );
    let records: Vec<(Vec<u8>, Vec<u8>)> = workload
        .events
        .iter()
        .map(|event| {
            (
                event.receipt_key().to_string().into_bytes(),
                codec::encode(&v1::Envelope::from(event), Encoding::Protobuf),
            )
        })
        .collect();
    let (total, ends) = produce_backlog(
        report,
        &broker.kafka,
        &topics.delivery_events,
        records,
        "reports/s",
    )
    .await?;

    // The raw limit first: it also warms the broker's caches for the projector.
    let (raw, undecodable) =
        raw_consume(&broker.kafka, &topics.delivery_events, &ends, |message| {
            use rdkafka::Message;
            message
                .payload()
                .and_then(|p| codec::decode::<v1::Envelope>(p, Encoding::Protobuf).ok())
                .is_some_and(|wire| DeliveryEvent::try_from(&wire).is_ok())
        })
        .await?;
    anyhow::ensure!(undecodable == 0, "{undecodable} records did not decode");
    let raw_rate = report.metric(
        "raw consume + decode (bare consumer)",
        raw.rate,
        "reports/s",
    );

    let dir = ScratchDir::new(args, "projector")?;
    let storage = StorageConfig::on(engine);
    let store = {
        let path = dir.path().to_owned();
        tokio::task::spawn_blocking(move || receipts_store::open_projector_store(&path, &storage))
            .await??
    };
    let config = ProjectorConfig {
        storage,
        kafka: broker.kafka.clone(),
        topics: topics.clone(),
        group_id: format!("receipts-bench-projector-{:08x}", rand::random::<u32>()),
        data_dir: dir.path().to_owned(),
        create_topics_partitions: 0,
        metrics_listen: String::new(),
        ..Default::default()
    };
    let metrics = Metrics::new();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let (store, shutdown) = (store.clone(), shutdown.clone());
        async move {
            receipts_projector::run_with_store(
                config,
                store,
                receipts_runtime::clock::system(),
                &metrics,
                shutdown,
            )
            .await
        }
    });
    let stored = {
        let (store, topic) = (store.clone(), topics.delivery_events.clone());
        stored_offsets(&ends, move |partition| store.next_offset(&topic, partition))
    };
    let tracked = track_stored_offsets(total, Duration::from_secs(60), stored).await;
    shutdown.cancel();
    let stopped = running.await;
    let applied = tracked?;
    stopped??;

    let published: u64 = end_offsets(&broker.kafka, &topics.receipt_updates)
        .await?
        .iter()
        .map(|(_, end)| *end as u64)
        .sum();
    report.metric(
        "projector start to last report stored",
        applied.total.as_secs_f64(),
        "s",
    );
    let rate = report.metric("projector applied end to end", applied.rate, "reports/s");
    let ratio = report.metric("projector / raw consume", rate / raw_rate, "x");
    report.metric("receipt updates published", published as f64, "updates");
    if published != expected_updates {
        report.note = format!(
            "the projector published {published} updates where the merge predicts {expected_updates}"
        );
    }
    report.goal(
        "projector throughput",
        Bound::AtLeast,
        100_000.0,
        rate,
        "reports/s",
    );
    report.goal("projector / raw consume", Bound::AtLeast, 0.7, ratio, "x");
    drop(store);
    Ok(())
}
