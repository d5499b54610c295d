//! The table writer: one open file per Hive partition, and when each file rolls.
//!
//! Rows are encoded into their partition's file; every `part_bytes` the encoded bytes go to
//! the file's upload (see `sink::upload`). Files span checkpoints and roll on size, on
//! age, when their partition is complete, or when too many are open. At a checkpoint each
//! open file reports its uploaded parts and writes its *tail* — the bytes not yet uploaded
//! plus, for Parquet and ORC, a footer describing every row so far — so recovery can seal it
//! exactly as of that checkpoint (see `pageviews_core::commit`).

use bytes::Bytes;
use object_store::path::Path;
use pageviews_core::commit::layout::{file_path, tails_prefix, upload_staging};
use pageviews_core::commit::{ClosedFile, OpenFileState};
use pageviews_core::storage::{Storage, StorageError};
use pageviews_core::table::{Format, Partition, Table};
use tokio::task::JoinHandle;

use super::encoder::Encoder;
use super::upload::{join_error, FileUpload};
use super::Row;

/// How files are cut.
#[derive(Debug, Clone)]
pub(crate) struct WriterConfig {
    /// Pipeline id: names staging folders and files, so pipelines never collide.
    pub(crate) pipeline_id: String,
    /// File format.
    pub(crate) format: Format,
    /// Roll a file once it reaches this many bytes.
    pub(crate) roll_bytes: u64,
    /// Roll a file once it has been open this long (processing time, ms).
    pub(crate) roll_age_ms: u64,
    /// Upload in parts of this size (S3 needs at least 5 MiB).
    pub(crate) part_bytes: usize,
    /// Most files open at once per table; the least recently written closes first.
    pub(crate) max_open_files: usize,
    /// Parquet rows per row group, ORC rows per stripe (a checkpoint also ends either).
    pub(crate) row_group_rows: usize,
    /// How Parquet files store timestamps (microseconds for Iceberg tables).
    pub(crate) timestamps: super::parquet::TimestampUnit,
}

struct OpenFile {
    hour: i64,
    encoder: Encoder,
    upload: FileUpload,
    rows: u64,
    opened_ms: u64,
    /// Order of last write, for closing the least recently written file.
    touched: u64,
    /// Newest event time of its rows ([`Row::event_ms`]).
    newest_ms: i64,
}

/// Whose files a writer writes: a source partition under a claim. Its files' names carry
/// both, so two owners of a partition never write the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    /// The source partition (for aggregates and late rows: the counting partition).
    pub(crate) partition: u32,
    /// The claim under which it is held.
    pub(crate) claim: u64,
}

/// Writes one table for one source partition.
pub(crate) struct TableWriter {
    table: Table,
    storage: Storage,
    config: WriterConfig,
    owner: Owner,
    open: Vec<OpenFile>,
    closing: Vec<JoinHandle<Result<ClosedFile, StorageError>>>,
    tails: Vec<JoinHandle<Result<OpenFileState, StorageError>>>,
    /// The task checkpoint new files are named after.
    cp: u64,
    next_file: u32,
    writes: u64,
    /// Newest event time of the rows in files closed so far: visible once the checkpoint
    /// that completes them commits.
    rolled_newest_ms: i64,
}

impl TableWriter {
    /// A writer for `owner` whose new files are named after its checkpoint `cp`.
    pub(crate) fn new(table: Table, storage: Storage, config: WriterConfig, owner: Owner, cp: u64) -> Self {
        TableWriter {
            table,
            storage,
            config,
            owner,
            open: Vec::new(),
            closing: Vec::new(),
            tails: Vec::new(),
            cp,
            next_file: 0,
            writes: 0,
            rolled_newest_ms: i64::MIN,
        }
    }

    /// Newest event time of the rows in the files closed so far, if any.
    pub(crate) fn rolled_newest_ms(&self) -> Option<i64> {
        (self.rolled_newest_ms != i64::MIN).then_some(self.rolled_newest_ms)
    }

    /// Takes rows up to event time `ms` as rolled: a restored task's files were sealed by
    /// recovery, so folder readers see them.
    pub(crate) fn rolled_up_to(&mut self, ms: i64) {
        self.rolled_newest_ms = self.rolled_newest_ms.max(ms);
    }

    /// The table this writer writes.
    pub(crate) fn table(&self) -> Table {
        self.table
    }

    /// The storage it writes to.
    #[cfg(test)]
    pub(crate) fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Appends one row to the partition `hour`.
    #[inline]
    pub(crate) fn append(&mut self, hour: i64, now_ms: u64, row: Row<'_>) -> Result<(), StorageError> {
        let idx = match self.open.iter().position(|f| f.hour == hour) {
            Some(i) => i,
            None => self.open_file(hour, now_ms)?,
        };
        self.writes += 1;
        let file = &mut self.open[idx];
        file.encoder.push(&row)?;
        file.rows += 1;
        file.touched = self.writes;
        file.newest_ms = file.newest_ms.max(row.event_ms());
        if file.upload.sent + file.encoder.held() as u64 >= self.config.roll_bytes {
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
        let partition = Partition { table: self.table, hour };
        let (c, o) = (&self.config, self.owner);
        let path =
            file_path(partition, &c.pipeline_id, o.partition, o.claim, self.cp, self.next_file, c.format);
        self.next_file += 1;
        let staged = upload_staging(&c.pipeline_id, &path);
        self.open.push(OpenFile {
            hour,
            encoder: Encoder::new(c.format, self.table, c.part_bytes, c.row_group_rows, c.timestamps)?,
            upload: FileUpload::new(path, staged),
            rows: 0,
            opened_ms: now_ms,
            touched: self.writes,
            newest_ms: i64::MIN,
        });
        Ok(self.open.len() - 1)
    }

    /// Hands the file's encoded bytes to its upload as one part.
    fn send_part(&mut self, idx: usize) -> Result<(), StorageError> {
        let file = &mut self.open[idx];
        let data = std::mem::replace(file.encoder.output(), Vec::with_capacity(self.config.part_bytes));
        file.upload.send_part(&self.storage, data)
    }

    /// Starts finishing file `idx` in the background; the checkpoint collects it.
    fn close(&mut self, idx: usize) {
        let file = self.open.swap_remove(idx);
        self.rolled_newest_ms = self.rolled_newest_ms.max(file.newest_ms);
        let storage = self.storage.clone();
        let table = self.table;
        let task = async move {
            let OpenFile { hour, encoder, upload, rows, .. } = file;
            let rest = encoder.finish()?;
            let (upload, parts, bytes) = upload.finish(&storage, rest).await?;
            Ok(ClosedFile { table, hour, upload, parts, rows, bytes })
        };
        self.closing.push(self.storage.runtime().spawn(task));
    }

    /// Rolls files open longer than the roll age.
    pub(crate) fn roll_aged(&mut self, now_ms: u64) {
        let age = self.config.roll_age_ms;
        self.close_where(|f| now_ms.saturating_sub(f.opened_ms) >= age);
    }

    /// Closes the files of partitions for which `complete(hour)` holds.
    pub(crate) fn close_complete(&mut self, complete: impl Fn(i64) -> bool) {
        self.close_where(|f| complete(f.hour));
    }

    /// Starts closing every open file.
    pub(crate) fn close_all(&mut self) {
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
    pub(crate) fn open_hours(&self) -> impl Iterator<Item = i64> + '_ {
        self.open.iter().map(|f| f.hour)
    }

    /// True when a file rolled since the last checkpoint: the next one must commit it (and
    /// learn whether its upload finished).
    pub(crate) fn has_rolled(&self) -> bool {
        !self.closing.is_empty()
    }

    /// First half of the task's checkpoint `cp`: ends row groups and stripes and starts writing every
    /// open file's tail (all writers start before any waits, so tails upload in parallel).
    pub(crate) fn start_checkpoint(&mut self, cp: u64) -> Result<(), StorageError> {
        let prefix = tails_prefix(&self.config.pipeline_id, self.owner.partition, self.owner.claim, cp);
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
            let parts = file.upload.settle(&storage)?;
            let mut tail = file.encoder.output().clone();
            tail.extend_from_slice(&footer);
            let bytes = file.upload.sent + tail.len() as u64;
            let tail_path = Path::from(format!("{prefix}/{}", file.upload.path));
            let state = OpenFileState {
                table: self.table,
                hour: file.hour,
                path: file.upload.path.clone(),
                upload: file.upload.upload.clone(),
                parts,
                sent: file.upload.sent,
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

    /// Second half: waits for closing files and tails. Returns the rolled files the commit
    /// completes and the open files it records. New files are named after `next_cp`.
    pub(crate) fn finish_checkpoint(
        &mut self,
        next_cp: u64,
    ) -> Result<(Vec<ClosedFile>, Vec<OpenFileState>), StorageError> {
        let closing = std::mem::take(&mut self.closing);
        let tails = std::mem::take(&mut self.tails);
        let out = self.storage.block_on(async move {
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
        self.cp = next_cp;
        self.next_file = 0;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pageviews_core::commit::WindowCount;

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
            timestamps: Default::default(),
        };
        (
            rt,
            TableWriter::new(Table::PageViewAggregates, storage, config, Owner { partition: 0, claim: 1 }, 1),
        )
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
        rt.block_on(w.storage().complete_upload(&closed[0].upload, &closed[0].parts, closed[0].bytes))
            .unwrap();
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
}

/// The writer and the commit log together: what recovery makes of an open file.
#[cfg(test)]
mod recovery_tests {
    use super::*;
    use pageviews_core::commit::{
        Facts, Log, PartitionTime, Position, SourceIdentity, TaskState, Totals, WindowCount, LOG_VERSION,
    };

    fn row(i: u64) -> WindowCount {
        WindowCount { end: 60_000, postcode: format!("P{i:03}"), views: i }
    }

    /// Every file under `dir` (empty folders are not files).
    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        entries
            .flatten()
            .flat_map(|e| if e.path().is_dir() { walk(&e.path()) } else { vec![e.path()] })
            .collect()
    }

    fn task(open: Vec<OpenFileState>) -> TaskState {
        TaskState {
            partition: 0,
            claim: 1,
            cp: 1,
            position: Position::Generator { next_seq: 40, shift_ms: 0 },
            time: PartitionTime::default(),
            counting: None,
            forwarded_to: Default::default(),
            files: Vec::new(),
            open,
            totals: Totals::default(),
        }
    }

    /// Every format: a file open at a checkpoint, written on past it (parts included) and
    /// then abandoned by a crash, is sealed by recovery with exactly the checkpoint's rows.
    #[test]
    fn recovery_seals_an_open_file_as_of_its_checkpoint() {
        for format in Format::ALL {
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
                timestamps: Default::default(),
            };
            let facts = Facts {
                version: LOG_VERSION,
                pipeline: "t".into(),
                id: "i".into(),
                source: SourceIdentity::Generator { seed: 1, start_ms: 0 },
                counting_partitions: 1,
                window_ms: 60_000,
                created_at: String::new(),
            };
            let (mut log, _) = Log::open(&storage, "t", "a", "run-1", &facts).unwrap();
            assert_eq!(log.claim(&[0]).unwrap(), vec![(0, 1)]);
            let owner = Owner { partition: 0, claim: 1 };
            let mut w = TableWriter::new(Table::PageViewAggregates, storage.clone(), config, owner, 1);
            let mut committed = Vec::new();
            for i in 0..40 {
                w.append(0, 0, Row::Aggregate(&row(i), 60_000)).unwrap();
                Row::Aggregate(&row(i), 60_000).write_jsonl(&mut committed);
            }
            w.start_checkpoint(1).unwrap();
            let (closed, open) = w.finish_checkpoint(2).unwrap();
            assert!(closed.is_empty() && open.len() == 1);
            log.commit(vec![task(open.clone())], |_, _| Vec::new()).unwrap();
            // The run goes on past the checkpoint, uploading more parts, then dies.
            for i in 40..200 {
                w.append(0, 0, Row::Aggregate(&row(i), 60_000)).unwrap();
            }
            w.start_checkpoint(2).unwrap();
            drop(w);

            // Another run takes the partition over.
            let (mut log, _) = Log::open(&storage, "t", "a", "run-2", &facts).unwrap();
            assert_eq!(log.claim(&[0]).unwrap(), vec![(0, 2)]);
            let resumed = log.recover_task(0).unwrap().unwrap();
            assert_eq!(resumed.position, Position::Generator { next_seq: 40, shift_ms: 0 });
            assert_eq!(resumed.files.len(), 1, "the sealed file is reported for the next commit");
            let bytes = std::fs::read(dir.path().join(&open[0].path)).unwrap();
            assert_eq!(bytes.len() as u64, open[0].bytes, "{format:?}: the size the checkpoint recorded");
            let text = match format {
                Format::Jsonl => bytes,
                Format::Parquet => {
                    super::super::parquet::to_jsonl(Table::PageViewAggregates, bytes.into()).unwrap().0
                }
                Format::Orc => super::super::orc::to_jsonl(Table::PageViewAggregates, &bytes).unwrap().0,
            };
            assert_eq!(
                String::from_utf8(text).unwrap(),
                String::from_utf8(committed).unwrap(),
                "{format:?}: the rows of checkpoint 1, no more"
            );
            let staged: Vec<_> = walk(&dir.path().join("_staging/t"));
            assert!(staged.is_empty(), "{format:?}: staging is cleaned up, but holds {staged:?}");
            // Recovering again changes nothing.
            log.recover_task(0).unwrap();
            assert_eq!(std::fs::read(dir.path().join(&open[0].path)).unwrap().len() as u64, open[0].bytes);
        }
    }
}
