//! One file's upload: encoded bytes go to the store as parts, in the background, so the
//! record loop does not wait on I/O; the upload is completed (the file appears) only by the
//! commit protocol, after the log entry naming it is durable.
//!
//! Kept apart from the encoders: an encoder turns rows into bytes, this turns bytes into a
//! durable, invisible upload.

use bytes::Bytes;
use object_store::path::Path;
use pageviews_core::storage::{Storage, StorageError, UploadRef};
use tokio::task::JoinHandle;

/// Parts in flight per file before the writer waits: bounds memory.
const MAX_PARTS_IN_FLIGHT: usize = 2;

enum PartSlot {
    Done(String),
    Pending(JoinHandle<Result<String, StorageError>>),
}

/// The upload of one table file.
pub(super) struct FileUpload {
    /// The file's final path, relative to the table root.
    pub(super) path: String,
    /// Where a local upload is written until it completes.
    staged: Path,
    /// Started with the first part (small files start theirs when they close).
    pub(super) upload: Option<UploadRef>,
    parts: Vec<PartSlot>,
    /// Bytes already handed to the upload.
    pub(super) sent: u64,
}

impl FileUpload {
    /// An upload not started yet.
    pub(super) fn new(path: String, staged: Path) -> Self {
        FileUpload { path, staged, upload: None, parts: Vec::new(), sent: 0 }
    }

    async fn begin(&mut self, storage: &Storage) -> Result<UploadRef, StorageError> {
        if let Some(u) = &self.upload {
            return Ok(u.clone());
        }
        let u = storage.begin_upload(&Path::from(self.path.as_str()), &self.staged).await?;
        self.upload = Some(u.clone());
        Ok(u)
    }

    /// Hands `data` to the upload as its next part, in the background. Waits only when too
    /// many parts are already in flight.
    pub(super) fn send_part(&mut self, storage: &Storage, data: Vec<u8>) -> Result<(), StorageError> {
        let upload = storage.block_on(self.begin(storage))?;
        let (idx, offset) = (self.parts.len(), self.sent);
        self.sent += data.len() as u64;
        let store = storage.clone();
        let task = async move { store.put_part(&upload, idx, offset, Bytes::from(data)).await };
        self.parts.push(PartSlot::Pending(storage.runtime().spawn(task)));
        let in_flight = self.parts.iter().filter(|p| matches!(p, PartSlot::Pending(_))).count();
        if in_flight > MAX_PARTS_IN_FLIGHT {
            storage.block_on(settle(&mut self.parts, 1))?;
        }
        Ok(())
    }

    /// Waits for every part in flight; returns the ids of all parts so far, in order.
    pub(super) fn settle(&mut self, storage: &Storage) -> Result<Vec<String>, StorageError> {
        storage.block_on(settle(&mut self.parts, usize::MAX))
    }

    /// Uploads `rest` as the last part (a file needs at least one) and waits for all parts:
    /// everything the log entry needs to complete the file. Returns the upload, its part ids
    /// and the file's size.
    pub(super) async fn finish(
        mut self,
        storage: &Storage,
        rest: Vec<u8>,
    ) -> Result<(UploadRef, Vec<String>, u64), StorageError> {
        let upload = self.begin(storage).await?;
        let bytes = self.sent + rest.len() as u64;
        if !rest.is_empty() || self.parts.is_empty() {
            let part = storage.put_part(&upload, self.parts.len(), self.sent, Bytes::from(rest)).await?;
            self.parts.push(PartSlot::Done(part));
        }
        let parts = settle(&mut self.parts, usize::MAX).await?;
        Ok((upload, parts, bytes))
    }
}

/// Waits for up to `wait_for` pending parts, oldest first. Returns the ids of the settled
/// parts: every part's id once none is pending.
async fn settle(parts: &mut [PartSlot], wait_for: usize) -> Result<Vec<String>, StorageError> {
    let mut waited = 0;
    for slot in parts.iter_mut() {
        if waited >= wait_for {
            break;
        }
        if let PartSlot::Pending(task) = slot {
            let id = task.await.map_err(|e| join_error(e, "upload part"))??;
            *slot = PartSlot::Done(id);
            waited += 1;
        }
    }
    Ok(parts
        .iter()
        .filter_map(|p| match p {
            PartSlot::Done(id) => Some(id.clone()),
            PartSlot::Pending(_) => None,
        })
        .collect())
}

/// A background storage task that panicked or was cancelled, as a storage error.
pub(super) fn join_error(e: tokio::task::JoinError, op: &'static str) -> StorageError {
    StorageError::Store {
        op,
        path: String::new(),
        source: object_store::Error::Generic { store: "task", source: Box::new(e) },
    }
}
