//! The record loop: poll the source, decode, hand each record to the task of its partition,
//! count it where its postcode is counted, and checkpoint on schedule.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pageviews_core::commit::Log;
use pageviews_core::time::hour_of;
use tracing::{info, warn};

use super::relay::Relay;
use super::restore::LogRestorer;
use super::task::{Task, TaskSetup};
use super::{PipelineError, Shutdown, Summary};
use crate::clock::Clock;
use crate::event::{decode, oversized_prefix, DecodeError, EventTimeBounds, Reason};
use crate::http::Status;
use crate::metrics::{Metrics, ReasonLabel};
use crate::sink::jsonl::Origin;
use crate::sink::Row;
use crate::source::exchange::{Exchange, Item};
use crate::source::{Batch, PartitionEvent, PartitionTime, Poll, Restored, Source};

/// Which counting partition counts a postcode's windows: a hash of the postcode modulo the
/// pipeline's counting partitions. The same function in every instance and every run.
#[inline]
pub(super) fn counting_partition(postcode: &str, counting_partitions: u32) -> u32 {
    if counting_partitions <= 1 {
        return 0;
    }
    crate::route::partition_of(postcode.as_bytes(), counting_partitions)
}

/// One instance's pipeline: its source, the tasks of the partitions it holds, and its
/// handle on the commit log.
pub(super) struct Pipeline {
    pub source: Box<dyn Source>,
    pub tasks: BTreeMap<u32, Task>,
    pub log: Arc<Mutex<Log>>,
    pub setup: TaskSetup,
    pub metrics: Arc<Metrics>,
    pub status: Arc<Mutex<Status>>,
    pub clock: Arc<dyn Clock>,
    /// Where events go that another partition counts (Kafka sources); without it they are
    /// counted in memory, by a task of this worker, or relayed to another (files).
    pub exchange: Option<Exchange>,
    /// Files read by several workers: events counted in another worker go there in memory.
    pub relay: Option<Relay>,
    pub max_record_bytes: usize,
    /// Refuses event times too far ahead of the clock or whose window cannot be written.
    pub event_time: EventTimeBounds,
    pub batch_size: usize,
    pub checkpoint_interval: Duration,
    pub partition_commit_delay_ms: i64,
    /// A bounded source was read to its end: every partition is complete.
    pub reached_end: bool,
    /// Checkpoints this instance committed in this run.
    pub checkpoints: u64,
    /// The instance's stop request: the loop checks it between batches, and the waits of a
    /// last checkpoint give up a few seconds after it.
    pub stop: Shutdown,
    /// Partitions come and go with a consumer group (Kafka); otherwise a fenced one was taken
    /// by another run for good (`replaced.rs`).
    pub rebalances: bool,
}

impl Pipeline {
    pub(super) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Creates the tasks of partitions the source announced, from what was restored.
    pub(super) fn add_tasks(&mut self, restored: Vec<(u32, Restored)>) -> Result<(), PipelineError> {
        let now = self.now_ms();
        for (partition, r) in restored {
            let task = Task::new(partition, r.claim, r.state, &self.setup, now);
            self.tasks.insert(partition, task);
        }
        self.sync_exchange()
    }

    pub(super) fn run_loop(&mut self) -> Result<Summary, PipelineError> {
        self.report_running();
        // Counting partitions elsewhere learn of every source here before its first event.
        self.announce(self.now_ms(), false)?;
        let mut batch = Batch::default();
        let mut next_checkpoint = self.now_ms() + self.checkpoint_interval.as_millis() as u64;
        let mut next_roll_check = 0;
        // Bounded input: this instance's sources reached their end (and said so to the
        // counting partitions they forward to); since when it waits for other instances'.
        let (mut ended, mut waiting_since) = (false, None::<u64>);
        let reached_end = loop {
            if self.stop.is_triggered() {
                info!("shutdown requested: taking a final checkpoint");
                break false;
            }
            batch.clear();
            let now = self.now_ms();
            // Between batches: a checkpoint commits the source's position, which must not
            // be past a batch polled and not yet processed.
            if self.poll_relay(now)? {
                self.checkpoint(true, &[])?;
            }
            let polled = self.source.poll(&mut batch, self.batch_size, now)?;
            self.poll_exchange(now)?;
            match polled {
                Poll::Ready => {
                    ended = false;
                    self.process(&batch, now)?
                }
                Poll::Pending(wait) => {
                    ended = false;
                    self.advance_watermarks(now)?;
                    let until_cp = Duration::from_millis(next_checkpoint.saturating_sub(now));
                    self.clock.sleep(wait.min(until_cp).min(Duration::from_millis(50)));
                }
                Poll::End => {
                    // Every partition this instance reads is at its end: nothing of its own
                    // can hold a window open. The source keeps being polled while counting
                    // partitions wait for other instances' sources, so a rebalance that hands
                    // this instance more partitions is served (and read) rather than stalled.
                    let now = self.now_ms();
                    if !ended {
                        for task in self.tasks.values_mut() {
                            task.finish();
                        }
                        self.announce(now, false)?;
                        self.settle_exchange(None)?;
                        ended = true;
                    }
                    if self.exchange_drained()? {
                        for task in self.tasks.values_mut() {
                            task.flush(now)?;
                        }
                        self.reached_end = true;
                        break true;
                    }
                    if waiting_since.is_none_or(|t| now.saturating_sub(t) >= 30_000) {
                        info!("read to the end: waiting for the sources that forward to this instance to finish");
                        waiting_since = Some(now);
                    }
                    self.advance_watermarks(now)?;
                    let until_cp = Duration::from_millis(next_checkpoint.saturating_sub(now));
                    let wait = until_cp.min(Duration::from_millis(50));
                    match self.relay.as_mut() {
                        // Other workers still relay: take their batches as they come.
                        Some(relay) if relay.is_counter() => relay.wait(wait),
                        _ => self.clock.sleep(wait),
                    }
                }
            }
            let revoking = self.source.revoking();
            if !revoking.is_empty() {
                self.checkpoint(true, &revoking)?;
            }
            let now = self.now_ms();
            if now >= next_roll_check {
                self.add_new_sources();
                for task in self.tasks.values_mut() {
                    for w in task.writers.all() {
                        w.roll_aged(now);
                    }
                }
                self.report_freshness();
                next_roll_check = now + 1_000;
            }
            if now >= next_checkpoint {
                self.checkpoint(false, &[])?;
                next_checkpoint = self.now_ms() + self.checkpoint_interval.as_millis() as u64;
            }
        };
        // Stopping: every file closes, so all that is committed is visible.
        self.stop_relaying()?;
        let all: Vec<u32> = self.tasks.keys().copied().collect();
        self.checkpoint(true, &all)?;
        self.log.lock().map_err(|_| super::checkpoint::poisoned())?.release_lease()?;
        let (version, totals) =
            self.log.lock().map(|l| (l.view().version, l.view().totals())).unwrap_or_default();
        info!(
            version,
            records_read = totals.records_read,
            page_views = totals.page_views,
            late = totals.late_page_views,
            aggregates = totals.page_view_aggregates,
            dead_letters = totals.dead_letters,
            "stopped with everything read committed"
        );
        Ok(Summary { totals, last_checkpoint: version, reached_end })
    }

    /// Decode, route and count one batch. The per-record path allocates nothing unless a
    /// string needed unescaping or a new postcode opens a window slot.
    fn process(&mut self, batch: &Batch, now: u64) -> Result<(), PipelineError> {
        let mut events = batch.events().iter().peekable();
        let received_at = self.clock.wall_ms();
        let (mut accepted, late_before) = (0u64, self.late_pending());
        let mut dead = [0u64; Reason::ALL.len()];
        for (i, rec) in batch.records().iter().enumerate() {
            while let Some((_, event)) = events.next_if(|(at, _)| *at <= i) {
                self.apply(*event, now)?;
            }
            let Some(task) = self.tasks.get_mut(&rec.partition) else {
                // A record of a partition this instance does not hold (fenced meanwhile).
                continue;
            };
            task.dirty = true;
            task.pending.records_read += 1;
            let payload = batch.payload(rec);
            let decoded = if rec.len > self.max_record_bytes as u64 {
                Err(DecodeError::Oversized { size: rec.len as usize, limit: self.max_record_bytes })
            } else {
                decode(payload, self.max_record_bytes).and_then(|pv| self.event_time.check(pv, received_at))
            };
            match decoded {
                Ok(pv) => {
                    accepted += 1;
                    task.pending.page_views += 1;
                    task.writers.page_views.append(hour_of(pv.timestamp), now, Row::View(&pv))?;
                    // Late by its own partition's watermark: the same wherever it is counted,
                    // so it is decided here and travels nowhere.
                    if task.is_behind(pv.timestamp) {
                        task.write_late(&pv, now)?;
                        task.observe(pv.timestamp, now);
                        continue;
                    }
                    let q = counting_partition(&pv.postcode, self.setup.counting_partitions);
                    if q == rec.partition {
                        // Counted before the partition's event time moves past it.
                        task.count(rec.partition, rec.position, &pv, now)?;
                        task.observe(pv.timestamp, now);
                        continue;
                    }
                    task.observe(pv.timestamp, now);
                    task.forwarded_to.insert(q);
                    if let Some(exchange) = self.exchange.as_mut() {
                        // Through Kafka, even when this instance counts q too: one way per pair
                        // of partitions keeps their events in order.
                        exchange.forward(q, rec.partition, rec.position, pv.postcode.as_bytes(), payload)?;
                    } else if let Some(counter) = self.tasks.get_mut(&q) {
                        counter.count(rec.partition, rec.position, &pv, now)?;
                    } else if let Some(relay) = self.relay.as_mut() {
                        relay.relay(rec.partition, rec.position, &pv);
                    } else {
                        return Err(missing_counter(rec.partition, q));
                    }
                }
                Err(err) => {
                    dead[err.reason() as usize] += 1;
                    task.pending.dead_letters += 1;
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
                    task.writers.dead_letters.append(hour_of(received_at), now, row)?;
                }
            }
        }
        for (_, event) in events {
            self.apply(*event, now)?;
        }
        self.judge_idle(now);
        self.announce(now, false)?;
        self.advance_counters(now)?;
        self.count_late_since(late_before);
        let read = batch.len() as u64;
        let m = &self.metrics;
        m.records_read.inc_by(read);
        m.records_accepted.inc_by(accepted);
        for reason in Reason::ALL {
            let n = dead[reason as usize];
            if n > 0 {
                m.dead_letters.get_or_create(&ReasonLabel { reason: reason.as_str() }).inc_by(n);
            }
        }
        self.roll_passed_hours();
        // One status update per batch: its records and the watermarks they moved.
        self.report_batch(batch);
        Ok(())
    }

    fn late_pending(&self) -> u64 {
        self.tasks.values().map(|t| t.pending.late_page_views).sum()
    }

    /// Adds the late rows written since `late_pending` was `before` to the metric: wherever
    /// they were counted (own records, the exchange, the relay).
    fn count_late_since(&self, before: u64) {
        self.metrics.late_events.inc_by(self.late_pending() - before);
    }

    fn apply(&mut self, event: PartitionEvent, now: u64) -> Result<(), PipelineError> {
        match event {
            PartitionEvent::Assigned(p) => {
                if let Some(restored) = self.source.take_restored(p) {
                    self.add_tasks(vec![(p, restored)])?;
                } else if let Some(task) = self.tasks.get_mut(&p) {
                    task.last_seen_ms = now;
                }
            }
            PartitionEvent::Finished(p) => {
                if let Some(task) = self.tasks.get_mut(&p) {
                    task.finish();
                }
                self.announce(now, false)?;
            }
            PartitionEvent::Revoked(p) => {
                self.tasks.remove(&p);
                self.sync_exchange()?;
            }
        }
        Ok(())
    }

    /// Counts what the exchange brought for the counting partitions this instance hosts.
    pub(super) fn poll_exchange(&mut self, now: u64) -> Result<(), PipelineError> {
        let Some(exchange) = self.exchange.as_mut() else { return Ok(()) };
        let mut items = Vec::new();
        exchange.poll(&mut items, self.batch_size)?;
        let late_before = self.late_pending();
        for item in items {
            match item {
                Item::Record { counting, offset, source, ordinal, payload } => {
                    let Some(task) = self.tasks.get_mut(&counting) else { continue };
                    // Decoded where it was read already: a forwarded event is a page view.
                    if let Ok(pv) = decode(&payload, usize::MAX) {
                        task.count(source, ordinal, &pv, now)?;
                    }
                    task.set_exchange_offset(offset + 1);
                }
                Item::Progress { counting, offset, source, time } => {
                    let Some(task) = self.tasks.get_mut(&counting) else { continue };
                    task.declare(source, &time, now)?;
                    task.set_exchange_offset(offset + 1);
                }
            }
        }
        self.count_late_since(late_before);
        Ok(())
    }

    /// End of bounded input with an exchange: whether every counting partition this
    /// instance hosts has read the exchange to its end and heard every source that forwards
    /// to it say it is done. Without an exchange there is nothing to wait for.
    fn exchange_drained(&self) -> Result<bool, PipelineError> {
        if let Some(relay) = self.relay.as_ref() {
            return Ok(relay.all_stopped());
        }
        let Some(exchange) = self.exchange.as_ref() else { return Ok(true) };
        for task in self.tasks.values() {
            let Some(c) = task.counter.as_ref() else { continue };
            let end = exchange.end_offset(task.partition)?;
            let read = c.exchange_offset.unwrap_or(0);
            let inputs_done = c.watermarks.inputs().iter().all(|(p, t)| *p == task.partition || t.finished);
            if read < end || !inputs_done {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Points the exchange consumer at the counting partitions this instance hosts now.
    pub(super) fn sync_exchange(&mut self) -> Result<(), PipelineError> {
        let Some(exchange) = self.exchange.as_mut() else { return Ok(()) };
        let hosted =
            self.tasks.values().filter_map(|t| Some((t.partition, t.counter.as_ref()?.exchange_offset)));
        exchange.assign(hosted.collect())?;
        Ok(())
    }

    /// Before a checkpoint: every source tells every counting partition how far it has come,
    /// and everything forwarded is made durable, so no committed position is ahead of what
    /// the exchange holds. Returns whether it is, waiting at most `wait` (`None`: however
    /// long it takes, for the last checkpoint of a run).
    pub(super) fn settle_exchange(&mut self, wait: Option<Duration>) -> Result<bool, PipelineError> {
        let Some(exchange) = self.exchange.as_mut() else { return Ok(true) };
        if exchange.markers_lost() {
            for task in self.tasks.values_mut() {
                task.announced = None;
            }
        }
        self.announce(self.now_ms(), true)?;
        let Some(exchange) = self.exchange.as_mut() else { return Ok(true) };
        Ok(match wait {
            Some(wait) => exchange.flushed(wait)?,
            None => {
                exchange.flush(&self.stop)?;
                true
            }
        })
    }

    /// Tells every counting partition this worker does not count in its own task how far
    /// each source partition here has come: its newest event time, first event, whether it
    /// finished or is idle. A counting partition's watermark waits for every source.
    ///
    /// In memory and through the relay this goes with every batch. Through the exchange a
    /// declaration goes to every counting partition, so it is sent when it can change what
    /// fires (a new window passed, finished, idle, first event), and, at a checkpoint
    /// (`settle`), whenever anything changed.
    fn announce(&mut self, now: u64, settle: bool) -> Result<(), PipelineError> {
        let (counting, spec) = (self.setup.counting_partitions, self.setup.rules.spec());
        let delay = self.setup.rules.watermark_delay_ms;
        let through_exchange = self.exchange.is_some();
        let due: Vec<(u32, PartitionTime)> = self
            .tasks
            .values()
            .filter(|t| match &t.announced {
                None => true,
                Some(said) if said == &t.time => false,
                Some(said) => {
                    settle || !through_exchange || {
                        let mark = |time: &PartitionTime| {
                            (
                                time.finished,
                                time.idle,
                                time.first_event_ms,
                                time.hold(delay).map(|wm| spec.fired_through(wm)),
                            )
                        };
                        mark(said) != mark(&t.time)
                    }
                }
            })
            .map(|t| (t.partition, t.time.clone()))
            .collect();
        for (source, time) in due {
            if let Some(exchange) = self.exchange.as_mut() {
                for q in (0..counting).filter(|q| *q != source) {
                    exchange.progress(q, source, &time)?;
                }
            } else {
                let mut relayed = false;
                for q in (0..counting).filter(|q| *q != source) {
                    if let Some(counter) = self.tasks.get_mut(&q) {
                        counter.declare(source, &time, now)?;
                    } else if let Some(relay) = self.relay.as_mut().filter(|_| !relayed) {
                        relay.progress(source, &time);
                        relayed = true;
                    }
                }
            }
            if let Some(task) = self.tasks.get_mut(&source) {
                task.announced = Some(time);
            }
        }
        if let Some(relay) = self.relay.as_mut() {
            relay.flush()?;
        }
        Ok(())
    }

    /// A topic that gained partitions: each new one holds every counting partition hosted
    /// here back from now until it says how far it has come.
    fn add_new_sources(&mut self) {
        let known = self.source.partitions();
        if known <= self.setup.source_partitions {
            return;
        }
        info!(
            from = self.setup.source_partitions,
            to = known,
            "the topic has more partitions: counting waits for them too"
        );
        for task in self.tasks.values_mut() {
            if let Some(c) = task.counter.as_mut() {
                for p in self.setup.source_partitions..known {
                    c.watermarks.add_source(p);
                }
            }
        }
        self.setup.source_partitions = known;
    }

    /// Judges which of this worker's source partitions are idle: caught up with their end
    /// (the source says so) and without an event for the idle timeout. A partition that is
    /// behind is never idle, however long it waits to be read.
    fn judge_idle(&mut self, now: u64) {
        let timeout = self.setup.rules.idle_timeout_ms;
        for task in self.tasks.values_mut() {
            let idle =
                self.source.caught_up(task.partition) && now.saturating_sub(task.last_seen_ms) >= timeout;
            task.set_idle(idle);
        }
    }

    /// Counting worker: counts what the other workers relayed. Returns whether one of them
    /// waits for a checkpoint (it commits only what this worker committed counting).
    fn poll_relay(&mut self, now: u64) -> Result<bool, PipelineError> {
        let Some(relay) = self.relay.as_mut() else { return Ok(false) };
        // Asked before taking the batches: all sent before the request is counted before
        // the checkpoint it asks for.
        let wanted = relay.checkpoint_wanted();
        let batches = relay.receive();
        if batches.is_empty() {
            return Ok(wanted);
        }
        let late_before = self.late_pending();
        for batch in &batches {
            for (source, ordinal, pv) in batch.events() {
                let q = counting_partition(&pv.postcode, self.setup.counting_partitions);
                let Some(counter) = self.tasks.get_mut(&q) else {
                    return Err(missing_counter(source, q));
                };
                counter.count(source, ordinal, &pv, now)?;
            }
            for (source, time) in batch.progress() {
                for task in self.tasks.values_mut() {
                    task.declare(*source, time, now)?;
                }
            }
        }
        self.advance_counters(now)?;
        self.count_late_since(late_before);
        Ok(wanted)
    }

    /// Leaving the record loop with other workers relaying: a relaying worker says it relays
    /// nothing more; the counting worker takes what they relay, and checkpoints when they ask,
    /// until each has said so, so that its last checkpoint counts it all.
    fn stop_relaying(&mut self) -> Result<(), PipelineError> {
        let Some(relay) = self.relay.as_mut() else { return Ok(()) };
        if !relay.is_counter() {
            return relay.stop();
        }
        loop {
            let now = self.now_ms();
            let wanted = self.poll_relay(now)?;
            if self.relay.as_ref().is_some_and(Relay::all_stopped) {
                return Ok(());
            }
            if wanted {
                self.checkpoint(true, &[])?;
            }
            if let Some(relay) = self.relay.as_mut() {
                relay.wait(Duration::from_millis(50));
            }
        }
    }

    /// Re-evaluates every counting watermark (idleness moves them without records), and
    /// reports them.
    fn advance_watermarks(&mut self, now: u64) -> Result<(), PipelineError> {
        self.judge_idle(now);
        self.announce(now, false)?;
        self.advance_counters(now)?;
        self.report_watermarks();
        Ok(())
    }

    fn advance_counters(&mut self, now: u64) -> Result<(), PipelineError> {
        for task in self.tasks.values_mut() {
            if task.counter.is_some() {
                task.advance(now)?;
            }
        }
        Ok(())
    }

    /// Drops the tasks of partitions another instance claimed: their uncommitted work is
    /// abandoned (the new holder reads it again from the committed position). Without a
    /// consumer group to hand them back, the run was replaced and stops (`replaced.rs`).
    pub(super) fn drop_fenced(&mut self, fenced: &[u32]) -> Result<(), PipelineError> {
        for &p in fenced {
            warn!(partition = p, "another instance holds this partition now; giving it up");
            if let Some(relay) =
                self.relay.as_ref().filter(|r| r.is_counter() && p < self.setup.counting_partitions)
            {
                // The windows the other workers relay to are counted elsewhere now: they must
                // not wait for this worker to commit them.
                relay.close();
            }
            self.tasks.remove(&p);
            self.source.fenced(p);
        }
        self.sync_exchange()?;
        self.replaced(fenced)
    }
}

fn missing_counter(source: u32, q: u32) -> PipelineError {
    PipelineError::Incompatible(format!(
        "records of partition {source} are counted in partition {q}, which this instance does not hold"
    ))
}

/// Restores what the newest committed states of `partitions` hold, for sources that know
/// their partitions up front (the generator, files).
pub(super) fn restore_all(
    restorer: &mut LogRestorer,
    partitions: &[u32],
) -> Result<Vec<(u32, Restored)>, PipelineError> {
    use crate::source::Restore;
    Ok(restorer.restore(partitions)?)
}
