//! Where an event goes when another partition counts its postcode, and how every source
//! partition tells every counting partition how far it has come (ARCHITECTURE.md §3, §6).
//!
//! Three ways, one per kind of deployment: in memory, when this worker counts every window
//! (the generator, files read by one worker); through the relay to worker 0 (files read by
//! several workers); through the exchange topic (Kafka), durable, to whichever instance
//! counts. The loop and the checkpoint ask the same of each.

use std::time::Duration;

use pageviews_core::commit::TaskState;

use super::relay::Relay;
use super::tasks::Tasks;
use super::{PipelineError, Shutdown};
use crate::clock::Clock;
use crate::event::{decode, PageView};
use crate::source::exchange::{Exchange, Item};
use crate::source::PartitionTime;

/// How this worker's events reach the partitions that count them.
pub(super) enum Forwarding {
    /// This worker counts every window.
    Local,
    /// Kafka: the exchange topic.
    Exchange(Exchange),
    /// Files over several workers: in memory to worker 0.
    Relay(Relay),
}

/// Which counting partition counts a postcode's windows: a hash of the postcode modulo the
/// pipeline's counting partitions. The same function in every instance and every run.
#[inline]
pub(super) fn counting_partition(postcode: &str, counting_partitions: u32) -> u32 {
    if counting_partitions <= 1 {
        return 0;
    }
    crate::route::partition_of(postcode.as_bytes(), counting_partitions)
}

impl Forwarding {
    /// The Kafka clients to close, each apart (see `Pipeline::close`): the exchange's; the
    /// other ways have none.
    pub(super) fn into_clients(self) -> Vec<Box<dyn Send>> {
        match self {
            Forwarding::Exchange(exchange) => exchange.into_clients().into(),
            Forwarding::Local | Forwarding::Relay(_) => Vec::new(),
        }
    }

    /// Hands an on-time event of `source` at `ordinal` to counting partition `q`, which is
    /// not `source`'s own.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward(
        &mut self,
        tasks: &mut Tasks,
        q: u32,
        source: u32,
        ordinal: u64,
        pv: &PageView<'_>,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<(), PipelineError> {
        match self {
            // Through Kafka, even when this instance counts q too: one way per pair of
            // partitions keeps their events in order.
            Forwarding::Exchange(exchange) => {
                exchange.forward(q, source, ordinal, pv.postcode.as_bytes(), payload)?
            }
            Forwarding::Local | Forwarding::Relay(_) if tasks.contains(q) => {
                if let Some(counter) = tasks.get_mut(q) {
                    counter.count(source, ordinal, pv, now_ms)?;
                }
            }
            Forwarding::Relay(relay) => relay.relay(source, ordinal, pv),
            Forwarding::Local => return Err(missing_counter(source, q)),
        }
        Ok(())
    }

    /// Counts what the exchange or the relay brought for the counting partitions here.
    /// Returns whether a relaying worker waits for a checkpoint (it commits only what the
    /// counting worker committed counting).
    pub(crate) fn poll(&mut self, tasks: &mut Tasks, now_ms: u64, max: usize) -> Result<bool, PipelineError> {
        match self {
            Forwarding::Local => Ok(false),
            Forwarding::Exchange(exchange) => {
                let mut items = Vec::new();
                exchange.poll(&mut items, max)?;
                for item in items {
                    match item {
                        Item::Record { counting, offset, source, ordinal, payload } => {
                            let Some(task) = tasks.get_mut(counting) else { continue };
                            // Decoded where it was read already: a forwarded event is a page view.
                            if let Ok(pv) = decode(&payload, usize::MAX) {
                                task.count(source, ordinal, &pv, now_ms)?;
                            }
                            task.set_exchange_offset(offset + 1);
                        }
                        Item::Progress { counting, offset, source, time } => {
                            let Some(task) = tasks.get_mut(counting) else { continue };
                            task.declare(source, &time, now_ms)?;
                            task.set_exchange_offset(offset + 1);
                        }
                    }
                }
                Ok(false)
            }
            Forwarding::Relay(relay) => {
                // Asked before taking the batches: all sent before the request is counted
                // before the checkpoint it asks for.
                let wanted = relay.checkpoint_wanted();
                let batches = relay.receive();
                if batches.is_empty() {
                    return Ok(wanted);
                }
                let counting = tasks.setup().counting_partitions;
                for batch in &batches {
                    for (source, ordinal, pv) in batch.events() {
                        let q = counting_partition(&pv.postcode, counting);
                        let counter = tasks.get_mut(q).ok_or_else(|| missing_counter(source, q))?;
                        counter.count(source, ordinal, &pv, now_ms)?;
                    }
                    for (source, time) in batch.progress() {
                        for task in tasks.iter_mut() {
                            task.declare(*source, time, now_ms)?;
                        }
                    }
                }
                tasks.advance(now_ms)?;
                Ok(wanted)
            }
        }
    }

    /// Tells every counting partition this worker does not count in the task of the same
    /// number how far each source partition here has come: its newest event time, first
    /// event, whether it finished or is idle. A counting partition's watermark waits for
    /// every source.
    ///
    /// In memory and through the relay this goes with every batch. Through the exchange a
    /// declaration goes to every counting partition, so it is sent when it can change what
    /// fires (a new window passed, finished, idle, first event), and, at a checkpoint
    /// (`settle`), whenever anything changed.
    pub(crate) fn announce(
        &mut self,
        tasks: &mut Tasks,
        now_ms: u64,
        settle: bool,
    ) -> Result<(), PipelineError> {
        let (counting, spec) = (tasks.setup().counting_partitions, tasks.setup().rules.spec());
        let delay = tasks.setup().rules.watermark_delay_ms;
        let through_exchange = matches!(self, Forwarding::Exchange(_));
        let mark = |time: &PartitionTime| {
            (time.finished, time.idle, time.first_event_ms, time.hold(delay).map(|wm| spec.fired_through(wm)))
        };
        let due: Vec<(u32, PartitionTime)> = tasks
            .iter()
            .filter(|t| match &t.announced {
                None => true,
                Some(said) if said == &t.time => false,
                Some(said) => settle || !through_exchange || mark(said) != mark(&t.time),
            })
            .map(|t| (t.partition, t.time.clone()))
            .collect();
        match self {
            Forwarding::Exchange(exchange) => {
                // One record per counting partition, with every source that has news for it.
                for q in 0..counting {
                    if due.iter().any(|(source, _)| *source != q) {
                        exchange.progress(q, due.iter().filter(|(source, _)| *source != q))?;
                    }
                }
            }
            Forwarding::Local | Forwarding::Relay(_) => {
                for (source, time) in &due {
                    let mut relayed = false;
                    for q in (0..counting).filter(|q| q != source) {
                        if let Some(counter) = tasks.get_mut(q) {
                            counter.declare(*source, time, now_ms)?;
                        } else if let Forwarding::Relay(relay) = self {
                            if !relayed {
                                relay.progress(*source, time);
                                relayed = true;
                            }
                        }
                    }
                }
            }
        }
        for (source, time) in due {
            if let Some(task) = tasks.get_mut(source) {
                task.announced = Some(time);
            }
        }
        if let Forwarding::Relay(relay) = self {
            relay.flush()?;
        }
        Ok(())
    }

    /// Before a checkpoint: every source tells every counting partition how far it has
    /// come, and everything forwarded is where the counting side finds it, so no position
    /// committed next is ahead of what was forwarded. Returns whether that is so, waiting at
    /// most `wait` for the exchange, longer after checkpoints put off in a row
    /// (`Exchange::settled`; `None`: until `stop`'s grace passes, for the last checkpoint of
    /// a run). A relaying worker waits until the counting worker committed
    /// what it relayed.
    pub(crate) fn settle(
        &mut self,
        tasks: &mut Tasks,
        now_ms: u64,
        wait: Option<Duration>,
        stop: &Shutdown,
    ) -> Result<bool, PipelineError> {
        match self {
            Forwarding::Local => Ok(true),
            Forwarding::Relay(relay) => {
                relay.await_counted()?;
                Ok(true)
            }
            Forwarding::Exchange(exchange) => {
                if exchange.markers_lost() {
                    for task in tasks.iter_mut() {
                        task.announced = None;
                    }
                }
                self.announce(tasks, now_ms, true)?;
                let Forwarding::Exchange(exchange) = self else { return Ok(true) };
                Ok(match wait {
                    Some(wait) => exchange.settled(wait)?,
                    None => {
                        exchange.flush(stop)?;
                        true
                    }
                })
            }
        }
    }

    /// This worker's input ended: every counting partition hears every source here say it
    /// finished, and the exchange holds it all (within `stop`'s grace once a stop came).
    pub(crate) fn finish(
        &mut self,
        tasks: &mut Tasks,
        now_ms: u64,
        stop: &Shutdown,
    ) -> Result<(), PipelineError> {
        self.announce(tasks, now_ms, false)?;
        if let Forwarding::Exchange(_) = self {
            self.settle(tasks, now_ms, None, stop)?;
        }
        Ok(())
    }

    /// End of bounded input: whether every counting partition here has read all that was
    /// forwarded to it and heard every source say it is done (the relay: whether every
    /// relaying worker said it relays nothing more).
    pub(crate) fn drained(&self, tasks: &Tasks) -> Result<bool, PipelineError> {
        match self {
            Forwarding::Local => Ok(true),
            Forwarding::Relay(relay) => Ok(relay.all_stopped()),
            Forwarding::Exchange(exchange) => {
                for task in tasks.iter() {
                    let Some(c) = task.counter.as_ref() else { continue };
                    let end = exchange.end_offset(task.partition)?;
                    let read = c.exchange_offset.unwrap_or(0);
                    let done = c.watermarks.inputs().iter().all(|(p, t)| *p == task.partition || t.finished);
                    if read < end || !done {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        }
    }

    /// Points the exchange consumer at the counting partitions hosted now.
    pub(crate) fn sync(&mut self, tasks: &Tasks) -> Result<(), PipelineError> {
        if let Forwarding::Exchange(exchange) = self {
            let hosted =
                tasks.iter().filter_map(|t| Some((t.partition, t.counter.as_ref()?.exchange_offset)));
            exchange.assign(hosted.collect())?;
        }
        Ok(())
    }

    /// Partition `partition` was taken by another instance: if the counting worker lost a
    /// counting partition, the workers that relay to it must not wait for it any more.
    pub(crate) fn fenced(&self, partition: u32, counting_partitions: u32) {
        if let Forwarding::Relay(relay) = self {
            if relay.is_counter() && partition < counting_partitions {
                relay.close();
            }
        }
    }

    /// After a commit: the counting worker tells the relaying ones what it has committed
    /// counting of their sources (`states` as committed, less the `fenced`).
    pub(crate) fn committed(&self, states: &[TaskState], fenced: &[u32]) {
        if let Forwarding::Relay(relay) = self {
            if !relay.is_counter() {
                return;
            }
            let counted = states
                .iter()
                .filter(|s| !fenced.contains(&s.partition))
                .filter_map(|s| s.counting.as_ref())
                .flat_map(|c| c.inputs.iter().filter_map(|(p, i)| Some((*p, i.high_water?))));
            relay.committed(counted);
        }
    }

    /// Waits up to `d` for something to do: the counting worker for relayed batches,
    /// everyone else on the clock.
    pub(crate) fn wait(&mut self, d: Duration, clock: &dyn Clock) {
        match self {
            Forwarding::Relay(relay) if relay.is_counter() => relay.wait(d),
            _ => clock.sleep(d),
        }
    }

    /// The relay, when other workers count or relay (files over several workers).
    pub(crate) fn relay_mut(&mut self) -> Option<&mut Relay> {
        match self {
            Forwarding::Relay(relay) => Some(relay),
            _ => None,
        }
    }
}

fn missing_counter(source: u32, q: u32) -> PipelineError {
    PipelineError::Incompatible(format!(
        "records of partition {source} are counted in partition {q}, which this instance does not hold"
    ))
}
