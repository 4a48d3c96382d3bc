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
    /// Sends to the changelog begun and not answered yet: their offsets are unknown, and may be
    /// lower than those of a send answered before them.
    sending: usize,
    /// Landed in the changelog, not yet stored locally.
    unstored: BTreeSet<i64>,
    /// The next offset after the newest record stored locally.
    stored_end: i64,
    /// The position last found safe; it only moves while no send is unanswered.
    safe: i64,
}

impl ChangelogProgress {
    /// A send to changelog partition `partition` begins. Until it is answered ([`Self::landed`]
    /// or [`Self::abandoned`]) no position is found safe: its records may land below those of
    /// sends answered meanwhile, and a position past them would let a restore skip them.
    pub(crate) fn sending(&self, partition: i32) {
        lock(&self.partitions).entry(partition).or_default().sending += 1;
    }

    /// A send begun with [`Self::sending`] landed at `landed`.
    pub(crate) fn landed(&self, partition: i32, landed: &[Landed]) {
        let mut partitions = lock(&self.partitions);
        let progress = partitions.entry(partition).or_default();
        progress.sending = progress.sending.saturating_sub(1);
        progress.unstored.extend(landed.iter().map(|l| l.offset));
    }

    /// A send begun with [`Self::sending`] failed: nothing of it is in the changelog.
    pub(crate) fn abandoned(&self, partition: i32) {
        let mut partitions = lock(&self.partitions);
        let progress = partitions.entry(partition).or_default();
        progress.sending = progress.sending.saturating_sub(1);
    }

    /// Marks `offsets` stored; returns the position that is safe to store now: before every
    /// landed record not stored yet, and never moved while a send is unanswered.
    pub(crate) fn stored(&self, partition: i32, offsets: &[i64]) -> i64 {
        let mut partitions = lock(&self.partitions);
        let progress = partitions.entry(partition).or_default();
        for offset in offsets {
            progress.unstored.remove(offset);
            progress.stored_end = progress.stored_end.max(offset + 1);
        }
        if progress.sending == 0 {
            let reached = match progress.unstored.first() {
                Some(oldest) => *oldest,
                None => progress.stored_end,
            };
            progress.safe = progress.safe.max(reached);
        }
        progress.safe
    }

    /// A restore brought the local copy to `position`.
    pub(crate) fn restored(&self, partition: i32, position: i64) {
        let mut partitions = lock(&self.partitions);
        let progress = partitions.entry(partition).or_default();
        progress.stored_end = progress.stored_end.max(position);
        progress.safe = progress.safe.max(position);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: i64) -> Vec<Landed> {
        vec![Landed {
            partition: 0,
            offset,
        }]
    }

    #[test]
    fn a_send_answered_late_holds_the_position_below_its_records() {
        let progress = ChangelogProgress::default();
        progress.sending(0);
        progress.sending(0);
        // The second send is answered first, with the higher offset.
        progress.landed(0, &at(11));
        assert_eq!(
            progress.stored(0, &[11]),
            0,
            "the first send may land below 11"
        );
        progress.landed(0, &at(10));
        assert_eq!(progress.stored(0, &[10]), 12);
    }

    #[test]
    fn the_position_stops_before_a_landed_record_not_stored_yet() {
        let progress = ChangelogProgress::default();
        progress.sending(0);
        progress.sending(0);
        progress.landed(0, &at(4));
        progress.landed(0, &at(5));
        assert_eq!(progress.stored(0, &[5]), 4);
        assert_eq!(progress.stored(0, &[4]), 6);
    }

    #[test]
    fn an_abandoned_send_no_longer_holds_the_position() {
        let progress = ChangelogProgress::default();
        progress.sending(0);
        progress.sending(0);
        progress.landed(0, &at(7));
        assert_eq!(progress.stored(0, &[7]), 0);
        progress.abandoned(0);
        progress.sending(0);
        progress.landed(0, &at(8));
        assert_eq!(progress.stored(0, &[8]), 9);
    }

    #[test]
    fn a_restore_moves_the_position_and_partitions_are_apart() {
        let progress = ChangelogProgress::default();
        progress.restored(1, 30);
        progress.sending(0);
        progress.sending(1);
        progress.landed(1, &at(30));
        assert_eq!(progress.stored(1, &[30]), 31);
        progress.abandoned(0);
        assert_eq!(progress.stored(0, &[]), 0);
    }
}
