//! The projector's keyspace: per receipt (an account's channel message) its [`ReceiptState`],
//! an index of parked reports (status reports still waiting for their registration), and the
//! stored offsets.
//!
//! Keys, all in one tree so a batch is one atomic write:
//! - `s/{account sid}/{channel message id}` → `StoredReceiptState` (protobuf)
//! - `p/{account sid}/{channel message id}` → when the first report was parked (unix millis,
//!   big-endian)
//! - `o/{topic}/{partition}` → next offset

use std::path::Path;

use prost::Message;
use receipts_domain::{ReceiptKey, ReceiptState, StatusReport, Timestamp};
use receipts_proto::v1;

use crate::StoreError;
use crate::offsets::{self, PartitionOffset};

/// Everything one projector batch changes, written atomically.
#[derive(Debug, Default)]
pub struct ProjectorBatch {
    pub states: Vec<(ReceiptKey, ReceiptState)>,
    /// Reports parked for the first time, with the time they were parked.
    pub parked: Vec<(ReceiptKey, Timestamp)>,
    /// Receipts whose registration arrived, ending their wait.
    pub unparked: Vec<ReceiptKey>,
    /// Next offsets of the input partitions read, and of the changelog partitions written.
    pub offsets: Vec<PartitionOffset>,
}

/// A status report waiting for its registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedEntry {
    pub key: ReceiptKey,
    pub parked_since: Timestamp,
    /// The greatest report seen for it so far.
    pub report: Option<StatusReport>,
}

/// The projector's storage. Implementations must write a [`ProjectorBatch`] atomically.
pub trait ProjectorStore: Send + Sync + 'static {
    fn state(&self, id: &ReceiptKey) -> Result<Option<ReceiptState>, StoreError>;
    fn next_offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, StoreError>;
    fn commit(&self, batch: &ProjectorBatch) -> Result<(), StoreError>;
    /// Stores states read back from the changelog (each with the time its record was written,
    /// which stands in for when a parked report was parked) and the changelog position they
    /// reach, atomically.
    fn restore(
        &self,
        states: &[(ReceiptKey, ReceiptState, Timestamp)],
        position: &PartitionOffset,
    ) -> Result<(), StoreError>;
    /// Every parked report, oldest first.
    fn parked(&self) -> Result<Vec<ParkedEntry>, StoreError>;
    /// Makes every committed batch durable.
    fn flush(&self) -> Result<(), StoreError>;
}

/// [`ProjectorStore`] on sled.
#[derive(Debug, Clone)]
pub struct SledProjectorStore {
    tree: sled::Tree,
    db: sled::Db,
}

fn state_key(key: &ReceiptKey) -> Vec<u8> {
    format!("s/{key}").into_bytes()
}

fn parked_key(key: &ReceiptKey) -> Vec<u8> {
    format!("p/{key}").into_bytes()
}

fn corrupt(key: &[u8], source: impl Into<crate::CorruptValue>) -> StoreError {
    StoreError::corrupt(key, source)
}

impl SledProjectorStore {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, &crate::StorageConfig::default())
    }

    pub fn open_with(dir: &Path, storage: &crate::StorageConfig) -> Result<Self, StoreError> {
        let db = crate::open_db_with(dir, storage)?;
        Ok(Self::from_db(db)?)
    }

    pub fn from_db(db: sled::Db) -> Result<Self, sled::Error> {
        Ok(SledProjectorStore {
            tree: db.open_tree("projector")?,
            db,
        })
    }

    /// Bytes sled uses on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

impl ProjectorStore for SledProjectorStore {
    fn state(&self, id: &ReceiptKey) -> Result<Option<ReceiptState>, StoreError> {
        let key = state_key(id);
        let Some(bytes) = self.tree.get(&key)? else {
            return Ok(None);
        };
        let stored =
            v1::StoredReceiptState::decode(bytes.as_ref()).map_err(|e| corrupt(&key, e))?;
        ReceiptState::try_from(&stored)
            .map(Some)
            .map_err(|e| corrupt(&key, e))
    }

    fn next_offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
        offsets::read(&self.tree, topic, partition)
    }

    fn commit(&self, batch: &ProjectorBatch) -> Result<(), StoreError> {
        let mut write = sled::Batch::default();
        for (id, state) in &batch.states {
            write.insert(
                state_key(id),
                v1::StoredReceiptState::from(state).encode_to_vec(),
            );
        }
        for (id, since) in &batch.parked {
            write.insert(parked_key(id), &since.unix_millis().to_be_bytes());
        }
        for id in &batch.unparked {
            write.remove(parked_key(id));
        }
        for offset in &batch.offsets {
            offsets::write(&mut write, offset);
        }
        self.tree.apply_batch(write)?;
        Ok(())
    }

    fn restore(
        &self,
        states: &[(ReceiptKey, ReceiptState, Timestamp)],
        position: &PartitionOffset,
    ) -> Result<(), StoreError> {
        let mut write = sled::Batch::default();
        for (id, state, written_at) in states {
            write.insert(
                state_key(id),
                v1::StoredReceiptState::from(state).encode_to_vec(),
            );
            if state.parked_report().is_some() {
                let since = match self.tree.get(parked_key(id))? {
                    Some(kept) => kept.to_vec(),
                    None => written_at.unix_millis().to_be_bytes().to_vec(),
                };
                write.insert(parked_key(id), since);
            } else {
                write.remove(parked_key(id));
            }
        }
        offsets::write(&mut write, position);
        self.tree.apply_batch(write)?;
        Ok(())
    }

    fn parked(&self) -> Result<Vec<ParkedEntry>, StoreError> {
        let mut entries = Vec::new();
        for item in self.tree.scan_prefix(b"p/") {
            let (key, value) = item?;
            let id = std::str::from_utf8(&key[2..])
                .ok()
                .and_then(|s| ReceiptKey::parse(s).ok())
                .ok_or_else(|| corrupt(&key, "not a receipt key"))?;
            let millis: [u8; 8] = value
                .as_ref()
                .try_into()
                .map_err(|_| corrupt(&key, "parked time is not 8 bytes"))?;
            let report = self.state(&id)?.and_then(|s| s.best);
            entries.push(ParkedEntry {
                key: id,
                parked_since: Timestamp::from_unix_millis(i64::from_be_bytes(millis)),
                report,
            });
        }
        entries.sort_by_key(|e| e.parked_since);
        Ok(entries)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use receipts_domain::{AccountSid, ChannelMessageId, DeliveryStatus, StatusSource};

    use super::*;

    fn report(id: &ReceiptKey) -> StatusReport {
        StatusReport {
            account: id.account.clone(),
            channel_message_id: id.channel_message_id.clone(),
            status: DeliveryStatus::Delivered,
            raw_status: "DELIVRD".into(),
            error_code: None,
            provider_time: Timestamp::from_unix_millis(5),
            source: StatusSource::Smpp,
        }
    }

    #[test]
    fn a_batch_is_read_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let id = ReceiptKey::new(
            AccountSid::parse("AC00000000000000000000000000000001").unwrap(),
            ChannelMessageId::smpp("eu", "1").unwrap(),
        );
        let mut state = ReceiptState::default();
        state.apply_report(report(&id));
        {
            let store = SledProjectorStore::open(dir.path()).unwrap();
            assert_eq!(store.state(&id).unwrap(), None);
            assert_eq!(store.next_offset("t", 0).unwrap(), None);
            store
                .commit(&ProjectorBatch {
                    states: vec![(id.clone(), state.clone())],
                    parked: vec![(id.clone(), Timestamp::from_unix_millis(77))],
                    unparked: vec![],
                    offsets: vec![PartitionOffset {
                        topic: "t".into(),
                        partition: 3,
                        next_offset: 42,
                    }],
                })
                .unwrap();
            store.flush().unwrap();
        }
        let store = SledProjectorStore::open(dir.path()).unwrap();
        assert_eq!(store.state(&id).unwrap(), Some(state));
        assert_eq!(store.next_offset("t", 3).unwrap(), Some(42));
        assert_eq!(store.next_offset("t", 0).unwrap(), None);
        let parked = store.parked().unwrap();
        assert_eq!(parked.len(), 1);
        assert_eq!(parked[0].parked_since, Timestamp::from_unix_millis(77));
        assert_eq!(parked[0].report, Some(report(&id)));

        store
            .commit(&ProjectorBatch {
                unparked: vec![id],
                ..Default::default()
            })
            .unwrap();
        assert!(store.parked().unwrap().is_empty());
    }
}
