//! The ordered key-value stores a read model can be kept in: sled, the default, and fjall, an
//! LSM tree, selected with `storage.engine`. Both give the read model what it relies on: point
//! reads, ordered ranges in either direction, and a batch of writes applied atomically.

use std::ops::Bound;
use std::path::Path;

use crate::{StorageConfig, StoreError};

/// One atomic write: inserts and removals, applied in order.
#[derive(Debug, Default)]
pub struct Write {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Write {
    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), None));
    }
}

/// A key and its value as an engine reads them.
pub type Entry<B> = Result<(B, B), StoreError>;

/// An ordered key-value store in one directory.
pub trait Engine: Send + Sync + 'static {
    type Bytes: AsRef<[u8]>;

    fn get(&self, key: &[u8]) -> Result<Option<Self::Bytes>, StoreError>;

    /// The entries between `lower` and `upper`, in key order or, if `reverse`, backwards.
    fn range(
        &self,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
    ) -> Box<dyn Iterator<Item = Entry<Self::Bytes>> + '_>;

    /// Applies every operation of `write`, or none of them.
    fn write(&self, write: Write) -> Result<(), StoreError>;

    /// Makes every write so far durable.
    fn flush(&self) -> Result<(), StoreError>;

    /// Bytes the engine's files take on disk.
    fn size_on_disk(&self) -> Result<u64, StoreError>;
}

/// Bytes of every key and value an engine holds.
pub(crate) fn stored_bytes(engine: &impl Engine) -> Result<u64, StoreError> {
    engine
        .range(Bound::Unbounded, Bound::Unbounded, false)
        .try_fold(0u64, |sum, entry| {
            let (key, value) = entry?;
            Ok(sum + (key.as_ref().len() + value.as_ref().len()) as u64)
        })
}

/// One tree of a sled database.
#[derive(Debug, Clone)]
pub struct Sled {
    pub(crate) db: sled::Db,
    pub(crate) tree: sled::Tree,
}

impl Sled {
    /// The tree `name` of `db`.
    pub fn open_tree(db: sled::Db, name: &str) -> Result<Self, StoreError> {
        let tree = db.open_tree(name)?;
        Ok(Sled { db, tree })
    }
}

impl Engine for Sled {
    type Bytes = sled::IVec;

    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        Ok(self.tree.get(key)?)
    }

    fn range(
        &self,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
    ) -> Box<dyn Iterator<Item = Entry<sled::IVec>> + '_> {
        let range = self.tree.range((lower, upper));
        let entries = |entry: sled::Result<_>| entry.map_err(StoreError::from);
        if reverse {
            Box::new(range.rev().map(entries))
        } else {
            Box::new(range.map(entries))
        }
    }

    fn write(&self, write: Write) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (key, value) in write.ops {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        Ok(self.tree.apply_batch(batch)?)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

/// One keyspace of a fjall database.
#[derive(Clone)]
pub struct Fjall {
    db: fjall::Database,
    keyspace: fjall::Keyspace,
}

impl std::fmt::Debug for Fjall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fjall").finish_non_exhaustive()
    }
}

impl Fjall {
    /// The keyspace `name` of the fjall database in `dir`, its block cache sized by
    /// `storage.cache_mb` and its memtables by `storage.write_buffer_mb`, in the current storage
    /// format.
    pub fn open(dir: &Path, name: &str, storage: &StorageConfig) -> Result<Self, StoreError> {
        let write_buffer = storage.write_buffer_mb.saturating_mul(1024 * 1024);
        let db = fjall::Database::builder(dir)
            .cache_size(storage.cache_mb.saturating_mul(1024 * 1024))
            .open()?;
        let keyspace = db.keyspace(name, || {
            fjall::KeyspaceCreateOptions::default().max_memtable_size(write_buffer / 2)
        })?;
        let engine = Fjall { db, keyspace };
        // Only releases that write format 2 know fjall: there is never anything to move.
        crate::format::ensure(&engine, name, |key, _| {
            Err(StoreError::corrupt(
                key,
                "a fjall store is never in format 1",
            ))
        })?;
        Ok(engine)
    }

    /// Writes the memtable to a table and waits until no flush or compaction is running.
    pub(crate) fn settle(&self) -> Result<(), StoreError> {
        self.keyspace.rotate_memtable_and_wait()?;
        while self.db.outstanding_flushes() > 0 || self.db.active_compactions() > 0 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Engine for Fjall {
    type Bytes = fjall::Slice;

    fn get(&self, key: &[u8]) -> Result<Option<fjall::Slice>, StoreError> {
        Ok(self.keyspace.get(key)?)
    }

    fn range(
        &self,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
    ) -> Box<dyn Iterator<Item = Entry<fjall::Slice>> + '_> {
        let range = self.keyspace.range::<Vec<u8>, _>((lower, upper));
        let entries = |guard: fjall::Guard| guard.into_inner().map_err(StoreError::from);
        if reverse {
            Box::new(range.rev().map(entries))
        } else {
            Box::new(range.map(entries))
        }
    }

    fn write(&self, write: Write) -> Result<(), StoreError> {
        let mut batch = self.db.batch();
        for (key, value) in write.ops {
            match value {
                Some(value) => batch.insert(&self.keyspace, key, value),
                None => batch.remove(&self.keyspace, key),
            }
        }
        Ok(batch.commit()?)
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(self.db.persist(fjall::PersistMode::SyncAll)?)
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.disk_space()?)
    }
}
