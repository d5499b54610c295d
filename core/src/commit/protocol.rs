//! The commit protocol: how a checkpoint becomes durable and visible, and how a restart
//! finds and finishes the last one.
//!
//! Table files are uploads that stay invisible until completed. At a checkpoint the writer
//! finishes the uploads of rolled files (all but completion) and writes the tails of open
//! ones; then [`Checkpoints::commit`]:
//! 1. writes the manifest `_checkpoints/<pipeline>/<seq>.json` create-only — the atomic
//!    commit point: source positions, watermarks, open windows, rolled files with their
//!    parts, open files with their parts and tails;
//! 2. completes the rolled files into the table folders and writes `_SUCCESS` markers
//!    ([`Checkpoints::publish`], idempotent);
//! 3. drops the previous checkpoint's tails, which nothing names any more.
//!
//! A crash before step 1 loses nothing committed: [`Checkpoints::recover`] aborts every upload
//! the newest manifest does not name. A crash after it is finished by recovery, which redoes
//! step 2 and *seals* each open file exactly as the manifest recorded it: its tail becomes the
//! last part. So every row counted by a manifest ends up in exactly one visible file, and no
//! other row does.

use bytes::Bytes;
use object_store::path::Path;
use thiserror::Error;

use super::layout::{
    file_pipeline, manifest_dir, manifest_path, manifest_seq, staging_prefix, tails_prefix, upload_staging,
};
use super::manifest::{Manifest, MANIFEST_VERSION};
use crate::storage::{Storage, StorageError};
use crate::table::Table;

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

    /// Finds the newest manifest, finishes its publication, seals the files it recorded as
    /// open, and removes every upload and staged object it does not name. Returns the
    /// manifest to restore state from.
    pub fn recover(&self) -> Result<Option<Manifest>, CheckpointError> {
        let storage = &self.storage;
        let newest = storage
            .block_on(storage.list(&manifest_dir(&self.pipeline_id)))?
            .into_iter()
            .filter_map(|p| Some((manifest_seq(&p)?, p)))
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
            path: manifest_path(&self.pipeline_id, manifest.seq).to_string(),
            reason: e.to_string(),
        })?;
        let storage = &self.storage;
        storage
            .block_on(storage.put_new(&manifest_path(&self.pipeline_id, manifest.seq), Bytes::from(json)))?;
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
        e if e.is_not_found() => CheckpointError::Lost { path: path.to_string(), seq },
        e => e.into(),
    }
}
