//! A task: everything the pipeline holds for one source partition, so that the partition can
//! move between instances with its state.
//!
//! A task writes its partition's page_views and dead_letters, tracks its event time, and —
//! if its number is below the pipeline's counting partitions — hosts the counting partition
//! with the same number: the windows of every postcode routed there, from its own records and
//! from records other tasks forward, with the late rows and aggregates they produce.
//! Everything a task writes goes to files named after its partition and claim.

use std::collections::{BTreeMap, BTreeSet};

use pageviews_core::commit::{
    ClosedFile, Counting, OpenFileState, PartitionTime, Position, TaskState, Totals,
};
use pageviews_core::storage::{Storage, StorageError};
use pageviews_core::table::{Partition, Table};
use pageviews_core::time::hour_of;

use super::WindowRules;
use crate::event::PageView;
use crate::sink::writer::Owner;
use crate::sink::{Row, TableWriter, WriterConfig};
use crate::window::{TumblingCount, Watermarks, WindowCount, WindowSpec, NO_WATERMARK};

/// What every task of an instance is made with.
pub(super) struct TaskSetup {
    pub(crate) storage: Storage,
    pub(crate) writer_config: WriterConfig,
    pub(crate) rules: WindowRules,
    pub(crate) counting_partitions: u32,
    /// Source partitions known now (the topic's partitions, the input files): each holds
    /// every counting partition's watermark back until it says how far it has come.
    pub(crate) source_partitions: u32,
}

/// The four writers of a task.
pub(super) struct Writers {
    pub(crate) page_views: TableWriter,
    pub(crate) aggregates: TableWriter,
    pub(crate) late: TableWriter,
    pub(crate) dead_letters: TableWriter,
}

impl Writers {
    fn new(storage: &Storage, config: &WriterConfig, owner: Owner, cp: u64) -> Self {
        let writer = |t| TableWriter::new(t, storage.clone(), config.clone(), owner, cp);
        Writers {
            page_views: writer(Table::PageViews),
            aggregates: writer(Table::PageViewAggregates),
            late: writer(Table::LatePageViews),
            dead_letters: writer(Table::DeadLetters),
        }
    }

    pub(crate) fn all(&mut self) -> [&mut TableWriter; 4] {
        [&mut self.page_views, &mut self.aggregates, &mut self.late, &mut self.dead_letters]
    }

    pub(crate) fn iter(&self) -> [&TableWriter; 4] {
        [&self.page_views, &self.aggregates, &self.late, &self.dead_letters]
    }
}

/// A counting partition: the windows of the postcodes routed to it.
pub(super) struct Counter {
    /// The counting watermark: the minimum over every source partition of the pipeline
    /// (this task's own among them), finished and idle ones excluded.
    pub(crate) watermarks: Watermarks,
    pub(crate) windows: TumblingCount,
    /// Per forwarding source, the highest record ordinal counted: a record that arrives
    /// again after a restart is dropped.
    pub(crate) high_water: BTreeMap<u32, u64>,
    pub(crate) exchange_offset: Option<i64>,
    fired: Vec<WindowCount>,
}

/// One source partition's running state.
pub(super) struct Task {
    pub(crate) partition: u32,
    pub(crate) claim: u64,
    /// Checkpoints committed: names the next files and tails.
    pub(crate) cp: u64,
    /// The source partition's own event time (what it tells counting partitions).
    pub(crate) time: PartitionTime,
    /// When its last event came, or it was assigned: idle once silent this long while
    /// caught up.
    pub(crate) last_seen_ms: u64,
    /// What it last told the counting partitions it does not host (through the exchange);
    /// `None` until it first did in this run.
    pub(crate) announced: Option<PartitionTime>,
    spec: WindowSpec,
    delay_ms: i64,
    pub(crate) writers: Writers,
    pub(crate) counter: Option<Counter>,
    pub(crate) forwarded_to: BTreeSet<u32>,
    /// Committed totals, and counts since the last checkpoint.
    pub(crate) totals: Totals,
    pub(crate) pending: Totals,
    /// Files recovery sealed, which the next commit records.
    pub(crate) sealed: Vec<ClosedFile>,
    /// The tails the newest committed state of this task names: a newer commit makes them
    /// garbage (recovery only ever seals from the newest state).
    pub(crate) committed_tails: Vec<String>,
    /// Anything to commit since the last checkpoint.
    pub(crate) dirty: bool,
}

impl Task {
    /// A task for `partition` under `claim`, restored from `state` (its newest committed
    /// state, after recovery) or new. Hosts counting partition `partition` when it is below
    /// the pipeline's counting partitions.
    pub(crate) fn new(
        partition: u32,
        claim: u64,
        state: Option<TaskState>,
        setup: &TaskSetup,
        now_ms: u64,
    ) -> Task {
        let (counting_partitions, rules) = (setup.counting_partitions, setup.rules);
        let (storage, config) = (&setup.storage, &setup.writer_config);
        let owner = Owner { partition, claim };
        let (cp, mut time, totals, sealed, counting, forwarded_to) = match state {
            Some(s) => (s.cp, s.time, s.totals, s.files, s.counting, s.forwarded_to),
            None => (0, PartitionTime::default(), Totals::default(), Vec::new(), None, BTreeSet::new()),
        };
        // Whether it has anything to read is judged again by this holder.
        time.idle = false;
        let counter = (partition < counting_partitions).then(|| {
            let c = counting.unwrap_or_else(|| Counting {
                emitted_through: NO_WATERMARK,
                watermark: NO_WATERMARK,
                ..Counting::default()
            });
            let mut inputs: BTreeMap<u32, PartitionTime> =
                c.inputs.iter().map(|(p, i)| (*p, i.time.clone())).collect();
            inputs.insert(partition, time.clone());
            let mut watermarks = Watermarks::new(rules.watermark_delay_ms, c.watermark, inputs);
            // Every source partition feeds every counting partition: one not heard from yet
            // holds the watermark back until it says how far it has come.
            for p in 0..setup.source_partitions {
                watermarks.add_source(p);
            }
            let mut windows = TumblingCount::new(rules.window_ms, rules.allowed_lateness_ms);
            windows.restore(&c.open_windows, c.emitted_through);
            let high_water = c.inputs.iter().filter_map(|(p, i)| Some((*p, i.high_water?))).collect();
            Counter { watermarks, windows, high_water, exchange_offset: c.exchange_offset, fired: Vec::new() }
        });
        let dirty = !sealed.is_empty();
        let mut writers = Writers::new(storage, config, owner, cp + 1);
        if let Some(ms) = time.max_event_ms {
            writers.page_views.rolled_up_to(ms);
        }
        Task {
            partition,
            claim,
            cp,
            time,
            last_seen_ms: now_ms,
            announced: None,
            spec: rules.spec(),
            delay_ms: rules.watermark_delay_ms,
            writers,
            counter,
            forwarded_to,
            totals,
            pending: Totals::default(),
            sealed,
            committed_tails: Vec::new(),
            dirty,
        }
    }

    /// The watermark of this task's own partition: its newest event time minus the delay.
    #[inline]
    pub(crate) fn own_watermark(&self) -> i64 {
        self.time.own_watermark(self.delay_ms)
    }

    /// True when `event_ms` is behind this partition's own watermark: the event is late,
    /// whatever any counting partition has emitted. A function of the partition's records
    /// before it, so the same records are late wherever and whenever they are read.
    #[inline]
    pub(crate) fn is_behind(&self, event_ms: i64) -> bool {
        self.spec.behind_own_partition(&self.time, self.delay_ms, event_ms)
    }

    /// Writes a late row for an event behind this partition's own watermark (see
    /// [`Task::is_behind`]); it is counted nowhere.
    #[inline]
    pub(crate) fn write_late(&mut self, pv: &PageView<'_>, now_ms: u64) -> Result<(), StorageError> {
        self.dirty = true;
        self.pending.late_page_views += 1;
        let wm = self.own_watermark();
        self.writers.late.append(hour_of(pv.timestamp), now_ms, Row::Late(pv, wm))
    }

    /// Notes one valid record of this task's own partition, after it was counted (or
    /// written late): its event time moves, and an idle partition wakes.
    #[inline]
    pub(crate) fn observe(&mut self, event_ms: i64, now_ms: u64) {
        self.last_seen_ms = now_ms;
        self.time.idle = false;
        if self.time.max_event_ms.is_none_or(|m| m < event_ms) {
            self.time.max_event_ms = Some(event_ms);
        }
    }

    /// Counts one valid event routed to this task's counting partition, from source partition
    /// `source` at `ordinal`; writes a late row instead when its window was emitted (which an
    /// event on time in its own partition finds only after an idle source woke, or after the
    /// end of a bounded input). Fires the windows the event's progress closes. An event
    /// counted before (a replay) is dropped.
    #[inline]
    pub(crate) fn count(
        &mut self,
        source: u32,
        ordinal: u64,
        pv: &PageView<'_>,
        now_ms: u64,
    ) -> Result<(), StorageError> {
        let Some(c) = self.counter.as_mut() else { return Ok(()) };
        if source != self.partition {
            match c.high_water.get_mut(&source) {
                Some(hw) if ordinal <= *hw => return Ok(()),
                Some(hw) => *hw = ordinal,
                None => {
                    c.high_water.insert(source, ordinal);
                }
            }
        }
        self.dirty = true;
        let wm = c.watermarks.current();
        if c.windows.is_late(pv.timestamp, wm) {
            self.pending.late_page_views += 1;
            self.writers.late.append(hour_of(pv.timestamp), now_ms, Row::Late(pv, wm))?;
        } else {
            c.windows.add(pv.timestamp, &pv.postcode);
        }
        if c.watermarks.observe(source, pv.timestamp) {
            let new = c.watermarks.advance();
            if new != wm && c.windows.next_end().is_some_and(|end| c.windows.fires(end, new)) {
                self.fire(new, now_ms)?;
            }
        }
        Ok(())
    }

    /// Re-evaluates the counting watermark and fires what it passed.
    pub(crate) fn advance(&mut self, now_ms: u64) -> Result<i64, StorageError> {
        let Some(c) = self.counter.as_mut() else { return Ok(NO_WATERMARK) };
        let wm = c.watermarks.advance();
        if c.windows.next_end().is_some_and(|end| c.windows.fires(end, wm)) {
            self.fire(wm, now_ms)?;
        }
        Ok(wm)
    }

    /// Takes what source partition `source` declares of its event time (its newest event,
    /// first event, finished, idle), through the exchange, the relay or in memory.
    pub(crate) fn declare(
        &mut self,
        source: u32,
        time: &PartitionTime,
        now_ms: u64,
    ) -> Result<(), StorageError> {
        let Some(c) = self.counter.as_mut() else { return Ok(()) };
        if c.watermarks.declare(source, time) {
            self.advance(now_ms)?;
        }
        Ok(())
    }

    /// Notes whether this task's own partition is idle: caught up with its end and silent
    /// past the idle timeout. Returns true when that changed.
    pub(crate) fn set_idle(&mut self, idle: bool) -> bool {
        if self.time.idle == idle {
            return false;
        }
        self.time.idle = idle;
        self.declare_own();
        true
    }

    /// Notes the event time of this partition's first event, known before it is read (a
    /// file's first page view): until it is read, the partition holds watermarks just
    /// before it. Ignored once an event was read.
    pub(crate) fn set_first_event(&mut self, event_ms: i64) {
        if self.time.max_event_ms.is_none() {
            self.time.first_event_ms = Some(event_ms);
            self.declare_own();
        }
    }

    /// Marks this task's own partition finished (its input is exhausted).
    pub(crate) fn finish(&mut self) {
        self.time.finished = true;
        self.declare_own();
    }

    /// Tells the counting partition this task hosts what its own partition now declares.
    fn declare_own(&mut self) {
        let (partition, time) = (self.partition, self.time.clone());
        if let Some(c) = self.counter.as_mut() {
            c.watermarks.declare(partition, &time);
        }
    }

    /// Notes how far this counting partition has read the exchange.
    pub(crate) fn set_exchange_offset(&mut self, next: i64) {
        if let Some(c) = self.counter.as_mut() {
            c.exchange_offset = Some(next);
        }
    }

    /// End of bounded input: emits every open window, as Flink does. The watermark stays
    /// real, so a later run on more input goes on from it.
    pub(crate) fn flush(&mut self, now_ms: u64) -> Result<(), StorageError> {
        let Some(c) = self.counter.as_mut() else { return Ok(()) };
        c.fired.clear();
        c.windows.flush(&mut c.fired);
        self.write_fired(now_ms)
    }

    fn fire(&mut self, wm: i64, now_ms: u64) -> Result<(), StorageError> {
        let Some(c) = self.counter.as_mut() else { return Ok(()) };
        c.fired.clear();
        c.windows.fire(wm, &mut c.fired);
        self.write_fired(now_ms)
    }

    fn write_fired(&mut self, now_ms: u64) -> Result<(), StorageError> {
        let Some(c) = self.counter.as_mut() else { return Ok(()) };
        let size = c.windows.size_ms();
        for w in &c.fired {
            self.writers.aggregates.append(hour_of(w.end), now_ms, Row::Aggregate(w, size))?;
        }
        if !c.fired.is_empty() {
            self.pending.page_view_aggregates += c.fired.len() as u64;
            self.dirty = true;
        }
        Ok(())
    }

    /// Hour partitions this task has files open in, over all tables.
    pub(crate) fn open_partitions(&self) -> impl Iterator<Item = Partition> + '_ {
        self.writers
            .iter()
            .into_iter()
            .flat_map(|w| w.open_hours().map(move |hour| Partition { table: w.table(), hour }))
    }

    /// The counting state as committed.
    fn counting_state(&self) -> Option<Counting> {
        let c = self.counter.as_ref()?;
        let inputs = c
            .watermarks
            .inputs()
            .iter()
            .filter(|(p, _)| **p != self.partition)
            .map(|(p, time)| {
                let high_water = c.high_water.get(p).copied();
                (*p, pageviews_core::commit::InputProgress { high_water, time: time.clone() })
            })
            .collect();
        Some(Counting {
            open_windows: c.windows.snapshot(),
            emitted_through: c.windows.emitted_through(),
            watermark: c.watermarks.current(),
            inputs,
            exchange_offset: c.exchange_offset,
        })
    }

    /// This task's state as its next checkpoint commits it: `position` from the source,
    /// `files` and `open` from its writers' checkpoint.
    pub(crate) fn state(
        &self,
        position: Position,
        files: Vec<ClosedFile>,
        open: Vec<OpenFileState>,
    ) -> TaskState {
        let mut totals = self.totals.clone();
        totals.add(&self.pending);
        TaskState {
            partition: self.partition,
            claim: self.claim,
            cp: self.cp + 1,
            position,
            time: self.time.clone(),
            counting: self.counting_state(),
            forwarded_to: self.forwarded_to.clone(),
            files,
            open,
            totals,
        }
    }

    /// The checkpoint committed: pending counts become committed ones.
    /// The task's state was committed; returns the tails the previous commit named that this
    /// one does not, for the caller to delete.
    pub(crate) fn committed(&mut self, state: &TaskState) -> Vec<String> {
        let tails: Vec<String> = state.open.iter().filter_map(|f| f.tail.clone()).collect();
        let mut stale = std::mem::replace(&mut self.committed_tails, tails);
        stale.retain(|t| !self.committed_tails.contains(t));
        self.totals.add(&self.pending);
        self.pending = Totals::default();
        self.cp += 1;
        self.sealed.clear();
        self.dirty = false;
        stale
    }
}
