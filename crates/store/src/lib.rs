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

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored value under {key:?} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
}
