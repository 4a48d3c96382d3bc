//! The dispatcher's state: what was settled per delivery, a local sled cache of the compacted
//! dispatcher changelog (DESIGN §4a). One tree, so every write is one atomic batch:
//! - `t/{token}` → the attempt of the delivery that lives on the retry topic (big-endian u32),
//!   or [`SETTLED`] once it was dead-lettered, dropped, or delivered after a retry (a delivery
//!   delivered at its first attempt leaves only its `d/` entry, which says as much: a version
//!   not newer than the one delivered is never attempted again);
//! - `d/{webhook key}\0{receipt sid}` → the newest receipt version delivered to that webhook,
//!   so an older version still waiting is dropped as stale;
//! - `o/{changelog topic}/{partition}` → how far the local copy of a changelog partition goes.
//!
//! The `d/` entries read or written lately are also held in memory, a bounded number of them
//! (`delivered_in_memory`, [`DELIVERED_IN_MEMORY`] by default), since each delivery reads its
//! receipt's up to three times.
//!
//! Every entry is written to the changelog partition of the delivery's `receipt-updates`
//! partition first, and only stored here once Kafka acknowledged it; the changelog records are
//! the entries themselves (same key, same value), so restoring copies them verbatim. Pending
//! deliveries are not stored at all: the group's committed offset never passes a record whose
//! deliveries are unsettled, so whoever owns its partition next reads it again, and these
//! entries tell which of its deliveries are still to do.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

pub use receipts_store::StoreError;
use receipts_store::{PartitionOffset, offsets};

/// `t/` value of a delivery that needs nothing more.
pub const SETTLED: u32 = u32::MAX;

/// How many delivered versions (found or known absent) are kept in memory in front of sled by
/// default (`delivered_in_memory`): each delivery reads its receipt's up to three times (when
/// read, attempted and settled), so the receipts being worked on are read from memory. About
/// 8 MB.
pub const DELIVERED_IN_MEMORY: usize = 32_768;

/// One state entry: its key and value, as stored and as changelogged.
pub type Entry = (Vec<u8>, Vec<u8>);

/// The dispatcher's sled database.
#[derive(Debug, Clone)]
pub struct DispatcherStore {
    db: sled::Db,
    tree: sled::Tree,
    delivered: Arc<Mutex<DeliveredVersions>>,
}

/// The newest delivered versions read or written lately, by `d/` key; `None` when the store
/// had none. The oldest entries leave first once `capacity` are held. Every write
/// of a `d/` entry goes through [`DispatcherStore::write`], which updates this after sled, so
/// what it holds is what sled holds.
struct DeliveredVersions {
    capacity: usize,
    versions: HashMap<Vec<u8>, Option<u64>>,
    order: VecDeque<Vec<u8>>,
}

impl std::fmt::Debug for DeliveredVersions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveredVersions")
            .field("held", &self.versions.len())
            .finish()
    }
}

impl DeliveredVersions {
    fn put(&mut self, key: Vec<u8>, version: Option<u64>) {
        if self.versions.insert(key.clone(), version).is_none() {
            self.order.push_back(key);
            if self.order.len() > self.capacity
                && let Some(oldest) = self.order.pop_front()
            {
                self.versions.remove(&oldest);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn decode_version(key: &[u8], value: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = value
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt(key, "expected 8 bytes"))?;
    Ok(u64::from_be_bytes(bytes))
}

fn corrupt(key: &[u8], source: impl Into<receipts_store::CorruptValue>) -> StoreError {
    StoreError::corrupt(key, source)
}

fn progress_key(token: &str) -> Vec<u8> {
    [b"t/", token.as_bytes()].concat()
}

fn delivered_key(webhook_key: &str, receipt_sid: &str) -> Vec<u8> {
    [b"d/", webhook_key.as_bytes(), b"\0", receipt_sid.as_bytes()].concat()
}

/// The entry saying delivery `token` is at `attempt` on the retry topic, or [`SETTLED`].
pub fn progress_entry(token: &str, attempt: u32) -> Entry {
    (progress_key(token), attempt.to_be_bytes().to_vec())
}

/// The entry saying `version` of `receipt_sid` was delivered to `webhook_key`.
pub fn delivered_entry(webhook_key: &str, receipt_sid: &str, version: u64) -> Entry {
    (
        delivered_key(webhook_key, receipt_sid),
        version.to_be_bytes().to_vec(),
    )
}

impl DispatcherStore {
    /// Opens the database in `dir`, waiting while a previous owner still holds it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(
            dir,
            &receipts_store::StorageConfig::default(),
            DELIVERED_IN_MEMORY,
        )
    }

    /// Opens the database in `dir` with `storage`'s settings, holding up to
    /// `delivered_in_memory` delivered versions in memory.
    pub fn open_with(
        dir: &Path,
        storage: &receipts_store::StorageConfig,
        delivered_in_memory: usize,
    ) -> Result<Self, StoreError> {
        let db = receipts_store::open_db_with(dir, storage)?;
        Ok(DispatcherStore {
            tree: db.open_tree("dispatcher")?,
            db,
            delivered: Arc::new(Mutex::new(DeliveredVersions {
                capacity: delivered_in_memory.max(1),
                versions: HashMap::new(),
                order: VecDeque::new(),
            })),
        })
    }

    /// The tree pending attempts are paged out to (see `crate::due`): not state, emptied at start.
    pub fn spill_tree(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree("due-spill")?)
    }

    /// Where the local copy of changelog `topic`'s `partition` ends.
    pub fn changelog_position(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Option<i64>, StoreError> {
        offsets::read(&self.tree, topic, partition)
    }

    /// The attempt of `token` on the retry topic, or [`SETTLED`]; `None` before its first
    /// failure.
    pub fn progress(&self, token: &str) -> Result<Option<u32>, StoreError> {
        let key = progress_key(token);
        match self.tree.get(&key)? {
            None => Ok(None),
            Some(v) => {
                let bytes: [u8; 4] = v
                    .as_ref()
                    .try_into()
                    .map_err(|_| corrupt(&key, "expected 4 bytes"))?;
                Ok(Some(u32::from_be_bytes(bytes)))
            }
        }
    }

    /// The newest version of `receipt_sid` delivered to `webhook_key`.
    pub fn delivered_version(
        &self,
        webhook_key: &str,
        receipt_sid: &str,
    ) -> Result<Option<u64>, StoreError> {
        let key = delivered_key(webhook_key, receipt_sid);
        // Read and remembered under the lock, so a write finishing meanwhile is never
        // overwritten by what was read before it.
        let mut delivered = lock(&self.delivered);
        if let Some(version) = delivered.versions.get(&key) {
            return Ok(*version);
        }
        let version = match self.tree.get(&key)? {
            None => None,
            Some(v) => Some(decode_version(&key, &v)?),
        };
        delivered.put(key, version);
        Ok(version)
    }

    /// Stores `entries` (already acknowledged by the changelog) and the changelog positions
    /// they reach, atomically.
    pub fn write(
        &self,
        entries: &[Entry],
        positions: &[PartitionOffset],
    ) -> Result<(), StoreError> {
        let mut write = sled::Batch::default();
        for (key, value) in entries {
            write.insert(key.as_slice(), value.as_slice());
        }
        for position in positions {
            offsets::write(&mut write, position);
        }
        self.tree.apply_batch(write)?;
        let mut delivered = lock(&self.delivered);
        for (key, value) in entries {
            if key.starts_with(b"d/")
                && let Ok(version) = decode_version(key, value)
            {
                delivered.put(key.clone(), Some(version));
            }
        }
        Ok(())
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = DispatcherStore::open(dir.path()).unwrap();
            store
                .write(
                    &[
                        progress_entry("tok", 2),
                        delivered_entry("account/AC1", "DY1", 3),
                    ],
                    &[PartitionOffset {
                        topic: "changelog".into(),
                        partition: 1,
                        next_offset: 42,
                    }],
                )
                .unwrap();
            store.flush().unwrap();
        }
        let store = DispatcherStore::open(dir.path()).unwrap();
        assert_eq!(store.progress("tok").unwrap(), Some(2));
        assert_eq!(store.progress("other").unwrap(), None);
        assert_eq!(
            store.delivered_version("account/AC1", "DY1").unwrap(),
            Some(3)
        );
        assert_eq!(store.changelog_position("changelog", 1).unwrap(), Some(42));
        assert_eq!(store.changelog_position("changelog", 0).unwrap(), None);
    }

    #[test]
    fn a_delivered_version_read_as_absent_is_the_written_one_after_a_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = DispatcherStore::open(dir.path()).unwrap();
        let other = store.clone();
        assert_eq!(store.delivered_version("account/AC1", "DY1").unwrap(), None);
        other
            .write(&[delivered_entry("account/AC1", "DY1", 4)], &[])
            .unwrap();
        assert_eq!(
            store.delivered_version("account/AC1", "DY1").unwrap(),
            Some(4)
        );
        // A copy restored from the changelog is the same write.
        other
            .write(&[delivered_entry("account/AC1", "DY1", 6)], &[])
            .unwrap();
        assert_eq!(
            store.delivered_version("account/AC1", "DY1").unwrap(),
            Some(6)
        );
    }

    #[test]
    fn delivered_versions_held_in_memory_are_bounded_and_the_rest_read_from_sled() {
        let dir = tempfile::tempdir().unwrap();
        let store = DispatcherStore::open(dir.path()).unwrap();
        let count = DELIVERED_IN_MEMORY + 100;
        let entries: Vec<Entry> = (0..count)
            .map(|n| delivered_entry("account/AC1", &format!("DY{n}"), n as u64 + 1))
            .collect();
        store.write(&entries, &[]).unwrap();
        assert_eq!(lock(&store.delivered).versions.len(), DELIVERED_IN_MEMORY);
        assert_eq!(lock(&store.delivered).order.len(), DELIVERED_IN_MEMORY);
        // The first ones left memory; they are still read, from sled.
        assert_eq!(
            store.delivered_version("account/AC1", "DY0").unwrap(),
            Some(1)
        );
        assert_eq!(
            store
                .delivered_version("account/AC1", &format!("DY{}", count - 1))
                .unwrap(),
            Some(count as u64)
        );
        assert_eq!(lock(&store.delivered).versions.len(), DELIVERED_IN_MEMORY);
    }
}
