//! The record loop: poll the source, decode, route each record to its tables, count
//! windows, and checkpoint on schedule.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pageviews_core::commit::{Checkpoints, Totals};
use pageviews_core::storage::Storage;
use pageviews_core::table::{Partition, Table};
use pageviews_core::time::{format_timestamp, hour_of};
use tracing::info;

use super::{PipelineConfig, PipelineError, Shutdown, SourceConfig, Summary};
use crate::clock::Clock;
use crate::event::{decode, oversized_prefix, DecodeError, EventTimeBounds, Reason};
use crate::http::Status;
use crate::metrics::{Metrics, ReasonLabel};
use crate::sink::jsonl::Origin;
use crate::sink::{Row, TableWriter, WriterConfig};
use crate::source::{Batch, FileSource, GeneratorSource, KafkaSource, PartitionEvent, Poll, Source};
use crate::window::{TumblingCount, Watermarks, WindowCount, NO_WATERMARK};

pub(super) struct Writers {
    pub(super) page_views: TableWriter,
    pub(super) aggregates: TableWriter,
    pub(super) late: TableWriter,
    pub(super) dead_letters: TableWriter,
}

impl Writers {
    pub(super) fn all(&mut self) -> [&mut TableWriter; 4] {
        [&mut self.page_views, &mut self.aggregates, &mut self.late, &mut self.dead_letters]
    }
}

pub(super) struct Pipeline {
    pub(super) source: Box<dyn Source>,
    pub(super) writers: Writers,
    pub(super) watermarks: Watermarks,
    pub(super) windows: TumblingCount,
    pub(super) checkpoints: Checkpoints,
    pub(super) metrics: Arc<Metrics>,
    pub(super) status: Arc<Mutex<Status>>,
    pub(super) pipeline_id: String,
    /// The checkpoint the current files belong to.
    pub(super) seq: u64,
    pub(super) committed: Totals,
    /// Counts since the last checkpoint.
    pub(super) pending: Totals,
    pub(super) dirty: bool,
    pub(super) max_record_bytes: usize,
    /// Refuses event times too far ahead of the clock or whose window cannot be written.
    pub(super) event_time: EventTimeBounds,
    pub(super) batch_size: usize,
    pub(super) checkpoint_interval: Duration,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) fired: Vec<WindowCount>,
    /// Partitions with rows whose `_SUCCESS` marker is not yet written.
    pub(super) unmarked: BTreeSet<Partition>,
    pub(super) allowed_lateness_ms: i64,
    pub(super) partition_commit_delay_ms: i64,
    /// A bounded source was read to its end: every partition is complete.
    pub(super) reached_end: bool,
}

impl Pipeline {
    /// Partitions with a file open, over all tables.
    pub(super) fn writers_open(&self) -> impl Iterator<Item = Partition> + '_ {
        let w = &self.writers;
        [&w.page_views, &w.aggregates, &w.late, &w.dead_letters]
            .into_iter()
            .flat_map(|w| w.open_hours().map(move |hour| Partition { table: w.table(), hour }))
    }

    pub(super) fn start(
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
            SourceConfig::Generator(g) => {
                Box::new(GeneratorSource::resume(g, resumed.as_ref(), config.allowed_lateness_ms)?)
            }
            SourceConfig::Files(paths) => {
                Box::new(FileSource::new(paths, config.max_record_bytes, resume_source)?)
            }
            SourceConfig::Kafka(k) => Box::new(
                KafkaSource::new(k.clone(), &config.pipeline_id, resume_source, metrics.clone())?
                    .with_max_record_bytes(config.max_record_bytes),
            ),
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
            event_time: EventTimeBounds::new(config.max_future_ms, config.window_ms),
            batch_size: config.batch_size,
            checkpoint_interval: config.checkpoint_interval,
            clock: config.clock.clone(),
            fired: Vec::new(),
            unmarked,
            allowed_lateness_ms: config.allowed_lateness_ms,
            partition_commit_delay_ms: config.partition_commit_delay_ms,
            reached_end: false,
        })
    }

    pub(super) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub(super) fn run_loop(&mut self, shutdown: &Shutdown) -> Result<Summary, PipelineError> {
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
                    self.clock.sleep(wait.min(until_cp).min(Duration::from_millis(50)));
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
        let received_at = self.clock.wall_ms();
        let mut wm = self.watermarks.current();
        let (mut accepted, mut late) = (0u64, 0u64);
        let mut dead = [0u64; Reason::ALL.len()];
        for (i, rec) in batch.records().iter().enumerate() {
            while let Some((_, event)) = events.next_if(|(at, _)| *at <= i) {
                self.apply(*event, now);
            }
            let payload = batch.payload(rec);
            let decoded = if rec.len > self.max_record_bytes as u64 {
                Err(DecodeError::Oversized { size: rec.len as usize, limit: self.max_record_bytes })
            } else {
                decode(payload, self.max_record_bytes).and_then(|pv| self.event_time.check(pv, received_at))
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
        for reason in Reason::ALL {
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
}
