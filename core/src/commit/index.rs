//! The index of completed files: what `verify` audits every table file against, kept in a
//! few segments however long the pipeline runs.
//!
//! Each snapshot writes one segment with the files completed since the previous one, named by
//! the versions it covers. Segments merge like the digits of a binary counter: the newest two
//! merge while the older covers at most twice the versions of the newer, so going back in
//! time each segment covers more than twice the next one's versions. A pipeline keeps at most
//! [`max_segments`] of them (18 after a year of 10 s checkpoints), and each file is rewritten
//! a logarithmic number of times. Merging everything whenever a few segments piled up had
//! rewritten the whole index every 64 versions: quadratic in the run's length, about 100 MB
//! every ten minutes after a year at the generator's rate (ARCHITECTURE.md §5).
//!
//! A file may appear in two segments (an interrupted merge, a file sealed twice by
//! recovery): readers keep one entry per path.

use std::collections::BTreeMap;

use bytes::Bytes;
use object_store::path::Path;

use super::layout::{index_dir, index_path};
use super::view::IndexedFile;
use super::CheckpointError;
use crate::storage::Storage;

/// The most segments an index of `versions` versions holds: each segment covers at least one
/// version, and each covers more than twice the next one's.
pub fn max_segments(versions: u64) -> usize {
    versions.max(1).ilog2() as usize + 1
}

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

/// Writes the segment of files completed by entries `from..=to`, merged with the newest
/// segments while each covers at most twice the versions of what it merges into (one write,
/// and the new files are not read back). Returns the segments that now make up the index,
/// oldest first.
pub async fn append_segment(
    storage: &Storage,
    pipeline: &str,
    segments: &[String],
    from: u64,
    to: u64,
    files: &[IndexedFile],
) -> Result<Vec<String>, CheckpointError> {
    let mut out = segments.to_vec();
    if files.is_empty() {
        return Ok(out);
    }
    let mut first = from;
    let mut merging = 0;
    while let Some(older) = out.len().checked_sub(merging + 1).and_then(|i| versions_of(&out[i])) {
        if span(older) > 2 * span((first, to)) {
            break;
        }
        (first, merging) = (older.0, merging + 1);
    }
    let merged = out.split_off(out.len() - merging);
    let all = if merged.is_empty() { files.to_vec() } else { read_index(storage, &merged, files).await? };
    let path = index_path(pipeline, first, to);
    storage.put(&path, Bytes::from(encode(&all)?)).await?;
    out.push(path.to_string());
    Ok(out)
}

/// The versions `from..=to` a segment's name says it covers.
fn versions_of(segment: &str) -> Option<(u64, u64)> {
    let name = segment.rsplit('/').next()?.strip_suffix(".json")?;
    let (from, to) = name.split_once('-')?;
    Some((from.parse().ok()?, to.parse().ok()?))
}

fn span((from, to): (u64, u64)) -> u64 {
    to.saturating_sub(from) + 1
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
        let ends = versions_of(path.as_ref()).map(|(_, to)| to);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Table;

    fn files(segment: u64, n: u64) -> Vec<IndexedFile> {
        (0..n)
            .map(|i| IndexedFile {
                path: format!("page_views/day=2020-01-01/hour=00/part-p-p0-000001-{segment:08}-{i:04}.jsonl"),
                table: Table::PageViews,
                hour: 0,
                rows: 1,
                bytes: 1,
                checkpoint: segment + 1,
                version: 0,
            })
            .collect()
    }

    #[test]
    fn segments_stay_logarithmic_and_each_file_is_rewritten_a_logarithmic_number_of_times() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let storage = Storage::open(&dir.path().display().to_string(), rt.handle().clone()).unwrap();
        let (snapshots, per_segment, every) = (256u64, 10u64, 16u64);
        let (mut segments, mut written) = (Vec::<String>::new(), 0usize);
        for i in 0..snapshots {
            let before = segments.clone();
            let (from, to) = (i * every + 1, (i + 1) * every);
            segments = storage
                .block_on(append_segment(&storage, "p", &segments, from, to, &files(i, per_segment)))
                .unwrap();
            assert!(segments.len() <= max_segments(to), "{} segments after {to} versions", segments.len());
            for new in segments.iter().filter(|s| !before.contains(s)) {
                written +=
                    storage.block_on(read_index(&storage, std::slice::from_ref(new), &[])).unwrap().len();
            }
            let spans: Vec<u64> = segments.iter().map(|s| span(versions_of(s).unwrap())).collect();
            assert!(spans.windows(2).all(|w| w[0] > 2 * w[1]), "spans {spans:?}");
            assert_eq!(spans.iter().sum::<u64>(), to, "the segments cover every version once");
        }
        let all = storage.block_on(read_index(&storage, &segments, &[])).unwrap();
        assert_eq!(all.len() as u64, snapshots * per_segment, "every file is still indexed");
        // Each file is written once, then once per merge it takes part in: about log2(256)
        // times. Merging everything every few snapshots wrote 83,200 entries here.
        let bound = (snapshots * per_segment) as usize * (snapshots.ilog2() as usize + 2);
        assert!(written <= bound, "{written} entries written for {} files", all.len());
    }

    #[test]
    fn segment_names_give_their_versions() {
        assert_eq!(
            versions_of("_checkpoints/p/index/00000000000000000017-00000000000000000032.json"),
            Some((17, 32))
        );
        assert_eq!(versions_of("_checkpoints/p/index/lease.json"), None);
        assert_eq!(max_segments(1), 1);
        assert_eq!(max_segments(4096), 13);
    }
}
