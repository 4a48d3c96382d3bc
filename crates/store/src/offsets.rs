//! Stored Kafka positions. Keys are `o/{topic}/{partition}`, values the next offset to read as
//! big-endian i64, in the same tree as the state they belong to.

use crate::StoreError;
use crate::engine::{Engine, Write};

/// The next record to read from one partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

fn key(topic: &str, partition: i32) -> Vec<u8> {
    format!("o/{topic}/{partition}").into_bytes()
}

/// The stored next offset of a partition, if any.
pub fn read(tree: &sled::Tree, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
    let key = key(topic, partition);
    tree.get(&key)?
        .map(|value| decode(&key, &value))
        .transpose()
}

/// The stored next offset of a partition in `engine`, if any.
pub(crate) fn read_from(
    engine: &impl Engine,
    topic: &str,
    partition: i32,
) -> Result<Option<i64>, StoreError> {
    let key = key(topic, partition);
    engine
        .get(&key)?
        .map(|value| decode(&key, value.as_ref()))
        .transpose()
}

fn decode(key: &[u8], value: &[u8]) -> Result<i64, StoreError> {
    let bytes: [u8; 8] = value.try_into().map_err(|_| {
        StoreError::corrupt(key, format!("offset has {} bytes, expected 8", value.len()))
    })?;
    Ok(i64::from_be_bytes(bytes))
}

/// Adds a partition's next offset to an engine's write.
pub(crate) fn put(write: &mut Write, offset: &PartitionOffset) {
    write.insert(
        key(&offset.topic, offset.partition),
        offset.next_offset.to_be_bytes(),
    );
}

/// Adds a partition's next offset to a batch, to be stored with the state it belongs to.
pub fn write(batch: &mut sled::Batch, offset: &PartitionOffset) {
    batch.insert(
        key(&offset.topic, offset.partition),
        &offset.next_offset.to_be_bytes(),
    );
}
