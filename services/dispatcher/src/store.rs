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
//! Every entry is written to the changelog partition of the delivery's `receipt-updates`
//! partition first, and only stored here once Kafka acknowledged it; the changelog records are
//! the entries themselves (same key, same value), so restoring copies them verbatim. Pending
//! deliveries are not stored at all: the group's committed offset never passes a record whose
//! deliveries are unsettled, so whoever owns its partition next reads it again, and these
//! entries tell which of its deliveries are still to do.

use std::path::Path;

pub use receipts_store::StoreError;
use receipts_store::{PartitionOffset, offsets};

/// `t/` value of a delivery that needs nothing more.
pub const SETTLED: u32 = u32::MAX;

/// One state entry: its key and value, as stored and as changelogged.
pub type Entry = (Vec<u8>, Vec<u8>);

/// The dispatcher's sled database.
#[derive(Debug, Clone)]
pub struct DispatcherStore {
    db: sled::Db,
    tree: sled::Tree,
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
        Self::open_with(dir, &receipts_store::StorageConfig::default())
    }

    pub fn open_with(
        dir: &Path,
        storage: &receipts_store::StorageConfig,
    ) -> Result<Self, StoreError> {
        let db = receipts_store::open_db_with(dir, storage)?;
        Ok(DispatcherStore {
            tree: db.open_tree("dispatcher")?,
            db,
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
        match self.tree.get(&key)? {
            None => Ok(None),
            Some(v) => {
                let bytes: [u8; 8] = v
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| corrupt(&key, "expected 8 bytes"))?;
                Ok(Some(u64::from_be_bytes(bytes)))
            }
        }
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
}
