//! What the commit logs under a root say is committed: per pipeline, every completed file
//! (from the index and recent entries), every file still open, and every task's totals.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use object_store::path::Path;
use pageviews_core::commit::index::read_index;
use pageviews_core::commit::layout::{facts_path, FileName};
use pageviews_core::commit::{Facts, TaskState, Totals, View};
use pageviews_core::storage::Storage;
use pageviews_core::table::{Partition, Table};

use super::{Report, VerifyError};

/// What a commit says of one file.
#[derive(Debug, Clone)]
pub(super) struct FileRecord {
    pub(crate) table: Table,
    pub(crate) hour: i64,
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
    /// Recorded as open by its task's newest state: a running instance or the next recovery
    /// completes it.
    pub(crate) open: bool,
    /// The checkpoint that completed it (0 for open files).
    pub(crate) checkpoint: u64,
    /// The log entry that completed it (0 for open files, and in older logs).
    pub(crate) version: u64,
}

/// One pipeline's committed state.
pub(super) struct PipelineCommits {
    pub(crate) window_ms: i64,
    pub(crate) totals: Totals,
    pub(crate) tasks: BTreeMap<u32, TaskState>,
    pub(crate) files: HashMap<String, FileRecord>,
    /// Partitions with committed files whose `_SUCCESS` no entry has recorded yet.
    pub(crate) unmarked: BTreeSet<Partition>,
    /// Partitions whose markers the newest entries recorded: a running instance may still be
    /// writing them, and the next recovery writes them again (`Log::republish_markers`).
    pub(crate) recent_markers: BTreeSet<Partition>,
}

/// Every pipeline's committed state under a root.
pub(super) struct Committed {
    pub(crate) entries: usize,
    pub(crate) pipelines: BTreeMap<String, PipelineCommits>,
}

/// Rows committed into files still open, and the hours they are in, whose checks must wait.
#[derive(Default)]
pub(super) struct Pending {
    pub(crate) hours: HashSet<(String, Table, i64)>,
}

impl Committed {
    /// Reads every pipeline's log under the root.
    pub(crate) fn read(storage: &Storage) -> Result<Committed, VerifyError> {
        let listed = storage.block_on(storage.list(&Path::from("_checkpoints")))?;
        let ids: std::collections::BTreeSet<String> =
            listed.iter().filter_map(|p| p.parts().nth(1).map(|s| s.as_ref().to_string())).collect();
        let mut pipelines = BTreeMap::new();
        let mut entries = 0;
        for id in ids {
            let view = storage.block_on(View::load(storage, &id))?;
            let facts: Option<Facts> = storage
                .block_on(storage.get(&facts_path(&id)))
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok());
            let indexed = storage.block_on(read_index(storage, &view.index, &view.recent_files))?;
            let mut files: HashMap<String, FileRecord> = indexed
                .into_iter()
                .map(|f| {
                    let record = FileRecord {
                        table: f.table,
                        hour: f.hour,
                        rows: f.rows,
                        bytes: f.bytes,
                        open: false,
                        checkpoint: f.checkpoint,
                        version: f.version,
                    };
                    (f.path, record)
                })
                .collect();
            for task in view.tasks.values() {
                for f in &task.open {
                    let record = FileRecord {
                        table: f.table,
                        hour: f.hour,
                        rows: f.rows,
                        bytes: f.bytes,
                        open: true,
                        checkpoint: 0,
                        version: 0,
                    };
                    files.entry(f.path.clone()).or_insert(record);
                }
            }
            entries += view.version as usize;
            let commits = PipelineCommits {
                window_ms: facts.map_or(60_000, |f| f.window_ms),
                totals: view.totals(),
                recent_markers: view.recent_markers.values().flatten().copied().collect(),
                unmarked: view.unmarked,
                tasks: view.tasks,
                files,
            };
            pipelines.insert(id, commits);
        }
        Ok(Committed { entries, pipelines })
    }

    /// The commit record of the file at `path`, if its pipeline committed it.
    pub(crate) fn file(&self, path: &str) -> Option<&FileRecord> {
        let name = FileName::parse(path)?;
        self.pipelines.get(name.pipeline)?.files.get(path)
    }

    /// Reports committed files that are missing; returns the rows and hours of files still
    /// open, whose checks wait.
    pub(crate) fn missing_or_pending(&self, present: &HashSet<&str>, report: &mut Report) -> Pending {
        let mut pending = Pending::default();
        for (id, p) in &self.pipelines {
            for (path, rec) in &p.files {
                if present.contains(path.as_str()) {
                    continue;
                }
                if rec.open {
                    *report.pending.entry(rec.table.name()).or_default() += rec.rows;
                    pending.hours.insert((id.clone(), rec.table, rec.hour));
                } else {
                    report.violation(format!(
                        "{path} is named by checkpoint {} of {id} but missing",
                        rec.checkpoint
                    ));
                }
            }
        }
        pending
    }

    /// Reports hours the log says are complete but whose `_SUCCESS` is missing. Batch jobs
    /// waiting for such an hour would wait forever, unless its marker is recent, which a
    /// running instance or the next recovery writes: those count as pending.
    pub(crate) fn missing_markers(&self, present: &HashSet<String>, report: &mut Report) {
        for (id, p) in &self.pipelines {
            // Only completed files enter `unmarked`: an hour a running instance has in open
            // files alone is not complete, whatever `unmarked` says.
            let hours: BTreeSet<Partition> = p
                .files
                .values()
                .filter(|f| !f.open)
                .map(|f| Partition { table: f.table, hour: f.hour })
                .collect();
            for hour in hours.difference(&p.unmarked) {
                if present.contains(hour.marker().as_ref()) {
                    continue;
                }
                if p.recent_markers.contains(hour) {
                    report.markers_pending += 1;
                } else {
                    report.violation(format!(
                        "{} is complete in the log of {id} but has no _SUCCESS marker",
                        hour.dir()
                    ));
                }
            }
        }
    }
}
