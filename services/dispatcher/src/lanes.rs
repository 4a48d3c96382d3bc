//! Per-receipt order without head-of-line blocking.
//!
//! Each (webhook, receipt) pair is a *lane*: at most one of its deliveries is in progress at a
//! time — in flight, or waiting on the retry topic for its next attempt — and the others wait
//! in the lane, oldest version first. When the delivery in progress ends (delivered,
//! dead-lettered or dropped) the next version takes the lane. So the versions of one receipt
//! reach an endpoint in version order, while every other receipt's lane goes on: a receipt
//! waiting for its retry holds back only itself.
//!
//! Lanes live in memory. A version that waited in a lane is still unsettled, so its source
//! partition's committed offset stays before it: after a crash or a partition move its record is
//! read again and it queues up anew. Which of two such versions is read back first is then up to
//! the order of the topics; a version older than one already delivered is dropped as stale, so a
//! subscriber never sees an older version after a newer one.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use receipts_domain::ReceiptSid;

use crate::job::{DeliveryJob, Source};

/// (webhook key, receipt sid).
type LaneKey = (String, ReceiptSid);

#[derive(Debug)]
struct Lane {
    /// The idempotency token of the delivery in progress, and the record its current attempt
    /// was read from.
    owner: String,
    owner_source: Option<Source>,
    /// Waiting deliveries by receipt version.
    waiting: BTreeMap<u64, DeliveryJob>,
}

#[derive(Debug, Default)]
pub(crate) struct Lanes {
    lanes: Mutex<HashMap<LaneKey, Lane>>,
}

/// What [`Lanes::forget`] took out of the lanes.
#[derive(Debug, Default)]
pub(crate) struct Forgotten {
    /// Waiting deliveries read from revoked partitions.
    pub(crate) dropped: Vec<DeliveryJob>,
    /// Waiting deliveries of other partitions whose lane's delivery in progress was revoked:
    /// they queue up again.
    pub(crate) released: Vec<DeliveryJob>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn key(job: &DeliveryJob) -> LaneKey {
    (job.webhook_key.clone(), job.receipt.sid.clone())
}

impl Lanes {
    /// A delivery that is due: returned to be attempted now when its lane is free or already
    /// its own (a retry of the delivery in progress); kept waiting otherwise.
    pub(crate) fn admit(&self, job: DeliveryJob) -> Option<DeliveryJob> {
        let mut lanes = lock(&self.lanes);
        match lanes.get_mut(&key(&job)) {
            None => {
                lanes.insert(
                    key(&job),
                    Lane {
                        owner: job.token.clone(),
                        owner_source: job.source.clone(),
                        waiting: BTreeMap::new(),
                    },
                );
                Some(job)
            }
            Some(lane) if lane.owner == job.token => {
                lane.owner_source = job.source.clone();
                Some(job)
            }
            Some(lane) => {
                // A copy of a waiting version (its record read twice) keeps the later attempt.
                lane.waiting.insert(job.receipt.version, job);
                None
            }
        }
    }

    /// The delivery `job` ended for good: the next waiting version of its receipt, if any, now
    /// owns the lane and is returned to be attempted.
    pub(crate) fn finish(&self, job: &DeliveryJob) -> Option<DeliveryJob> {
        let mut lanes = lock(&self.lanes);
        let lane_key = key(job);
        let lane = lanes.get_mut(&lane_key)?;
        if lane.owner != job.token {
            return None;
        }
        match lane.waiting.pop_first() {
            Some((_, next)) => {
                lane.owner = next.token.clone();
                lane.owner_source = next.source.clone();
                Some(next)
            }
            None => {
                lanes.remove(&lane_key);
                None
            }
        }
    }

    /// Takes out what was read from partitions taken over by another instance: waiting
    /// deliveries of those partitions are dropped, and a lane whose delivery in progress came
    /// from one is closed (its new owner orders that receipt from now on).
    pub(crate) fn forget(&self, revoked: impl Fn(&Source) -> bool) -> Forgotten {
        let mut forgotten = Forgotten::default();
        let is_revoked = |job: &DeliveryJob| job.source.as_ref().is_some_and(&revoked);
        lock(&self.lanes).retain(|_, lane| {
            let (dropped, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut lane.waiting)
                .into_values()
                .partition(is_revoked);
            forgotten.dropped.extend(dropped);
            if lane.owner_source.as_ref().is_some_and(&revoked) {
                forgotten.released.extend(kept);
                return false;
            }
            lane.waiting = kept.into_iter().map(|j| (j.receipt.version, j)).collect();
            true
        });
        forgotten
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(receipt: &str, version: u64) -> DeliveryJob {
        crate::job::tests::job(receipt, version, 0)
    }

    #[test]
    fn one_version_at_a_time_in_version_order() {
        let lanes = Lanes::default();
        let v1 = lanes.admit(job("DY1", 1)).expect("a free lane");
        assert!(lanes.admit(job("DY1", 3)).is_none(), "waits behind v1");
        assert!(lanes.admit(job("DY1", 2)).is_none(), "waits behind v1");
        // Another receipt is not held back.
        assert!(lanes.admit(job("DY2", 1)).is_some());
        // A retry of the delivery in progress goes through its own lane.
        let mut retry = v1.clone();
        retry.attempt = 1;
        assert!(lanes.admit(retry).is_some());
        let v2 = lanes.finish(&v1).expect("v2 is next");
        assert_eq!(v2.receipt.version, 2);
        // Finishing a delivery that does not own the lane changes nothing.
        assert!(lanes.finish(&v1).is_none());
        let v3 = lanes.finish(&v2).expect("v3 is next");
        assert_eq!(v3.receipt.version, 3);
        assert!(lanes.finish(&v3).is_none());
        // The lane is free again.
        assert!(lanes.admit(job("DY1", 4)).is_some());
    }

    #[test]
    fn revoked_lanes_hand_back_what_waited() {
        let from = |partition: i32, mut job: DeliveryJob| {
            job.source = Some(Source {
                topic: "updates".into(),
                partition,
                offset: 0,
            });
            job
        };
        let lanes = Lanes::default();
        // DY1's delivery in progress came from partition 0, its waiting v2 from partition 1.
        lanes.admit(from(0, job("DY1", 1))).unwrap();
        assert!(lanes.admit(from(1, job("DY1", 2))).is_none());
        // DY2's owner stays, its waiting v2 came from partition 0.
        lanes.admit(from(1, job("DY2", 1))).unwrap();
        assert!(lanes.admit(from(0, job("DY2", 2))).is_none());
        let forgotten = lanes.forget(|s| s.partition == 0);
        let versions = |jobs: &[DeliveryJob]| -> Vec<(ReceiptSid, u64)> {
            jobs.iter()
                .map(|j| (j.receipt.sid.clone(), j.receipt.version))
                .collect()
        };
        assert_eq!(
            versions(&forgotten.dropped),
            [(ReceiptSid::derive(&["DY2"]), 2)]
        );
        assert_eq!(
            versions(&forgotten.released),
            [(ReceiptSid::derive(&["DY1"]), 2)]
        );
        assert!(lanes.admit(job("DY1", 3)).is_some(), "DY1's lane is free");
        assert!(lanes.admit(job("DY2", 3)).is_none(), "DY2's v1 still owns");
    }
}
