//! Table writers: rows in, staged files out, published only by a checkpoint.
//!
//! Last stage before the checkpoint. Each [`TableWriter`] keeps one open file per Hive
//! partition. Rows are encoded into the file's buffer; every `part_bytes` the buffer goes
//! to the store as a part of a multipart upload, in the background, so the record loop
//! does not wait on I/O. Files roll on size and age and at every checkpoint. A closed file
//! lives under `_staging/<pipeline>/`, outside the table folders, until the checkpoint that
//! names it is durable; then it is renamed into `<table>/day=…/hour=…/`. So a table folder
//! only ever holds committed files, and a glob over it never sees work in progress.

pub mod jsonl;
pub mod parquet;
pub mod partition;
pub mod store;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::event::{DecodeError, PageView};
use crate::window::WindowCount;

pub use store::{Storage, StorageError};

/// The four output tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// Every valid event.
    PageViews,
    /// Views per postcode per window.
    PageViewAggregates,
    /// Events that arrived after their window was emitted.
    LatePageViews,
    /// Records that could not be decoded.
    DeadLetters,
}

impl Table {
    /// All tables, in the order metrics and summaries list them.
    pub const ALL: [Table; 4] =
        [Table::PageViews, Table::PageViewAggregates, Table::LatePageViews, Table::DeadLetters];

    /// The table's folder name.
    pub fn name(self) -> &'static str {
        match self {
            Table::PageViews => "page_views",
            Table::PageViewAggregates => "page_view_aggregates",
            Table::LatePageViews => "late_page_views",
            Table::DeadLetters => "dead_letters",
        }
    }
}

/// One row of one table, borrowed from what the pipeline is processing; each file format
/// encodes it its own way.
#[derive(Debug, Clone, Copy)]
pub enum Row<'a> {
    /// A `page_views` row.
    View(&'a PageView<'a>),
    /// A `late_page_views` row: the event and the watermark it arrived behind (UTC ms).
    Late(&'a PageView<'a>, i64),
    /// A `page_view_aggregates` row: the window and the window size in ms.
    Aggregate(&'a WindowCount, i64),
    /// A `dead_letters` row.
    DeadLetter {
        /// The record as read (or its kept prefix, when oversized).
        payload: &'a [u8],
        /// Why it could not be decoded.
        error: &'a DecodeError,
        /// Where it came from.
        origin: jsonl::Origin<'a>,
        /// When it was read (UTC ms).
        received_at: i64,
    },
}

impl Row<'_> {
    /// Appends the row as one JSON line.
    pub fn write_jsonl(&self, out: &mut Vec<u8>) {
        match *self {
            Row::View(pv) => jsonl::write_view(out, pv),
            Row::Late(pv, watermark) => jsonl::write_late(out, pv, watermark),
            Row::Aggregate(w, size_ms) => jsonl::write_aggregate(out, w, size_ms),
            Row::DeadLetter { payload, error, origin, received_at } => {
                jsonl::write_dead_letter(out, payload, error, origin, received_at)
            }
        }
    }
}

/// A closed file waiting for its checkpoint, as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedFile {
    /// The table it belongs to.
    pub table: Table,
    /// Where it is now, relative to the table root.
    pub staged: String,
    /// Where publishing puts it, relative to the table root.
    pub path: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
}

/// How files are cut.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Pipeline id: names staging folders and files, so instances never collide.
    pub pipeline_id: String,
    /// Roll a file once it reaches this many bytes.
    pub roll_bytes: u64,
    /// Roll a file once it has been open this long (processing time, ms).
    pub roll_age_ms: u64,
    /// Upload in parts of this size (S3 needs at least 5 MiB).
    pub part_bytes: usize,
}

/// The prefix under which a pipeline stages files.
pub fn staging_prefix(pipeline_id: &str) -> Path {
    Path::from(format!("_staging/{pipeline_id}"))
}

/// Parts in flight per file before the writer waits: bounds memory.
const MAX_PARTS_IN_FLIGHT: usize = 2;

struct Upload {
    upload: Box<dyn MultipartUpload>,
    parts: Vec<JoinHandle<object_store::Result<()>>>,
}

struct OpenFile {
    hour: i64,
    buf: Vec<u8>,
    upload: Option<Upload>,
    staged: Path,
    path: String,
    rows: u64,
    /// Bytes already handed to the upload.
    sent: u64,
    opened_ms: u64,
}

/// Writes one table.
pub struct TableWriter {
    table: Table,
    storage: Storage,
    config: WriterConfig,
    open: Vec<OpenFile>,
    closing: Vec<JoinHandle<Result<StagedFile, StorageError>>>,
    epoch: u64,
    next_file: u32,
}

impl TableWriter {
    /// A writer whose files will be committed by checkpoint `epoch`.
    pub fn new(table: Table, storage: Storage, config: WriterConfig, epoch: u64) -> Self {
        TableWriter { table, storage, config, open: Vec::new(), closing: Vec::new(), epoch, next_file: 0 }
    }

    /// Appends one row to the partition `hour`; `encode` writes the row's bytes.
    #[inline]
    pub fn append(
        &mut self,
        hour: i64,
        now_ms: u64,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), StorageError> {
        let idx = match self.open.iter().position(|f| f.hour == hour) {
            Some(i) => i,
            None => self.open_file(hour, now_ms),
        };
        let file = &mut self.open[idx];
        encode(&mut file.buf);
        file.rows += 1;
        if file.sent + file.buf.len() as u64 >= self.config.roll_bytes {
            self.close(idx);
        } else if file.buf.len() >= self.config.part_bytes {
            self.send_part(idx)?;
        }
        Ok(())
    }

    fn open_file(&mut self, hour: i64, now_ms: u64) -> usize {
        let rel = format!(
            "{}/{}/part-{}-{:08}-{:04}.{}",
            self.table.name(),
            partition::partition_dir(hour),
            self.config.pipeline_id,
            self.epoch,
            self.next_file,
            jsonl::EXTENSION
        );
        self.next_file += 1;
        let staged = Path::from(format!("{}/{rel}", staging_prefix(&self.config.pipeline_id)));
        self.open.push(OpenFile {
            hour,
            buf: Vec::with_capacity(self.config.part_bytes.min(1 << 16)),
            upload: None,
            staged,
            path: rel,
            rows: 0,
            sent: 0,
            opened_ms: now_ms,
        });
        self.open.len() - 1
    }

    /// Hands the file's buffer to its multipart upload as one part, in the background.
    fn send_part(&mut self, idx: usize) -> Result<(), StorageError> {
        let storage = &self.storage;
        let file = &mut self.open[idx];
        if file.upload.is_none() {
            let upload = storage.block_on(storage.store().put_multipart(&file.staged)).map_err(|source| {
                StorageError::Store { op: "upload", path: file.staged.to_string(), source }
            })?;
            file.upload = Some(Upload { upload, parts: Vec::new() });
        }
        let Some(up) = file.upload.as_mut() else { return Ok(()) };
        let data = std::mem::replace(&mut file.buf, Vec::with_capacity(self.config.part_bytes));
        file.sent += data.len() as u64;
        let part = up.upload.put_part(PutPayload::from(Bytes::from(data)));
        up.parts.push(storage.runtime().spawn(part));
        if up.parts.len() > MAX_PARTS_IN_FLIGHT {
            let oldest = up.parts.remove(0);
            storage.block_on(join_part(oldest, &file.staged))?;
        }
        Ok(())
    }

    /// Starts finishing file `idx` in the background; the checkpoint collects it.
    fn close(&mut self, idx: usize) {
        let file = self.open.swap_remove(idx);
        let storage = self.storage.clone();
        let table = self.table;
        let task = async move {
            let OpenFile { buf, upload, staged, path, rows, sent, .. } = file;
            let bytes = sent + buf.len() as u64;
            match upload {
                None => storage.put(&staged, Bytes::from(buf)).await?,
                Some(mut up) => {
                    if !buf.is_empty() {
                        up.parts.push(tokio::spawn(up.upload.put_part(PutPayload::from(Bytes::from(buf)))));
                    }
                    for part in up.parts.drain(..) {
                        join_part(part, &staged).await?;
                    }
                    up.upload.complete().await.map_err(|source| StorageError::Store {
                        op: "complete upload",
                        path: staged.to_string(),
                        source,
                    })?;
                }
            }
            Ok(StagedFile { table, staged: staged.to_string(), path, rows, bytes })
        };
        self.closing.push(self.storage.runtime().spawn(task));
    }

    /// Rolls files open longer than the roll age.
    pub fn roll_aged(&mut self, now_ms: u64) {
        let mut i = 0;
        while i < self.open.len() {
            if now_ms.saturating_sub(self.open[i].opened_ms) >= self.config.roll_age_ms {
                self.close(i);
            } else {
                i += 1;
            }
        }
    }

    /// Starts closing every open file (first half of a checkpoint; all writers close in
    /// parallel before any waits).
    pub fn close_all(&mut self) {
        while !self.open.is_empty() {
            self.close(self.open.len() - 1);
        }
    }

    /// Closes every open file and waits for all closes: the files the next manifest names.
    /// Later files belong to checkpoint `next_epoch`.
    pub fn finish_epoch(&mut self, next_epoch: u64) -> Result<Vec<StagedFile>, StorageError> {
        self.close_all();
        let closing = std::mem::take(&mut self.closing);
        let storage = self.storage.clone();
        let staged = storage.block_on(async move {
            let mut out = Vec::with_capacity(closing.len());
            for task in closing {
                out.push(task.await.map_err(|e| join_error(e, "close"))??);
            }
            Ok::<_, StorageError>(out)
        })?;
        self.epoch = next_epoch;
        self.next_file = 0;
        Ok(staged)
    }

    /// Rows buffered or staged but not yet committed; zero means nothing to commit.
    pub fn has_pending(&self) -> bool {
        !self.open.is_empty() || !self.closing.is_empty()
    }
}

async fn join_part(part: JoinHandle<object_store::Result<()>>, path: &Path) -> Result<(), StorageError> {
    part.await.map_err(|e| join_error(e, "upload part"))?.map_err(|source| StorageError::Store {
        op: "upload part",
        path: path.to_string(),
        source,
    })
}

fn join_error(e: tokio::task::JoinError, op: &'static str) -> StorageError {
    StorageError::Store {
        op,
        path: String::new(),
        source: object_store::Error::Generic { store: "task", source: Box::new(e) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(
        dir: &std::path::Path,
        roll_bytes: u64,
        part_bytes: usize,
    ) -> (tokio::runtime::Runtime, TableWriter) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let storage = Storage::open(&dir.display().to_string(), rt.handle().clone()).unwrap();
        let config = WriterConfig { pipeline_id: "t".into(), roll_bytes, roll_age_ms: 1_000, part_bytes };
        (rt, TableWriter::new(Table::PageViews, storage, config, 1))
    }

    fn row(out: &mut Vec<u8>) {
        out.extend_from_slice(&[b'x'; 99]);
        out.push(b'\n');
    }

    #[test]
    fn files_roll_at_the_roll_size_even_below_the_part_size() {
        let dir = tempfile::tempdir().unwrap();
        let (_rt, mut w) = writer(dir.path(), 1_000, 8 << 20);
        for _ in 0..25 {
            w.append(0, 0, row).unwrap();
        }
        let staged = w.finish_epoch(2).unwrap();
        let mut rows: Vec<u64> = staged.iter().map(|f| f.rows).collect();
        rows.sort();
        assert_eq!(rows, vec![5, 10, 10], "100-byte rows, 1000-byte files");
        assert!(staged.iter().all(|f| f.bytes <= 1_000 && f.staged.starts_with("_staging/t/page_views/")));
        let names: std::collections::HashSet<_> = staged.iter().map(|f| f.path.clone()).collect();
        assert_eq!(names.len(), 3, "every rolled file has its own name");
    }

    #[test]
    fn a_multipart_file_holds_every_part_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (_rt, mut w) = writer(dir.path(), 1 << 30, 1_000);
        for i in 0..95u32 {
            w.append(0, 0, |out| out.extend_from_slice(format!("{i:09}\n").as_bytes())).unwrap();
        }
        let staged = w.finish_epoch(2).unwrap();
        assert_eq!(staged.len(), 1);
        let text = std::fs::read_to_string(dir.path().join(&staged[0].staged)).unwrap();
        let want: String = (0..95u32).map(|i| format!("{i:09}\n")).collect();
        assert_eq!(text, want);
        assert_eq!(staged[0].bytes, want.len() as u64);
    }

    #[test]
    fn files_roll_by_age_in_processing_time() {
        let dir = tempfile::tempdir().unwrap();
        let (_rt, mut w) = writer(dir.path(), 1 << 30, 8 << 20);
        w.append(0, 0, row).unwrap();
        w.roll_aged(999);
        w.append(0, 999, row).unwrap();
        w.roll_aged(1_000);
        w.append(0, 1_000, row).unwrap();
        let staged = w.finish_epoch(2).unwrap();
        let mut rows: Vec<u64> = staged.iter().map(|f| f.rows).collect();
        rows.sort();
        assert_eq!(rows, vec![1, 2], "the file opened at 0 rolled at 1000 ms, not at 999 ms");
    }
}
