//! The index of completed files: what `verify` audits every table file against, kept in a
//! few segments however long the pipeline runs.
//!
//! Each snapshot writes one segment with the files completed since the previous one; past
//! [`MAX_SEGMENTS`] the segments are merged into one. A file may appear in two segments (an
//! interrupted merge, a file sealed twice by recovery): readers keep one entry per path.

use std::collections::BTreeMap;

use bytes::Bytes;
use object_store::path::Path;

use super::layout::{index_dir, index_path};
use super::view::IndexedFile;
use super::CheckpointError;
use crate::storage::Storage;

/// Segments kept before they are merged into one.
pub const MAX_SEGMENTS: usize = 4;

/// Every file in `segments` plus `recent`, one entry per path.
pub async fn read_index(
    storage: &Storage,
    segments: &[String],
    recent: &[IndexedFile],
) -> Result<Vec<IndexedFile>, CheckpointError> {
    let mut files: BTreeMap<String, IndexedFile> = BTreeMap::new();
    for segment in segments {
        let path = Path::from(segment.as_str());
        let bytes = storage.get(&path).await?;
        let listed: Vec<IndexedFile> = serde_json::from_slice(&bytes)
            .map_err(|e| CheckpointError::Corrupt { path: segment.clone(), reason: e.to_string() })?;
        files.extend(listed.into_iter().map(|f| (f.path.clone(), f)));
    }
    files.extend(recent.iter().map(|f| (f.path.clone(), f.clone())));
    Ok(files.into_values().collect())
}

/// Writes the segment of files completed by entries `from..=to` and merges the segments when
/// there are too many. Returns the segments that now make up the index.
pub async fn append_segment(
    storage: &Storage,
    pipeline: &str,
    segments: &[String],
    from: u64,
    to: u64,
    files: &[IndexedFile],
) -> Result<Vec<String>, CheckpointError> {
    let mut out = segments.to_vec();
    if !files.is_empty() {
        let path = index_path(pipeline, from, to);
        storage.put(&path, Bytes::from(encode(files)?)).await?;
        out.push(path.to_string());
    }
    if out.len() <= MAX_SEGMENTS {
        return Ok(out);
    }
    let all = read_index(storage, &out, &[]).await?;
    let merged = index_path(pipeline, 0, to);
    storage.put(&merged, Bytes::from(encode(&all)?)).await?;
    Ok(vec![merged.to_string()])
}

/// Deletes index segments no snapshot in `keep` names (those of older snapshots, merged
/// away), sparing segments that end after `up_to`: another member's, written for a newer
/// snapshot that does not exist yet.
pub async fn prune_segments(
    storage: &Storage,
    pipeline: &str,
    keep: &[String],
    up_to: u64,
) -> Result<(), CheckpointError> {
    for path in storage.list(&index_dir(pipeline)).await? {
        let ends =
            path.filename().and_then(|n| n.strip_suffix(".json")?.split_once('-')?.1.parse::<u64>().ok());
        if ends.is_some_and(|to| to <= up_to) && !keep.iter().any(|k| k == path.as_ref()) {
            storage.delete(&path).await?;
        }
    }
    Ok(())
}

fn encode(files: &[IndexedFile]) -> Result<Vec<u8>, CheckpointError> {
    serde_json::to_vec(files)
        .map_err(|e| CheckpointError::Corrupt { path: "index".into(), reason: e.to_string() })
}
