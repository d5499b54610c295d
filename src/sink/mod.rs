//! Table writers: rows in, files out, visible only once a checkpoint commits them.
//!
//! Last stage before the checkpoint. Each [`TableWriter`] keeps one open file per Hive
//! partition. Rows are encoded (JSON lines or Parquet) into the file's buffer; every
//! `part_bytes` the buffer goes to the store as a part of the file's upload, in the
//! background, so the record loop does not wait on I/O. An upload stays invisible until
//! completed (see [`store`]), so a file spans as many checkpoints as it needs: it rolls on
//! size, on age, when its partition is complete, or when too many files are open.
//!
//! At a checkpoint each open file records its uploaded parts and writes its *tail* — the
//! bytes not yet uploaded plus, for Parquet, a footer describing every row so far — to
//! `_staging/<pipeline>/tails/<seq>/`. The manifest names parts and tail, so recovery can
//! *seal* the file exactly as of that checkpoint: upload the tail as the last part and
//! complete. Rolled files are completed only after the manifest naming them is durable.
//! A table folder therefore only ever holds committed files.

pub mod jsonl;
pub mod parquet;
pub mod partition;
pub mod store;

use bytes::Bytes;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::event::{DecodeError, PageView};
use crate::window::WindowCount;

pub use store::{Storage, StorageError, UploadRef};

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

/// How table files are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// JSON lines: readable, Flink's JSON format.
    #[default]
    Jsonl,
    /// Parquet: typed columns, dictionary-encoded strings, snappy.
    Parquet,
}

impl Format {
    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Jsonl => jsonl::EXTENSION,
            Format::Parquet => parquet::EXTENSION,
        }
    }
}

/// A table partition: a table and an hour since the epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Partition {
    /// The table.
    pub table: Table,
    /// Hours since the epoch; [`partition::partition_dir`] names its folder.
    pub hour: i64,
}

impl Partition {
    /// The `_SUCCESS` marker of this partition, relative to the table root.
    pub fn marker(self) -> Path {
        Path::from(format!("{}/{}/_SUCCESS", self.table.name(), partition::partition_dir(self.hour)))
    }
}

/// A rolled file, waiting for the checkpoint that completes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedFile {
    /// The table it belongs to.
    pub table: Table,
    /// Its partition hour.
    pub hour: i64,
    /// Its upload; `upload.path` is where it appears, relative to the table root.
    pub upload: UploadRef,
    /// Part ids, in order.
    pub parts: Vec<String>,
    /// Rows in the file.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
}

impl ClosedFile {
    /// Where the file appears, relative to the table root.
    pub fn path(&self) -> &str {
        &self.upload.path
    }
}

/// A file still being written at a checkpoint: what recovery needs to seal it with exactly
/// the rows written up to that checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFileState {
    /// The table it belongs to.
    pub table: Table,
    /// Its partition hour.
    pub hour: i64,
    /// Where it appears, relative to the table root.
    pub path: String,
    /// The upload, once one was started (small files start theirs when they close).
    pub upload: Option<UploadRef>,
    /// Ids of the parts uploaded so far, in order.
    pub parts: Vec<String>,
    /// Bytes in those parts.
    pub sent: u64,
    /// The object holding the rest of the file as of the checkpoint.
    pub tail: Option<String>,
    /// Rows written up to the checkpoint.
    pub rows: u64,
    /// The file's size if sealed at the checkpoint: `sent` plus the tail.
    pub bytes: u64,
}

/// How files are cut.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Pipeline id: names staging folders and files, so instances never collide.
    pub pipeline_id: String,
    /// File format.
    pub format: Format,
    /// Roll a file once it reaches this many bytes.
    pub roll_bytes: u64,
    /// Roll a file once it has been open this long (processing time, ms).
    pub roll_age_ms: u64,
    /// Upload in parts of this size (S3 needs at least 5 MiB).
    pub part_bytes: usize,
    /// Most files open at once per table; the least recently written closes first.
    pub max_open_files: usize,
    /// Parquet rows per row group (a checkpoint also ends a row group).
    pub row_group_rows: usize,
}

/// The prefix under which a pipeline stages uploads and tails.
pub fn staging_prefix(pipeline_id: &str) -> Path {
    Path::from(format!("_staging/{pipeline_id}"))
}

/// Where a local upload of the file `rel` is written until it completes.
pub fn upload_staging(pipeline_id: &str, rel: &str) -> Path {
    Path::from(format!("{}/uploads/{rel}", staging_prefix(pipeline_id)))
}

/// Where the tails of checkpoint `seq` live.
pub fn tails_prefix(pipeline_id: &str, seq: u64) -> Path {
    Path::from(format!("_staging/{pipeline_id}/tails/{seq:020}"))
}

/// The pipeline id in a table file name `part-<pipeline>-<epoch>-<n>.<ext>`.
pub fn file_pipeline(path: &str) -> Option<&str> {
    let name = path.rsplit('/').next()?.strip_prefix("part-")?;
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    let mut it = stem.rsplitn(3, '-');
    let (_n, _epoch, pipeline) = (it.next()?, it.next()?, it.next()?);
    Some(pipeline)
}

/// Parts in flight per file before the writer waits: bounds memory.
const MAX_PARTS_IN_FLIGHT: usize = 2;

/// A file's encoder: bytes ready to upload, plus (Parquet) rows buffered for a row group.
enum Encoder {
    Jsonl(Vec<u8>),
    Parquet(Box<parquet::ParquetFile>),
}

impl Encoder {
    fn new(format: Format, table: Table, config: &WriterConfig) -> Result<Self, StorageError> {
        Ok(match format {
            Format::Jsonl => Encoder::Jsonl(Vec::with_capacity(config.part_bytes.min(1 << 16))),
            Format::Parquet => Encoder::Parquet(Box::new(
                parquet::ParquetFile::new(table, config.row_group_rows).map_err(encode_error)?,
            )),
        })
    }

    #[inline]
    fn push(&mut self, row: &Row<'_>) -> Result<(), StorageError> {
        match self {
            Encoder::Jsonl(out) => {
                row.write_jsonl(out);
                Ok(())
            }
            Encoder::Parquet(file) => file.push(row).map_err(encode_error),
        }
    }

    /// Encoded bytes not yet uploaded.
    fn output(&mut self) -> &mut Vec<u8> {
        match self {
            Encoder::Jsonl(out) => out,
            Encoder::Parquet(file) => file.output(),
        }
    }

    /// Bytes held in memory: encoded plus buffered.
    #[inline]
    fn held(&self) -> usize {
        match self {
            Encoder::Jsonl(out) => out.len(),
            Encoder::Parquet(file) => file.held_bytes(),
        }
    }

    /// Ends the current row group; returns what completes the file as of now after
    /// everything uploaded and [`Encoder::output`].
    fn checkpoint_footer(&mut self) -> Result<Vec<u8>, StorageError> {
        match self {
            Encoder::Jsonl(_) => Ok(Vec::new()),
            Encoder::Parquet(file) => file.checkpoint_footer().map_err(encode_error),
        }
    }

    /// The rest of the file.
    fn finish(self) -> Result<Vec<u8>, StorageError> {
        match self {
            Encoder::Jsonl(out) => Ok(out),
            Encoder::Parquet(file) => file.finish().map_err(encode_error),
        }
    }
}

fn encode_error(e: parquet::ParquetError) -> StorageError {
    StorageError::Encode(e.to_string())
}

enum PartSlot {
    Done(String),
    Pending(JoinHandle<Result<String, StorageError>>),
}

struct OpenFile {
    hour: i64,
    encoder: Encoder,
    upload: Option<UploadRef>,
    parts: Vec<PartSlot>,
    staged: Path,
    path: String,
    rows: u64,
    /// Bytes already handed to the upload.
    sent: u64,
    opened_ms: u64,
    /// Order of last write, for closing the least recently written file.
    touched: u64,
}

/// Writes one table.
pub struct TableWriter {
    table: Table,
    storage: Storage,
    config: WriterConfig,
    open: Vec<OpenFile>,
    closing: Vec<JoinHandle<Result<ClosedFile, StorageError>>>,
    tails: Vec<JoinHandle<Result<OpenFileState, StorageError>>>,
    epoch: u64,
    next_file: u32,
    writes: u64,
}

impl TableWriter {
    /// A writer whose new files are named after checkpoint `epoch`.
    pub fn new(table: Table, storage: Storage, config: WriterConfig, epoch: u64) -> Self {
        TableWriter {
            table,
            storage,
            config,
            open: Vec::new(),
            closing: Vec::new(),
            tails: Vec::new(),
            epoch,
            next_file: 0,
            writes: 0,
        }
    }

    /// The table this writer writes.
    pub fn table(&self) -> Table {
        self.table
    }

    /// Appends one row to the partition `hour`.
    #[inline]
    pub fn append(&mut self, hour: i64, now_ms: u64, row: Row<'_>) -> Result<(), StorageError> {
        let idx = match self.open.iter().position(|f| f.hour == hour) {
            Some(i) => i,
            None => self.open_file(hour, now_ms)?,
        };
        self.writes += 1;
        let file = &mut self.open[idx];
        file.encoder.push(&row)?;
        file.rows += 1;
        file.touched = self.writes;
        if file.sent + file.encoder.held() as u64 >= self.config.roll_bytes {
            self.close(idx);
        } else if file.encoder.output().len() >= self.config.part_bytes {
            self.send_part(idx)?;
        }
        Ok(())
    }

    fn open_file(&mut self, hour: i64, now_ms: u64) -> Result<usize, StorageError> {
        if self.open.len() >= self.config.max_open_files.max(1) {
            if let Some(lru) = (0..self.open.len()).min_by_key(|&i| self.open[i].touched) {
                self.close(lru);
            }
        }
        let rel = format!(
            "{}/{}/part-{}-{:08}-{:04}.{}",
            self.table.name(),
            partition::partition_dir(hour),
            self.config.pipeline_id,
            self.epoch,
            self.next_file,
            self.config.format.extension()
        );
        self.next_file += 1;
        let staged = upload_staging(&self.config.pipeline_id, &rel);
        self.open.push(OpenFile {
            hour,
            encoder: Encoder::new(self.config.format, self.table, &self.config)?,
            upload: None,
            parts: Vec::new(),
            staged,
            path: rel,
            rows: 0,
            sent: 0,
            opened_ms: now_ms,
            touched: self.writes,
        });
        Ok(self.open.len() - 1)
    }

    /// Hands the file's encoded bytes to its upload as one part, in the background.
    fn send_part(&mut self, idx: usize) -> Result<(), StorageError> {
        let storage = &self.storage;
        let file = &mut self.open[idx];
        let upload = match &file.upload {
            Some(u) => u.clone(),
            None => {
                let path = Path::from(file.path.as_str());
                let u = storage.block_on(storage.begin_upload(&path, &file.staged))?;
                file.upload = Some(u.clone());
                u
            }
        };
        let data = std::mem::replace(file.encoder.output(), Vec::with_capacity(self.config.part_bytes));
        let (part_idx, offset) = (file.parts.len(), file.sent);
        file.sent += data.len() as u64;
        let store = storage.clone();
        let task = async move { store.put_part(&upload, part_idx, offset, Bytes::from(data)).await };
        file.parts.push(PartSlot::Pending(storage.runtime().spawn(task)));
        let in_flight = file.parts.iter().filter(|p| matches!(p, PartSlot::Pending(_))).count();
        if in_flight > MAX_PARTS_IN_FLIGHT {
            storage.block_on(settle_parts(&mut file.parts, 1))?;
        }
        Ok(())
    }

    /// Starts finishing file `idx` in the background; the checkpoint collects it.
    fn close(&mut self, idx: usize) {
        let file = self.open.swap_remove(idx);
        let storage = self.storage.clone();
        let table = self.table;
        let task = async move {
            let OpenFile { hour, encoder, upload, mut parts, staged, path, rows, sent, .. } = file;
            let rest = encoder.finish()?;
            let upload = match upload {
                Some(u) => u,
                None => storage.begin_upload(&Path::from(path.as_str()), &staged).await?,
            };
            let bytes = sent + rest.len() as u64;
            if !rest.is_empty() || parts.is_empty() {
                let part = storage.put_part(&upload, parts.len(), sent, Bytes::from(rest)).await?;
                parts.push(PartSlot::Done(part));
            }
            let parts = settle_parts(&mut parts, usize::MAX).await?;
            Ok(ClosedFile { table, hour, upload, parts, rows, bytes })
        };
        self.closing.push(self.storage.runtime().spawn(task));
    }

    /// Rolls files open longer than the roll age.
    pub fn roll_aged(&mut self, now_ms: u64) {
        let age = self.config.roll_age_ms;
        self.close_where(|f| now_ms.saturating_sub(f.opened_ms) >= age);
    }

    /// Closes the files of partitions for which `complete(hour)` holds.
    pub fn close_complete(&mut self, complete: impl Fn(i64) -> bool) {
        self.close_where(|f| complete(f.hour));
    }

    /// Starts closing every open file.
    pub fn close_all(&mut self) {
        self.close_where(|_| true);
    }

    fn close_where(&mut self, pred: impl Fn(&OpenFile) -> bool) {
        let mut i = 0;
        while i < self.open.len() {
            if pred(&self.open[i]) {
                self.close(i);
            } else {
                i += 1;
            }
        }
    }

    /// Hours with a file open.
    pub fn open_hours(&self) -> impl Iterator<Item = i64> + '_ {
        self.open.iter().map(|f| f.hour)
    }

    /// First half of checkpoint `seq`: ends row groups and starts writing every open
    /// file's tail (all writers start before any waits, so tails upload in parallel).
    pub fn start_checkpoint(&mut self, seq: u64) -> Result<(), StorageError> {
        let prefix = tails_prefix(&self.config.pipeline_id, seq);
        // Object stores take parts of at least 5 MiB, so a smaller rest goes into the tail;
        // local files take any part, so everything is written in place.
        let min_part = if self.storage.is_object_store() { self.config.part_bytes } else { 1 };
        for idx in 0..self.open.len() {
            let footer = self.open[idx].encoder.checkpoint_footer()?;
            if self.open[idx].encoder.output().len() >= min_part {
                self.send_part(idx)?;
            }
            let storage = self.storage.clone();
            let file = &mut self.open[idx];
            let parts = storage.block_on(settle_parts(&mut file.parts, usize::MAX))?;
            let mut tail = file.encoder.output().clone();
            tail.extend_from_slice(&footer);
            let bytes = file.sent + tail.len() as u64;
            let tail_path = Path::from(format!("{prefix}/{}", file.path));
            let state = OpenFileState {
                table: self.table,
                hour: file.hour,
                path: file.path.clone(),
                upload: file.upload.clone(),
                parts,
                sent: file.sent,
                tail: (!tail.is_empty()).then(|| tail_path.to_string()),
                rows: file.rows,
                bytes,
            };
            let task = async move {
                if !tail.is_empty() {
                    storage.put(&tail_path, Bytes::from(tail)).await?;
                }
                Ok(state)
            };
            self.tails.push(self.storage.runtime().spawn(task));
        }
        Ok(())
    }

    /// Second half: waits for closing files and tails. Returns the rolled files the
    /// manifest completes and the open files it records. New files are named after
    /// `next_epoch`.
    pub fn finish_checkpoint(
        &mut self,
        next_epoch: u64,
    ) -> Result<(Vec<ClosedFile>, Vec<OpenFileState>), StorageError> {
        let closing = std::mem::take(&mut self.closing);
        let tails = std::mem::take(&mut self.tails);
        let storage = self.storage.clone();
        let out = storage.block_on(async move {
            let mut closed = Vec::with_capacity(closing.len());
            for task in closing {
                closed.push(task.await.map_err(|e| join_error(e, "close"))??);
            }
            let mut open = Vec::with_capacity(tails.len());
            for task in tails {
                open.push(task.await.map_err(|e| join_error(e, "checkpoint"))??);
            }
            Ok::<_, StorageError>((closed, open))
        })?;
        self.epoch = next_epoch;
        self.next_file = 0;
        Ok(out)
    }
}

/// Waits for up to `wait_for` pending parts, oldest first. Returns the ids of the settled
/// parts: every part's id once none is pending.
async fn settle_parts(parts: &mut [PartSlot], wait_for: usize) -> Result<Vec<String>, StorageError> {
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
        let config = WriterConfig {
            pipeline_id: "t".into(),
            format: Format::Jsonl,
            roll_bytes,
            roll_age_ms: 1_000,
            part_bytes,
            max_open_files: 4,
            row_group_rows: 1000,
        };
        (rt, TableWriter::new(Table::PageViewAggregates, storage, config, 1))
    }

    /// Aggregate rows of one fixed length.
    fn window(i: u32) -> WindowCount {
        WindowCount { end: 1_577_836_860_000, postcode: format!("P{i:05}"), views: 10_000 + u64::from(i) }
    }

    fn row_len() -> u64 {
        let mut out = Vec::new();
        Row::Aggregate(&window(0), 60_000).write_jsonl(&mut out);
        out.len() as u64
    }

    fn append(w: &mut TableWriter, i: u32, hour: i64, now: u64) {
        w.append(hour, now, Row::Aggregate(&window(i), 60_000)).unwrap();
    }

    fn checkpoint(w: &mut TableWriter, seq: u64) -> (Vec<ClosedFile>, Vec<OpenFileState>) {
        w.start_checkpoint(seq).unwrap();
        w.finish_checkpoint(seq + 1).unwrap()
    }

    #[test]
    fn files_roll_at_the_roll_size_even_below_the_part_size() {
        let dir = tempfile::tempdir().unwrap();
        let (_rt, mut w) = writer(dir.path(), 10 * row_len(), 8 << 20);
        for i in 0..25 {
            append(&mut w, i, 0, 0);
        }
        w.close_all();
        let (closed, open) = checkpoint(&mut w, 1);
        assert!(open.is_empty());
        let mut rows: Vec<u64> = closed.iter().map(|f| f.rows).collect();
        rows.sort();
        assert_eq!(rows, vec![5, 10, 10]);
        assert!(closed
            .iter()
            .all(|f| f.bytes <= 10 * row_len() && f.upload.staged.starts_with("_staging/t/uploads/")));
        let names: std::collections::HashSet<_> = closed.iter().map(|f| f.path().to_string()).collect();
        assert_eq!(names.len(), 3, "every rolled file has its own name");
    }

    #[test]
    fn a_multipart_file_holds_every_part_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (rt, mut w) = writer(dir.path(), 1 << 30, 1_000);
        for i in 0..95 {
            append(&mut w, i, 0, 0);
        }
        w.close_all();
        let (closed, _) = checkpoint(&mut w, 1);
        assert_eq!(closed.len(), 1);
        assert!(closed[0].parts.len() > 5, "small parts: {}", closed[0].parts.len());
        assert!(!dir.path().join(closed[0].path()).exists(), "invisible until completed");
        rt.block_on(w.storage.complete_upload(&closed[0].upload, &closed[0].parts, closed[0].bytes)).unwrap();
        let text = std::fs::read(dir.path().join(closed[0].path())).unwrap();
        let mut want = Vec::new();
        for i in 0..95 {
            Row::Aggregate(&window(i), 60_000).write_jsonl(&mut want);
        }
        assert_eq!(text, want);
        assert_eq!(closed[0].bytes, want.len() as u64);
    }

    #[test]
    fn files_roll_by_age_in_processing_time() {
        let dir = tempfile::tempdir().unwrap();
        let (_rt, mut w) = writer(dir.path(), 1 << 30, 8 << 20);
        append(&mut w, 0, 0, 0);
        w.roll_aged(999);
        append(&mut w, 1, 0, 999);
        w.roll_aged(1_000);
        append(&mut w, 2, 0, 1_000);
        w.close_all();
        let (closed, _) = checkpoint(&mut w, 1);
        let mut rows: Vec<u64> = closed.iter().map(|f| f.rows).collect();
        rows.sort();
        assert_eq!(rows, vec![1, 2], "the file opened at 0 rolled at 1000 ms, not at 999 ms");
    }

    #[test]
    fn a_file_spans_checkpoints_and_records_how_to_seal_it() {
        let dir = tempfile::tempdir().unwrap();
        let (_rt, mut w) = writer(dir.path(), 1 << 30, 8 << 20);
        append(&mut w, 0, 0, 0);
        let (closed, open) = checkpoint(&mut w, 1);
        assert!(closed.is_empty());
        assert_eq!((open.len(), open[0].rows, open[0].bytes), (1, 1, row_len()));
        append(&mut w, 1, 0, 10);
        let (closed, open2) = checkpoint(&mut w, 2);
        assert!(closed.is_empty());
        assert_eq!(open2[0].path, open[0].path, "the same file goes on");
        assert_eq!((open2[0].rows, open2[0].bytes), (2, 2 * row_len()));
        assert_eq!(open2[0].sent, 2 * row_len(), "on local disk a checkpoint writes the buffer as a part");
        assert!(open2[0].tail.is_none(), "JSON lines need no tail once written");
        assert!(!dir.path().join(&open[0].path).exists(), "nothing visible before it rolls");
    }

    #[test]
    fn too_many_open_partitions_close_the_least_recently_written() {
        let dir = tempfile::tempdir().unwrap();
        let (_rt, mut w) = writer(dir.path(), 1 << 30, 8 << 20);
        for hour in 0..4 {
            append(&mut w, hour as u32, hour, 0);
        }
        append(&mut w, 10, 0, 0); // hour 1 is now the least recently written
        append(&mut w, 11, 7, 0);
        let mut hours: Vec<i64> = w.open_hours().collect();
        hours.sort();
        assert_eq!(hours, vec![0, 2, 3, 7]);
        let (closed, _) = checkpoint(&mut w, 1);
        assert_eq!(closed.iter().map(|f| f.hour).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn file_names_give_back_their_pipeline() {
        assert_eq!(
            file_pipeline("page_views/day=2020-01-01/hour=00/part-a-b-00000003-0001.parquet"),
            Some("a-b")
        );
        assert_eq!(file_pipeline("x/part-p-00000001-0000.jsonl"), Some("p"));
        assert_eq!(file_pipeline("x/other.jsonl"), None);
    }
}
