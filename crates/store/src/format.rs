//! Which format a store's tree is written in, and the move of a tree written by an earlier
//! release to the current format when it is opened.
//!
//! - Format 1 (releases up to 0.1): text keys, `{kind letter}/{sid}/…`, and records that repeat
//!   the sids of their keys.
//! - Format 2: binary keys whose first byte is the kind (below `0x20`, so never a format 1 key)
//!   and the compact records of [`crate::compact`]. Offsets keep their `o/…` form in both.
//!
//! A tree holds its format under [`KEY`]. A tree without it is format 1 (or new). Its records are
//! moved in chunks, each chunk one atomic batch that removes the old keys and inserts the new
//! ones, so a move cut short by a crash carries on where it stopped the next time the store is
//! opened, and the format is written only once nothing of format 1 is left.

use std::ops::Bound;

use crate::StoreError;
use crate::engine::{Engine, Write};

/// Where a tree records its format: first in byte order, and no kind of record starts with it.
pub(crate) const KEY: &[u8] = b"\x00format";
/// The format this release writes.
pub(crate) const CURRENT: u32 = 2;

/// Records moved per atomic batch.
const CHUNK: usize = 10_000;

/// What a format 1 record becomes: its new key and value, or nothing when it is dropped.
pub(crate) type Moved = Option<(Vec<u8>, Vec<u8>)>;

/// Brings `tree` to the current format, moving every format 1 record with `convert`.
/// `name` names the store in logs and errors.
pub(crate) fn ensure<E: Engine>(
    engine: &E,
    name: &str,
    convert: impl Fn(&[u8], &[u8]) -> Result<Moved, StoreError>,
) -> Result<(), StoreError> {
    if let Some(stored) = engine.get(KEY)? {
        let found = <[u8; 4]>::try_from(stored.as_ref())
            .map(u32::from_be_bytes)
            .map_err(|_| StoreError::corrupt(KEY, "the format is not 4 bytes"))?;
        return match found {
            CURRENT => Ok(()),
            found => Err(StoreError::Format {
                store: name.to_owned(),
                found,
                supported: CURRENT,
            }),
        };
    }
    let mut moved = 0u64;
    loop {
        let chunk = format1_records(engine)?;
        if chunk.is_empty() {
            break;
        }
        let mut write = Write::default();
        for (key, value) in &chunk {
            write.remove(key.as_ref());
            if let Some((key, value)) = convert(key.as_ref(), value.as_ref())? {
                write.insert(key, value);
            }
        }
        engine.write(write)?;
        moved += chunk.len() as u64;
        tracing::info!(
            store = name,
            moved,
            "moving records to storage format {CURRENT}"
        );
    }
    let mut write = Write::default();
    write.insert(KEY, CURRENT.to_be_bytes());
    engine.write(write)?;
    if moved > 0 {
        engine.flush()?;
        tracing::info!(
            store = name,
            moved,
            "every record is in storage format {CURRENT}"
        );
    }
    Ok(())
}

type Record<E> = (<E as Engine>::Bytes, <E as Engine>::Bytes);

/// Up to [`CHUNK`] format 1 records other than offsets: their keys begin with a lowercase
/// letter and a `/`.
fn format1_records<E: Engine>(engine: &E) -> Result<Vec<Record<E>>, StoreError> {
    let mut chunk = Vec::new();
    let (lower, upper) = (
        Bound::Included(b"a".to_vec()),
        Bound::Excluded(b"{".to_vec()),
    );
    for entry in engine.range(lower, upper, false) {
        let (key, value) = entry?;
        if key.as_ref().starts_with(b"o/") {
            continue;
        }
        chunk.push((key, value));
        if chunk.len() == CHUNK {
            break;
        }
    }
    Ok(chunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_format_is_refused_with_both_numbers() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let engine = crate::engine::Sled::open_tree(db, "t").unwrap();
        engine.tree.insert(KEY, &7u32.to_be_bytes()).unwrap();
        let err = ensure(&engine, "query", |_, _| Ok(None)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("format 7") && text.contains("format 2"),
            "{text}"
        );
    }

    #[test]
    fn offsets_stay_and_a_move_cut_short_carries_on() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let engine = crate::engine::Sled::open_tree(db, "t").unwrap();
        let tree = engine.tree.clone();
        tree.insert(b"o/topic/0", &5i64.to_be_bytes()).unwrap();
        for i in 0..(CHUNK + 10) {
            tree.insert(format!("x/{i:06}"), b"v".as_slice()).unwrap();
        }
        // The first attempt fails part way, as a crash would leave it.
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let failing = ensure(&engine, "test", |key, _| {
            if calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == CHUNK + 3 {
                return Err(StoreError::corrupt(key, "cut short"));
            }
            Ok(Some(([&[0x01], key].concat(), b"w".to_vec())))
        });
        assert!(failing.is_err());
        assert_eq!(tree.get(KEY).unwrap(), None);
        ensure(&engine, "test", |key, _| {
            Ok(Some(([&[0x01], key].concat(), b"w".to_vec())))
        })
        .unwrap();
        assert_eq!(tree.len(), CHUNK + 10 + 2);
        assert!(tree.get(b"x/000001").unwrap().is_none());
        assert_eq!(tree.get(b"\x01x/000001").unwrap().unwrap().as_ref(), b"w");
        assert_eq!(
            tree.get(b"o/topic/0").unwrap().unwrap().as_ref(),
            &5i64.to_be_bytes()
        );
        assert_eq!(
            tree.get(KEY).unwrap().unwrap().as_ref(),
            &CURRENT.to_be_bytes()
        );
    }
}
