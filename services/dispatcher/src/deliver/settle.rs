//! Settling an attempt's outcome: every mark (settled, delivered version raised, next attempt
//! living on the retry topic) is written to the dispatcher changelog and acknowledged before it
//! is stored in sled, and only then does the attempt stop holding back its partition's
//! committed offset. A delivery that ended for good hands its receipt's lane to the next
//! version.

use std::sync::Arc;

use receipts_bus::Outgoing;
use receipts_store::PartitionOffset;
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

impl Deliverer {
    /// Records how an attempt ended: in the changelog (acknowledged) first, then locally; then
    /// the attempt stops holding back its partition's committed offset.
    pub(super) async fn settle(self: &Arc<Self>, job: DeliveryJob, settlement: Settlement) {
        let cx = &self.context;
        let mut entries: Vec<Entry> = Vec::with_capacity(2);
        match settlement {
            Settlement::Delivered => {
                entries.push(progress_entry(&job.token, SETTLED));
                let newest = cx
                    .store
                    .delivered_version(&job.webhook_key, job.receipt.sid.as_str())
                    .ok()
                    .flatten()
                    .unwrap_or(0)
                    .max(job.receipt.version);
                entries.push(delivered_entry(
                    &job.webhook_key,
                    job.receipt.sid.as_str(),
                    newest,
                ));
            }
            Settlement::Retrying(attempt) => entries.push(progress_entry(&job.token, attempt)),
            Settlement::Done => entries.push(progress_entry(&job.token, SETTLED)),
        }
        let mut positions = Vec::new();
        let mut landed_at: Option<(i32, Vec<i64>)> = None;
        if let Some(source) = &job.source {
            let records: Vec<Outgoing> = entries
                .iter()
                .map(|(key, value)| Outgoing {
                    topic: cx.topics.dispatcher_changelog.clone(),
                    partition: Some(source.partition),
                    key: key.clone(),
                    payload: Some(value.clone()),
                    headers: Vec::new(),
                })
                .collect();
            cx.changelog.sending(source.partition);
            let mut backoff = receipts_bus::errors::Backoff::default();
            let landed = loop {
                match cx.publisher.send_all(&records).await {
                    Ok(landed) => break landed,
                    Err(error) if error.is_transient() && !self.shutdown.is_cancelled() => {
                        warn!(error = %receipts_bus::consume::error_chain(&error), "writing a delivery's outcome to the changelog failed, trying again");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                    Err(error) => {
                        // Not settled: whoever reads its record next attempts it again.
                        error!(error = %receipts_bus::consume::error_chain(&error), "cannot write a delivery's outcome to the changelog");
                        cx.changelog.abandoned(source.partition);
                        cx.metrics.backlog.dec();
                        lock(&self.pending).remove(&(job.token.clone(), job.attempt));
                        return;
                    }
                }
            };
            landed_at = Some((source.partition, landed.iter().map(|l| l.offset).collect()));
            cx.changelog.landed(source.partition, &landed);
        }
        // The entries first; the changelog position they reach only afterwards, in a write of
        // its own: a position is stored only once every entry before it is (settlements finish
        // in any order), so a restore from it never skips an entry lost with a crash.
        let store = cx.store.clone();
        let written = tokio::task::spawn_blocking(move || store.write(&entries, &[])).await;
        cx.metrics.backlog.dec();
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                error!(%error, "cannot store a delivery's outcome; it is restored from the changelog")
            }
            Err(error) => error!(%error, "storing a delivery's outcome failed"),
        }
        if let Some((partition, offsets)) = landed_at {
            let position = cx.changelog.stored(partition, &offsets);
            positions.push(PartitionOffset {
                topic: cx.topics.dispatcher_changelog.clone(),
                partition,
                next_offset: position,
            });
            let store = cx.store.clone();
            if let Ok(Err(error)) =
                tokio::task::spawn_blocking(move || store.write(&[], &positions)).await
            {
                warn!(%error, "cannot store the changelog position; the next restore reads more");
            }
        }
        if let Some(source) = &job.source {
            cx.unsettled.remove(source);
        }
        lock(&self.pending).remove(&(job.token.clone(), job.attempt));
        // Delivered or ended for good: the receipt's next version may go. A retry keeps the
        // lane until its own attempts end.
        if !matches!(settlement, Settlement::Retrying(_))
            && let Some(next) = self.lanes.finish(&job)
        {
            self.endpoint(&next.webhook_key).push(next);
        }
    }
}
