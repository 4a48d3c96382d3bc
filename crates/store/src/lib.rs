//! Where services keep their state: sled, one database per service instance.
//!
//! The rule every store here keeps (DESIGN §4): everything a service derives from one batch of
//! Kafka records, *and* the next offset of each partition the batch came from, is written in one
//! atomic sled batch. A crash at any point therefore leaves either the whole batch or none of it,
//! and the service replays exactly the records whose effects were not stored.
//!
//! Layout: [`offsets`] is the shared key scheme for stored offsets; [`projector`] holds the
//! projector's keyspace behind the [`ProjectorStore`] trait, and [`query`] the query service's read
//! model behind the [`QueryStore`] trait, so each store can be measured and replaced.

pub mod offsets;
pub mod projector;
pub mod query;

pub use offsets::PartitionOffset;
pub use projector::{ParkedEntry, ProjectorBatch, ProjectorStore, SledProjectorStore};
pub use query::{
    ApplyStats, MessageView, Page, QueryStore, Rollup, SledQueryStore, SortOrder, TimelineEntry,
};

/// How long opening waits for a previous owner of the database to let go of it: a process that
/// is restarting, or a store that was just dropped (sled's flusher holds the lock a little longer).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens the sled database in `dir`, waiting up to [`LOCK_WAIT`] while another owner holds it.
/// Every service's store opens its database this way.
pub fn open_db(dir: &std::path::Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new().path(dir).open() {
            Err(sled::Error::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(sled::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
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
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored value under {key:?} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
}
