//! The intake: `receipt-updates` and the retry topic, read in one consumer group on the consume
//! engine, become attempts in the deliverer's queue.
//!
//! A receipt update is decoded into the domain's [`ReceiptChange`](receipts_domain::ReceiptChange)
//! and fires a webhook when it is news ([`is_news`](receipts_domain::ReceiptChange::is_news): its
//! status or error code moved) and its status is one Twilio names (`queued`, the REST API's
//! null, fires nothing). The decision needs no state, so a record
//! read again (after a crash, or by a partition's new owner) decides the same. What was already
//! done is in the dispatcher's state, restored from its changelog when a partition is assigned:
//! a delivery that is settled, or whose next attempt already lives on the retry topic, is not
//! attempted again; a version older than one already delivered to that webhook is stale.
//!
//! The two topics are co-partitioned (both keyed by conversation), so the group assigns
//! partition `p` of both to one instance, and changelog partition `p` holds their state.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, PoisonError};

use receipts_bus::changelog::{RestoreError, restore_partition};
use receipts_bus::{Commit, Handler, KafkaSettings, Partition, Record, TraceCarrier, Transient};
use receipts_runtime::clock::SharedClock;
use receipts_store::PartitionOffset;
use receipts_webhook::payload::status_word;
use tracing::{debug, warn};

use crate::configs::SharedDirectory;
use crate::deliver::Deliverer;
use crate::job::{DeliveryJob, Source};
use crate::metrics::DispatcherMetrics;
use crate::progress::{ChangelogProgress, Unsettled};
use crate::store::{DispatcherStore, SETTLED, StoreError};

/// Why the intake cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("store")]
    Store(#[from] StoreError),
    #[error("restoring dispatcher state")]
    Restore(#[from] RestoreError<StoreError>),
    #[error("kafka setup")]
    Bus(#[from] receipts_bus::BusError),
    #[error("a blocking task failed")]
    Join(#[from] tokio::task::JoinError),
}

impl Transient for IntakeError {
    fn is_transient(&self) -> bool {
        match self {
            IntakeError::Restore(e) => e.is_transient(),
            IntakeError::Bus(e) => e.is_transient(),
            IntakeError::Store(_) | IntakeError::Join(_) => false,
        }
    }
}

pub(crate) struct Intake {
    pub(crate) kafka: KafkaSettings,
    pub(crate) store: Arc<DispatcherStore>,
    pub(crate) directory: SharedDirectory,
    pub(crate) deliverer: Arc<Deliverer>,
    pub(crate) unsettled: Arc<Unsettled>,
    pub(crate) changelog: Arc<ChangelogProgress>,
    pub(crate) metrics: DispatcherMetrics,
    pub(crate) clock: SharedClock,
    pub(crate) updates_topic: String,
    pub(crate) retries_topic: String,
    pub(crate) changelog_topic: String,
}

impl Handler for Intake {
    type Error = IntakeError;

    /// Restores the changelog partition of every newly assigned partition number.
    async fn assigned(&mut self, partitions: &[Partition]) -> Result<(), IntakeError> {
        // The input exists now (it may not have at start): so must its changelog.
        receipts_bus::topics::ensure_changelog(
            &self.kafka,
            &self.updates_topic,
            &self.changelog_topic,
        )
        .await?;
        let numbers: HashSet<i32> = partitions.iter().map(|p| p.partition).collect();
        for partition in numbers {
            let (kafka, store, topic) = (
                self.kafka.clone(),
                self.store.clone(),
                self.changelog_topic.clone(),
            );
            let from = store.changelog_position(&topic, partition)?;
            let restored = tokio::task::spawn_blocking(move || {
                restore_partition(&kafka, &topic, partition, from, |records, next| {
                    let entries: Vec<(Vec<u8>, Vec<u8>)> = records
                        .iter()
                        .filter_map(|r| Some((r.key()?.to_vec(), r.payload()?.to_vec())))
                        .collect();
                    store.write(
                        &entries,
                        &[PartitionOffset {
                            topic: topic.clone(),
                            partition,
                            next_offset: next,
                        }],
                    )
                })
            })
            .await??;
            self.changelog.restored(partition, restored.next_offset);
            tracing::info!(
                partition,
                from = ?from,
                records = restored.records,
                to = restored.next_offset,
                "dispatcher state restored from the changelog"
            );
        }
        Ok(())
    }

    fn revoked(&mut self, partitions: &[Partition]) {
        self.deliverer.drop_partitions(partitions);
    }

    async fn process(&mut self, records: Arc<[Record]>) -> Result<Commit, IntakeError> {
        let now = self.clock.now().unix_millis();
        let mut jobs = Vec::new();
        let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut tokens: HashSet<(String, u32)> = HashSet::new();
        for record in records.iter() {
            let end = ends
                .entry((record.topic().to_owned(), record.partition()))
                .or_insert(0);
            *end = (*end).max(record.offset() + 1);
            let source = Source {
                topic: record.topic().to_owned(),
                partition: record.partition(),
                offset: record.offset(),
            };
            for mut job in self.jobs_of(record, now) {
                if !tokens.insert((job.token.clone(), job.attempt))
                    || self.deliverer.is_queued(&job)
                {
                    // The projector published this version again while it is still pending.
                    self.metrics.update("duplicate");
                    continue;
                }
                if !self.still_to_do(&job)? {
                    continue;
                }
                job.source = Some(source.clone());
                job.trace = TraceCarrier::of_record(record);
                self.unsettled.add(&source);
                jobs.push(job);
            }
        }
        self.deliverer.enqueue(jobs);
        // Committed offsets never pass a record with an unsettled delivery.
        let commit = ends
            .into_iter()
            .map(|((topic, partition), end)| {
                let next = self
                    .unsettled
                    .oldest(&topic, partition)
                    .map_or(end, |oldest| oldest.min(end));
                (Partition::new(&topic, partition), next)
            })
            .collect();
        Ok(Commit::Offsets(commit))
    }
}

impl Intake {
    /// The attempts a record asks for, before looking at what was done already.
    fn jobs_of(&self, record: &Record, now: i64) -> Vec<DeliveryJob> {
        if record.topic() == self.retries_topic {
            return match record.payload().map(DeliveryJob::from_json) {
                Some(Ok(job)) => vec![job],
                _ => {
                    warn!(origin = %record.origin(), "undecodable retry record skipped");
                    self.metrics.update("undecodable");
                    Vec::new()
                }
            };
        }
        if record.topic() != self.updates_topic {
            return Vec::new();
        }
        let change = match receipts_bus::record::decode_receipt_change(record) {
            Ok(change) => change,
            Err(error) => {
                warn!(origin = %record.origin(), %error, "undecodable receipt update skipped");
                self.metrics.update("undecodable");
                return Vec::new();
            }
        };
        if !change.is_news() || status_word(change.receipt.status()).is_none() {
            self.metrics.update("unchanged");
            return Vec::new();
        }
        self.metrics.update("fired");
        let directory = self
            .directory
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        directory
            .targets(&change.receipt)
            .into_iter()
            .map(|(key, config)| {
                DeliveryJob::new(
                    change.receipt.clone(),
                    key.to_owned(),
                    config.post_webhook_url.clone(),
                    now,
                )
            })
            .collect()
    }

    /// Whether `job` still needs attempting, by what the state says was done.
    fn still_to_do(&self, job: &DeliveryJob) -> Result<bool, StoreError> {
        if self
            .store
            .delivered_version(&job.webhook_key, job.receipt.sid.as_str())?
            .is_some_and(|delivered| delivered >= job.receipt.version)
        {
            debug!(token = %job.token, "already delivered");
            self.metrics.update("duplicate");
            return Ok(false);
        }
        // A replay from the dead-letter topic asks for a settled delivery again, on purpose.
        if job.replayed_from.is_some() {
            return Ok(true);
        }
        Ok(match self.store.progress(&job.token)? {
            None => true,
            Some(SETTLED) => {
                self.metrics.update("duplicate");
                false
            }
            // The attempt living on the retry topic is the one to make; older copies are done.
            Some(live) => job.attempt >= live,
        })
    }
}
