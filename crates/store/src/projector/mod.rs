//! The projector's keyspace: per receipt (an account's channel message) its [`ReceiptState`],
//! an index of parked reports (status reports still waiting for their registration), and the
//! stored offsets.
//!
//! Keys, all in one tree so a batch is one atomic write (storage format 2, see `format`; a sid
//! and a channel message id in their compact forms of `compact`):
//! - `0x01 {account sid}{channel message id}` → `StoredState` (in `records`): the state without
//!   the ids its key holds
//! - `0x02 {account sid}{channel message id}` → when the first report was parked (unix millis,
//!   big-endian)
//! - `o/{topic}/{partition}` → next offset
//!
//! Format 1 kept `s/{account sid}/{channel message id}` → `StoredReceiptState` and
//! `p/{account sid}/{channel message id}`; such a tree is moved to format 2 when it is opened
//! (`records` says what each of its records becomes).

use std::ops::Bound;
use std::path::Path;

use prost::Message;
use receipts_domain::{ReceiptKey, ReceiptState, StatusReport, Timestamp};

use crate::StoreError;
use crate::engine::{Engine, Fjall, Sled, Write};
use crate::format;
use crate::offsets::{self, PartitionOffset};

mod records;

use records::{PARKED, StoredState, encode_state, from_format1, key_of, parked_key, state_key};

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

/// [`ProjectorStore`] on an [`Engine`]: sled ([`SledProjectorStore`], the default) or fjall
/// ([`FjallProjectorStore`]).
#[derive(Debug, Clone)]
pub struct ProjectorDb<E> {
    engine: E,
}

/// The projector's state on sled.
pub type SledProjectorStore = ProjectorDb<Sled>;

/// The projector's state on fjall.
pub type FjallProjectorStore = ProjectorDb<Fjall>;

impl ProjectorDb<Sled> {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, &crate::StorageConfig::default())
    }

    pub fn open_with(dir: &Path, storage: &crate::StorageConfig) -> Result<Self, StoreError> {
        let db = crate::open_db_with(dir, storage)?;
        Self::from_db(db)
    }

    /// The store in `db`, moved to the current storage format first if an earlier release
    /// wrote it.
    pub fn from_db(db: sled::Db) -> Result<Self, StoreError> {
        let engine = Sled::open_tree(db, "projector")?;
        format::ensure(&engine, "projector", from_format1)?;
        Ok(ProjectorDb { engine })
    }
}

impl ProjectorDb<Fjall> {
    /// The projector's state in the fjall database in `dir`.
    pub fn open_with(dir: &Path, storage: &crate::StorageConfig) -> Result<Self, StoreError> {
        Ok(ProjectorDb {
            engine: Fjall::open(dir, "projector", storage)?,
        })
    }
}

impl<E: Engine> ProjectorDb<E> {
    /// Bytes the engine uses on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.engine.size_on_disk()
    }

    /// Bytes of every key and value stored, before the engine's own layout.
    pub fn stored_bytes(&self) -> Result<u64, StoreError> {
        crate::engine::stored_bytes(&self.engine)
    }
}

impl<E: Engine> ProjectorStore for ProjectorDb<E> {
    fn state(&self, id: &ReceiptKey) -> Result<Option<ReceiptState>, StoreError> {
        let key = state_key(id);
        let Some(bytes) = self.engine.get(&key)? else {
            return Ok(None);
        };
        let stored =
            StoredState::decode(bytes.as_ref()).map_err(|e| StoreError::corrupt(&key, e))?;
        stored
            .state(id)
            .map(Some)
            .map_err(|e| StoreError::corrupt(&key, e))
    }

    fn next_offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
        offsets::read_from(&self.engine, topic, partition)
    }

    fn commit(&self, batch: &ProjectorBatch) -> Result<(), StoreError> {
        let mut write = Write::default();
        for (id, state) in &batch.states {
            write.insert(state_key(id), encode_state(state));
        }
        for (id, since) in &batch.parked {
            write.insert(parked_key(id), since.unix_millis().to_be_bytes());
        }
        for id in &batch.unparked {
            write.remove(parked_key(id));
        }
        for offset in &batch.offsets {
            offsets::put(&mut write, offset);
        }
        self.engine.write(write)
    }

    fn restore(
        &self,
        states: &[(ReceiptKey, ReceiptState, Timestamp)],
        position: &PartitionOffset,
    ) -> Result<(), StoreError> {
        let mut write = Write::default();
        for (id, state, written_at) in states {
            write.insert(state_key(id), encode_state(state));
            if state.parked_report().is_some() {
                let since = match self.engine.get(&parked_key(id))? {
                    Some(kept) => kept.as_ref().to_vec(),
                    None => written_at.unix_millis().to_be_bytes().to_vec(),
                };
                write.insert(parked_key(id), since);
            } else {
                write.remove(parked_key(id));
            }
        }
        offsets::put(&mut write, position);
        self.engine.write(write)
    }

    fn parked(&self) -> Result<Vec<ParkedEntry>, StoreError> {
        let mut entries = Vec::new();
        let (lower, upper) = (
            Bound::Included(vec![PARKED]),
            Bound::Excluded(vec![PARKED + 1]),
        );
        for item in self.engine.range(lower, upper, false) {
            let (key, value) = item?;
            let key = key.as_ref();
            let id = key_of(key).map_err(|e| StoreError::corrupt(key, e))?;
            let millis: [u8; 8] = value
                .as_ref()
                .try_into()
                .map_err(|_| StoreError::corrupt(key, "parked time is not 8 bytes"))?;
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
        self.engine.flush()
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use receipts_domain::{AccountSid, ChannelMessageId, DeliveryStatus, StatusSource};
    use receipts_proto::v1;

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
        read_back_after_reopening(|dir| SledProjectorStore::open(dir).unwrap());
    }

    #[test]
    fn a_batch_on_fjall_is_read_back_after_reopening() {
        read_back_after_reopening(|dir| {
            FjallProjectorStore::open_with(dir, &crate::StorageConfig::default()).unwrap()
        });
    }

    fn read_back_after_reopening<S: ProjectorStore>(open: impl Fn(&Path) -> S) {
        let dir = tempfile::tempdir().unwrap();
        let id = ReceiptKey::new(
            AccountSid::parse("AC00000000000000000000000000000001").unwrap(),
            ChannelMessageId::smpp("eu", "1").unwrap(),
        );
        let mut state = ReceiptState::default();
        state.apply_report(report(&id));
        {
            let store = open(dir.path());
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
        let store = open(dir.path());
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

    /// A registered receipt whose best report is not the history's (a later `delivered` than
    /// the first), with a parked-then-registered past: every field of the state is set.
    fn full_state() -> (ReceiptKey, ReceiptState) {
        use receipts_domain::Channel;
        use receipts_testkit::events::{registration, report};
        let account = "AC0123456789abcdef0123456789ABCDEF";
        let id = "SM0123456789abcdef0123456789abcdef";
        let mut state = ReceiptState::default();
        let sent = report(
            account,
            id,
            DeliveryStatus::Sent,
            2_000,
            None,
            StatusSource::Canonical,
        );
        state.apply_report(sent);
        let mut first = report(
            account,
            id,
            DeliveryStatus::Delivered,
            3_000,
            None,
            StatusSource::Smpp,
        );
        first.raw_status = "DELIVRD".into();
        state.apply_report(first);
        let later = report(
            account,
            id,
            DeliveryStatus::Delivered,
            4_000,
            Some(30_003),
            StatusSource::Smpp,
        );
        state.apply_report(later);
        let mut registered = registration(account, Channel::Whatsapp, id, 7, 8, 9, 3);
        registered.chat_service = Some(
            receipts_domain::ChatServiceSid::parse("IS0123456789abcdef0123456789abcdef").unwrap(),
        );
        state.register(registered).unwrap();
        assert_ne!(
            state.best.as_ref(),
            state.history.get(DeliveryStatus::Delivered)
        );
        let key = ReceiptKey::new(
            AccountSid::parse(account).unwrap(),
            ChannelMessageId::parse(id).unwrap(),
        );
        (key, state)
    }

    #[test]
    fn every_field_of_a_state_is_read_back() {
        let (id, state) = full_state();
        let store =
            SledProjectorStore::from_db(sled::Config::new().temporary(true).open().unwrap())
                .unwrap();
        store
            .commit(&ProjectorBatch {
                states: vec![(id.clone(), state.clone())],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(store.state(&id).unwrap(), Some(state.clone()));

        // And when the best report is the history's, which is how it is written most often.
        let (id, mut state) = (id, state);
        state.best = state.history.get(DeliveryStatus::Delivered).cloned();
        store
            .commit(&ProjectorBatch {
                states: vec![(id.clone(), state.clone())],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(store.state(&id).unwrap(), Some(state));
    }

    #[test]
    fn a_database_of_format_1_is_moved_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let (id, state) = full_state();
        let (parked_id, mut parked) = (
            ReceiptKey::new(
                id.account.clone(),
                ChannelMessageId::smpp("eu", "7").unwrap(),
            ),
            ReceiptState::default(),
        );
        parked.apply_report(report(&parked_id));
        {
            // What releases up to 0.1 wrote.
            let db = crate::open_db(dir.path()).unwrap();
            let tree = db.open_tree("projector").unwrap();
            for (key, state) in [(&id, &state), (&parked_id, &parked)] {
                tree.insert(
                    format!("s/{key}"),
                    v1::StoredReceiptState::from(state).encode_to_vec(),
                )
                .unwrap();
            }
            tree.insert(format!("p/{parked_id}"), &99i64.to_be_bytes())
                .unwrap();
            let mut offset = sled::Batch::default();
            offsets::write(
                &mut offset,
                &PartitionOffset {
                    topic: "in".into(),
                    partition: 2,
                    next_offset: 1_234,
                },
            );
            tree.apply_batch(offset).unwrap();
            db.flush().unwrap();
        }
        let store = SledProjectorStore::open(dir.path()).unwrap();
        assert_eq!(store.state(&id).unwrap(), Some(state));
        assert_eq!(store.state(&parked_id).unwrap(), Some(parked));
        assert_eq!(store.next_offset("in", 2).unwrap(), Some(1_234));
        let waiting = store.parked().unwrap();
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].key, parked_id);
        assert_eq!(waiting[0].parked_since, Timestamp::from_unix_millis(99));
        assert!(store.engine.tree.scan_prefix(b"s/").next().is_none());
        assert!(store.engine.tree.scan_prefix(b"p/").next().is_none());
    }
}
