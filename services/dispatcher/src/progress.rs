//! What the dispatcher tracks about its own progress, in memory: which source records still
//! have unsettled attempts (so committed offsets never pass them), and which of its changelog
//! records are stored locally (so a stored changelog position never passes one that is not).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use receipts_bus::{Landed, Partition};

use crate::job::Source;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Which of this instance's changelog records are stored locally, per changelog partition, so
/// that the stored position never passes one that is not.
#[derive(Debug, Default)]
pub(crate) struct ChangelogProgress {
    partitions: Mutex<HashMap<i32, PartitionProgress>>,
}

#[derive(Debug, Default)]
struct PartitionProgress {
    /// Landed in the changelog, not yet stored locally.
    unstored: BTreeSet<i64>,
    /// The next offset after the newest record stored locally.
    stored_end: i64,
}

impl ChangelogProgress {
    pub(crate) fn landed(&self, partition: i32, landed: &[Landed]) {
        let mut partitions = lock(&self.partitions);
        let progress = partitions.entry(partition).or_default();
        progress.unstored.extend(landed.iter().map(|l| l.offset));
    }

    /// Marks `offsets` stored; returns the position that is safe to store now.
    pub(crate) fn stored(&self, partition: i32, offsets: &[i64]) -> i64 {
        let mut partitions = lock(&self.partitions);
        let progress = partitions.entry(partition).or_default();
        for offset in offsets {
            progress.unstored.remove(offset);
            progress.stored_end = progress.stored_end.max(offset + 1);
        }
        match progress.unstored.first() {
            Some(oldest) => *oldest,
            None => progress.stored_end,
        }
    }

    /// A restore brought the local copy to `position`.
    pub(crate) fn restored(&self, partition: i32, position: i64) {
        let mut partitions = lock(&self.partitions);
        let progress = partitions.entry(partition).or_default();
        progress.stored_end = progress.stored_end.max(position);
    }
}

/// The source offsets of attempts not settled yet, per partition: a partition's committed
/// offset never passes the oldest of them, so a new owner reads that record again.
#[derive(Debug, Default)]
pub(crate) struct Unsettled {
    offsets: Mutex<HashMap<(String, i32), BTreeMap<i64, u32>>>,
}

impl Unsettled {
    pub(crate) fn add(&self, source: &Source) {
        *lock(&self.offsets)
            .entry((source.topic.clone(), source.partition))
            .or_default()
            .entry(source.offset)
            .or_default() += 1;
    }

    pub(crate) fn remove(&self, source: &Source) {
        let mut offsets = lock(&self.offsets);
        let key = (source.topic.clone(), source.partition);
        if let Some(partition) = offsets.get_mut(&key) {
            if let Some(count) = partition.get_mut(&source.offset) {
                *count -= 1;
                if *count == 0 {
                    partition.remove(&source.offset);
                }
            }
            if partition.is_empty() {
                offsets.remove(&key);
            }
        }
    }

    /// The oldest unsettled source offset of a partition.
    pub(crate) fn oldest(&self, topic: &str, partition: i32) -> Option<i64> {
        lock(&self.offsets)
            .get(&(topic.to_owned(), partition))
            .and_then(|p| p.keys().next().copied())
    }

    pub(crate) fn forget(&self, partition: &Partition) {
        lock(&self.offsets).remove(&(partition.topic.clone(), partition.partition));
    }
}
