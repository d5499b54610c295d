//! Snapshots and pruning: every [`SNAPSHOT_EVERY`]-th version's committer folds the log into
//! a snapshot with an index segment and deletes what it covers; and, since a deleted entry's
//! key is free again, the check that a version a member just created was not one pruned
//! while it stalled.

use bytes::Bytes;
use object_store::path::Path;

use super::{Log, SNAPSHOT_EVERY};
use crate::commit::index;
use crate::commit::layout::{entry_path, log_dir, snapshot_dir, snapshot_path, version_of};
use crate::commit::state::Entry;
use crate::commit::view::{newest_snapshot, View};
use crate::commit::CheckpointError;
use crate::storage::Storage;

impl Log {
    /// Writes the view as a snapshot with a new index segment, then deletes what it covers:
    /// entries up to the previous snapshot, older snapshots, merged index segments.
    ///
    /// Several members share the log, each snapshotting now and then, so the previous
    /// snapshot is the newest in the store, not this member's own: its segments are the base
    /// of the new one. Deletion spares every segment a remaining snapshot names, and every
    /// segment newer than this snapshot (another member's, about to be named).
    pub(super) fn snapshot(&mut self) -> Result<(), CheckpointError> {
        let (storage, pipeline) = (&self.storage, self.pipeline.as_str());
        let view = &self.view;
        storage
            .block_on(async {
                let (mut previous, mut base) = (view.snapshot_version, view.index.clone());
                if let Some(newest) = newest_snapshot(storage, pipeline).await? {
                    if newest.version >= view.version {
                        return Ok(None);
                    }
                    if newest.version > previous {
                        (previous, base) = (newest.version, newest.index);
                    }
                }
                // The recent files go back to this member's own last snapshot, at or before
                // `previous`: a superset of what the segment needs, and readers dedupe.
                let segments = index::append_segment(
                    storage,
                    pipeline,
                    &base,
                    previous + 1,
                    view.version,
                    &view.recent_files,
                )
                .await?;
                let snapshot = view.to_snapshot(segments.clone());
                let json = serde_json::to_vec(&snapshot).map_err(|e| CheckpointError::Corrupt {
                    path: snapshot_path(pipeline, view.version).to_string(),
                    reason: e.to_string(),
                })?;
                storage.put(&snapshot_path(pipeline, view.version), Bytes::from(json)).await?;
                // Readers that started from the previous snapshot may still need its entries for a
                // moment; entries it covers (up to `previous`) are no longer needed by anyone.
                for path in storage.list(&log_dir(pipeline)).await? {
                    if version_of(&path).is_some_and(|v| v <= previous) {
                        storage.delete(&path).await?;
                    }
                }
                let mut keep = segments.clone();
                for path in storage.list(&snapshot_dir(pipeline)).await? {
                    match version_of(&path) {
                        Some(v) if v < previous => storage.delete(&path).await?,
                        Some(_) => keep.extend(snapshot_segments(storage, &path).await?),
                        None => {}
                    }
                }
                index::prune_segments(storage, pipeline, &keep, view.version).await?;
                Ok::<_, CheckpointError>(Some(snapshot))
            })
            .map(|snapshot| {
                if let Some(snapshot) = snapshot {
                    self.view.index = snapshot.index;
                    self.view.snapshot_version = snapshot.version;
                    self.view.recent_files.clear();
                }
            })
    }
}

/// Whether the version `entry` was just created at had been written by another member and
/// pruned before: a member that stalled between reading the log and writing it while others
/// wrote [`SNAPSHOT_EVERY`] versions and more finds the key free again, and readers, who
/// start from the newest snapshot, would never see its entry. Pruning version `v` takes a
/// snapshot at `v + SNAPSHOT_EVERY` or later, and the newest snapshot is never deleted, so
/// one listing settles the usual case; past that, the newest snapshot's writers say whether
/// it folded this member's entry. Returns that snapshot when it did not, with the stray entry
/// deleted unless a later run of the same member might have been the one folded.
pub(super) async fn pruned_before(
    storage: &Storage,
    pipeline: &str,
    entry: &Entry,
) -> Result<Option<View>, CheckpointError> {
    let newest = storage.list(&snapshot_dir(pipeline)).await?.iter().filter_map(version_of).max();
    if newest.is_none_or(|n| n < entry.version + SNAPSHOT_EVERY) {
        return Ok(None);
    }
    let snapshot = match newest_snapshot(storage, pipeline).await? {
        // A snapshot from a pageviews that kept no writers cannot tell: as before.
        Some(s) if s.version >= entry.version + SNAPSHOT_EVERY && !s.writers.is_empty() => s,
        _ => return Ok(None),
    };
    match snapshot.writers.get(&entry.member) {
        Some(w) if w.run == entry.run && w.version >= entry.version => Ok(None),
        Some(w) if w.run != entry.run => Ok(Some(snapshot)),
        _ => {
            storage.delete(&entry_path(pipeline, entry.version)).await?;
            Ok(Some(snapshot))
        }
    }
}

/// The index segments a snapshot names; none when it was pruned meanwhile.
async fn snapshot_segments(storage: &Storage, path: &Path) -> Result<Vec<String>, CheckpointError> {
    #[derive(serde::Deserialize)]
    struct Named {
        index: Vec<String>,
    }
    match storage.get(path).await {
        Ok(bytes) => serde_json::from_slice::<Named>(&bytes)
            .map(|n| n.index)
            .map_err(|e| CheckpointError::Corrupt { path: path.to_string(), reason: e.to_string() }),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}
