//! Making committed state visible, and finishing what a crash left behind.
//!
//! [`publish`] runs after an entry is in the log: it completes the uploads of the files the
//! entry names (they appear in their table folders) and writes its `_SUCCESS` markers. It is
//! idempotent, so whoever restores a task can simply run it again.
//!
//! `recover_partition` runs when an instance takes a source partition (through
//! `Log::recover_task`): it redoes the publication of the partition's newest committed
//! state, *seals* each file that state recorded as open — its tail becomes the last part and
//! the upload completes at exactly the recorded size, so the file holds the committed rows
//! and no others — and removes every upload, staged file and tail of the partition that no
//! committed state needs. Both take what they work on as data: nothing here reads the log.

use object_store::path::Path;

use super::layout::{
    partition_tails_prefix, partition_uploads_prefix, upload_staging, uploads_prefix, FileName,
};
use super::state::{ClosedFile, OpenFileState, TaskState};
use super::CheckpointError;
use crate::storage::{Storage, StorageError, UploadRef};
use crate::table::{Partition, Table};

/// Completes the files log entry `version` committed (each with the source partition whose
/// state names it) and writes the `_SUCCESS` markers it carries; idempotent.
pub async fn publish<'a>(
    storage: &Storage,
    version: u64,
    files: impl IntoIterator<Item = (u32, &'a ClosedFile)>,
    markers: &[Partition],
) -> Result<(), CheckpointError> {
    let completions = files.into_iter().map(|(partition, f)| async move {
        let done = storage.complete_upload(&f.upload, &f.parts, f.bytes).await;
        done.map_err(lost(f.path(), version, partition))
    });
    futures::future::try_join_all(completions).await?;
    publish_markers(storage, markers).await
}

/// Writes `_SUCCESS` markers; idempotent.
pub(super) async fn publish_markers<'a>(
    storage: &Storage,
    markers: impl IntoIterator<Item = &'a Partition>,
) -> Result<(), CheckpointError> {
    let writes = markers.into_iter().map(|p| async move { storage.put_marker(&p.marker()).await });
    futures::future::try_join_all(writes).await?;
    Ok(())
}

/// Finishes what `state`, the newest committed state of its partition, left: publishes its
/// files, seals its open files, and removes the partition's orphaned uploads and tails.
/// Returns that state with the sealed files listed as completed (so the next commit indexes
/// them) and no open files, or `None` when the partition was never committed.
pub(super) async fn recover_partition(
    storage: &Storage,
    at: &Sealing<'_>,
    state: Option<TaskState>,
) -> Result<Option<TaskState>, CheckpointError> {
    let (pipeline, partition) = (at.pipeline, at.partition);
    let mut out = None;
    if let Some(mut task) = state {
        publish(storage, at.version, task.files.iter().map(|f| (partition, f)), &[]).await?;
        let mut sealed = Vec::with_capacity(task.open.len());
        for f in &task.open {
            sealed.push(seal(storage, at, f).await?);
        }
        task.files = sealed;
        task.open.clear();
        out = Some(task);
    }
    abort_orphans(storage, pipeline, partition).await?;
    storage.remove_all(&partition_tails_prefix(pipeline, partition)).await?;
    // Only this partition's folders: a holder of another partition may have just made a
    // folder it is about to create its next file in.
    storage.remove_empty_dirs(&partition_uploads_prefix(pipeline, partition)).await?;
    Ok(out)
}

/// Whose open files are being sealed, and where the log stands.
pub(super) struct Sealing<'a> {
    pub(super) pipeline: &'a str,
    pub(super) partition: u32,
    /// The entry holding the partition's newest state.
    pub(super) version: u64,
    /// The log's newest entry.
    pub(super) newest: u64,
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
