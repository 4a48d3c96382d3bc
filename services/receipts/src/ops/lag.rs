//! `receipts lag`: how far each consumer group is behind, per topic and partition: the group's
//! committed offset against the partition's end. It reads the offsets a group committed without
//! joining it, so it disturbs no assignment.
//!
//! The query service reads `receipt-updates` without a consumer group (each replica keeps its
//! position with its read model); its lag is the `receipts_consumer_lag` metric of each replica.

use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use receipts_bus::KafkaSettings;
use serde::Serialize;

use super::{OpsConfig, json, table};

#[derive(Debug, Clone, clap::Args)]
pub struct LagArgs {
    /// The projector's consumer group (`group_id` of its configuration).
    #[arg(long, default_value = "receipts-projector")]
    pub projector_group: String,
    /// The dispatcher's consumer group (`group_id` of its configuration).
    #[arg(long, default_value = "receipts-dispatcher")]
    pub dispatcher_group: String,
}

/// One partition of one group's input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionLag {
    pub service: String,
    pub group: String,
    pub topic: String,
    pub partition: i32,
    /// The next offset the group will read; `None` when it committed nothing there yet.
    pub committed: Option<i64>,
    /// The partition's end (high watermark).
    pub end: i64,
    /// Records between the committed offset (or, with none, the oldest record kept) and the end.
    pub lag: i64,
}

/// The lag of `group` on every partition of `topic`. Blocking.
pub fn group_lag(
    kafka: &KafkaSettings,
    service: &str,
    group: &str,
    topic: &str,
) -> anyhow::Result<Vec<PartitionLag>> {
    let marks = receipts_bus::changelog::watermarks(kafka, topic)
        .with_context(|| format!("reading the watermarks of {topic}"))?;
    if marks.is_empty() {
        return Ok(Vec::new());
    }
    let consumer: BaseConsumer = kafka
        .consumer_config(&receipts_bus::settings::client_id("receipts-lag"), group)
        .create()
        .context("creating a Kafka client")?;
    let mut wanted = TopicPartitionList::new();
    for partition in marks.keys() {
        wanted.add_partition(topic, *partition);
    }
    let committed = consumer
        .committed_offsets(wanted, Duration::from_secs(30))
        .with_context(|| format!("reading the offsets {group} committed on {topic}"))?;
    let mut lags = Vec::with_capacity(marks.len());
    for (partition, (low, high)) in marks {
        let offset = committed
            .find_partition(topic, partition)
            .and_then(|p| match p.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        lags.push(PartitionLag {
            service: service.to_owned(),
            group: group.to_owned(),
            topic: topic.to_owned(),
            partition,
            committed: offset,
            end: high,
            lag: (high - offset.unwrap_or(low).max(low)).max(0),
        });
    }
    Ok(lags)
}

pub async fn run(config: &OpsConfig, args: LagArgs, as_json: bool) -> anyhow::Result<String> {
    let topics = &config.topics;
    let inputs = [
        (
            "projector",
            args.projector_group.clone(),
            topics.delivery_events.clone(),
        ),
        (
            "dispatcher",
            args.dispatcher_group.clone(),
            topics.receipt_updates.clone(),
        ),
        (
            "dispatcher",
            args.dispatcher_group,
            topics.webhook_retries.clone(),
        ),
    ];
    let kafka = config.kafka.clone();
    let lags = tokio::task::spawn_blocking(move || {
        let mut all = Vec::new();
        for (service, group, topic) in &inputs {
            all.extend(group_lag(&kafka, service, group, topic)?);
        }
        anyhow::Ok(all)
    })
    .await
    .context("reading consumer lag")??;
    if as_json {
        return Ok(json(&lags));
    }
    let rows: Vec<Vec<String>> = lags
        .iter()
        .map(|l| {
            vec![
                l.service.clone(),
                l.group.clone(),
                l.topic.clone(),
                l.partition.to_string(),
                l.committed
                    .map_or_else(|| "-".to_owned(), |o| o.to_string()),
                l.end.to_string(),
                l.lag.to_string(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "SERVICE",
            "GROUP",
            "TOPIC",
            "PARTITION",
            "COMMITTED",
            "END",
            "LAG",
        ],
        &rows,
    );
    let total: i64 = lags.iter().map(|l| l.lag).sum();
    out.push_str(&format!("{total} records behind in all\n"));
    Ok(out)
}
