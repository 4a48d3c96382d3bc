//! Settling an attempt's outcome: every mark (settled, delivered version raised, next attempt
//! living on the retry topic) is written to the dispatcher changelog and acknowledged before it
//! is stored in sled, and only then does the attempt stop holding back its partition's
//! committed offset. A delivery that ended for good hands its receipt's lane to the next
//! version.
//!
//! Settlements are made in groups: whoever settles while no group is being written takes every
//! settlement queued meanwhile, writes their marks to the changelog in one send and stores them,
//! with the changelog positions they reach, in one sled batch. The others wait for their own
//! settlement to be done. So a burst of answers costs one changelog round trip and one sled
//! write, not one of each per attempt (a sled batch writes its log buffer out, whatever its
//! size).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use receipts_bus::{Landed, Outgoing};
use receipts_store::PartitionOffset;
use tokio::sync::oneshot;
use tracing::{error, warn};

use super::{Deliverer, lock};
use crate::job::DeliveryJob;
use crate::store::{Entry, SETTLED, delivered_entry, progress_entry};

/// How an attempt ended, for what it leaves behind.
#[derive(Debug, Clone, Copy)]
pub(super) enum Settlement {
    Delivered,
    /// The next attempt, this one, lives on the retry topic.
    Retrying(u32),
    /// Dead-lettered or dropped: nothing more to do.
    Done,
}

/// A settlement waiting for its group, and who waits for it.
#[derive(Debug)]
struct Queued {
    job: DeliveryJob,
    settlement: Settlement,
    done: oneshot::Sender<()>,
}

/// The settlements waiting for the next group, and the turn to write one.
#[derive(Debug, Default)]
pub(super) struct Settler {
    queue: Mutex<Vec<Queued>>,
    turn: tokio::sync::Mutex<()>,
}

impl Deliverer {
    /// Records how an attempt ended: in the changelog (acknowledged) first, then locally; then
    /// the attempt stops holding back its partition's committed offset. Returns once that is
    /// done, or once the outcome could not be written (the delivery stays pending).
    pub(super) async fn settle(self: &Arc<Self>, job: DeliveryJob, settlement: Settlement) {
        let (done, mut settled) = oneshot::channel();
        lock(&self.settler.queue).push(Queued {
            job,
            settlement,
            done,
        });
        // Turns are taken in order; by the time this one comes, an earlier group may have
        // taken this settlement along.
        let _turn = self.settler.turn.lock().await;
        if settled.try_recv().is_ok() {
            return;
        }
        let group = std::mem::take(&mut *lock(&self.settler.queue));
        self.settle_group(group).await;
    }

    async fn settle_group(self: &Arc<Self>, group: Vec<Queued>) {
        let cx = &self.context;
        let entries = self.marks(&group);
        let mut records = Vec::new();
        for (queued, marks) in group.iter().zip(&entries) {
            let Some(source) = &queued.job.source else {
                continue;
            };
            records.extend(marks.iter().map(|(key, value)| Outgoing {
                topic: cx.topics.dispatcher_changelog.clone(),
                partition: Some(source.partition),
                key: key.clone(),
                payload: Some(value.clone()),
                headers: Vec::new(),
            }));
        }
        let landed = match self.write_changelog(&records).await {
            Some(landed) => landed,
            None => {
                // Not settled: whoever reads their records next attempts them again.
                for queued in group {
                    cx.metrics.backlog.dec();
                    lock(&self.pending).remove(&(queued.job.token.clone(), queued.job.attempt));
                    let _ = queued.done.send(());
                }
                return;
            }
        };
        // The positions are stored in the same batch as the entries they pass: a position is
        // stored only with or after every entry before it (a send still unanswered holds every
        // position back), so a restore from it never skips an entry lost with a crash.
        let positions: Vec<PartitionOffset> = landed
            .into_iter()
            .map(|(partition, landed)| {
                let offsets: Vec<i64> = landed.iter().map(|l| l.offset).collect();
                PartitionOffset {
                    topic: cx.topics.dispatcher_changelog.clone(),
                    partition,
                    next_offset: cx.changelog.stored(partition, &offsets),
                }
            })
            .collect();
        let store = cx.store.clone();
        let entries: Vec<Entry> = entries.into_iter().flatten().collect();
        let written = tokio::task::spawn_blocking(move || store.write(&entries, &positions)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                error!(%error, "cannot store deliveries' outcomes; they are restored from the changelog")
            }
            Err(error) => error!(%error, "storing deliveries' outcomes failed"),
        }
        for queued in group {
            cx.metrics.backlog.dec();
            let job = &queued.job;
            if let Some(source) = &job.source {
                cx.unsettled.remove(source);
            }
            lock(&self.pending).remove(&(job.token.clone(), job.attempt));
            // Delivered or ended for good: the receipt's next version may go. A retry keeps the
            // lane until its own attempts end.
            if !matches!(queued.settlement, Settlement::Retrying(_))
                && let Some(next) = self.lanes.finish(job)
            {
                self.endpoint(&next.webhook_key).push(next);
            }
            let _ = queued.done.send(());
        }
    }

    /// The state entries each settlement of `group` leaves, in order. A delivered version only
    /// ever raises what was delivered to the webhook before, in the store or earlier in the
    /// group.
    fn marks(&self, group: &[Queued]) -> Vec<Vec<Entry>> {
        let store = &self.context.store;
        let mut newest: HashMap<(&str, &str), u64> = HashMap::new();
        group
            .iter()
            .map(|queued| {
                let job = &queued.job;
                match queued.settlement {
                    Settlement::Delivered => {
                        let key = (job.webhook_key.as_str(), job.receipt.sid.as_str());
                        let before = match newest.get(&key) {
                            Some(version) => *version,
                            None => store
                                .delivered_version(key.0, key.1)
                                .ok()
                                .flatten()
                                .unwrap_or(0),
                        };
                        let version = before.max(job.receipt.version);
                        newest.insert(key, version);
                        let delivered = delivered_entry(key.0, key.1, version);
                        // The delivered version alone says a first attempt is done; after a
                        // retry the attempt the state names is marked settled as well.
                        if job.attempt == 0 {
                            vec![delivered]
                        } else {
                            vec![progress_entry(&job.token, SETTLED), delivered]
                        }
                    }
                    Settlement::Retrying(attempt) => vec![progress_entry(&job.token, attempt)],
                    Settlement::Done => vec![progress_entry(&job.token, SETTLED)],
                }
            })
            .collect()
    }

    /// Writes `records` to the changelog, trying again while the failure is transient; where
    /// they landed, by changelog partition, or `None` if they could not be written.
    async fn write_changelog(&self, records: &[Outgoing]) -> Option<BTreeMap<i32, Vec<Landed>>> {
        let cx = &self.context;
        let mut partitions: BTreeMap<i32, Vec<Landed>> = records
            .iter()
            .filter_map(|record| record.partition)
            .map(|partition| (partition, Vec::new()))
            .collect();
        if partitions.is_empty() {
            return Some(partitions);
        }
        for partition in partitions.keys() {
            cx.changelog.sending(*partition);
        }
        let mut backoff = receipts_bus::errors::Backoff::default();
        let landed = loop {
            match cx.publisher.send_all(records).await {
                Ok(landed) => break landed,
                Err(error) if error.is_transient() && !self.shutdown.is_cancelled() => {
                    warn!(error = %receipts_bus::consume::error_chain(&error), "writing deliveries' outcomes to the changelog failed, trying again");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(error) => {
                    error!(error = %receipts_bus::consume::error_chain(&error), "cannot write deliveries' outcomes to the changelog");
                    for partition in partitions.keys() {
                        cx.changelog.abandoned(*partition);
                    }
                    return None;
                }
            }
        };
        for landed in landed {
            partitions.entry(landed.partition).or_default().push(landed);
        }
        for (partition, landed) in &partitions {
            cx.changelog.landed(*partition, landed);
        }
        Some(partitions)
    }
}
