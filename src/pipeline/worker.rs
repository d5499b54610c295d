//! The record loop: poll the source, decode, hand each record to the task of its partition,
//! count it where its postcode is counted, and checkpoint on schedule.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pageviews_core::commit::{CheckpointError, Log};
use pageviews_core::time::hour_of;
use tracing::info;

use super::checkpoint::{poisoned, Occasion, Parts};
use super::completion::Completion;
use super::forward::{counting_partition, Forwarding};
use super::report::Reporter;
use super::tasks::Tasks;
use super::{PipelineError, Shutdown, Summary};
use crate::clock::Clock;
use crate::event::{decode, oversized_prefix, DecodeError, EventTimeBounds, Reason};
use crate::metrics::ReasonLabel;
use crate::sink::jsonl::Origin;
use crate::sink::Row;
use crate::source::{Batch, PartitionEvent, Poll, Source};

/// The loop's pace and bounds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Records polled at once.
    pub(crate) batch_size: usize,
    /// Longer records are `oversized` dead letters.
    pub(crate) max_record_bytes: usize,
    pub(crate) checkpoint_interval: Duration,
    /// From the start to the first scheduled checkpoint (at most the interval).
    pub(crate) first_checkpoint: Duration,
    /// `--partition-commit-delay`.
    pub(crate) commit_delay_ms: i64,
}

/// What a worker is built from (`open.rs` gathers it).
pub(super) struct Assembly {
    pub(crate) source: Box<dyn Source>,
    pub(crate) tasks: Tasks,
    pub(crate) log: Arc<Mutex<Log>>,
    pub(crate) forwarding: Forwarding,
    pub(crate) reporter: Reporter,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) limits: Limits,
    /// Refuses event times too far ahead of the clock or whose window cannot be written.
    pub(crate) event_time: EventTimeBounds,
    /// The instance's stop request: the loop checks it between batches, and the waits of a
    /// last checkpoint give up a few seconds after it.
    pub(crate) stop: Shutdown,
    /// Partitions come and go with a consumer group (Kafka); otherwise a fenced one was
    /// taken by another run for good.
    pub(crate) rebalances: bool,
}

/// How long a stopping worker waits for its source to close.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// One worker of an instance: its source, the tasks of the partitions it holds, how it
/// forwards what others count, its handle on the commit log and its reporting.
pub(super) struct Pipeline {
    source: Box<dyn Source>,
    tasks: Tasks,
    log: Arc<Mutex<Log>>,
    forwarding: Forwarding,
    reporter: Reporter,
    clock: Arc<dyn Clock>,
    limits: Limits,
    event_time: EventTimeBounds,
    stop: Shutdown,
    rebalances: bool,
}

impl Pipeline {
    /// A worker from its parts; the exchange is pointed at the counting partitions its
    /// tasks host.
    pub(crate) fn new(a: Assembly) -> Result<Self, PipelineError> {
        let Assembly {
            source,
            tasks,
            log,
            mut forwarding,
            reporter,
            clock,
            limits,
            event_time,
            stop,
            rebalances,
        } = a;
        forwarding.sync(&tasks)?;
        Ok(Pipeline { source, tasks, log, forwarding, reporter, clock, limits, event_time, stop, rebalances })
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Runs until the source ends or the stop is requested; every file is closed and
    /// committed at the end.
    pub(crate) fn run_loop(&mut self) -> Result<Summary, PipelineError> {
        self.reporter.running();
        // Counting partitions elsewhere learn of every source here before its first event.
        let now = self.now_ms();
        self.forwarding.announce(&mut self.tasks, now, false)?;
        let interval = self.limits.checkpoint_interval.as_millis() as u64;
        let mut batch = Batch::default();
        let mut next_checkpoint = self.now_ms() + self.limits.first_checkpoint.as_millis() as u64;
        let mut next_roll_check = 0;
        // Bounded input: this instance's sources reached their end (and said so to the
        // counting partitions); since when it waits for other instances'.
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
            if self.poll_forwarded(now)? {
                self.checkpoint(Occasion::Asked)?;
            }
            match self.source.poll(&mut batch, self.limits.batch_size, now)? {
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
                        self.tasks.iter_mut().for_each(|t| t.finish());
                        self.forwarding.finish(&mut self.tasks, now, &self.stop)?;
                        ended = true;
                    }
                    if self.forwarding.drained(&self.tasks)? {
                        for task in self.tasks.iter_mut() {
                            task.flush(now)?;
                        }
                        break true;
                    }
                    if waiting_since.is_none_or(|t| now.saturating_sub(t) >= 30_000) {
                        info!("read to the end: waiting for the sources that forward to this instance to finish");
                        waiting_since = Some(now);
                    }
                    self.advance_watermarks(now)?;
                    let until_cp = Duration::from_millis(next_checkpoint.saturating_sub(now));
                    self.forwarding.wait(until_cp.min(Duration::from_millis(50)), &*self.clock);
                }
            }
            let revoking = self.source.revoking();
            if !revoking.is_empty() {
                self.checkpoint(Occasion::Revoking(&revoking))?;
            }
            let now = self.now_ms();
            if now >= next_roll_check {
                self.tasks.add_sources(self.source.partitions());
                self.tasks.roll_aged(now);
                self.reporter.freshness();
                next_roll_check = now + 1_000;
            }
            if now >= next_checkpoint {
                self.checkpoint(Occasion::Scheduled)?;
                next_checkpoint = self.now_ms() + interval;
            }
        };
        // Stopping: every file closes, so all that is committed is visible.
        self.stop_relaying()?;
        self.checkpoint(Occasion::Last)?;
        self.log.lock().map_err(|_| poisoned())?.release_lease()?;
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
        let (mut accepted, late_before) = (0u64, self.tasks.late_pending());
        let mut dead = [0u64; Reason::ALL.len()];
        let (max_bytes, counting) = (self.limits.max_record_bytes, self.tasks.setup().counting_partitions);
        for (i, rec) in batch.records().iter().enumerate() {
            while let Some((_, event)) = events.next_if(|(at, _)| *at <= i) {
                self.apply(*event, now)?;
            }
            let Some(task) = self.tasks.get_mut(rec.partition) else {
                // A record of a partition this instance does not hold (fenced meanwhile).
                continue;
            };
            task.dirty = true;
            task.pending.records_read += 1;
            let payload = batch.payload(rec);
            let decoded = if rec.len > max_bytes as u64 {
                Err(DecodeError::Oversized { size: rec.len as usize, limit: max_bytes })
            } else {
                decode(payload, max_bytes).and_then(|pv| self.event_time.check(pv, received_at))
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
                    let q = counting_partition(&pv.postcode, counting);
                    if q == rec.partition {
                        // Counted before the partition's event time moves past it.
                        task.count(rec.partition, rec.position, &pv, now)?;
                        task.observe(pv.timestamp, now);
                        continue;
                    }
                    task.observe(pv.timestamp, now);
                    task.forwarded_to.insert(q);
                    self.forwarding.forward(
                        &mut self.tasks,
                        q,
                        rec.partition,
                        rec.position,
                        &pv,
                        payload,
                        now,
                    )?;
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
        self.tasks.judge_idle(&*self.source, now);
        self.forwarding.announce(&mut self.tasks, now, false)?;
        self.tasks.advance(now)?;
        self.count_late_since(late_before);
        let m = self.reporter.metrics();
        m.records_read.inc_by(batch.len() as u64);
        m.records_accepted.inc_by(accepted);
        for reason in Reason::ALL {
            let n = dead[reason as usize];
            if n > 0 {
                m.dead_letters.get_or_create(&ReasonLabel { reason: reason.as_str() }).inc_by(n);
            }
        }
        self.tasks.roll_passed_hours(&Completion::of(self.tasks.setup(), self.limits.commit_delay_ms));
        // One status update per batch: its records and the watermarks they moved.
        self.reporter.batch(batch, &self.tasks, &*self.source);
        Ok(())
    }

    /// Adds the late rows written since `late_pending` was `before` to the metric: wherever
    /// they were judged or counted (own records, the exchange, the relay).
    fn count_late_since(&self, before: u64) {
        self.reporter.metrics().late_events.inc_by(self.tasks.late_pending() - before);
    }

    fn apply(&mut self, event: PartitionEvent, now: u64) -> Result<(), PipelineError> {
        match event {
            PartitionEvent::Assigned(p) => {
                if let Some(restored) = self.source.take_restored(p) {
                    self.tasks.add(vec![(p, restored)], now);
                    self.forwarding.sync(&self.tasks)?;
                } else if let Some(task) = self.tasks.get_mut(p) {
                    task.last_seen_ms = now;
                }
            }
            PartitionEvent::Finished(p) => {
                if let Some(task) = self.tasks.get_mut(p) {
                    task.finish();
                }
                self.forwarding.announce(&mut self.tasks, now, false)?;
            }
            PartitionEvent::Revoked(p) => {
                self.tasks.remove(p);
                self.forwarding.sync(&self.tasks)?;
            }
        }
        Ok(())
    }

    /// Counts what the exchange or the relay brought; true when a relaying worker waits for
    /// a checkpoint.
    fn poll_forwarded(&mut self, now: u64) -> Result<bool, PipelineError> {
        let late_before = self.tasks.late_pending();
        let wanted = self.forwarding.poll(&mut self.tasks, now, self.limits.batch_size)?;
        self.count_late_since(late_before);
        Ok(wanted)
    }

    /// Leaving the record loop with other workers relaying: a relaying worker says it relays
    /// nothing more; the counting worker takes what they relay, and checkpoints when they ask,
    /// until each has said so, so that its last checkpoint counts it all.
    fn stop_relaying(&mut self) -> Result<(), PipelineError> {
        let Some(relay) = self.forwarding.relay_mut() else { return Ok(()) };
        if !relay.is_counter() {
            return relay.stop();
        }
        loop {
            let wanted = self.poll_forwarded(self.now_ms())?;
            if self.forwarding.drained(&self.tasks)? {
                return Ok(());
            }
            if wanted {
                self.checkpoint(Occasion::Asked)?;
            }
            self.forwarding.wait(Duration::from_millis(50), &*self.clock);
        }
    }

    /// Re-evaluates every counting watermark (idleness moves them without records), and
    /// reports them.
    fn advance_watermarks(&mut self, now: u64) -> Result<(), PipelineError> {
        self.tasks.judge_idle(&*self.source, now);
        self.forwarding.announce(&mut self.tasks, now, false)?;
        self.tasks.advance(now)?;
        self.reporter.watermarks(&self.tasks, &*self.source);
        Ok(())
    }

    fn checkpoint(&mut self, occasion: Occasion<'_>) -> Result<(), PipelineError> {
        let parts = Parts {
            tasks: &mut self.tasks,
            source: &mut *self.source,
            log: &self.log,
            forwarding: &mut self.forwarding,
            reporter: &self.reporter,
            clock: &*self.clock,
            stop: &self.stop,
            commit_delay_ms: self.limits.commit_delay_ms,
            rebalances: self.rebalances,
        };
        parts.checkpoint(occasion)
    }

    /// The loop ended (whichever way): the worker is no longer a stalled one.
    pub(crate) fn stopped(&self) {
        self.reporter.stopped();
    }

    /// Drops the worker, giving its Kafka clients (the source's, the exchange's) [`CLOSE_GRACE`]
    /// to close, side by side: everything read is committed by now; closing one waits on
    /// librdkafka (100 ms or more each, in rust-rdkafka's polling), which can wait forever (its
    /// group thread gone without answering a call the rebalance callback made; 5 of 64
    /// members hung so at exit), and that must not keep the process from exiting.
    pub(crate) fn close(self) {
        let Pipeline { source, forwarding, .. } = self;
        let (closed, done) = std::sync::mpsc::channel();
        let mut clients = forwarding.into_clients();
        clients.push(Box::new(source));
        let spawned = clients
            .into_iter()
            .map(|client| {
                let closed = closed.clone();
                std::thread::Builder::new().name("pageviews-close".into()).spawn(move || {
                    drop(client);
                    let _ = closed.send(());
                })
            })
            .filter(Result::is_ok)
            .count();
        let deadline = std::time::Instant::now() + CLOSE_GRACE;
        for _ in 0..spawned {
            if done.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())).is_err() {
                tracing::warn!(
                    grace = ?CLOSE_GRACE,
                    "the Kafka clients did not close in time; going on without them (everything read is committed)"
                );
                break;
            }
        }
    }

    /// A run that failed: when another run took over its partitions meanwhile (its recovery
    /// removes the uploads this run was writing, for one), that is the error to report.
    pub(crate) fn explain(&self, error: PipelineError) -> PipelineError {
        if self.rebalances || matches!(error, PipelineError::Checkpoint(CheckpointError::Replaced { .. })) {
            return error;
        }
        let Ok(mut log) = self.log.lock() else { return error };
        match log.taken_over(&self.tasks.held()) {
            Ok(Some(replaced)) => {
                tracing::debug!(error = %error, "failed after being replaced");
                replaced.into()
            }
            _ => error,
        }
    }
}
