//! `receipts bench read-model`: `receipt-updates` applied per second by the query service's read
//! model (`receipts_query::consume::ReadModel` into its store), beside a bare consumer decoding
//! the same topic in the same run; with `--query-engines sled,fjall`, on each engine in turn.
//!
//! The updates are exactly what the projector publishes for a realistic workload (computed with
//! the domain merge), produced up front to a fresh topic keyed by conversation. The read model is
//! done when its stored offsets reach the end of every partition.

use std::time::Duration;

use receipts_domain::ReceiptChange;
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use receipts_query::QueryConfig;
use receipts_query::consume::ReadModel;
use receipts_runtime::metrics::Metrics;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::broker::{StageBroker, produce_backlog};
use super::progress::{WARMUP_FRACTION, raw_consume, stored_offsets, track_stored_offsets};
use receipts_store::{StorageConfig, StorageEngine};

use super::{BenchArgs, Bound, ScratchDir, Stage, StageReport, workload};

/// At least `count` receipt changes of a realistic workload, in the order the projector makes them.
pub(crate) fn updates(count: usize, seed: u64) -> Vec<ReceiptChange> {
    let mut reports = count + count / 4 + 16;
    loop {
        let mut changes = workload::changes(&workload::generate(reports, seed).events);
        if changes.len() >= count {
            changes.truncate(count);
            return changes;
        }
        reports += reports / 4;
    }
}

pub async fn run(args: &BenchArgs) -> anyhow::Result<StageReport> {
    let mut report = StageReport::new(
        Stage::ReadModel,
        json!({
            "updates": args.updates,
            "partitions": args.partitions,
            "seed": args.seed,
            "batch_max_records": QueryConfig::default().batch_max_records,
            "warmup_fraction": WARMUP_FRACTION,
            "engines": args.engines,
        }),
    );
    let broker = StageBroker::start(args, "read-model", args.partitions).await?;
    let result = measure(args, &broker, &mut report).await;
    broker.finish().await;
    result?;
    Ok(report)
}

async fn measure(
    args: &BenchArgs,
    broker: &StageBroker,
    report: &mut StageReport,
) -> anyhow::Result<()> {
    let topics = &broker.topics;
    let changes = updates(args.updates, args.seed);
    let records: Vec<(Vec<u8>, Vec<u8>)> = changes
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
    let (total, ends) = produce_backlog(
        report,
        &broker.kafka,
        &topics.receipt_updates,
        records,
        "updates/s",
    )
    .await?;

    let (raw, undecodable) = raw_consume(&broker.kafka, &topics.receipt_updates, &ends, |m| {
        use rdkafka::Message;
        m.payload()
            .and_then(|p| codec::decode::<v1::ReceiptUpdated>(p, Encoding::Protobuf).ok())
            .is_some_and(|wire| ReceiptChange::try_from(&wire).is_ok())
    })
    .await?;
    anyhow::ensure!(undecodable == 0, "{undecodable} updates did not decode");
    let raw_rate = report.metric(
        "raw consume + decode (bare consumer)",
        raw.rate,
        "updates/s",
    );

    for &engine in &args.engines {
        // On sled the figures are the read model's; on another engine they say which.
        let name = match engine {
            StorageEngine::Sled => "read model".to_owned(),
            other => format!("read model on {other}"),
        };
        let dir = ScratchDir::new(args, &name.replace(' ', "-"))?;
        let storage = StorageConfig::on(engine);
        let store = {
            let path = dir.path().to_owned();
            tokio::task::spawn_blocking(move || receipts_store::open_query_store(&path, &storage))
                .await??
        };
        let config = QueryConfig {
            kafka: broker.kafka.clone(),
            topics: topics.clone(),
            data_dir: dir.path().to_owned(),
            metrics_listen: String::new(),
            storage,
            ..Default::default()
        };
        let (watchers, _) = tokio::sync::broadcast::channel(config.watch_buffer);
        let metrics = Metrics::new();
        let shutdown = CancellationToken::new();
        let reader = ReadModel::new(&config, store.clone(), watchers, &metrics)?;
        let running = tokio::spawn(reader.run(shutdown.clone()));
        let stored = {
            let (store, topic) = (store.clone(), topics.receipt_updates.clone());
            stored_offsets(&ends, move |partition| store.next_offset(&topic, partition))
        };
        let tracked = track_stored_offsets(total, Duration::from_secs(60), stored).await;
        shutdown.cancel();
        let stopped = running.await;
        let applied = tracked?;
        stopped??;

        report.metric(
            &format!("{name} start to last update stored"),
            applied.total.as_secs_f64(),
            "s",
        );
        let rate = report.metric(&format!("{name} applied"), applied.rate, "updates/s");
        let ratio = report.metric(&format!("{name} / raw consume"), rate / raw_rate, "x");
        report.goal(
            &format!("{name} throughput"),
            Bound::AtLeast,
            150_000.0,
            rate,
            "updates/s",
        );
        report.goal(
            &format!("{name} / raw consume"),
            Bound::AtLeast,
            0.8,
            ratio,
            "x",
        );
        drop(store);
    }
    Ok(())
}
