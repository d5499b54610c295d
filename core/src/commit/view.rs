//! The log folded up: the newest committed state of every task, who holds each partition,
//! the hour partitions awaiting `_SUCCESS`, and where the index of completed files is.
//!
//! Every instance keeps a view and brings it up to date before it commits (so it sees whether
//! another instance claimed one of its partitions); readers (`verify`, the SQL client) load one.
//! A view is a pure function of the log: applying the same entries in order gives the same view.

use std::collections::{BTreeMap, BTreeSet};

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use super::layout::{entry_path, log_dir, snapshot_dir, snapshot_path, version_of};
use super::state::{Claim, ClosedFile, Entry, TaskState, Totals, LOG_VERSION};
use super::CheckpointError;
use crate::storage::{Storage, StorageError};
use crate::table::{Partition, Table};

/// Log entries read at once while catching up.
const READ_AHEAD: usize = 16;

/// A completed file, as the index remembers it for audits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedFile {
    /// Where it is, relative to the table root.
    pub path: String,
    /// Its table.
    pub table: Table,
    /// Its partition hour.
    pub hour: i64,
    /// Rows in it.
    pub rows: u64,
    /// Its size.
    pub bytes: u64,
    /// The checkpoint (counted over the pipeline's commits, from 1) that completed it.
    #[serde(default)]
    pub checkpoint: u64,
    /// The log entry that completed it (0 in indexes written before it was kept): what a
    /// table format committing the log's files in version order goes by.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub version: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl IndexedFile {
    fn of(f: &ClosedFile, checkpoint: u64, version: u64) -> Self {
        IndexedFile {
            path: f.path().to_string(),
            table: f.table,
            hour: f.hour,
            rows: f.rows,
            bytes: f.bytes,
            checkpoint,
            version,
        }
    }
}

/// The log folded up to `version`. Serialized, it is a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// Format version.
    pub format: u32,
    /// The last entry folded in (0: none).
    pub version: u64,
    /// Entries that committed task states (claims alone do not count).
    #[serde(default)]
    pub commits: u64,
    /// The newest committed state of every source partition.
    pub tasks: BTreeMap<u32, TaskState>,
    /// The version of the entry that holds each task's newest state (absent from snapshots
    /// written before it was kept).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub task_versions: BTreeMap<u32, u64>,
    /// Who holds each source partition.
    pub claims: BTreeMap<u32, Claim>,
    /// Hour partitions with completed files and no `_SUCCESS` written since.
    pub unmarked: BTreeSet<Partition>,
    /// The index segments holding every file completed up to the snapshot (paths).
    pub index: Vec<String>,
    /// The version of the snapshot this view started from.
    pub snapshot_version: u64,
    /// Files completed by entries after the snapshot: the next index segment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_files: Vec<IndexedFile>,
    /// The `_SUCCESS` markers of the last [`MARKERS_KEPT`] versions, by version. An entry
    /// takes its markers out of `unmarked`, so an instance killed between the entry and its
    /// publication would leave them unwritten for good; recovery writes these again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub recent_markers: BTreeMap<u64, Vec<Partition>>,
    /// Each member's newest entry: how a member that just created a version learns from a
    /// snapshot whether that version was its own or one pruned before it wrote (see
    /// `Log::append`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub writers: BTreeMap<String, Writer>,
}

/// A member's newest entry in the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Writer {
    /// The run that wrote it.
    pub run: String,
    /// Its version.
    pub version: u64,
}

/// Versions whose markers a view keeps for recovery: two snapshot periods, far more than
/// the entries an instance can commit and not publish (one).
pub const MARKERS_KEPT: u64 = 32;

impl View {
    /// Folds in one entry; entries must come in version order.
    pub fn apply(&mut self, entry: &Entry) {
        for (&partition, &claim) in &entry.claims {
            let (member, run, since) = (entry.member.clone(), entry.run.clone(), entry.created_at.clone());
            let claim = Claim { claim, member, run, since };
            self.claims.insert(partition, claim);
        }
        if !entry.tasks.is_empty() {
            self.commits += 1;
        }
        for task in &entry.tasks {
            for f in &task.files {
                self.unmarked.insert(Partition { table: f.table, hour: f.hour });
                self.recent_files.push(IndexedFile::of(f, self.commits, entry.version));
            }
            self.tasks.insert(task.partition, task.clone());
            self.task_versions.insert(task.partition, entry.version);
        }
        for marker in &entry.markers {
            self.unmarked.remove(marker);
        }
        if !entry.markers.is_empty() {
            self.recent_markers.insert(entry.version, entry.markers.clone());
        }
        self.recent_markers = self.recent_markers.split_off(&entry.version.saturating_sub(MARKERS_KEPT));
        let writer = Writer { run: entry.run.clone(), version: entry.version };
        self.writers.insert(entry.member.clone(), writer);
        self.version = entry.version;
    }

    /// Committed totals over every task.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for task in self.tasks.values() {
            t.add(&task.totals);
        }
        t
    }

    /// The version of the entry holding `partition`'s newest state; for a snapshot that does
    /// not say, the view's version (an upper bound).
    pub(crate) fn version_of_task(&self, partition: u32) -> u64 {
        self.task_versions.get(&partition).copied().unwrap_or(self.version)
    }

    /// The claim number under which `partition` is held now (0: never claimed).
    pub fn claim_of(&self, partition: u32) -> u64 {
        self.claims.get(&partition).map_or(0, |c| c.claim)
    }

    /// Reads the newest snapshot and every entry after it.
    pub async fn load(storage: &Storage, pipeline: &str) -> Result<View, CheckpointError> {
        let mut view = newest_snapshot(storage, pipeline)
            .await?
            .unwrap_or_else(|| View { format: LOG_VERSION, ..View::default() });
        view.catch_up(storage, pipeline).await?;
        Ok(view)
    }

    /// Folds in every entry written since. When the entries this view needs were pruned
    /// meanwhile (a newer snapshot covers them), starts over from that snapshot.
    pub async fn catch_up(&mut self, storage: &Storage, pipeline: &str) -> Result<(), CheckpointError> {
        for _ in 0..8 {
            let offset = entry_path(pipeline, self.version);
            let dir = log_dir(pipeline);
            let mut listed: Vec<(u64, Path)> = storage
                .store()
                .list_with_offset(Some(&dir), &offset)
                .map_ok(|m| m.location)
                .try_collect::<Vec<_>>()
                .await
                .map_err(|source| StorageError::Store { op: "list", path: dir.to_string(), source })?
                .into_iter()
                .filter_map(|p| Some((version_of(&p)?, p)))
                .filter(|(v, _)| *v > self.version)
                .collect();
            listed.sort_by_key(|(v, _)| *v);
            let first = self.version + 1;
            let contiguous = listed.iter().zip(first..).take_while(|((v, _), want)| v == want).count();
            let mut gap = contiguous < listed.len();
            // Read ahead, apply in order: a member that checkpoints every interval finds
            // most of the others' entries of it new, and reading them one by one would
            // widen the window in which the log's next version can be taken from it.
            let mut entries = futures::stream::iter(listed.into_iter().take(contiguous))
                .map(|(_, path)| async move { read_entry(storage, &path).await })
                .buffered(READ_AHEAD);
            while let Some(read) = entries.next().await {
                match read {
                    Ok(entry) => self.apply(&entry),
                    Err(CheckpointError::Storage(e)) if e.is_not_found() => {
                        gap = true;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if !gap {
                return Ok(());
            }
            // Entries we need were pruned: a snapshot past them exists.
            match newest_snapshot(storage, pipeline).await? {
                Some(snapshot) if snapshot.version > self.version => *self = snapshot,
                _ => {
                    return Err(CheckpointError::Corrupt {
                        path: log_dir(pipeline).to_string(),
                        reason: format!("entry {} is missing and no snapshot covers it", self.version + 1),
                    })
                }
            }
        }
        Err(CheckpointError::Corrupt {
            path: log_dir(pipeline).to_string(),
            reason: "the log kept being pruned under this reader".into(),
        })
    }

    /// Folds in the entry that took the version this view's member just tried to write,
    /// which exists: one read instead of a listing and a read, so a member that lost a race
    /// tries again sooner. Entries past it are found by the next try, which fails while
    /// there are any. Falls back to [`View::catch_up`] if it was pruned meanwhile.
    pub async fn follow(&mut self, storage: &Storage, pipeline: &str) -> Result<(), CheckpointError> {
        match read_entry(storage, &entry_path(pipeline, self.version + 1)).await {
            Ok(entry) if entry.version == self.version + 1 => {
                self.apply(&entry);
                Ok(())
            }
            Ok(_) => self.catch_up(storage, pipeline).await,
            Err(CheckpointError::Storage(e)) if e.is_not_found() => self.catch_up(storage, pipeline).await,
            Err(e) => Err(e),
        }
    }

    /// This view as a snapshot file: without the files of recent entries, which go to the
    /// index segment written with it.
    pub fn to_snapshot(&self, index: Vec<String>) -> View {
        View {
            format: LOG_VERSION,
            version: self.version,
            commits: self.commits,
            tasks: self.tasks.clone(),
            task_versions: self.task_versions.clone(),
            claims: self.claims.clone(),
            unmarked: self.unmarked.clone(),
            index,
            snapshot_version: self.version,
            recent_files: Vec::new(),
            recent_markers: self.recent_markers.clone(),
            writers: self.writers.clone(),
        }
    }
}

async fn read_entry(storage: &Storage, path: &Path) -> Result<Entry, CheckpointError> {
    let bytes = storage.get(path).await?;
    let entry: Entry = serde_json::from_slice(&bytes)
        .map_err(|e| CheckpointError::Corrupt { path: path.to_string(), reason: e.to_string() })?;
    if entry.format != LOG_VERSION {
        return Err(CheckpointError::Format { path: path.to_string(), found: entry.format });
    }
    Ok(entry)
}

/// The newest snapshot, if any.
pub async fn newest_snapshot(storage: &Storage, pipeline: &str) -> Result<Option<View>, CheckpointError> {
    let dir = snapshot_dir(pipeline);
    let mut versions: Vec<u64> = storage.list(&dir).await?.iter().filter_map(version_of).collect();
    versions.sort_unstable();
    // Newest first; an older one if the newest was pruned between listing and reading.
    for v in versions.into_iter().rev() {
        let path = snapshot_path(pipeline, v);
        match storage.get(&path).await {
            Ok(bytes) => {
                let view: View = serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
                    path: path.to_string(),
                    reason: e.to_string(),
                })?;
                if view.format != LOG_VERSION {
                    return Err(CheckpointError::Format { path: path.to_string(), found: view.format });
                }
                return Ok(Some(view));
            }
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}
