//! Where services keep their state: one database per service instance, in sled (the default) or,
//! for the projector and the query service, fjall (`storage.engine`).
//!
//! The rule every store here keeps (DESIGN §4): everything a service derives from one batch of
//! Kafka records, *and* the next offset of each partition the batch came from, is written in one
//! atomic batch. A crash at any point therefore leaves either the whole batch or none of it, and
//! the service replays exactly the records whose effects were not stored.
//!
//! Layout: [`engine`] is what a store needs of its database, on sled and on fjall; [`offsets`]
//! the shared key scheme for stored offsets; `compact` the compact forms of sids and records;
//! `format` the format a store is in and the move from earlier ones. [`projector`] holds the
//! projector's keyspace behind the [`ProjectorStore`] trait, and [`query`] the query service's
//! read model behind the [`QueryStore`] trait, so each store can be measured and replaced.

mod compact;
pub mod engine;
mod format;
pub mod offsets;
pub mod projector;
pub mod query;

pub use offsets::PartitionOffset;
pub use projector::{
    FjallProjectorStore, ParkedEntry, ProjectorBatch, ProjectorDb, ProjectorStore,
    SledProjectorStore,
};
pub use query::{
    ApplyStats, FjallQueryStore, MessageView, Page, QueryStore, ReadModelStore, Rollup,
    SledQueryStore, SortOrder, TimelineEntry, TimelineStats,
};

/// How a service's database is opened: `storage.*` in every service's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// The most memory the database's cache may take, in MiB: sled's page cache, or fjall's
    /// block cache. sled's own default is 1 GiB per database; what a process needs beyond this
    /// does not depend on the number of receipts stored, so this bounds a service's memory.
    pub cache_mb: u64,
    /// The most memory fjall's memtables may take, in MiB: writes are collected in a memtable of
    /// half this size, and one more is held while a full one is written out. sled has none.
    pub write_buffer_mb: u64,
    /// What the projector and the query service keep their state in. The dispatcher always uses
    /// sled.
    pub engine: StorageEngine,
}

/// The engines a projector's state and a read model can be kept in (`storage.engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageEngine {
    /// sled, in the data directory itself.
    #[default]
    Sled,
    /// fjall, an LSM tree, in `fjall/` under the data directory. Switching engines starts from an
    /// empty store: the projector restores its state from its changelog and the query service
    /// rebuilds its read model from the topics.
    Fjall,
}

impl StorageEngine {
    /// Its name in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageEngine::Sled => "sled",
            StorageEngine::Fjall => "fjall",
        }
    }
}

impl std::fmt::Display for StorageEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for StorageEngine {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        [StorageEngine::Sled, StorageEngine::Fjall]
            .into_iter()
            .find(|engine| engine.as_str() == name)
            .ok_or_else(|| format!("unknown storage engine `{name}`: `sled` or `fjall`"))
    }
}

impl StorageConfig {
    /// The default configuration on `engine`.
    pub fn on(engine: StorageEngine) -> Self {
        StorageConfig {
            engine,
            ..StorageConfig::default()
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            cache_mb: 64,
            write_buffer_mb: 32,
            engine: StorageEngine::Sled,
        }
    }
}

impl StorageConfig {
    /// Refuses a cache or write buffer too small to work with, naming the setting.
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.cache_mb == 0 {
            return Err(("storage.cache_mb", "must be at least 1"));
        }
        if self.write_buffer_mb < 2 {
            return Err(("storage.write_buffer_mb", "must be at least 2"));
        }
        Ok(())
    }

    /// Refuses an engine other than sled, for the services that keep their state only there.
    pub fn check_sled_only(&self) -> Result<(), &'static str> {
        match self.engine {
            StorageEngine::Sled => Ok(()),
            StorageEngine::Fjall => {
                Err("only the projector and the query service can keep their state in fjall")
            }
        }
    }
}

/// The projector's state in `dir`, on the engine `storage` names.
pub fn open_projector_store(
    dir: &std::path::Path,
    storage: &StorageConfig,
) -> Result<std::sync::Arc<dyn ProjectorStore>, StoreError> {
    Ok(match storage.engine {
        StorageEngine::Sled => std::sync::Arc::new(SledProjectorStore::open_with(dir, storage)?),
        StorageEngine::Fjall => {
            std::sync::Arc::new(FjallProjectorStore::open_with(&dir.join("fjall"), storage)?)
        }
    })
}

/// The query service's read model in `dir`, on the engine `storage` names.
pub fn open_query_store(
    dir: &std::path::Path,
    storage: &StorageConfig,
) -> Result<std::sync::Arc<dyn QueryStore>, StoreError> {
    Ok(match storage.engine {
        StorageEngine::Sled => std::sync::Arc::new(SledQueryStore::open_with(dir, storage)?),
        StorageEngine::Fjall => {
            std::sync::Arc::new(FjallQueryStore::open_with(&dir.join("fjall"), storage)?)
        }
    })
}

/// How long opening waits for a previous owner of the database to let go of it: a process that
/// is restarting, or a store that was just dropped (sled's flusher holds the lock a little longer).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens the sled database in `dir` with the default [`StorageConfig`].
pub fn open_db(dir: &std::path::Path) -> Result<sled::Db, StoreError> {
    open_db_with(dir, &StorageConfig::default())
}

/// Opens the sled database in `dir`, waiting up to [`LOCK_WAIT`] while another owner holds it.
/// Every service's store opens its database this way.
pub fn open_db_with(
    dir: &std::path::Path,
    storage: &StorageConfig,
) -> Result<sled::Db, StoreError> {
    open_db_waiting(dir, storage, LOCK_WAIT)
}

/// Whether sled refused to open because another owner holds the database's file lock. sled
/// reports that as an `Other` I/O error whose message names the lock, so the message is what
/// tells it apart.
fn lock_held(error: &sled::Error) -> bool {
    match error {
        sled::Error::Io(e) => {
            e.kind() == std::io::ErrorKind::WouldBlock
                || e.to_string().contains("could not acquire lock")
        }
        _ => false,
    }
}

fn open_db_waiting(
    dir: &std::path::Path,
    storage: &StorageConfig,
    wait: std::time::Duration,
) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + wait;
    let config = sled::Config::new()
        .path(dir)
        .cache_capacity(storage.cache_mb.saturating_mul(1024 * 1024));
    loop {
        match config.open() {
            Err(e) if lock_held(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) if lock_held(&e) => {
                return Err(StoreError::InUse {
                    dir: dir.to_owned(),
                });
            }
            other => return Ok(other?),
        }
    }
}

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {} is in use by another process", dir.display())]
    InUse { dir: std::path::PathBuf },
    #[error(transparent)]
    Sled(#[from] sled::Error),
    #[error(transparent)]
    Fjall(#[from] fjall::Error),
    #[error(
        "the {store} database is in storage format {found}, written by a newer release; this \
         release reads format {supported} and earlier"
    )]
    Format {
        store: String,
        found: u32,
        supported: u32,
    },
    #[error("stored value under {key:?} is corrupt")]
    Corrupt {
        key: String,
        /// The decoding error, or what is wrong with the bytes.
        #[source]
        source: CorruptValue,
    },
}

/// Why a stored value cannot be read.
pub type CorruptValue = Box<dyn std::error::Error + Send + Sync>;

impl StoreError {
    /// The value under `key` cannot be read, because of `source` (an error, or a description
    /// of what is wrong with its bytes).
    pub fn corrupt(key: &[u8], source: impl Into<CorruptValue>) -> Self {
        StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            source: source.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn opening_waits_for_the_previous_owner_to_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = open_db(dir.path()).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(first);
        });
        let second = open_db(dir.path());
        release.join().unwrap();
        assert!(second.is_ok(), "{:?}", second.err());
    }

    #[test]
    fn a_database_held_for_longer_is_reported_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let _held = open_db(dir.path()).unwrap();
        let err = open_db_waiting(
            dir.path(),
            &StorageConfig::default(),
            Duration::from_millis(100),
        )
        .unwrap_err();
        assert!(matches!(err, StoreError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("in use"), "{err}");
    }

    #[test]
    fn a_cache_or_write_buffer_too_small_is_refused_by_name() {
        assert_eq!(StorageConfig::default().check(), Ok(()));
        let no_cache = StorageConfig {
            cache_mb: 0,
            ..StorageConfig::default()
        };
        assert_eq!(no_cache.check().unwrap_err().0, "storage.cache_mb");
        let tiny_buffer = StorageConfig {
            write_buffer_mb: 1,
            ..StorageConfig::default()
        };
        assert_eq!(
            tiny_buffer.check().unwrap_err().0,
            "storage.write_buffer_mb"
        );
    }
}
