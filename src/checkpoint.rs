//! Checkpoints: the manifest that makes both tables and the source positions commit as one.
//!
//! Protocol (DESIGN §5): writers close their files into `_staging/<pipeline>/`; the manifest
//! `_checkpoints/<pipeline>/<seq>.json` — source positions, watermarks, open windows, the
//! staged → final file list — is written create-only, which is the atomic commit point;
//! then staged files are renamed into the table folders. A crash before the manifest loses
//! nothing committed and leaves only staging, which recovery deletes; a crash after it is
//! finished by recovery, which redoes the renames (they are idempotent).

use std::collections::BTreeMap;

use bytes::Bytes;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::sink::{staging_prefix, StagedFile, Storage, StorageError};
use crate::source::SourceCheckpoint;
use crate::window::{PartitionTime, WindowCount};

fn no_watermark() -> i64 {
    crate::window::NO_WATERMARK
}

/// Manifest format version, bumped on incompatible changes.
pub const MANIFEST_VERSION: u32 = 1;

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
    /// Files this checkpoint publishes.
    pub files: Vec<StagedFile>,
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

    /// Finds the newest manifest, finishes its publication, and removes staging left by an
    /// interrupted checkpoint. Returns the manifest to restore state from.
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
                self.publish(&manifest)?;
                Some(manifest)
            }
        };
        storage.block_on(storage.remove_all(&staging_prefix(&self.pipeline_id)))?;
        Ok(manifest)
    }

    /// Commits: writes the manifest (the atomic step), then publishes its files.
    pub fn commit(&self, manifest: &Manifest) -> Result<(), CheckpointError> {
        let json = serde_json::to_vec_pretty(manifest).map_err(|e| CheckpointError::Corrupt {
            path: self.manifest_path(manifest.seq).to_string(),
            reason: e.to_string(),
        })?;
        let storage = &self.storage;
        storage.block_on(storage.put_new(&self.manifest_path(manifest.seq), Bytes::from(json)))?;
        self.publish(manifest)
    }

    /// Moves a manifest's staged files to their final names; idempotent.
    fn publish(&self, manifest: &Manifest) -> Result<(), CheckpointError> {
        let storage = &self.storage;
        storage.block_on(async {
            let renames = manifest.files.iter().map(|f| async move {
                let (from, to) = (Path::from(f.staged.as_str()), Path::from(f.path.as_str()));
                match storage.rename(&from, &to).await {
                    Ok(_) => Ok(()),
                    Err(StorageError::Store { source: object_store::Error::NotFound { .. }, .. }) => {
                        Err(CheckpointError::Lost { path: f.path.clone(), seq: manifest.seq })
                    }
                    Err(e) => Err(e.into()),
                }
            });
            futures::future::try_join_all(renames).await.map(|_| ())
        })
    }
}
