//! Checkpoints: the manifest that makes both tables and the source positions commit as one.
//!
//! Protocol (DESIGN §5): table files are uploads that stay invisible until completed. At a
//! checkpoint the writers finish the uploads of rolled files (all but completion) and write
//! the tails of open ones; the manifest `_checkpoints/<pipeline>/<seq>.json` — source
//! positions, watermarks, open windows, rolled files with their parts, open files with
//! their parts and tails — is written create-only, which is the atomic commit point; then
//! rolled files are completed into the table folders and `_SUCCESS` markers written.
//!
//! A crash before the manifest loses nothing committed: recovery aborts every upload the
//! newest manifest does not name. A crash after it is finished by recovery, which redoes
//! the completions (idempotent) and seals each open file exactly as the manifest recorded
//! it: its tail becomes the last part. So every row counted by a manifest ends up in
//! exactly one visible file, and no other row does.

use std::collections::BTreeMap;

use bytes::Bytes;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::sink::{
    file_pipeline, staging_prefix, tails_prefix, upload_staging, ClosedFile, OpenFileState, Partition,
    Storage, StorageError, Table,
};
use crate::source::SourceCheckpoint;
use crate::window::{PartitionTime, WindowCount};

fn no_watermark() -> i64 {
    crate::window::NO_WATERMARK
}

/// Manifest format version, bumped on incompatible changes.
pub const MANIFEST_VERSION: u32 = 2;

/// Counts committed so far, cumulative over the pipeline's life.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Records read from the source.
    pub records_read: u64,
    /// Rows in page_views.
    pub page_views: u64,
    /// Rows in late_page_views.
    pub late_page_views: u64,
    /// Rows in page_view_aggregates.
    pub page_view_aggregates: u64,
    /// Rows in dead_letters.
    pub dead_letters: u64,
}

/// One committed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version.
    pub version: u32,
    /// The pipeline that wrote it.
    pub pipeline: String,
    /// Sequence number, from 1.
    pub seq: u64,
    /// Wall-clock time of the commit (UTC), for humans.
    pub created_at: String,
    /// Where the source resumes.
    pub source: SourceCheckpoint,
    /// The pipeline watermark, UTC ms.
    pub watermark: i64,
    /// Per-partition event-time progress.
    pub partitions: BTreeMap<u32, PartitionTime>,
    /// Window size the open windows were counted with.
    pub window_ms: i64,
    /// Windows not yet emitted, with their counts.
    pub open_windows: Vec<WindowCount>,
    /// Every window ending at or before this was emitted (UTC ms).
    #[serde(default = "no_watermark")]
    pub emitted_through: i64,
    /// Rolled files this checkpoint completes.
    pub files: Vec<ClosedFile>,
    /// Files still being written, as recovery would seal them.
    #[serde(default)]
    pub open: Vec<OpenFileState>,
    /// Partitions with rows whose `_SUCCESS` marker is not written yet.
    #[serde(default)]
    pub unmarked: Vec<Partition>,
    /// `_SUCCESS` markers this checkpoint writes.
    #[serde(default)]
    pub markers: Vec<Partition>,
    /// Cumulative committed counts, including this checkpoint.
    pub totals: Totals,
}

/// Why a checkpoint could not be written or recovered.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A manifest is unreadable.
    #[error("checkpoint manifest {path} is corrupt: {reason}")]
    Corrupt {
        /// The manifest.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A file a committed manifest names is missing from both staging and the table.
    #[error("{path}, committed by checkpoint {seq}, is missing from the table and from staging; the output was modified outside pageviews")]
    Lost {
        /// The file's final path.
        path: String,
        /// The manifest that names it.
        seq: u64,
    },
}

/// Writes and recovers one pipeline's checkpoints.
pub struct Checkpoints {
    storage: Storage,
    pipeline_id: String,
}

impl Checkpoints {
    /// Checkpoints of `pipeline_id` under the table root.
    pub fn new(storage: Storage, pipeline_id: &str) -> Self {
        Checkpoints { storage, pipeline_id: pipeline_id.to_string() }
    }

    fn dir(&self) -> Path {
        Path::from(format!("_checkpoints/{}", self.pipeline_id))
    }

    fn manifest_path(&self, seq: u64) -> Path {
        Path::from(format!("_checkpoints/{}/{seq:020}.json", self.pipeline_id))
    }

    /// Finds the newest manifest, finishes its publication, seals the files it recorded as
    /// open, and removes every upload and staged object it does not name. Returns the
    /// manifest to restore state from.
    pub fn recover(&self) -> Result<Option<Manifest>, CheckpointError> {
        let storage = &self.storage;
        let newest = storage
            .block_on(storage.list(&self.dir()))?
            .into_iter()
            .filter_map(|p| {
                let name = p.filename()?.strip_suffix(".json")?.parse::<u64>().ok()?;
                Some((name, p))
            })
            .max_by_key(|(seq, _)| *seq);
        let manifest = match newest {
            None => None,
            Some((_, path)) => {
                let bytes = storage.block_on(storage.get(&path))?;
                let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
                    CheckpointError::Corrupt { path: path.to_string(), reason: e.to_string() }
                })?;
                if manifest.version != MANIFEST_VERSION {
                    return Err(CheckpointError::Corrupt {
                        path: path.to_string(),
                        reason: format!(
                            "it has format version {}, this pageviews reads version {MANIFEST_VERSION}; use a new --output or --pipeline-id",
                            manifest.version
                        ),
                    });
                }
                self.publish(&manifest)?;
                storage.block_on(self.seal(&manifest))?;
                Some(manifest)
            }
        };
        storage.block_on(self.abort_orphans())?;
        storage.block_on(storage.remove_all(&staging_prefix(&self.pipeline_id)))?;
        Ok(manifest)
    }

    /// Commits: writes the manifest (the atomic step), then publishes its files and
    /// markers, then drops the previous checkpoint's tails, which nothing names any more.
    pub fn commit(&self, manifest: &Manifest) -> Result<(), CheckpointError> {
        let json = serde_json::to_vec_pretty(manifest).map_err(|e| CheckpointError::Corrupt {
            path: self.manifest_path(manifest.seq).to_string(),
            reason: e.to_string(),
        })?;
        let storage = &self.storage;
        storage.block_on(storage.put_new(&self.manifest_path(manifest.seq), Bytes::from(json)))?;
        self.publish(manifest)?;
        if let Some(prev) = manifest.seq.checked_sub(1) {
            // Best effort: a leftover tail is only litter, which the next recovery sweeps.
            if let Err(e) = storage.block_on(storage.remove_all(&tails_prefix(&self.pipeline_id, prev))) {
                tracing::warn!(error = %e, "cannot remove old checkpoint tails; recovery will");
            }
        }
        Ok(())
    }

    /// Completes a manifest's rolled files and writes its markers; idempotent.
    fn publish(&self, manifest: &Manifest) -> Result<(), CheckpointError> {
        let storage = &self.storage;
        storage.block_on(async {
            let completions = manifest.files.iter().map(|f| async move {
                storage
                    .complete_upload(&f.upload, &f.parts, f.bytes)
                    .await
                    .map_err(lost(f.path(), manifest.seq))
            });
            futures::future::try_join_all(completions).await?;
            let markers =
                manifest.markers.iter().map(|p| async move { storage.put(&p.marker(), Bytes::new()).await });
            futures::future::try_join_all(markers).await?;
            Ok(())
        })
    }

    /// Seals the files a manifest recorded as open: each becomes, visibly and for good,
    /// the file as it was at that checkpoint. Idempotent: a sealed file is left alone.
    async fn seal(&self, manifest: &Manifest) -> Result<(), CheckpointError> {
        let storage = &self.storage;
        let seals = manifest.open.iter().map(|f| async move {
            let path = Path::from(f.path.as_str());
            // Only sealing this upload ever creates the file, so if it exists, an earlier
            // recovery sealed it. Asking first also spares a dead upload id, which some
            // S3-compatible servers answer with retried 500s instead of 404.
            if storage.exists(&path).await? {
                return Ok(());
            }
            let upload = match &f.upload {
                Some(u) => u.clone(),
                None => storage.begin_upload(&path, &upload_staging(&self.pipeline_id, &f.path)).await?,
            };
            let mut parts = f.parts.clone();
            if let Some(tail) = &f.tail {
                let bytes =
                    storage.get(&Path::from(tail.as_str())).await.map_err(lost(tail, manifest.seq))?;
                let id = storage.put_part(&upload, parts.len(), f.sent, bytes).await;
                parts.push(id.map_err(lost(&f.path, manifest.seq))?);
            }
            storage.complete_upload(&upload, &parts, f.bytes).await.map_err(lost(&f.path, manifest.seq))?;
            Ok::<_, CheckpointError>(())
        });
        futures::future::try_join_all(seals).await?;
        Ok(())
    }

    /// Aborts this pipeline's unfinished uploads: after [`Checkpoints::seal`] no manifest
    /// needs any of them, and each one left would be invisible but billed storage.
    async fn abort_orphans(&self) -> Result<(), CheckpointError> {
        let storage = &self.storage;
        for table in Table::ALL {
            for upload in storage.list_uploads(&Path::from(table.name())).await? {
                if file_pipeline(&upload.path) == Some(self.pipeline_id.as_str()) {
                    tracing::info!(path = %upload.path, "aborting an upload no checkpoint names");
                    storage.abort_upload(&upload).await?;
                }
            }
        }
        Ok(())
    }
}

/// Maps "not found" for an object or upload a committed manifest names to
/// [`CheckpointError::Lost`]: the output was changed outside pageviews.
fn lost(path: &str, seq: u64) -> impl FnOnce(StorageError) -> CheckpointError + '_ {
    move |e| match e {
        StorageError::Store { source: object_store::Error::NotFound { .. }, .. } => {
            CheckpointError::Lost { path: path.to_string(), seq }
        }
        e => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{Format, Row, TableWriter, WriterConfig};

    fn manifest(seq: u64, files: Vec<ClosedFile>, open: Vec<OpenFileState>) -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            pipeline: "t".into(),
            seq,
            created_at: String::new(),
            source: SourceCheckpoint::Generator { seed: 1, start_ms: 0, next_seq: 0 },
            watermark: crate::window::NO_WATERMARK,
            partitions: BTreeMap::new(),
            window_ms: 60_000,
            open_windows: Vec::new(),
            emitted_through: crate::window::NO_WATERMARK,
            files,
            open,
            unmarked: Vec::new(),
            markers: Vec::new(),
            totals: Totals::default(),
        }
    }

    fn row(i: u64) -> WindowCount {
        WindowCount { end: 60_000, postcode: format!("P{i:03}"), views: i }
    }

    /// Both formats: a file open at a checkpoint, written on past it (parts included) and
    /// then abandoned by a crash, is sealed by recovery with exactly the checkpoint's rows.
    #[test]
    fn recovery_seals_an_open_file_as_of_its_checkpoint() {
        for format in [Format::Jsonl, Format::Parquet] {
            let dir = tempfile::tempdir().unwrap();
            let rt =
                tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            let storage = Storage::open(&dir.path().display().to_string(), rt.handle().clone()).unwrap();
            let config = WriterConfig {
                pipeline_id: "t".into(),
                format,
                roll_bytes: 1 << 30,
                roll_age_ms: u64::MAX,
                part_bytes: 200,
                max_open_files: 4,
                row_group_rows: 7,
            };
            let mut w = TableWriter::new(Table::PageViewAggregates, storage.clone(), config, 1);
            let mut committed = Vec::new();
            for i in 0..40 {
                w.append(0, 0, Row::Aggregate(&row(i), 60_000)).unwrap();
                Row::Aggregate(&row(i), 60_000).write_jsonl(&mut committed);
            }
            w.start_checkpoint(1).unwrap();
            let (closed, open) = w.finish_checkpoint(2).unwrap();
            assert!(closed.is_empty() && open.len() == 1);
            let checkpoints = Checkpoints::new(storage.clone(), "t");
            checkpoints.commit(&manifest(1, closed, open.clone())).unwrap();
            // The run goes on past the checkpoint, uploading more parts, then dies.
            for i in 40..200 {
                w.append(0, 0, Row::Aggregate(&row(i), 60_000)).unwrap();
            }
            w.start_checkpoint(2).unwrap();
            drop(w);

            let resumed = checkpoints.recover().unwrap().unwrap();
            assert_eq!(resumed.seq, 1);
            let bytes = std::fs::read(dir.path().join(&open[0].path)).unwrap();
            assert_eq!(bytes.len() as u64, open[0].bytes, "{format:?}: the size the checkpoint recorded");
            let text = match format {
                Format::Jsonl => bytes,
                Format::Parquet => {
                    crate::sink::parquet::to_jsonl(Table::PageViewAggregates, bytes.into()).unwrap().0
                }
            };
            assert_eq!(
                String::from_utf8(text).unwrap(),
                String::from_utf8(committed).unwrap(),
                "{format:?}: the rows of checkpoint 1, no more"
            );
            assert!(!dir.path().join("_staging/t").exists(), "{format:?}: staging is cleaned up");
            // Recovering again changes nothing.
            checkpoints.recover().unwrap();
            assert_eq!(std::fs::read(dir.path().join(&open[0].path)).unwrap().len() as u64, open[0].bytes);
        }
    }
}
