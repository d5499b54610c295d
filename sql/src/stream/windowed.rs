//! Tumbling windows over the topic, closed by event time exactly as the pipeline closes the
//! windows of page_view_aggregates.
//!
//! The rules are the pipeline's own (`pageviews_core::window`), applied in the pipeline's
//! order to each record (`pipeline/worker.rs::process`, `Task::count`):
//! 1. an event behind its own partition's watermark (`WindowSpec::behind_own_partition`)
//!    is late, wherever it would be counted;
//! 2. otherwise it is late if its window was already emitted (`TumblingWindows::is_late`:
//!    only after an idle partition woke), and is counted in its window if not;
//! 3. its partition's event time moves the watermark, the minimum over every partition of
//!    the topic (`Watermarks`: one not read yet holds it at the start of time, finished and
//!    idle ones are left out), and the windows it passes fire, once each, oldest first.
//!
//! Idleness is the pipeline's too: a partition read to its end (librdkafka's end event, no
//! record since) and silent for the idle timeout stops holding the watermark back. A query
//! with a filter still lets every valid event move event time (Flink's watermarks come from
//! the source, before any filter): which windows close, and when, is the topic's, not the
//! query's. What the query counts is what passes its filter.

use std::collections::BTreeMap;

use datafusion::arrow::array::{AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::{Int64Type, TimestampMillisecondType};
use datafusion::error::{DataFusionError, Result};
use pageviews_core::window::{PartitionTime, TumblingWindows, Watermarks, WindowSpec, NO_WATERMARK};

use super::groups::{partition_rows, Aggregation, Groups};
use super::stages::Stages;

/// A source partition as the windows see it.
#[derive(Debug, Default)]
struct Partition {
    /// Its own event time: what its own watermark is computed from.
    time: PartitionTime,
    /// What the counting watermark last heard of it.
    declared: PartitionTime,
    /// When it last delivered a record (or the query started), on the query's clock.
    last_seen_ms: u64,
    /// Read to its end with no record since.
    caught_up: bool,
}

/// The rows of one closed window, after the query's stages above the aggregate.
pub(crate) struct Closed {
    pub rows: RecordBatch,
}

/// The windows of a query and the event time that closes them.
pub(crate) struct Windowed {
    spec: WindowSpec,
    delay_ms: i64,
    idle_timeout_ms: u64,
    partitions: BTreeMap<i32, Partition>,
    watermarks: Watermarks,
    windows: TumblingWindows<Groups>,
    /// Memory the open windows hold, estimated.
    bytes: i64,
    /// Late events the query would have counted (they passed its filter).
    pub late: u64,
}

impl Windowed {
    /// Windows of `spec` over `partitions`, with the pipeline's watermark delay and idle
    /// timeout; `now_ms` is the query's clock at its start.
    pub(crate) fn new(
        spec: WindowSpec,
        delay_ms: i64,
        idle_timeout_ms: u64,
        partitions: &[i32],
        now_ms: u64,
    ) -> Self {
        let mut watermarks = Watermarks::new(delay_ms, NO_WATERMARK, BTreeMap::new());
        let mut known = BTreeMap::new();
        for &p in partitions {
            // Every partition holds the watermark back until it says how far it has come.
            watermarks.add_source(partition_number(p));
            known.insert(p, Partition { last_seen_ms: now_ms, ..Partition::default() });
        }
        Windowed {
            spec,
            delay_ms,
            idle_timeout_ms,
            partitions: known,
            watermarks,
            windows: TumblingWindows::new(spec),
            bytes: 0,
            late: 0,
        }
    }

    /// The watermark: windows ending at or before it have closed.
    pub(crate) fn watermark(&self) -> i64 {
        self.watermarks.current()
    }

    /// Open windows and what they hold, estimated.
    pub(crate) fn held(&self) -> (usize, i64) {
        (self.windows.open_count(), self.bytes)
    }

    /// Takes one poll of the topic: `batch` holds its valid events in the table's schema,
    /// `scan` makes the aggregate's input from it (the scan's projection and the stages
    /// below the aggregate). Returns the windows that closed, oldest first.
    pub(crate) fn on_batch(
        &mut self,
        batch: &RecordBatch,
        scan: &dyn Fn(RecordBatch) -> Result<(RecordBatch, UInt32Array)>,
        agg: &Aggregation,
        above: &Stages,
        now_ms: u64,
    ) -> Result<Vec<Closed>> {
        let timestamps = column::<TimestampMillisecondType>(batch, "timestamp")?;
        let partitions = column::<Int64Type>(batch, "partition")?;
        let mut closed = Vec::new();
        let (mut on_time, mut late) = (Vec::new(), Vec::new());
        for row in 0..batch.num_rows() {
            let (p, ts) = (i32::try_from(partitions.value(row)).unwrap_or(i32::MAX), timestamps.value(row));
            let own = self
                .partitions
                .entry(p)
                .or_insert_with(|| Partition { last_seen_ms: now_ms, ..Default::default() });
            own.last_seen_ms = now_ms;
            own.caught_up = false;
            if self.spec.behind_own_partition(&own.time, self.delay_ms, ts) {
                late.push(row as u32);
                observe(&mut own.time, ts);
                continue;
            }
            let wm = self.watermarks.current();
            if self.windows.is_late(ts, wm) {
                late.push(row as u32);
            } else {
                on_time.push(row as u32);
            }
            if self.watermarks.observe(partition_number(p), ts) {
                let new = self.watermarks.advance();
                // A window may close: what was read before this event is counted first.
                if self.spec.fired_through(new) != self.spec.fired_through(wm) {
                    self.count(batch, &std::mem::take(&mut on_time), scan, agg)?;
                    self.fire(new, agg, above, &mut closed)?;
                }
            }
            if let Some(own) = self.partitions.get_mut(&p) {
                observe(&mut own.time, ts);
            }
        }
        self.count(batch, &on_time, scan, agg)?;
        if !late.is_empty() {
            let (rows, _) = scan(take_record_batch(batch, &UInt32Array::from(late))?)?;
            self.late += rows.num_rows() as u64;
        }
        self.declare(now_ms, agg, above, &mut closed)?;
        Ok(closed)
    }

    /// Time passes without records: `ended` partitions were read to their end. Idle
    /// partitions stop holding the watermark back; returns the windows that closed.
    pub(crate) fn on_tick(
        &mut self,
        ended: &[i32],
        now_ms: u64,
        agg: &Aggregation,
        above: &Stages,
    ) -> Result<Vec<Closed>> {
        for p in ended {
            if let Some(own) = self.partitions.get_mut(p) {
                own.caught_up = true;
            }
        }
        let mut closed = Vec::new();
        self.declare(now_ms, agg, above, &mut closed)?;
        Ok(closed)
    }

    /// Tells the watermark what each partition now declares (its newest event time, and
    /// whether it is idle: caught up and silent for the idle timeout), and fires what that
    /// passes.
    fn declare(
        &mut self,
        now_ms: u64,
        agg: &Aggregation,
        above: &Stages,
        closed: &mut Vec<Closed>,
    ) -> Result<()> {
        let mut moved = false;
        for (p, own) in &mut self.partitions {
            own.time.idle = own.caught_up && now_ms.saturating_sub(own.last_seen_ms) >= self.idle_timeout_ms;
            if own.time != own.declared {
                moved |= self.watermarks.declare(partition_number(*p), &own.time);
                own.declared = own.time.clone();
            }
        }
        if moved {
            let wm = self.watermarks.advance();
            self.fire(wm, agg, above, closed)?;
        }
        Ok(())
    }

    /// Counts rows `rows` of `batch`, all on time, into their windows.
    fn count(
        &mut self,
        batch: &RecordBatch,
        rows: &[u32],
        scan: &dyn Fn(RecordBatch) -> Result<(RecordBatch, UInt32Array)>,
        agg: &Aggregation,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let picked = UInt32Array::from(rows.to_vec());
        let timestamps = column::<TimestampMillisecondType>(batch, "timestamp")?;
        let (input, kept) = scan(take_record_batch(batch, &picked)?)?;
        let ev = agg.evaluate(&input)?;
        let end_of = |row: usize| {
            let source = picked.value(kept.value(row) as usize) as usize;
            Some(self.spec.window_end(timestamps.value(source)))
        };
        for ((end, key), rows) in partition_rows(&ev, input.num_rows(), end_of) {
            let end = end.unwrap_or(NO_WATERMARK);
            let groups = self.windows.window_mut(end);
            let group = match groups.get_mut(&key) {
                Some(g) => g,
                None => groups.entry(key.clone()).or_insert(agg.new_group()?),
            };
            self.bytes += agg.update(group, key.len(), &ev, &rows)?;
        }
        Ok(())
    }

    /// Emits the windows that fire at `watermark`, each with its groups in key order.
    fn fire(
        &mut self,
        watermark: i64,
        agg: &Aggregation,
        above: &Stages,
        closed: &mut Vec<Closed>,
    ) -> Result<()> {
        let size = self.spec.size_ms();
        let mut fired = Vec::new();
        self.windows.fire(watermark, |end, groups| fired.push((end, groups)));
        for (end, groups) in fired {
            let mut groups: Vec<(Box<[u8]>, super::groups::Group)> = groups.into_iter().collect();
            groups.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            self.bytes -= groups.iter().map(|(_, g)| g.bytes() as i64).sum::<i64>();
            let rows = agg.rows(Some(end - size), groups.iter_mut().map(|(k, g)| (&k[..], g)))?;
            let (rows, _) = above.run(rows)?;
            closed.push(Closed { rows });
        }
        Ok(())
    }
}

/// What the watermark calls partition `p` (Kafka's partitions are never negative).
fn partition_number(p: i32) -> u32 {
    u32::try_from(p).unwrap_or(u32::MAX)
}

/// An event of a partition: its newest event time moves, and it is no longer idle (the
/// pipeline's `Task::observe`).
fn observe(time: &mut PartitionTime, event_ms: i64) {
    time.idle = false;
    if time.max_event_ms.is_none_or(|m| m < event_ms) {
        time.max_event_ms = Some(event_ms);
    }
}

/// Column `name` of `batch` as arrays of `T`.
fn column<'a, T: datafusion::arrow::datatypes::ArrowPrimitiveType>(
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a datafusion::arrow::array::PrimitiveArray<T>> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<T>())
        .ok_or_else(|| DataFusionError::Internal(format!("a topic batch without its {name} column")))
}
