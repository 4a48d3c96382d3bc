//! Changelog topics: the durable copy of a stateful consumer's state (DESIGN §4a).
//!
//! A stateful consumer writes every state change of a batch to a compacted changelog topic with
//! as many partitions as its input, the change of input partition `p` to changelog partition `p`,
//! and awaits the acknowledgements before it stores the batch locally and commits the group
//! offsets. Local state is then only a cache: an instance assigned a partition whose state it
//! does not hold, or holds older than the changelog, reads the changelog partition from where
//! its copy ends (from the beginning when it has none, or when the log no longer reaches back
//! that far) to the end, and only then processes the partition's input.
//!
//! Compaction keeps the latest record of every key, and never removes the records after a given
//! offset that are the latest of their key, so reading from any earlier position to the end
//! yields every key changed since that position, with its latest value.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::info;

use crate::record::Record;
use crate::{BusError, KafkaSettings};

/// How many changelog records are handed to `apply` at once.
const RESTORE_CHUNK: usize = 5_000;

/// Restoring a partition stopped.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError<E: std::error::Error + 'static> {
    #[error("reading changelog {topic}/{partition}")]
    Kafka {
        topic: String,
        partition: i32,
        #[source]
        source: KafkaError,
    },
    #[error("reading changelog {topic}/{partition}")]
    Setup {
        topic: String,
        partition: i32,
        #[source]
        source: BusError,
    },
    #[error("applying changelog {topic}/{partition}")]
    Apply {
        topic: String,
        partition: i32,
        #[source]
        source: E,
    },
}

impl<E: std::error::Error + 'static> RestoreError<E> {
    /// Whether trying again later can succeed: the broker was away or slow.
    pub fn is_transient(&self) -> bool {
        match self {
            RestoreError::Kafka { source, .. } => !crate::errors::is_fatal(source),
            RestoreError::Setup { .. } => true,
            RestoreError::Apply { .. } => false,
        }
    }
}

/// What a restore read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub records: u64,
    /// The changelog position the local copy now reflects (the next offset to read).
    pub next_offset: i64,
}

/// Reads changelog `topic`/`partition` from `from` (the next offset the local copy has not
/// seen; `None`: no copy) to its current end, handing records to `apply` in chunks with the
/// next offset each chunk reaches. Blocking: run it on a blocking thread.
pub fn restore_partition<E, F>(
    settings: &KafkaSettings,
    topic: &str,
    partition: i32,
    from: Option<i64>,
    mut apply: F,
) -> Result<Restored, RestoreError<E>>
where
    E: std::error::Error + 'static,
    F: FnMut(&[Record], i64) -> Result<(), E>,
{
    let kafka = |source| RestoreError::Kafka {
        topic: topic.to_owned(),
        partition,
        source,
    };
    let client_id = format!("receipts-restore-{}", std::process::id());
    let mut config = settings.consumer_config(&client_id, &client_id);
    config.set("auto.offset.reset", "error");
    config.set("isolation.level", "read_uncommitted");
    let consumer: BaseConsumer = config.create().map_err(kafka)?;
    let (low, high) = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(30))
        .map_err(kafka)?;
    let start = match from {
        Some(next) if next >= low => next,
        _ => low,
    };
    if start >= high {
        return Ok(Restored {
            records: 0,
            next_offset: from.unwrap_or(high).max(high),
        });
    }
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Offset(start))
        .map_err(kafka)?;
    consumer.assign(&assignment).map_err(kafka)?;

    let started = Instant::now();
    let mut chunk: Vec<Record> = Vec::with_capacity(RESTORE_CHUNK);
    let mut records = 0u64;
    let mut next = start;
    let mut flush = |chunk: &mut Vec<Record>, next: i64| -> Result<(), RestoreError<E>> {
        if chunk.is_empty() {
            return Ok(());
        }
        apply(chunk, next).map_err(|source| RestoreError::Apply {
            topic: topic.to_owned(),
            partition,
            source,
        })?;
        chunk.clear();
        Ok(())
    };
    // Offsets of a compacted log have gaps; the end is reached once the position passes the
    // high watermark read at the start.
    let mut idle_polls = 0u32;
    while next < high {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(message)) => {
                idle_polls = 0;
                next = message.offset() + 1;
                records += 1;
                chunk.push(Record::new(message.detach()));
                if chunk.len() >= RESTORE_CHUNK {
                    flush(&mut chunk, next)?;
                }
            }
            Some(Err(e)) if crate::errors::is_fatal(&e) => return Err(kafka(e)),
            Some(Err(_)) => {}
            None => {
                idle_polls += 1;
                // Nothing more arrives although the high watermark was not reached: the last
                // records were control records or compacted away. The position says where
                // the log really ends.
                if idle_polls >= 4
                    && let Ok(position) = consumer.position()
                    && let Some(element) = position.find_partition(topic, partition)
                    && let Offset::Offset(at) = element.offset()
                    && at >= high
                {
                    next = at;
                }
                if idle_polls >= 240 {
                    return Err(kafka(KafkaError::MessageConsumption(
                        rdkafka::error::RDKafkaErrorCode::RequestTimedOut,
                    )));
                }
            }
        }
    }
    flush(&mut chunk, next)?;
    info!(
        topic,
        partition,
        from = start,
        to = next,
        records,
        millis = started.elapsed().as_millis() as u64,
        "changelog partition restored"
    );
    Ok(Restored {
        records,
        next_offset: next,
    })
}

/// The number of partitions of `topic`, or `None` when it does not exist.
pub fn partition_count(settings: &KafkaSettings, topic: &str) -> Result<Option<usize>, BusError> {
    let consumer: BaseConsumer = settings
        .client_config("receipts-metadata")
        .create()
        .map_err(BusError::Kafka)?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .filter(|n| *n > 0))
}

/// The start and end (low and high watermark) of every partition of `topic`; empty when it
/// does not exist.
pub fn watermarks(
    settings: &KafkaSettings,
    topic: &str,
) -> Result<std::collections::BTreeMap<i32, (i64, i64)>, BusError> {
    let consumer: BaseConsumer = settings
        .client_config("receipts-metadata")
        .create()
        .map_err(BusError::Kafka)?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let mut marks = std::collections::BTreeMap::new();
    for found in metadata.topics().iter().filter(|t| t.name() == topic) {
        for partition in found.partitions() {
            let range =
                consumer.fetch_watermarks(topic, partition.id(), Duration::from_secs(30))?;
            marks.insert(partition.id(), range);
        }
    }
    Ok(marks)
}

/// The end (high watermark) of every partition of `topic`; empty when it does not exist.
pub fn partition_ends(
    settings: &KafkaSettings,
    topic: &str,
) -> Result<std::collections::BTreeMap<i32, i64>, BusError> {
    Ok(watermarks(settings, topic)?
        .into_iter()
        .map(|(partition, (_, high))| (partition, high))
        .collect())
}
