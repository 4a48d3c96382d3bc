//! The intake loop: `receipt-updates` and the retry topic, read in one consumer group, become
//! pending deliveries in sled, stored in one atomic batch with the next offsets.
//!
//! A receipt update fires a webhook when the receipt's status or error code changed (a newer
//! snapshot with the same status and error code, e.g. a later provider timestamp or more
//! expected receipts, fires nothing) and its status is one Twilio names (`queued`, the REST
//! API's null, fires nothing). Snapshots not newer than the last one seen are duplicates of the
//! projector's re-publishing and are ignored. A retry record is stored as it is; it is attempted
//! when due, so a retry waiting for hours holds back nothing.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use receipts_bus::assignment::rebalance_from_stored;
use receipts_bus::errors::{Backoff, is_fatal};
use receipts_proto::codec::{self, Encoding};
use receipts_proto::v1;
use receipts_webhook::payload::status_word;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::configs::SharedDirectory;
use crate::deliver::Deliverer;
use crate::job::DeliveryJob;
use crate::metrics::DispatcherMetrics;
use crate::store::{DispatcherStore, IntakeBatch, SeenReceipt};
use crate::{DispatcherError, now_ms};

pub(crate) type IntakeConsumer = StreamConsumer<SeekToStored>;

/// On assignment, starts each partition at the offset stored in sled (the beginning when none
/// is stored): the group's committed offsets are only advisory.
pub(crate) struct SeekToStored {
    store: Arc<DispatcherStore>,
}

impl SeekToStored {
    pub(crate) fn new(store: Arc<DispatcherStore>) -> Self {
        SeekToStored { store }
    }
}

impl ClientContext for SeekToStored {}

impl ConsumerContext for SeekToStored {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        event: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        rebalance_from_stored(consumer, event, tpl, |topic, partition| {
            self.store.next_offset(topic, partition)
        });
    }
}

pub(crate) struct Intake {
    pub(crate) consumer: IntakeConsumer,
    pub(crate) store: Arc<DispatcherStore>,
    pub(crate) directory: SharedDirectory,
    pub(crate) deliverer: Arc<Deliverer>,
    pub(crate) metrics: DispatcherMetrics,
    pub(crate) updates_topic: String,
    pub(crate) retries_topic: String,
    pub(crate) max_records: usize,
}

impl Intake {
    pub(crate) async fn run(&self, shutdown: &CancellationToken) -> Result<(), DispatcherError> {
        let mut backoff = Backoff::default();
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                message = self.consumer.recv() => message,
            };
            let first = match first {
                Ok(m) => m.detach(),
                Err(error) if !is_fatal(&error) => {
                    let delay = backoff.next_delay();
                    warn!(%error, retry_in_ms = delay.as_millis() as u64, "consuming failed, retrying");
                    tokio::time::sleep(delay).await;
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            backoff.reset();
            let mut records = vec![first];
            while records.len() < self.max_records {
                match tokio::time::timeout(Duration::ZERO, self.consumer.recv()).await {
                    Ok(Ok(message)) => records.push(message.detach()),
                    Ok(Err(error)) => {
                        warn!(%error, "consuming failed");
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.process(records).await?;
        }
    }

    async fn process(&self, records: Vec<OwnedMessage>) -> Result<(), DispatcherError> {
        let batch = self.batch(&records)?;
        let store = self.store.clone();
        let (batch, ()) =
            tokio::task::spawn_blocking(move || store.commit(&batch).map(|()| (batch, ())))
                .await??;
        let mut list = TopicPartitionList::new();
        for (topic, partition, next) in &batch.offsets {
            let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*next));
        }
        self.deliverer.enqueue(batch.jobs);
        if list.count() > 0
            && let Err(error) = self.consumer.commit(&list, CommitMode::Async)
        {
            debug!(%error, "advisory offset commit failed");
        }
        Ok(())
    }

    fn batch(&self, records: &[OwnedMessage]) -> Result<IntakeBatch, DispatcherError> {
        let mut seen: HashMap<String, SeenReceipt> = HashMap::new();
        let mut offsets: HashMap<(String, i32), i64> = HashMap::new();
        let mut jobs = Vec::new();
        let now = now_ms();
        for record in records {
            let next = offsets
                .entry((record.topic().to_owned(), record.partition()))
                .or_default();
            *next = (*next).max(record.offset() + 1);
            if record.topic() == self.retries_topic {
                match record.payload().map(DeliveryJob::from_json) {
                    Some(Ok(job)) => jobs.push(job),
                    _ => {
                        warn!(offset = record.offset(), "undecodable retry record skipped");
                        self.metrics.update("undecodable");
                    }
                }
                continue;
            }
            if record.topic() != self.updates_topic {
                continue;
            }
            let Some(update) = decode_update(record) else {
                warn!(
                    partition = record.partition(),
                    offset = record.offset(),
                    "undecodable receipt update skipped"
                );
                self.metrics.update("undecodable");
                continue;
            };
            let Some(receipt) = update.receipt else {
                self.metrics.update("undecodable");
                continue;
            };
            let last = match seen.get(&receipt.sid) {
                Some(last) => Some(*last),
                None => self.store.seen(&receipt.sid)?,
            };
            if last.is_some_and(|l| l.version >= receipt.version) {
                self.metrics.update("duplicate");
                continue;
            }
            let changed = match last {
                Some(l) => l.status != receipt.status || l.error_code != receipt.error_code,
                None => update.previous_status != receipt.status,
            };
            seen.insert(
                receipt.sid.clone(),
                SeenReceipt {
                    version: receipt.version,
                    status: receipt.status,
                    error_code: receipt.error_code,
                },
            );
            if !changed || status_word(receipt.status()).is_none() {
                self.metrics.update("unchanged");
                continue;
            }
            self.metrics.update("fired");
            let directory = self
                .directory
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            for (key, config) in directory.targets(&receipt) {
                jobs.push(DeliveryJob::new(
                    receipt.clone(),
                    key.to_owned(),
                    config.post_webhook_url.clone(),
                    now,
                ));
            }
        }
        Ok(IntakeBatch {
            seen: seen.into_iter().collect(),
            jobs,
            offsets: offsets
                .into_iter()
                .map(|((topic, partition), next)| (topic, partition, next))
                .collect(),
        })
    }
}

fn decode_update(record: &OwnedMessage) -> Option<v1::ReceiptUpdated> {
    let encoding = Encoding::from_content_type(receipts_bus::record::content_type(record)).ok()?;
    codec::decode(record.payload()?, encoding).ok()
}
