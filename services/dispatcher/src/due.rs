//! The due-time queue of pending attempts, bounded in memory.
//!
//! The earliest `in_memory` attempts (by due time) are held in memory; the later ones are paged
//! out to a sled tree of their own and paged back in as the earlier ones leave, so a backlog of
//! any size (an endpoint down for a day) costs disk, not memory. Every paged-out attempt is due
//! no earlier than every attempt in memory, so the head of the queue is always in memory.
//!
//! The paged-out copies are a spill area, not state: the tree is emptied when the dispatcher
//! starts, since every pending attempt is read again from its topic then (committed offsets never
//! pass an unsettled delivery). A write to the spill area that fails keeps the attempt in memory.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::job::{DeliveryJob, Source};

/// Due time, then the attempt's own key: the queue's order.
type DueKey = (i64, Vec<u8>);

/// A paged-out attempt: the job and where it was read from (which its JSON leaves out).
#[derive(Serialize, Deserialize)]
struct Paged {
    job: DeliveryJob,
    source: Option<Source>,
}

fn key_of(job: &DeliveryJob) -> DueKey {
    (job.due_at_ms, job.pending_key())
}

/// The sled key of a due key: the time with its sign bit flipped, big-endian, so byte order is
/// time order, then the attempt's key.
fn encode((at, key): &DueKey) -> Vec<u8> {
    let mut bytes = ((*at as u64) ^ (1 << 63)).to_be_bytes().to_vec();
    bytes.extend_from_slice(key);
    bytes
}

#[derive(Debug)]
pub(crate) struct DueQueue {
    memory: BTreeMap<DueKey, DeliveryJob>,
    spill: sled::Tree,
    paged_out: usize,
    in_memory: usize,
}

impl DueQueue {
    /// A queue holding at most `in_memory` attempts in memory, paging the rest to `spill`
    /// (emptied first).
    pub(crate) fn new(spill: sled::Tree, in_memory: usize) -> Result<Self, sled::Error> {
        spill.clear()?;
        Ok(DueQueue {
            memory: BTreeMap::new(),
            spill,
            paged_out: 0,
            in_memory: in_memory.max(1),
        })
    }

    /// Attempts queued, in memory and paged out.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.memory.len() + self.paged_out
    }

    /// Attempts waiting in the spill area.
    pub(crate) fn paged_out(&self) -> usize {
        self.paged_out
    }

    pub(crate) fn insert(&mut self, job: DeliveryJob) {
        let key = key_of(&job);
        let before_last = self
            .memory
            .last_key_value()
            .is_some_and(|(last, _)| key < *last);
        let room = self.paged_out == 0 && self.memory.len() < self.in_memory;
        if room || before_last {
            self.memory.insert(key, job);
            if self.memory.len() > self.in_memory
                && let Some((_, last)) = self.memory.pop_last()
            {
                self.page_out(last);
            }
        } else {
            self.page_out(job);
        }
    }

    fn page_out(&mut self, job: DeliveryJob) {
        let key = key_of(&job);
        let source = job.source.clone();
        let paged = Paged { job, source };
        let value = serde_json::to_vec(&paged).expect("a delivery serialises to JSON");
        match self.spill.insert(encode(&key), value) {
            Ok(None) => self.paged_out += 1,
            Ok(Some(_)) => {}
            Err(error) => {
                warn!(%error, "cannot page a pending delivery out; it stays in memory");
                let mut job = paged.job;
                job.source = paged.source;
                self.memory.insert(key, job);
            }
        }
    }

    /// Pages attempts back in, earliest first, while memory is less than half full.
    fn page_in(&mut self) {
        if self.paged_out == 0 || self.memory.len() >= self.in_memory / 2 {
            return;
        }
        while self.memory.len() < self.in_memory {
            let first = match self.spill.pop_min() {
                Ok(Some((_, value))) => value,
                Ok(None) => {
                    self.paged_out = 0;
                    return;
                }
                Err(error) => {
                    warn!(%error, "cannot page pending deliveries back in");
                    return;
                }
            };
            self.paged_out = self.paged_out.saturating_sub(1);
            match serde_json::from_slice::<Paged>(&first) {
                Ok(Paged { mut job, source }) => {
                    job.source = source;
                    self.memory.insert(key_of(&job), job);
                }
                // Written by this process a moment ago: only a broken disk gets here, and the
                // attempt's record is read again after a restart.
                Err(error) => warn!(%error, "a paged-out delivery cannot be read back"),
            }
        }
    }

    /// Takes every attempt due at or before `now`, earliest first.
    pub(crate) fn take_due(&mut self, now: i64) -> Vec<DeliveryJob> {
        let mut due = Vec::new();
        loop {
            self.page_in();
            let later = self.memory.split_off(&(now.saturating_add(1), Vec::new()));
            let ready = std::mem::replace(&mut self.memory, later);
            let drained = self.memory.is_empty();
            due.extend(ready.into_values());
            if !drained || self.paged_out == 0 {
                return due;
            }
        }
    }

    /// When the earliest attempt is due.
    pub(crate) fn next_due(&mut self) -> Option<i64> {
        self.page_in();
        self.memory.keys().next().map(|(at, _)| *at)
    }

    /// Keeps the attempts `keep` says to keep, in memory and paged out.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&DeliveryJob) -> bool) {
        self.memory.retain(|_, job| keep(job));
        for item in self.spill.iter() {
            let Ok((key, value)) = item else { continue };
            let kept = match serde_json::from_slice::<Paged>(&value) {
                Ok(Paged { mut job, source }) => {
                    job.source = source;
                    keep(&job)
                }
                Err(_) => false,
            };
            if !kept && matches!(self.spill.remove(&key), Ok(Some(_))) {
                self.paged_out = self.paged_out.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(n: u64, due_at_ms: i64) -> DeliveryJob {
        let mut job = crate::job::tests::job(&format!("DY{n}"), 1, due_at_ms);
        job.source = Some(Source {
            topic: "updates".into(),
            partition: (n % 2) as i32,
            offset: n as i64,
        });
        job
    }

    fn queue(in_memory: usize) -> DueQueue {
        let db = sled::Config::new().temporary(true).open().unwrap();
        DueQueue::new(db.open_tree("due").unwrap(), in_memory).unwrap()
    }

    #[test]
    fn attempts_come_out_in_due_order_whatever_was_paged_out() {
        let mut queue = queue(4);
        // Due times in a scrambled order, most of them beyond what memory holds.
        let times: Vec<i64> = (0..40).map(|n| (n * 37) % 41).collect();
        for (n, at) in times.iter().enumerate() {
            queue.insert(job(n as u64, *at));
            assert!(queue.memory.len() <= 4);
        }
        assert_eq!(queue.len(), 40);
        assert_eq!(queue.next_due(), Some(0));
        let mut out = queue.take_due(19);
        assert!(out.iter().all(|j| j.due_at_ms <= 19));
        out.extend(queue.take_due(i64::MAX));
        let order: Vec<i64> = out.iter().map(|j| j.due_at_ms).collect();
        let mut sorted = times.clone();
        sorted.sort();
        assert_eq!(order, sorted);
        // Sources survive the round trip through the spill area.
        assert!(out.iter().all(|j| j.source.is_some()));
        assert_eq!(queue.len(), 0);
        assert_eq!(queue.next_due(), None);
    }

    #[test]
    fn retain_reaches_paged_out_attempts() {
        let mut queue = queue(2);
        for n in 0..10 {
            queue.insert(job(n, n as i64));
        }
        queue.retain(|j| j.source.as_ref().unwrap().partition == 0);
        assert_eq!(queue.len(), 5);
        let left: Vec<i64> = queue
            .take_due(i64::MAX)
            .iter()
            .map(|j| j.due_at_ms)
            .collect();
        assert_eq!(left, [0, 2, 4, 6, 8]);
    }

    #[test]
    fn a_new_queue_forgets_what_an_earlier_run_paged_out() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let mut first = DueQueue::new(db.open_tree("due").unwrap(), 1).unwrap();
        for n in 0..5 {
            first.insert(job(n, n as i64));
        }
        let second = DueQueue::new(db.open_tree("due").unwrap(), 1).unwrap();
        assert_eq!(second.len(), 0);
    }
}
