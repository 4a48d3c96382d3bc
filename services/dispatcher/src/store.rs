//! The dispatcher's keyspace in sled, one tree so every write is one atomic batch:
//! - `o/{topic}/{partition}` → next offset to read (big-endian i64), as in every service;
//! - `r/{receipt sid}` → the last version seen of the receipt, with its status and error code,
//!   which decides whether an update fires a webhook and drops re-published duplicates;
//! - `j/{token}/{attempt}` → a pending attempt ([`DeliveryJob`] JSON);
//! - `d/{webhook key}\0{receipt sid}` → the newest version delivered to that webhook, so a
//!   retry of an older version is dropped once a newer one got through.
//!
//! A batch of records is stored together with its offsets, so a crash replays exactly the
//! records whose pending attempts were not stored; an attempt stays pending until its outcome
//! (delivered, next attempt produced to the retry topic, or dead-lettered) is stored.

use std::path::Path;

pub use receipts_store::StoreError;
use receipts_store::{PartitionOffset, offsets};

use crate::job::DeliveryJob;

/// What the dispatcher last saw of a receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenReceipt {
    pub version: u64,
    pub status: i32,
    pub error_code: u32,
}

/// Everything one intake batch changes.
#[derive(Debug, Default)]
pub struct IntakeBatch {
    pub seen: Vec<(String, SeenReceipt)>,
    pub jobs: Vec<DeliveryJob>,
    /// (topic, partition, next offset)
    pub offsets: Vec<(String, i32, i64)>,
}

/// The dispatcher's sled database.
#[derive(Debug, Clone)]
pub struct DispatcherStore {
    db: sled::Db,
    tree: sled::Tree,
}

fn corrupt(key: &[u8], reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_string(),
    }
}

fn delivered_key(webhook_key: &str, receipt_sid: &str) -> Vec<u8> {
    [b"d/", webhook_key.as_bytes(), b"\0", receipt_sid.as_bytes()].concat()
}

fn u64_at(key: &[u8], bytes: &[u8]) -> Result<u64, StoreError> {
    let array: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt(key, "expected 8 bytes"))?;
    Ok(u64::from_be_bytes(array))
}

impl DispatcherStore {
    /// Opens the database in `dir`, waiting while a previous owner still holds it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = receipts_store::open_db(dir)?;
        Ok(DispatcherStore {
            tree: db.open_tree("dispatcher")?,
            db,
        })
    }

    pub fn next_offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
        offsets::read(&self.tree, topic, partition)
    }

    pub fn seen(&self, receipt_sid: &str) -> Result<Option<SeenReceipt>, StoreError> {
        let key = [b"r/", receipt_sid.as_bytes()].concat();
        let Some(v) = self.tree.get(&key)? else {
            return Ok(None);
        };
        if v.len() != 16 {
            return Err(corrupt(&key, "expected 16 bytes"));
        }
        Ok(Some(SeenReceipt {
            version: u64_at(&key, &v[..8])?,
            status: i32::from_be_bytes(v[8..12].try_into().expect("4 bytes")),
            error_code: u32::from_be_bytes(v[12..16].try_into().expect("4 bytes")),
        }))
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
            Some(v) => Ok(Some(u64_at(&key, &v)?)),
        }
    }

    /// Every pending attempt.
    pub fn pending(&self) -> Result<Vec<DeliveryJob>, StoreError> {
        let mut jobs = Vec::new();
        for item in self.tree.scan_prefix(b"j/") {
            let (key, value) = item?;
            jobs.push(DeliveryJob::from_json(&value).map_err(|e| corrupt(&key, e))?);
        }
        Ok(jobs)
    }

    /// Stores a batch: receipts seen, new pending attempts and offsets, atomically.
    pub fn commit(&self, batch: &IntakeBatch) -> Result<(), StoreError> {
        let mut write = sled::Batch::default();
        for (sid, seen) in &batch.seen {
            let mut value = Vec::with_capacity(16);
            value.extend_from_slice(&seen.version.to_be_bytes());
            value.extend_from_slice(&seen.status.to_be_bytes());
            value.extend_from_slice(&seen.error_code.to_be_bytes());
            write.insert([b"r/", sid.as_bytes()].concat(), value);
        }
        for job in &batch.jobs {
            write.insert(job.pending_key(), job.to_json());
        }
        for (topic, partition, next) in &batch.offsets {
            let offset = PartitionOffset {
                topic: topic.clone(),
                partition: *partition,
                next_offset: *next,
            };
            offsets::write(&mut write, &offset);
        }
        self.tree.apply_batch(write)?;
        Ok(())
    }

    /// Ends a pending attempt; a delivered one first raises the delivered version (atomically,
    /// so concurrent deliveries of two versions keep the newer). A crash between the two steps
    /// leaves the attempt pending, and on restart it is dropped as stale instead of being sent
    /// again.
    pub fn finish(&self, job: &DeliveryJob, delivered: bool) -> Result<(), StoreError> {
        if delivered {
            let version = job.receipt.version;
            self.tree.update_and_fetch(
                delivered_key(&job.webhook_key, &job.receipt.sid),
                |old| {
                    let newest = old
                        .and_then(|v| v.get(..8)?.try_into().ok())
                        .map_or(version, |b: [u8; 8]| u64::from_be_bytes(b).max(version));
                    Some(newest.to_be_bytes().to_vec())
                },
            )?;
        }
        self.tree.remove(job.pending_key())?;
        Ok(())
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use receipts_proto::v1;

    use super::*;

    fn job(version: u64) -> DeliveryJob {
        let receipt = v1::Receipt {
            sid: "DY1".into(),
            version,
            ..Default::default()
        };
        DeliveryJob::new(receipt, "account/AC1".into(), "https://x".into(), 1)
    }

    #[test]
    fn a_batch_survives_reopening_and_finishing_keeps_the_newest_version() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = DispatcherStore::open(dir.path()).unwrap();
            let seen = SeenReceipt {
                version: 3,
                status: 2,
                error_code: 30003,
            };
            store
                .commit(&IntakeBatch {
                    seen: vec![("DY1".into(), seen)],
                    jobs: vec![job(2), job(3)],
                    offsets: vec![("t".into(), 1, 42)],
                })
                .unwrap();
            store.flush().unwrap();
        }
        let store = DispatcherStore::open(dir.path()).unwrap();
        assert_eq!(store.next_offset("t", 1).unwrap(), Some(42));
        assert_eq!(store.next_offset("t", 0).unwrap(), None);
        assert_eq!(store.seen("DY1").unwrap().unwrap().error_code, 30003);
        assert_eq!(store.pending().unwrap().len(), 2);

        store.finish(&job(3), true).unwrap();
        store.finish(&job(2), true).unwrap();
        assert_eq!(
            store.delivered_version("account/AC1", "DY1").unwrap(),
            Some(3)
        );
        assert!(store.pending().unwrap().is_empty());
    }
}
