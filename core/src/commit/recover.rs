//! Making committed state visible, and finishing what a crash left behind.
//!
//! [`publish`] runs after an entry is in the log: it completes the uploads of the files the
//! entry names (they appear in their table folders) and writes its `_SUCCESS` markers. It is
//! idempotent, so whoever restores a task can simply run it again.
//!
//! [`Log::recover_task`] runs when an instance takes a source partition: it redoes the
//! publication of the partition's newest committed state, *seals* each file that state
//! recorded as open — its tail becomes the last part and the upload completes at exactly the
//! recorded size, so the file holds the committed rows and no others — and removes every
//! upload, staged file and tail of the partition that no committed state needs.

use object_store::path::Path;

use super::layout::{
    partition_tails_prefix, partition_uploads_prefix, upload_staging, uploads_prefix, FileName,
};
use super::log::Log;
use super::state::{ClosedFile, Entry, OpenFileState, TaskState};
use super::CheckpointError;
use crate::storage::{Storage, StorageError, UploadRef};
use crate::table::Table;

/// Completes the files an entry committed and writes its markers; idempotent.
pub async fn publish(storage: &Storage, entry: &Entry) -> Result<(), CheckpointError> {
    let files = entry.tasks.iter().flat_map(|t| t.files.iter().map(move |f| (t.partition, f)));
    let completions = files.map(|(partition, f)| async move {
        let done = storage.complete_upload(&f.upload, &f.parts, f.bytes).await;
        done.map_err(lost(f.path(), entry.version, partition))
    });
    futures::future::try_join_all(completions).await?;
    let markers = entry.markers.iter().map(|p| async move { storage.put_marker(&p.marker()).await });
    futures::future::try_join_all(markers).await?;
    Ok(())
}

impl Log {
    /// Writes the `_SUCCESS` markers of the newest entries again ([`View::recent_markers`]):
    /// an instance killed between an entry and its publication wrote none of its own.
    /// Idempotent; once per batch of partitions taken, not per partition.
    ///
    /// [`View::recent_markers`]: super::view::View::recent_markers
    pub fn republish_markers(&self) -> Result<(), CheckpointError> {
        let storage = self.storage();
        let markers = self.view().recent_markers.values().flatten();
        storage.block_on(async {
            futures::future::try_join_all(
                markers.map(|p| async move { storage.put_marker(&p.marker()).await }),
            )
            .await?;
            Ok(())
        })
    }

    /// Finishes what the newest committed state of `partition` left: publishes its files,
    /// seals its open files, and removes its orphaned uploads and tails. Returns that state
    /// with the sealed files listed as completed (so the next commit indexes them) and no
    /// open files, or `None` when the partition was never committed.
    pub fn recover_task(&self, partition: u32) -> Result<Option<TaskState>, CheckpointError> {
        let storage = self.storage();
        let pipeline = self.pipeline_id();
        let state = self.view().tasks.get(&partition).cloned();
        let at = Sealing {
            pipeline,
            partition,
            version: self.view().version_of_task(partition),
            newest: self.view().version,
        };
        storage.block_on(async {
            let mut out = None;
            if let Some(mut task) = state {
                let entry = Entry {
                    format: super::state::LOG_VERSION,
                    version: at.version,
                    member: String::new(),
                    run: String::new(),
                    created_at: String::new(),
                    claims: Default::default(),
                    tasks: vec![task.clone()],
                    markers: Vec::new(),
                };
                publish(storage, &entry).await?;
                let mut sealed = Vec::with_capacity(task.open.len());
                for f in &task.open {
                    sealed.push(seal(storage, &at, f).await?);
                }
                task.files = sealed;
                task.open.clear();
                out = Some(task);
            }
            abort_orphans(storage, pipeline, partition).await?;
            storage.remove_all(&partition_tails_prefix(pipeline, partition)).await?;
            // Only this partition's folders: a holder of another partition may have just
            // made a folder it is about to create its next file in.
            storage.remove_empty_dirs(&partition_uploads_prefix(pipeline, partition)).await?;
            Ok(out)
        })
    }
}

/// Whose open files are being sealed, and where the log stands.
struct Sealing<'a> {
    pipeline: &'a str,
    partition: u32,
    /// The entry holding the partition's newest state.
    version: u64,
    /// The log's newest entry.
    newest: u64,
}

/// Seals an open file as of its checkpoint: the file becomes, visibly and for good, what the
/// checkpoint recorded. A file whose final path exists at the recorded size was sealed
/// before; at another size, a commit the log no longer holds completed it.
async fn seal(storage: &Storage, at: &Sealing<'_>, f: &OpenFileState) -> Result<ClosedFile, CheckpointError> {
    let (pipeline, version, partition) = (at.pipeline, at.version, at.partition);
    let path = Path::from(f.path.as_str());
    let upload = match &f.upload {
        Some(u) => u.clone(),
        None => UploadRef {
            path: f.path.clone(),
            id: String::new(),
            staged: upload_staging(pipeline, &f.path).to_string(),
        },
    };
    let mut parts = f.parts.clone();
    // Only sealing this upload, or a later commit that closed the file, creates it: at the
    // recorded size an earlier recovery sealed it. Asking first also spares a dead upload
    // id, which some S3-compatible servers answer with retried 500s instead of 404.
    match storage.size(&path).await? {
        Some(size) if size == f.bytes => return Ok(f.sealed(upload, parts)),
        Some(_) => {
            let path = f.path.clone();
            return Err(CheckpointError::LogBehind {
                pipeline: pipeline.to_string(),
                newest: at.newest,
                path,
            });
        }
        None => {}
    }
    let upload = match &f.upload {
        Some(u) => u.clone(),
        None => storage.begin_upload(&path, &upload_staging(pipeline, &f.path)).await?,
    };
    if let Some(tail) = &f.tail {
        // A missing tail loses the file's committed rows: named by the file, not the tail.
        let bytes =
            storage.get(&Path::from(tail.as_str())).await.map_err(lost(&f.path, version, partition))?;
        let id = storage.put_part(&upload, parts.len(), f.sent, bytes).await;
        parts.push(id.map_err(lost(&f.path, version, partition))?);
    }
    let done = storage.seal_upload(&upload, &parts, f.bytes).await;
    done.map_err(lost(&f.path, version, partition))?;
    Ok(f.sealed(upload, parts))
}

/// Aborts the unfinished uploads of `partition`'s files and deletes its staged files: after
/// sealing, no committed state needs any of them, and each left would be invisible but
/// billed storage.
async fn abort_orphans(storage: &Storage, pipeline: &str, partition: u32) -> Result<(), CheckpointError> {
    let ours = |path: &str| {
        FileName::parse(path).is_some_and(|n| n.pipeline == pipeline && n.partition == partition)
    };
    for table in Table::ALL {
        for upload in storage.list_uploads(&Path::from(table.name())).await? {
            if ours(&upload.path) {
                tracing::info!(path = %upload.path, "aborting an upload no checkpoint needs");
                storage.abort_upload(&upload).await?;
            }
        }
    }
    // Listed from the top, not the partition's folder: files staged before uploads were kept
    // per partition lie directly under it.
    for staged in storage.list(&uploads_prefix(pipeline)).await? {
        if ours(staged.as_ref()) {
            storage.delete(&staged).await?;
        }
    }
    Ok(())
}

/// Maps "not found" for an object or upload a committed entry names to
/// [`CheckpointError::Lost`]: the output was changed outside pageviews.
fn lost(path: &str, version: u64, partition: u32) -> impl FnOnce(StorageError) -> CheckpointError + '_ {
    move |e| {
        if e.is_not_found() {
            CheckpointError::Lost { path: path.to_string(), seq: version, partition }
        } else {
            e.into()
        }
    }
}
