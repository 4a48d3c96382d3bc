//! `receipts bench storage`: what N receipts cost in sled and in memory.
//!
//! A realistic workload is applied through the services' own storage paths — the projector's
//! `apply_batch` + `ProjectorStore::commit`, then the resulting updates through
//! `QueryStore::apply` — in batches of the services' default size, each batch with its offsets.
//! The same updates go to the read model on fjall too, timed apart from the rest, so the two
//! engines are measured side by side (fjall's size is taken once its memtable is written out and
//! its compactions are done).
//! Both databases are flushed and their `size_on_disk` divided by the receipts they hold; the
//! process's resident memory (`VmRSS`) is read with both databases open, as `receipts dev` holds
//! them. No broker is involved.

use receipts_bus::Record;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use receipts_domain::Timestamp;
use receipts_projector::apply::apply_batch;
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use receipts_store::{
    FjallQueryStore, PartitionOffset, ProjectorStore, QueryStore, SledProjectorStore,
    SledQueryStore,
};
use serde_json::json;

use super::{
    BenchArgs, Bound, ScratchDir, Stage, StageReport, per_sec, proc_status_bytes, workload,
};

/// Records per stored batch: the projector's and the read model's default batch size.
const BATCH: usize = 5_000;
const PARTITIONS: i32 = 8;
const TOPIC: &str = "receipts.delivery-events.v1";

pub async fn run(args: &BenchArgs) -> anyhow::Result<StageReport> {
    let mut report = StageReport::new(
        Stage::Storage,
        json!({ "receipts": args.receipts, "seed": args.seed, "batch": BATCH }),
    );
    let dir = ScratchDir::new(args, "storage")?;
    let (receipts, seed) = (args.receipts, args.seed);
    let path = dir.path().to_owned();
    let figures = tokio::task::spawn_blocking(move || measure(receipts, seed, &path)).await??;
    for (name, value, unit) in &figures.metrics {
        report.metric(name, *value, unit);
    }
    report.goal(
        "projector sled bytes per receipt",
        Bound::AtMost,
        500.0,
        figures.projector_per_receipt,
        "bytes",
    );
    report.goal(
        "query sled bytes per receipt",
        Bound::AtMost,
        500.0,
        figures.query_per_receipt,
        "bytes",
    );
    report.goal(
        "query bytes per receipt on fjall",
        Bound::AtMost,
        500.0,
        figures.fjall_per_receipt,
        "bytes",
    );
    Ok(report)
}

struct Figures {
    metrics: Vec<(&'static str, f64, &'static str)>,
    projector_per_receipt: f64,
    query_per_receipt: f64,
    fjall_per_receipt: f64,
}

fn measure(receipts: usize, seed: u64, dir: &std::path::Path) -> anyhow::Result<Figures> {
    // About 3.3 records per receipt: a registration, its statuses and the odd duplicate.
    let mut reports = receipts * 33 / 10 + 16;
    let workload = loop {
        let mut workload = workload::generate(reports, seed);
        if workload::receipts(&workload.events) >= receipts {
            // Keep the records of the first `receipts` channel messages registered.
            let mut keep = std::collections::HashSet::new();
            for event in &workload.events {
                if keep.len() == receipts {
                    break;
                }
                if matches!(
                    event.kind,
                    receipts_domain::DeliveryEventKind::Registered(_)
                ) {
                    keep.insert(event.receipt_key());
                }
            }
            workload
                .events
                .retain(|event| keep.contains(&event.receipt_key()));
            break workload;
        }
        reports += reports / 4;
    };
    let stored_receipts = workload::receipts(&workload.events) as f64;
    let rss_before = proc_status_bytes("VmRSS:").unwrap_or(0);

    let projector = SledProjectorStore::open(&dir.join("projector"))?;
    let query = SledQueryStore::open(&dir.join("query"))?;
    // The same read model on fjall, beside it (`storage.engine = "fjall"`), timed on its own.
    let query_fjall = FjallQueryStore::open_with(&dir.join("query-fjall"), &Default::default())?;
    let mut fjall_time = Duration::ZERO;
    let mut next_offset: HashMap<i32, i64> = HashMap::new();
    let records: Vec<Record> = workload
        .events
        .iter()
        .map(|event| {
            let key = event.receipt_key().to_string().into_bytes();
            let partition = (key.iter().map(|b| *b as u32).sum::<u32>() % PARTITIONS as u32) as i32;
            let offset = next_offset.entry(partition).or_insert(0);
            *offset += 1;
            Record::detached(
                TOPIC,
                partition,
                *offset - 1,
                Some(key),
                Some(codec::encode(
                    &v1::Envelope::from(event),
                    Encoding::Protobuf,
                )),
                None,
            )
        })
        .collect();
    let input = records.len();
    let started = Instant::now();
    let mut records = records.into_iter();
    let (mut applied_updates, mut update_offset) = (0u64, 0i64);
    let mut query_time = Duration::ZERO;
    loop {
        let batch: Vec<Record> = records.by_ref().take(BATCH).collect();
        if batch.is_empty() {
            break;
        }
        let outcome = apply_batch(
            &projector,
            &batch,
            Timestamp::from_unix_millis(1_764_000_000_000),
        )?;
        projector.commit(&outcome.store)?;
        let query_started = Instant::now();
        for chunk in outcome.updates.chunks(BATCH) {
            update_offset += chunk.len() as i64;
            let offsets = [PartitionOffset {
                topic: "receipts.receipt-updates.v1".into(),
                partition: 0,
                next_offset: update_offset,
            }];
            applied_updates += query.apply(chunk, &offsets)?.applied;
        }
        query_time += query_started.elapsed();
        let fjall_started = Instant::now();
        for chunk in outcome.updates.chunks(BATCH) {
            query_fjall.apply(chunk, &[])?;
        }
        fjall_time += fjall_started.elapsed();
    }
    let elapsed = started.elapsed() - fjall_time;
    projector.flush()?;
    query.flush()?;
    query_fjall.flush()?;
    query_fjall.settle()?;
    let rss_after = proc_status_bytes("VmRSS:").unwrap_or(0);
    // What the keys and values take before sled's own layout.
    let projector_logical = projector.stored_bytes()? as f64;
    let query_logical = query.stored_bytes()? as f64;
    let projector_bytes = projector.size_on_disk()? as f64;
    let query_bytes = query.size_on_disk()? as f64;
    let fjall_bytes = query_fjall.size_on_disk()? as f64;
    Ok(Figures {
        metrics: vec![
            ("receipts stored", stored_receipts, "receipts"),
            ("input records", input as f64, "records"),
            (
                "receipt updates applied to the read model",
                applied_updates as f64,
                "updates",
            ),
            ("projector sled size on disk", projector_bytes, "bytes"),
            ("query sled size on disk", query_bytes, "bytes"),
            (
                "projector sled per receipt",
                projector_bytes / stored_receipts,
                "bytes",
            ),
            (
                "projector keys + values per receipt (before sled)",
                projector_logical / stored_receipts,
                "bytes",
            ),
            (
                "query sled per receipt",
                query_bytes / stored_receipts,
                "bytes",
            ),
            (
                "query keys + values per receipt (before sled)",
                query_logical / stored_receipts,
                "bytes",
            ),
            (
                "both databases per receipt",
                (projector_bytes + query_bytes) / stored_receipts,
                "bytes",
            ),
            (
                "process RSS with both databases open",
                rss_after as f64,
                "bytes",
            ),
            (
                "RSS growth while storing",
                rss_after.saturating_sub(rss_before) as f64,
                "bytes",
            ),
            (
                "RSS growth per receipt",
                rss_after.saturating_sub(rss_before) as f64 / stored_receipts,
                "bytes",
            ),
            (
                "apply + store rate, both stores, no Kafka",
                per_sec(input as u64, elapsed),
                "records/s",
            ),
            (
                "read model apply rate, no Kafka",
                per_sec(applied_updates, query_time),
                "updates/s",
            ),
            ("query on fjall, size on disk", fjall_bytes, "bytes"),
            (
                "query on fjall, per receipt",
                fjall_bytes / stored_receipts,
                "bytes",
            ),
            (
                "read model apply rate on fjall, no Kafka",
                per_sec(applied_updates, fjall_time),
                "updates/s",
            ),
        ],
        projector_per_receipt: projector_bytes / stored_receipts,
        query_per_receipt: query_bytes / stored_receipts,
        fjall_per_receipt: fjall_bytes / stored_receipts,
    })
}
