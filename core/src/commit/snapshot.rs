//! Snapshots: the committed state of a table root as a reader sees it, as of the newest log
//! entry of every pipeline under it.
//!
//! A checkpoint commits every row written so far, but only rolled files are visible in the
//! table folders; the rest sit in files still open, whose committed prefix each task's state
//! records ([`OpenFileState`]). [`read_snapshot`] loads the [`View`] of
//! every pipeline under the root and names every file it commits — visible files whole, open
//! ones up to their committed length — and [`SnapshotFile::read`] serves any byte range of
//! them, never a byte past what is committed. The SQL client reads tables only through this
//! module, so the commit log's layout can change without touching it.
//!
//! An open file on local disk: its bytes up to `sent` are in its staged upload, or at its
//! final path once it rolled (both hold the same prefix: bytes once written never change);
//! the rest, for Parquet the checkpoint's footer, is the checkpoint's tail object
//! (`_staging/<pipeline>/tails/p<P>/<claim>-<cp>/…`). The task's next commit (or a recovery
//! of the partition) deletes those tails, so a read that finds one gone fails with
//! [`SnapshotError::Expired`] and the reader takes a new snapshot. On S3 the parts of an unfinished multipart upload cannot be read: an
//! open file is readable only while all its bytes are in its tail (no part uploaded yet), the
//! others are [`Unreadable`].
//!
//! Which visible files belong to the snapshot: the table folders are listed *after* the views
//! are loaded, so every file published up to them is there. A file published since is told
//! apart by its name ([`FileName`]): it carries its source partition and the task checkpoint
//! that first records it, so one named past its task's committed checkpoint holds none of the
//! snapshot's rows and is left out; one the task's state records as open is read only up to
//! the length it committed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};
use thiserror::Error;

use super::layout::{entry_path, facts_path, snapshot_path, FileName};
use super::state::{ClosedFile, OpenFileState};
use super::view::View;
use super::CheckpointError;
use crate::storage::{Storage, StorageError};
use crate::table::Table;

/// Why a snapshot could not be read, or a byte range of it served.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A newer checkpoint replaced what this snapshot names (it deleted the tail this read
    /// needed): read a new snapshot and start over.
    #[error(
        "log entry {seq} of pipeline {pipeline} was superseded while {path} was read; read a new snapshot"
    )]
    Expired {
        /// The pipeline.
        pipeline: String,
        /// The log version the snapshot was taken at.
        seq: u64,
        /// The file being read.
        path: String,
    },
    /// A read past the committed length: a reader bug, never served.
    #[error("bytes {start}..{end} of {path} were asked for, but only {size} are committed")]
    OutOfRange {
        /// The file.
        path: String,
        /// First byte asked for.
        start: u64,
        /// End of the range asked for (exclusive).
        end: u64,
        /// Committed length.
        size: u64,
    },
}

impl SnapshotError {
    /// True when a new snapshot would get past this error.
    pub fn is_expired(&self) -> bool {
        matches!(self, SnapshotError::Expired { .. })
    }
}

/// Every committed file under a table root, as of each pipeline's newest checkpoint.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Per pipeline id, the log version this snapshot is as of.
    pub checkpoints: BTreeMap<String, u64>,
    /// Committed files of every table, visible or still open, sorted by path.
    pub files: Vec<SnapshotFile>,
    /// Committed rows this root cannot serve yet.
    pub unreadable: Vec<Unreadable>,
}

impl Snapshot {
    /// The committed files of `table`.
    pub fn table_files(&self, table: Table) -> impl Iterator<Item = &SnapshotFile> {
        self.files.iter().filter(move |f| f.table == table)
    }

    /// The file at `path` (relative to the root), if the snapshot holds it.
    pub fn file(&self, path: &str) -> Option<&SnapshotFile> {
        self.files.binary_search_by(|f| f.meta.location.as_ref().cmp(path)).ok().map(|i| &self.files[i])
    }
}

/// One committed file: where it appears and how many of its bytes a reader may read.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    /// Its table.
    pub table: Table,
    /// `location`: where the file appears (or will), relative to the root; `size`: the
    /// committed length; `last_modified`: when that length was committed (the file's own
    /// time if it is visible, else the log entry's), so caches keyed on both see a new
    /// version after each checkpoint.
    pub meta: ObjectMeta,
    source: Source,
}

/// Where a file's committed bytes are.
#[derive(Debug, Clone)]
enum Source {
    /// A visible file: all of it, at its path.
    Whole,
    /// A file still open at the checkpoint.
    Open {
        /// Bytes `0..sent` are here (the staged upload, or the final path once visible)…
        data: Option<Path>,
        /// …or here, once the upload was completed into place (local disk).
        rolled: Option<Path>,
        /// Bytes written to `data` that the checkpoint covers.
        sent: u64,
        /// The checkpoint's tail object: bytes `sent..size`.
        tail: Option<Path>,
        /// The log version, for [`SnapshotError::Expired`].
        pipeline: String,
        seq: u64,
    },
}

/// Committed rows the root cannot serve yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// A file whose committed bytes are in the parts of an S3 multipart upload in progress,
    /// which S3 does not let anyone read: they appear when the file rolls.
    InProgressUpload {
        /// Its table.
        table: Table,
        /// Where it will appear, relative to the root.
        path: String,
        /// Committed rows in it.
        rows: u64,
    },
    /// A pipeline whose commit log cannot be read (corrupt, or another format); its visible
    /// files are read whole.
    Log {
        /// The pipeline.
        pipeline: String,
        /// Its checkpoints folder.
        path: String,
        /// Why it cannot be read.
        reason: String,
    },
}

impl SnapshotFile {
    /// True for a file still being written, read up to its committed length.
    pub fn is_open(&self) -> bool {
        matches!(self.source, Source::Open { .. })
    }

    /// Bytes `range` of the file's committed content. Never returns a byte past
    /// `meta.size`; [`SnapshotError::Expired`] when a newer checkpoint removed what this
    /// snapshot needs.
    pub async fn read(&self, storage: &Storage, range: Range<u64>) -> Result<Bytes, SnapshotError> {
        let size = self.meta.size;
        if range.start > range.end || range.end > size {
            return Err(SnapshotError::OutOfRange {
                path: self.meta.location.to_string(),
                start: range.start,
                end: range.end,
                size,
            });
        }
        let (data, rolled, sent, tail, pipeline, seq) = match &self.source {
            Source::Whole => return Ok(get_range(storage, &self.meta.location, range).await?),
            Source::Open { data, rolled, sent, tail, pipeline, seq } => {
                (data, rolled, *sent, tail, pipeline, *seq)
            }
        };
        let expired = || SnapshotError::Expired {
            pipeline: pipeline.clone(),
            seq,
            path: self.meta.location.to_string(),
        };
        let head = range.start.min(sent)..range.end.min(sent);
        let rest = range.start.max(sent) - sent..range.end.max(sent) - sent;
        let head = if head.is_empty() {
            Bytes::new()
        } else {
            let mut found = None;
            for path in [data, rolled].into_iter().flatten() {
                match get_range(storage, path, head.clone()).await {
                    Ok(bytes) => {
                        found = Some(bytes);
                        break;
                    }
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            found.ok_or_else(expired)?
        };
        if rest.is_empty() {
            return Ok(head);
        }
        let tail = tail.as_ref().ok_or_else(expired)?;
        let rest = match get_range(storage, tail, rest).await {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => return Err(expired()),
            Err(e) => return Err(e.into()),
        };
        if head.is_empty() {
            return Ok(rest);
        }
        let mut out = BytesMut::with_capacity(head.len() + rest.len());
        out.extend_from_slice(&head);
        out.extend_from_slice(&rest);
        Ok(out.freeze())
    }
}

async fn get_range(storage: &Storage, path: &Path, range: Range<u64>) -> Result<Bytes, StorageError> {
    storage.store().get_range(path, range).await.map_err(StorageError::store("read", path))
}

/// A pipeline's log folded up, with when its newest entry was written; or why it cannot be
/// read.
type Newest = Result<(View, Option<ObjectMeta>), Unreadable>;

/// Reads the committed state of the root: for every pipeline its newest log entry, and every
/// file of every table it commits. Reading it costs a listing of `_checkpoints/`, loading
/// each pipeline's view (its newest snapshot and the entries after it), and one listing of
/// each table folder.
pub async fn read_snapshot(storage: &Storage) -> Result<Snapshot, SnapshotError> {
    let newest = newest_views(storage).await?;
    // Listed after the views: everything published up to them is visible now.
    let mut visible: HashMap<String, ObjectMeta> = HashMap::new();
    for table in Table::ALL {
        let prefix = Path::from(table.name());
        let metas: Vec<ObjectMeta> = storage
            .store()
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(StorageError::store("list", &prefix))?;
        visible.extend(metas.into_iter().map(|m| (m.location.to_string(), m)));
    }

    let mut snapshot = Snapshot::default();
    let mut claimed: HashSet<String> = HashSet::new();
    for (pipeline, state) in &newest {
        let (view, committed_at) = match state {
            Ok(found) => found,
            Err(why) => {
                snapshot.unreadable.push(why.clone());
                continue;
            }
        };
        snapshot.checkpoints.insert(pipeline.clone(), view.version);
        let at = Committed { storage, pipeline, version: view.version, stamp: committed_at.as_ref() };
        for task in view.tasks.values() {
            for f in &task.open {
                claimed.insert(f.path.clone());
                at.open_file(f, &visible, &mut snapshot);
            }
            // Rolled files this task's newest commit completes, if their publication is
            // still under way (a commit publishes before the task's next one).
            for f in &task.files {
                if visible.contains_key(f.path()) {
                    continue;
                }
                claimed.insert(f.path().to_string());
                at.rolled_file(f, &mut snapshot).await?;
            }
        }
    }
    for (path, meta) in &visible {
        if claimed.contains(path.as_str()) {
            continue;
        }
        let Some(table) = meta.location.parts().next().and_then(|t| Table::from_name(t.as_ref())) else {
            continue;
        };
        if let Some(name) = FileName::parse(path) {
            if let Some(Ok((view, _))) = newest.get(name.pipeline) {
                // The name carries the task checkpoint that first records the file: past the
                // task's newest (or with no committed task at all), it was opened after the
                // snapshot and holds none of its rows.
                let committed_cp = view.tasks.get(&name.partition).map_or(0, |t| t.cp);
                if name.cp > committed_cp {
                    continue;
                }
            }
        }
        snapshot.files.push(SnapshotFile { table, meta: meta.clone(), source: Source::Whole });
    }
    snapshot.files.sort_by(|a, b| a.meta.location.as_ref().cmp(b.meta.location.as_ref()));
    Ok(snapshot)
}

/// One pipeline's newest commit, placing the files it records in a snapshot.
struct Committed<'a> {
    storage: &'a Storage,
    pipeline: &'a str,
    version: u64,
    /// The newest entry's object (see [`committed_at`]).
    stamp: Option<&'a ObjectMeta>,
}

impl Committed<'_> {
    fn meta(&self, path: &str, size: u64) -> ObjectMeta {
        ObjectMeta {
            location: Path::from(path),
            last_modified: self.stamp.map(|m| m.last_modified).unwrap_or_default(),
            size,
            e_tag: None,
            version: None,
        }
    }

    fn open_source(&self, sent: u64, tail: Option<&str>, data: Option<Path>, rolled: Option<Path>) -> Source {
        Source::Open {
            data,
            rolled,
            sent,
            tail: tail.map(Path::from),
            pipeline: self.pipeline.to_string(),
            seq: self.version,
        }
    }

    /// A file the commit records as open: its committed prefix and tail.
    fn open_file(&self, f: &OpenFileState, visible: &HashMap<String, ObjectMeta>, snapshot: &mut Snapshot) {
        let source = match visible.get(&f.path) {
            // Sealed by a recovery at exactly this commit's length: the whole file.
            Some(v) if v.size == f.bytes => {
                snapshot.files.push(SnapshotFile { table: f.table, meta: v.clone(), source: Source::Whole });
                return;
            }
            // Rolled since, with more rows: its prefix, and this commit's tail.
            Some(_) => self.open_source(f.sent, f.tail.as_deref(), Some(Path::from(f.path.as_str())), None),
            None if self.storage.is_object_store() => {
                if f.sent > 0 {
                    snapshot.unreadable.push(Unreadable::InProgressUpload {
                        table: f.table,
                        path: f.path.clone(),
                        rows: f.rows,
                    });
                    return;
                }
                self.open_source(f.sent, f.tail.as_deref(), None, None)
            }
            None => {
                let staged = f.upload.as_ref().map(|u| Path::from(u.staged.as_str()));
                let rolled = Some(Path::from(f.path.as_str()));
                self.open_source(f.sent, f.tail.as_deref(), staged, rolled)
            }
        };
        snapshot.files.push(SnapshotFile { table: f.table, meta: self.meta(&f.path, f.bytes), source });
    }

    /// A rolled file the commit completes, not in its folder yet when the folders were listed.
    async fn rolled_file(&self, f: &ClosedFile, snapshot: &mut Snapshot) -> Result<(), SnapshotError> {
        let location = Path::from(f.path());
        if self.storage.is_object_store() {
            // The upload completes as one step: the object is there whole, or not readable.
            match self.storage.store().head(&location).await {
                Ok(meta) => snapshot.files.push(SnapshotFile { table: f.table, meta, source: Source::Whole }),
                Err(object_store::Error::NotFound { .. }) => {
                    snapshot.unreadable.push(Unreadable::InProgressUpload {
                        table: f.table,
                        path: f.path().to_string(),
                        rows: f.rows,
                    })
                }
                Err(e) => return Err(StorageError::store("head", &location)(e).into()),
            }
            return Ok(());
        }
        let staged = Some(Path::from(f.upload.staged.as_str()));
        let source = self.open_source(f.bytes, None, staged, Some(location));
        snapshot.files.push(SnapshotFile { table: f.table, meta: self.meta(f.path(), f.bytes), source });
        Ok(())
    }
}

/// Every pipeline's view (with when its newest entry was written), or why it cannot be read.
async fn newest_views(storage: &Storage) -> Result<BTreeMap<String, Newest>, SnapshotError> {
    let prefix = Path::from("_checkpoints");
    let listed = match storage.store().list_with_delimiter(Some(&prefix)).await {
        Ok(listed) => listed.common_prefixes,
        Err(object_store::Error::NotFound { .. }) => Vec::new(),
        Err(e) => return Err(StorageError::store("list", &prefix)(e).into()),
    };
    let mut out = BTreeMap::new();
    for dir in listed {
        let Some(pipeline) = dir.filename().map(str::to_string) else { continue };
        let state = match View::load(storage, &pipeline).await {
            Ok(view) => Ok((committed_at(storage, &pipeline, view.version).await?, view)),
            Err(CheckpointError::Storage(e)) => return Err(e.into()),
            Err(e) => Err(Unreadable::Log {
                pipeline: pipeline.clone(),
                path: dir.to_string(),
                reason: e.to_string(),
            }),
        };
        out.insert(pipeline, state.map(|(at, view)| (view, at)));
    }
    Ok(out)
}

/// When log entry `version` was written: the entry's time, or its snapshot's once the entry
/// is pruned, or the pipeline's creation. It stamps open files, so a cache keyed on path, size
/// and time sees a new version of a file after each commit.
async fn committed_at(
    storage: &Storage,
    pipeline: &str,
    version: u64,
) -> Result<Option<ObjectMeta>, StorageError> {
    let candidates = [entry_path(pipeline, version), snapshot_path(pipeline, version), facts_path(pipeline)];
    for path in candidates {
        match storage.store().head(&path).await {
            Ok(meta) => return Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(StorageError::store("head", &path)(e)),
        }
    }
    // All gone since the view was loaded (a newer commit pruned them): any time will do, the
    // sizes tell the versions apart.
    Ok(None)
}

#[cfg(test)]
mod tests;
