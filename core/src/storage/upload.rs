//! Uploads: a table file written in parts while it stays invisible, completed into place in
//! one step, or abandoned. The same four calls on local disk, S3 and Azure.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use object_store::multipart::PartId;
use object_store::path::Path;
use object_store::PutPayload;
use serde::{Deserialize, Serialize};

use super::root::Client;
use super::{local_error, retry, s3_uploads, Backend, ObjectRoot, Storage, StorageError};

/// An upload in progress: enough to add parts, complete or abort it, also from another
/// process after a crash (it is recorded in commit-log entries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRef {
    /// The file's final path, relative to the table root.
    pub path: String,
    /// The S3 upload id; empty on local disk and on Azure (a blob's staged blocks are its own).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Where a local upload is written until completion; empty on object stores.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub staged: String,
}

/// S3 needs every part but the last to be at least this large. Azure's blocks have no
/// minimum, but take the same parts: one protocol for every object store.
pub const MIN_PART_BYTES: usize = 5 << 20;

impl Storage {
    /// Starts an upload that will become `path` when completed. Local uploads are written
    /// to `staged` meanwhile.
    ///
    /// Retried like every call; a retry after a lost answer leaves the first upload behind,
    /// invisible, until the next recovery aborts it (or the bucket's lifecycle rule does).
    pub async fn begin_upload(&self, path: &Path, staged: &Path) -> Result<UploadRef, StorageError> {
        self.retry.run("upload", path.as_ref(), |_| self.begin_upload_once(path, staged)).await
    }

    async fn begin_upload_once(&self, path: &Path, staged: &Path) -> Result<UploadRef, StorageError> {
        match &self.backend {
            Backend::Local(root) => {
                let file = root.join(staged.as_ref());
                let io = async {
                    if let Some(dir) = file.parent() {
                        tokio::fs::create_dir_all(dir).await?;
                    }
                    tokio::fs::File::create(&file).await.map(drop)
                };
                io.await.map_err(|e| local_error("upload", staged, e))?;
                Ok(UploadRef { path: path.to_string(), id: String::new(), staged: staged.to_string() })
            }
            Backend::Object(root) => {
                let key = root.key(path);
                let id = root
                    .client
                    .multipart()
                    .create_multipart(&key)
                    .await
                    .map_err(StorageError::store("upload", path))?;
                Ok(UploadRef { path: path.to_string(), id, staged: String::new() })
            }
        }
    }

    /// Uploads part `idx` (from 0), which starts `offset` bytes into the file. Parts may
    /// be uploaded concurrently; uploading an index again replaces it. Returns the part's
    /// id for [`Storage::complete_upload`].
    pub async fn put_part(
        &self,
        upload: &UploadRef,
        idx: usize,
        offset: u64,
        data: Bytes,
    ) -> Result<String, StorageError> {
        self.retry
            .run("upload part", &upload.path, |_| self.put_part_once(upload, idx, offset, data.clone()))
            .await
    }

    async fn put_part_once(
        &self,
        upload: &UploadRef,
        idx: usize,
        offset: u64,
        data: Bytes,
    ) -> Result<String, StorageError> {
        match &self.backend {
            Backend::Local(root) => {
                let file = root.join(&upload.staged);
                let staged = Path::from(upload.staged.as_str());
                tokio::task::spawn_blocking(move || {
                    use std::os::unix::fs::FileExt;
                    let f = std::fs::OpenOptions::new().write(true).open(&file)?;
                    f.write_all_at(&data, offset)?;
                    start_writeback(&f, offset, data.len());
                    Ok::<_, std::io::Error>(())
                })
                .await
                .map_err(|e| local_error("upload part", &staged, std::io::Error::other(e)))?
                .map_err(|e| local_error("upload part", &staged, e))?;
                Ok(String::new())
            }
            Backend::Object(root) => {
                let path = Path::from(upload.path.as_str());
                let part = root
                    .client
                    .multipart()
                    .put_part(&root.key(&path), &upload.id, idx, PutPayload::from(data))
                    .await
                    .map_err(StorageError::store("upload part", &path))?;
                Ok(part.content_id)
            }
        }
    }

    /// Completes an upload from its parts (in order) and `len`, the file's size: the file
    /// appears at its final path, whole, in one step. Returns false when that already
    /// happened (completing is idempotent, so recovery can redo it).
    pub async fn complete_upload(
        &self,
        upload: &UploadRef,
        parts: &[String],
        len: u64,
    ) -> Result<bool, StorageError> {
        let path = Path::from(upload.path.as_str());
        self.retry
            .run("complete upload", &upload.path, |attempt| {
                let path = path.clone();
                async move {
                    // Only completing this upload creates the file: if a try whose answer was
                    // lost did, it is done (some servers answer a completed id with 500s).
                    if attempt > 0 && self.is_object_store() && self.exists_once(&path).await? {
                        return Ok(false);
                    }
                    self.complete_upload_once(upload, parts, len).await
                }
            })
            .await
    }

    /// [`Storage::complete_upload`] for recovery, which may race a holder that lost the
    /// file's partition but still writes parts into its staged copy: on a local disk the
    /// recorded bytes are copied into a file of their own, which then appears at the final
    /// path, so a late write lands in the staged file nobody completes. Object stores
    /// complete the upload, whose parts are fixed by their ids.
    pub async fn seal_upload(
        &self,
        upload: &UploadRef,
        parts: &[String],
        len: u64,
    ) -> Result<bool, StorageError> {
        let Backend::Local(root) = &self.backend else {
            return self.complete_upload(upload, parts, len).await;
        };
        let (from, to) = (root.join(&upload.staged), root.join(&upload.path));
        let sealing = root.join(format!("{}.sealing", upload.staged));
        let staged = Path::from(upload.staged.as_str());
        self.retry
            .run("seal upload", &upload.path, |_| {
                let (from, to, sealing) = (from.clone(), to.clone(), sealing.clone());
                let staged = staged.clone();
                async move {
                    let io = tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
                        use std::io::{Read, Write};
                        if to.exists() {
                            return Ok(false);
                        }
                        let mut copy = std::fs::File::create(&sealing)?;
                        std::io::copy(&mut std::fs::File::open(&from)?.take(len), &mut copy)?;
                        copy.flush()?;
                        copy.sync_all()?;
                        if let Some(dir) = to.parent() {
                            std::fs::create_dir_all(dir)?;
                        }
                        std::fs::rename(&sealing, &to)?;
                        std::fs::remove_file(&from)?;
                        Ok(true)
                    });
                    match io.await {
                        Ok(Ok(done)) => Ok(done),
                        Ok(Err(e)) => Err(local_error("seal upload", &staged, e)),
                        Err(e) => Err(local_error("seal upload", &staged, std::io::Error::other(e))),
                    }
                }
            })
            .await
    }

    async fn complete_upload_once(
        &self,
        upload: &UploadRef,
        parts: &[String],
        len: u64,
    ) -> Result<bool, StorageError> {
        let path = Path::from(upload.path.as_str());
        match &self.backend {
            Backend::Local(root) => {
                let (from, to) = (root.join(&upload.staged), root.join(path.as_ref()));
                let staged = Path::from(upload.staged.as_str());
                let io = async {
                    // A crashed run may have written past what the checkpoint recorded.
                    let f = tokio::fs::OpenOptions::new().write(true).open(&from).await?;
                    f.set_len(len).await?;
                    f.sync_all().await?;
                    if let Some(dir) = to.parent() {
                        tokio::fs::create_dir_all(dir).await?;
                    }
                    tokio::fs::rename(&from, &to).await
                };
                match io.await {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && to.exists() => Ok(false),
                    Err(e) => Err(local_error("complete upload", &staged, e)),
                }
            }
            Backend::Object(root) => {
                let key = root.key(&path);
                let ids = parts.iter().map(|p| PartId { content_id: p.clone() }).collect();
                match root.client.multipart().complete_multipart(&key, &upload.id, ids).await {
                    Ok(_) => Ok(true),
                    // Completed before (recovery redoes publications): S3 no longer knows the
                    // upload (404); Azure refuses a block list naming blocks it has committed
                    // (400 InvalidBlockList). Only this completion creates the file.
                    Err(e) if !retry::retryable(&e) && self.exists_once(&path).await? => Ok(false),
                    Err(source) => Err(StorageError::store("complete upload", &path)(source)),
                }
            }
        }
    }

    /// Abandons an upload; nothing of it stays. Unknown uploads are fine.
    pub async fn abort_upload(&self, upload: &UploadRef) -> Result<(), StorageError> {
        self.retry.run("abort upload", &upload.path, |_| self.abort_upload_once(upload)).await
    }

    async fn abort_upload_once(&self, upload: &UploadRef) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Local(root) => match tokio::fs::remove_file(root.join(&upload.staged)).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(local_error("abort upload", &Path::from(upload.staged.as_str()), e))
                }
                _ => Ok(()),
            },
            // On Azure a no-op: staged blocks cannot be dropped, and expire by themselves.
            Backend::Object(root) => {
                let path = Path::from(upload.path.as_str());
                match root.client.multipart().abort_multipart(&root.key(&path), &upload.id).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(source) => Err(StorageError::store("abort upload", &path)(source)),
                }
            }
        }
    }

    /// Unfinished S3 multipart uploads whose keys start with `prefix`: what a crash leaves
    /// behind, invisible to listings but billed. Empty on local disk, where unfinished
    /// uploads are plain files under `_staging/`, and on Azure, whose uncommitted blocks
    /// cannot be listed by prefix and expire after 7 days by themselves.
    ///
    /// Listing uploads only serves that cleanup, and some S3-compatible servers (s3rver)
    /// do not implement it: there it is empty too, after one warning that names the bucket
    /// lifecycle rule that cleans orphans up instead.
    pub async fn list_uploads(&self, prefix: &Path) -> Result<Vec<UploadRef>, StorageError> {
        let Backend::Object(root) = &self.backend else { return Ok(Vec::new()) };
        let Client::S3(client) = &root.client else { return Ok(Vec::new()) };
        if self.no_upload_listing.load(Ordering::Relaxed) {
            return Ok(Vec::new());
        }
        let list = |_| s3_uploads::list(client, root, prefix);
        match self.retry.run("list uploads", prefix.as_ref(), list).await {
            Err(StorageError::Unsupported { reason, .. }) => {
                if !self.no_upload_listing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        store = %reason,
                        "this S3 store does not list multipart uploads (ListMultipartUploads), so recovery \
                         cannot abort the uploads a crash leaves unfinished; they stay invisible but take \
                         space: give the bucket a lifecycle rule with AbortIncompleteMultipartUpload \
                         (e.g. DaysAfterInitiation 1) to remove them"
                    );
                }
                Ok(Vec::new())
            }
            other => other,
        }
    }
}

impl ObjectRoot {
    /// The bucket key of a path relative to the table root.
    pub(super) fn key(&self, path: &Path) -> Path {
        if self.prefix.as_ref().is_empty() {
            path.clone()
        } else {
            self.prefix.parts().chain(path.parts()).collect()
        }
    }
}

/// Starts writing a part back to disk, without waiting. Completion syncs the file, and the
/// kernel writes back on its own only past `dirty_background_ratio` or after 30 s: that sync
/// wrote a run's whole output in its final checkpoint (docs/measurements.md).
#[cfg(target_os = "linux")]
fn start_writeback(file: &std::fs::File, offset: u64, len: usize) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else { return };
    // SAFETY: the descriptor stays open for the call, which reads no memory of ours. A failure
    // only leaves the writing to completion's sync, which reports errors.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &std::fs::File, _offset: u64, _len: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A holder that lost its partition may still write a part through a file it had open
    /// when recovery sealed the file: the sealed file keeps exactly the recorded bytes.
    #[test]
    fn a_late_write_to_a_staged_file_does_not_reach_the_sealed_one() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let storage = Storage::open(&dir.path().display().to_string(), rt.handle().clone()).unwrap();
        let path = Path::from("t/day=2020-01-01/hour=00/part-x.jsonl");
        let upload =
            rt.block_on(storage.begin_upload(&path, &Path::from("_staging/x/part-x.jsonl"))).unwrap();
        rt.block_on(storage.put_part(&upload, 0, 0, Bytes::from_static(b"committed\nnot yet\n"))).unwrap();
        let zombie = std::fs::OpenOptions::new().write(true).open(dir.path().join(&upload.staged)).unwrap();
        assert!(rt.block_on(storage.seal_upload(&upload, &[], 10)).unwrap());
        zombie.write_all_at(b"a late part\n", 18).unwrap();
        let sealed = std::fs::read(dir.path().join(path.as_ref())).unwrap();
        assert_eq!(sealed, b"committed\n");
        assert!(
            !rt.block_on(storage.seal_upload(&upload, &[], 10)).unwrap(),
            "sealing again changes nothing"
        );
    }
}
