//! The pipeline: one loop from source to committed tables.
//!
//! ```text
//! source ──> decode ──> event time ──┬──> page_views writer ──────────────┐
//!                                    ├──> window count ──> aggregates writer
//!                                    ├──> late_page_views writer          ├──> checkpoint
//!                                    └── (decode errors) dead_letters ────┘
//! ```
//!
//! The loop is synchronous and batch-at-a-time; storage I/O runs on a small tokio runtime
//! beside it. Every checkpoint interval, at the end of bounded input and on shutdown, the
//! writers close their files and one manifest commits files, positions, watermarks and open
//! windows together (see [`crate::checkpoint`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use thiserror::Error;
use tracing::{debug, info, warn};

use crate::checkpoint::{CheckpointError, Checkpoints, Manifest, Totals, MANIFEST_VERSION};
use crate::event::timestamp::format_timestamp;
use crate::event::{decode, DecodeError};
use crate::http::{HttpState, Status};
use crate::metrics::{Metrics, ReasonLabel, TableLabel};
use std::collections::BTreeSet;

use crate::event::timestamp::HOUR_MS;
use crate::sink::jsonl::Origin;
use crate::sink::partition::hour_of;
use crate::sink::store::MIN_PART_BYTES;
use crate::sink::{Format, Partition, Row, Storage, StorageError, Table, TableWriter, WriterConfig};
use crate::source::{
    Batch, FileSource, GeneratorConfig, GeneratorSource, KafkaConfig, KafkaSource, PartitionEvent, Poll,
    Source, SourceError,
};
use crate::window::{TumblingCount, Watermarks, WindowCount, NO_WATERMARK};

/// Where records come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceConfig {
    /// The built-in generator.
    Generator(GeneratorConfig),
    /// JSON-lines files (`-` is stdin), read in order.
    Files(Vec<String>),
    /// A Kafka topic, as a consumer group member.
    Kafka(KafkaConfig),
}

/// Everything `run` needs, validated.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// The source.
    pub source: SourceConfig,
    /// Table root: a path, `file://` or `s3://` URL.
    pub output: String,
    /// File format.
    pub format: Format,
    /// Names this pipeline's checkpoints, staging and files.
    pub pipeline_id: String,
    /// How often both tables commit.
    pub checkpoint_interval: Duration,
    /// Out-of-orderness bound.
    pub watermark_delay_ms: i64,
    /// Tumbling window size.
    pub window_ms: i64,
    /// How long after a window's end it still accepts events.
    pub allowed_lateness_ms: i64,
    /// A partition silent this long stops holding the watermark back.
    pub idle_timeout_ms: u64,
    /// File cutting.
    pub roll_bytes: u64,
    /// File cutting by age.
    pub roll_age: Duration,
    /// Multipart upload part size.
    pub part_bytes: usize,
    /// Most files open at once per table.
    pub max_open_files: usize,
    /// Parquet rows per row group.
    pub row_group_rows: usize,
    /// How long after a partition's end (in event time; dead letters: processing time)
    /// its files close and its `_SUCCESS` marker is written.
    pub partition_commit_delay_ms: i64,
    /// Larger records are dead letters.
    pub max_record_bytes: usize,
    /// Where to serve `/metrics`; `None` serves nothing.
    pub http: Option<SocketAddr>,
    /// Records per poll.
    pub batch_size: usize,
}

impl PipelineConfig {
    /// Defaults of DESIGN §6 for a source and an output.
    pub fn new(source: SourceConfig, output: impl Into<String>) -> Self {
        PipelineConfig {
            source,
            output: output.into(),
            format: Format::Jsonl,
            pipeline_id: "pageviews".into(),
            checkpoint_interval: Duration::from_secs(10),
            watermark_delay_ms: 5_000,
            window_ms: 60_000,
            allowed_lateness_ms: 0,
            idle_timeout_ms: 1_000,
            roll_bytes: 128 << 20,
            roll_age: Duration::from_secs(300),
            part_bytes: 8 << 20,
            max_open_files: 16,
            row_group_rows: 1 << 17,
            partition_commit_delay_ms: 0,
            max_record_bytes: 1 << 20,
            http: None,
            batch_size: 8192,
        }
    }
}

/// Asks a running pipeline to checkpoint and stop. Cheap to clone; safe from signal tasks.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    /// Requests shutdown.
    pub fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// True once shutdown was requested.
    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Committed totals over the pipeline's life (including earlier runs).
    pub totals: Totals,
    /// Sequence number of the last committed checkpoint (0 if none).
    pub last_checkpoint: u64,
    /// True when a bounded source was read to its end.
    pub reached_end: bool,
}

/// Why the pipeline stopped with an error. Nothing is committed partially: the last
/// checkpoint stays the truth.
#[derive(Debug, Error)]
pub enum PipelineError {
    /// Reading the source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Writing a table failed.
    #[error("writing the tables failed: {0}")]
    Storage(#[from] StorageError),
    /// Committing or recovering a checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The HTTP address cannot be bound.
    #[error("cannot serve HTTP on {addr}: {source}; pick another address with --http, or --http off")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
    /// The checkpoint was made with settings this run cannot continue from.
    #[error("{0}")]
    Incompatible(String),
    /// The I/O runtime could not start.
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(std::io::Error),
}

/// Longest prefix of an oversized record kept in its dead letter.
pub const OVERSIZED_KEEP: usize = 64 * 1024;

/// The part of an oversized record its dead letter keeps: the first `min(limit, 64 KiB)`
/// bytes, cut before a partial UTF-8 character so a text payload stays text.
fn oversized_prefix(payload: &[u8], limit: usize) -> &[u8] {
    let cut = &payload[..payload.len().min(limit).min(OVERSIZED_KEEP)];
    match std::str::from_utf8(cut) {
        Err(e) if e.error_len().is_none() => &cut[..e.valid_up_to()],
        _ => cut,
    }
}

fn wall_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Runs the pipeline until the source ends or `shutdown` fires, committing as it goes.
pub fn run(config: PipelineConfig, shutdown: Shutdown) -> Result<Summary, PipelineError> {
    run_with_metrics(config, shutdown, Arc::new(Metrics::new()))
}

/// [`run`] with a caller-supplied metrics handle (tests read it afterwards).
pub fn run_with_metrics(
    config: PipelineConfig,
    shutdown: Shutdown,
    metrics: Arc<Metrics>,
) -> Result<Summary, PipelineError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("pageviews-io")
        .enable_all()
        .build()
        .map_err(PipelineError::Runtime)?;
    let storage = Storage::open(&config.output, rt.handle().clone())?;
    if storage.is_object_store() && config.part_bytes < MIN_PART_BYTES {
        return Err(PipelineError::Incompatible(format!(
            "object stores need upload parts of at least {} MiB; raise --part-size",
            MIN_PART_BYTES >> 20
        )));
    }
    let status = Arc::new(Mutex::new(Status {
        pipeline: config.pipeline_id.clone(),
        output: config.output.clone(),
        state: "starting".into(),
        ..Status::default()
    }));
    if let Some(addr) = config.http {
        let state = HttpState { metrics: metrics.clone(), status: status.clone() };
        let bound = rt
            .block_on(crate::http::serve(addr, state))
            .map_err(|source| PipelineError::Http { addr, source })?;
        info!(%bound, "serving /metrics, /healthz and /api/status");
    }
    let mut pipeline = Pipeline::start(&config, storage, metrics.clone(), status.clone())?;
    let result = pipeline.run_loop(&shutdown);
    if let Ok(mut st) = status.lock() {
        match &result {
            Ok(_) => st.state = "stopped".into(),
            Err(e) => {
                st.state = "failed".into();
                st.error = Some(e.to_string());
            }
        }
    }
    // Let in-flight uploads of a failed run finish or fail; nothing uncommitted is visible.
    rt.shutdown_timeout(Duration::from_secs(5));
    result
}

struct Writers {
    page_views: TableWriter,
    aggregates: TableWriter,
    late: TableWriter,
    dead_letters: TableWriter,
}

impl Writers {
    fn all(&mut self) -> [&mut TableWriter; 4] {
        [&mut self.page_views, &mut self.aggregates, &mut self.late, &mut self.dead_letters]
    }
}

struct Pipeline {
    source: Box<dyn Source>,
    writers: Writers,
    watermarks: Watermarks,
    windows: TumblingCount,
    checkpoints: Checkpoints,
    metrics: Arc<Metrics>,
    status: Arc<Mutex<Status>>,
    pipeline_id: String,
    /// The checkpoint the current files belong to.
    seq: u64,
    committed: Totals,
    /// Counts since the last checkpoint.
    pending: Totals,
    dirty: bool,
    max_record_bytes: usize,
    batch_size: usize,
    checkpoint_interval: Duration,
    started: Instant,
    fired: Vec<WindowCount>,
    /// Partitions with rows whose `_SUCCESS` marker is not yet written.
    unmarked: BTreeSet<Partition>,
    allowed_lateness_ms: i64,
    partition_commit_delay_ms: i64,
    /// A bounded source was read to its end: every partition is complete.
    reached_end: bool,
}

impl Pipeline {
    /// Partitions with a file open, over all tables.
    fn writers_open(&self) -> impl Iterator<Item = Partition> + '_ {
        let w = &self.writers;
        [&w.page_views, &w.aggregates, &w.late, &w.dead_letters]
            .into_iter()
            .flat_map(|w| w.open_hours().map(move |hour| Partition { table: w.table(), hour }))
    }

    fn start(
        config: &PipelineConfig,
        storage: Storage,
        metrics: Arc<Metrics>,
        status: Arc<Mutex<Status>>,
    ) -> Result<Self, PipelineError> {
        let checkpoints = Checkpoints::new(storage.clone(), &config.pipeline_id);
        let resumed = checkpoints.recover()?;
        if let Some(m) = &resumed {
            if m.window_ms != config.window_ms {
                return Err(PipelineError::Incompatible(format!(
                    "checkpoint {} counted {} ms windows but --window is {} ms; keep the window size, or use another --output or --pipeline-id",
                    m.seq, m.window_ms, config.window_ms
                )));
            }
            info!(checkpoint = m.seq, watermark = %format_timestamp(m.watermark), open_windows = m.open_windows.len(), "resuming from checkpoint");
        }
        let resume_source = resumed.as_ref().map(|m| &m.source);
        let source: Box<dyn Source> = match &config.source {
            SourceConfig::Generator(g) => Box::new(GeneratorSource::new(g.clone(), resume_source)?),
            SourceConfig::Files(paths) => {
                Box::new(FileSource::new(paths, config.max_record_bytes, resume_source)?)
            }
            SourceConfig::Kafka(k) => {
                Box::new(KafkaSource::new(k.clone(), &config.pipeline_id, resume_source, metrics.clone())?)
            }
        };
        let watermarks = Watermarks::new(
            config.watermark_delay_ms,
            config.idle_timeout_ms,
            resumed.as_ref().map(|m| (m.watermark, m.partitions.clone())),
        );
        let mut windows = TumblingCount::new(config.window_ms, config.allowed_lateness_ms);
        if let Some(m) = &resumed {
            windows.restore(&m.open_windows, m.emitted_through);
        }
        let seq = resumed.as_ref().map_or(1, |m| m.seq + 1);
        let unmarked = resumed.as_ref().map(|m| m.unmarked.iter().copied().collect()).unwrap_or_default();
        let committed = resumed.map(|m| m.totals).unwrap_or_default();
        let wc = WriterConfig {
            pipeline_id: config.pipeline_id.clone(),
            format: config.format,
            roll_bytes: config.roll_bytes,
            roll_age_ms: config.roll_age.as_millis() as u64,
            part_bytes: config.part_bytes,
            max_open_files: config.max_open_files,
            row_group_rows: config.row_group_rows,
        };
        let writer = |t| TableWriter::new(t, storage.clone(), wc.clone(), seq);
        let writers = Writers {
            page_views: writer(Table::PageViews),
            aggregates: writer(Table::PageViewAggregates),
            late: writer(Table::LatePageViews),
            dead_letters: writer(Table::DeadLetters),
        };
        if let Ok(mut st) = status.lock() {
            st.state = "running".into();
            st.totals = committed.clone();
            st.last_checkpoint = seq.checked_sub(1).filter(|s| *s > 0);
        }
        Ok(Pipeline {
            source,
            writers,
            watermarks,
            windows,
            checkpoints,
            metrics,
            status,
            pipeline_id: config.pipeline_id.clone(),
            seq,
            committed,
            pending: Totals::default(),
            dirty: false,
            max_record_bytes: config.max_record_bytes,
            batch_size: config.batch_size,
            checkpoint_interval: config.checkpoint_interval,
            started: Instant::now(),
            fired: Vec::new(),
            unmarked,
            allowed_lateness_ms: config.allowed_lateness_ms,
            partition_commit_delay_ms: config.partition_commit_delay_ms,
            reached_end: false,
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn run_loop(&mut self, shutdown: &Shutdown) -> Result<Summary, PipelineError> {
        let mut batch = Batch::default();
        let mut next_checkpoint = self.now_ms() + self.checkpoint_interval.as_millis() as u64;
        let mut next_roll_check = 0;
        let reached_end = loop {
            if shutdown.is_triggered() {
                info!("shutdown requested: taking a final checkpoint");
                break false;
            }
            batch.clear();
            let now = self.now_ms();
            match self.source.poll(&mut batch, self.batch_size, now)? {
                Poll::Ready => self.process(&batch, now)?,
                Poll::Pending(wait) => {
                    self.advance_watermark(now)?;
                    let until_cp = Duration::from_millis(next_checkpoint.saturating_sub(now));
                    std::thread::sleep(wait.min(until_cp).min(Duration::from_millis(50)));
                }
                Poll::End => {
                    self.flush_windows(self.now_ms())?;
                    self.reached_end = true;
                    break true;
                }
            }
            if self.source.needs_checkpoint() {
                self.checkpoint(true, false)?;
            }
            let now = self.now_ms();
            if now >= next_roll_check {
                for w in self.writers.all() {
                    w.roll_aged(now);
                }
                next_roll_check = now + 1_000;
            }
            if now >= next_checkpoint {
                self.checkpoint(false, false)?;
                next_checkpoint = self.now_ms() + self.checkpoint_interval.as_millis() as u64;
            }
        };
        // Stopping: every file closes, so all that is committed is visible.
        self.checkpoint(true, true)?;
        info!(
            checkpoint = self.seq - 1,
            records_read = self.committed.records_read,
            page_views = self.committed.page_views,
            late = self.committed.late_page_views,
            aggregates = self.committed.page_view_aggregates,
            dead_letters = self.committed.dead_letters,
            "stopped with everything read committed"
        );
        Ok(Summary { totals: self.committed.clone(), last_checkpoint: self.seq - 1, reached_end })
    }

    /// Decode, route and count one batch. The per-record path allocates nothing unless a
    /// string needed unescaping or a new postcode opens a window slot.
    fn process(&mut self, batch: &Batch, now: u64) -> Result<(), PipelineError> {
        self.dirty = true;
        let mut events = batch.events().iter().peekable();
        let received_at = wall_ms();
        let mut wm = self.watermarks.current();
        let (mut accepted, mut late) = (0u64, 0u64);
        let mut dead = [0u64; 7];
        for (i, rec) in batch.records().iter().enumerate() {
            while let Some((_, event)) = events.next_if(|(at, _)| *at <= i) {
                self.apply(*event, now);
            }
            let payload = batch.payload(rec);
            let decoded = if rec.len > self.max_record_bytes as u64 {
                Err(DecodeError::Oversized { size: rec.len as usize, limit: self.max_record_bytes })
            } else {
                decode(payload, self.max_record_bytes)
            };
            match decoded {
                Ok(pv) => {
                    accepted += 1;
                    let hour = hour_of(pv.timestamp);
                    self.writers.page_views.append(hour, now, Row::View(&pv))?;
                    if self.windows.is_late(pv.timestamp, wm) {
                        late += 1;
                        self.writers.late.append(hour, now, Row::Late(&pv, wm))?;
                    } else {
                        self.windows.add(pv.timestamp, &pv.postcode);
                    }
                    if self.watermarks.observe(rec.partition, pv.timestamp, now) {
                        let new = self.watermarks.advance(now);
                        if new != wm {
                            wm = new;
                            if self.windows.next_end().is_some_and(|end| self.windows.fires(end, wm)) {
                                self.fire_windows(wm, now)?;
                            }
                        }
                    }
                }
                Err(err) => {
                    dead[err.reason() as usize] += 1;
                    let payload = match err {
                        DecodeError::Oversized { limit, .. } => oversized_prefix(payload, limit),
                        _ => payload,
                    };
                    let origin = Origin {
                        source: self.source.partition_name(rec.partition),
                        partition: rec.partition,
                        offset: rec.position,
                    };
                    let row = Row::DeadLetter { payload, error: &err, origin, received_at };
                    self.writers.dead_letters.append(hour_of(received_at), now, row)?;
                }
            }
        }
        for (_, event) in events {
            self.apply(*event, now);
        }
        let read = batch.len() as u64;
        self.pending.records_read += read;
        self.pending.page_views += accepted;
        self.pending.late_page_views += late;
        let m = &self.metrics;
        m.records_read.inc_by(read);
        m.records_accepted.inc_by(accepted);
        m.late_events.inc_by(late);
        for reason in crate::event::Reason::ALL {
            let n = dead[reason as usize];
            if n > 0 {
                self.pending.dead_letters += n;
                m.dead_letters.get_or_create(&ReasonLabel { reason: reason.as_str() }).inc_by(n);
            }
        }
        self.advance_watermark(now)
    }

    fn apply(&mut self, event: PartitionEvent, now: u64) {
        match event {
            PartitionEvent::Assigned(p) => self.watermarks.assign(p, now),
            PartitionEvent::Finished(p) => self.watermarks.finish(p),
            PartitionEvent::Revoked(p) => self.watermarks.revoke(p),
        }
    }

    /// Re-evaluates the watermark (idleness moves it without records) and fires windows.
    fn advance_watermark(&mut self, now: u64) -> Result<(), PipelineError> {
        let wm = self.watermarks.advance(now);
        if wm != NO_WATERMARK {
            self.metrics.watermark.set(wm as f64 / 1000.0);
        }
        if self.windows.next_end().is_some_and(|end| self.windows.fires(end, wm)) {
            self.fire_windows(wm, now)?;
        }
        Ok(())
    }

    /// End of bounded input: every open window is emitted, as Flink does. The watermark
    /// itself stays real, so a later run on more input goes on from it.
    fn flush_windows(&mut self, now: u64) -> Result<(), PipelineError> {
        self.fired.clear();
        self.windows.flush(&mut self.fired);
        self.write_fired(now)
    }

    fn fire_windows(&mut self, wm: i64, now: u64) -> Result<(), PipelineError> {
        self.fired.clear();
        self.windows.fire(wm, &mut self.fired);
        self.write_fired(now)
    }

    fn write_fired(&mut self, now: u64) -> Result<(), PipelineError> {
        let size = self.windows.size_ms();
        for w in &self.fired {
            self.writers.aggregates.append(hour_of(w.end), now, Row::Aggregate(w, size))?;
        }
        self.pending.page_view_aggregates += self.fired.len() as u64;
        if !self.fired.is_empty() {
            self.dirty = true;
        }
        Ok(())
    }

    /// True once partition `p` can no longer get on-time rows: the watermark (dead
    /// letters: the wall clock) has passed its end plus the commit delay.
    fn partition_complete(&self, p: Partition, wm: i64, wall: i64) -> bool {
        if self.reached_end {
            return true;
        }
        let end = (p.hour + 1).saturating_mul(HOUR_MS).saturating_add(self.partition_commit_delay_ms);
        match p.table {
            Table::DeadLetters => wall >= end,
            _ => wm != NO_WATERMARK && wm >= end.saturating_add(self.allowed_lateness_ms),
        }
    }

    /// Commits everything processed so far: files, positions, watermarks, open windows.
    /// Skipped when nothing changed and no partition completed, unless `force` (the
    /// source is waiting on it). `last` closes every file (the pipeline is stopping).
    fn checkpoint(&mut self, force: bool, last: bool) -> Result<(), PipelineError> {
        let (wm, wall) = (self.watermarks.current(), wall_ms());
        let completed = |this: &Self| {
            this.unmarked.iter().any(|p| this.partition_complete(*p, wm, wall))
                || this.writers_open().any(|p| this.partition_complete(p, wm, wall))
        };
        if !self.dirty && !force && !completed(self) {
            return Ok(());
        }
        let began = Instant::now();
        let next = self.seq + 1;
        let done: Vec<Partition> =
            self.writers_open().filter(|p| self.partition_complete(*p, wm, wall)).collect();
        for w in self.writers.all() {
            let table = w.table();
            w.close_complete(|hour| done.contains(&Partition { table, hour }));
            if last {
                w.close_all();
            }
        }
        for w in self.writers.all() {
            w.start_checkpoint(self.seq)?;
        }
        let (mut files, mut open) = (Vec::new(), Vec::new());
        for w in self.writers.all() {
            let (closed, still_open) = w.finish_checkpoint(next)?;
            files.extend(closed);
            open.extend(still_open);
        }
        self.unmarked.extend(files.iter().map(|f| Partition { table: f.table, hour: f.hour }));
        self.unmarked.extend(open.iter().map(|f| Partition { table: f.table, hour: f.hour }));
        let still_open: BTreeSet<Partition> =
            open.iter().map(|f| Partition { table: f.table, hour: f.hour }).collect();
        let markers: Vec<Partition> = self
            .unmarked
            .iter()
            .copied()
            .filter(|p| !still_open.contains(p) && self.partition_complete(*p, wm, wall))
            .collect();
        for p in &markers {
            self.unmarked.remove(p);
        }
        let mut totals = self.committed.clone();
        totals.records_read += self.pending.records_read;
        totals.page_views += self.pending.page_views;
        totals.late_page_views += self.pending.late_page_views;
        totals.page_view_aggregates += self.pending.page_view_aggregates;
        totals.dead_letters += self.pending.dead_letters;
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            pipeline: self.pipeline_id.clone(),
            seq: self.seq,
            created_at: format_timestamp(wall_ms()),
            source: self.source.checkpoint(),
            watermark: self.watermarks.current(),
            partitions: self.watermarks.partitions().clone(),
            window_ms: self.windows.size_ms(),
            open_windows: self.windows.snapshot(),
            emitted_through: self.windows.emitted_through(),
            files,
            open,
            unmarked: self.unmarked.iter().copied().collect(),
            markers,
            totals,
        };
        self.checkpoints.commit(&manifest)?;
        self.source.committed(&manifest.source);
        let elapsed = began.elapsed();
        let m = &self.metrics;
        // Rows count when their checkpoint commits; files and bytes when they roll.
        let p = &self.pending;
        for (table, rows) in [
            (Table::PageViews, p.page_views),
            (Table::PageViewAggregates, p.page_view_aggregates),
            (Table::LatePageViews, p.late_page_views),
            (Table::DeadLetters, p.dead_letters),
        ] {
            m.rows_committed.get_or_create(&TableLabel { table: table.name() }).inc_by(rows);
            let open = manifest.open.iter().filter(|f| f.table == table).count();
            m.open_files.get_or_create(&TableLabel { table: table.name() }).set(open as i64);
        }
        for f in &manifest.files {
            let label = TableLabel { table: f.table.name() };
            m.files_committed.get_or_create(&label).inc();
            m.bytes_committed.get_or_create(&label).inc_by(f.bytes);
        }
        m.checkpoints.inc();
        m.checkpoint_duration.observe(elapsed.as_secs_f64());
        m.last_checkpoint.set(wall_ms() as f64 / 1000.0);
        m.open_windows.set(manifest.open_windows.len() as i64);
        if elapsed > self.checkpoint_interval {
            warn!(?elapsed, "checkpoint took longer than the checkpoint interval");
        }
        debug!(
            seq = self.seq,
            files = manifest.files.len(),
            open = manifest.open.len(),
            markers = manifest.markers.len(),
            ?elapsed,
            "checkpoint committed"
        );
        if let Ok(mut st) = self.status.lock() {
            st.last_checkpoint = Some(self.seq);
            st.totals = manifest.totals.clone();
            st.watermark = (manifest.watermark != NO_WATERMARK).then(|| format_timestamp(manifest.watermark));
        }
        self.committed = manifest.totals;
        self.pending = Totals::default();
        self.seq = next;
        self.dirty = false;
        Ok(())
    }
}
