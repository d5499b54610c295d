//! Page views relayed in memory between the workers of one instance that read files.
//!
//! Each input file is a source partition, and `--workers N` spreads the files over N workers
//! (file `i` to worker `i % N`). Files have one counting partition, hosted by task 0 (the
//! first file) in worker 0, so the other workers relay the page views they read to it
//! through a bounded channel, with their sources' event time. Kafka sources forward through
//! the exchange topic instead, which is durable; this channel is not, so exactly once rests
//! on the order of commits (ARCHITECTURE.md §6):
//!
//! - a relaying worker commits a position only after the counting worker committed counting
//!   everything it relayed from before that position: it asks for a checkpoint and waits
//!   until the counter's committed high water per source has reached what it sent;
//! - a kill between the two commits leaves the counter ahead; the relaying task reads again
//!   from its committed position and the counter drops what its high water says it counted.
//!
//! The counting worker never waits for a relaying one, except when it stops: its last
//! checkpoint waits until every other worker has said it relays nothing more.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use pageviews_core::commit::PartitionTime;

use super::PipelineError;
use crate::event::PageView;

/// Batches in flight to the counting worker before a relaying worker waits: bounds memory
/// when the counter falls behind.
const CHANNEL_BATCHES: usize = 16;

/// How often a waiting worker looks again whether the counting worker is still there.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// The page views and event times one relaying worker sends at once (one per batch it
/// reads). Strings live in one buffer, so a batch costs a few allocations, not two per event.
#[derive(Debug, Default)]
pub(super) struct Relayed {
    text: String,
    events: Vec<RelayedEvent>,
    /// The newest event time of each relaying source, sent after its events.
    progress: Vec<(u32, PartitionTime)>,
}

#[derive(Debug)]
struct RelayedEvent {
    source: u32,
    ordinal: u64,
    user_id: i64,
    timestamp: i64,
    postcode: Range<usize>,
    webpage: Range<usize>,
}

impl Relayed {
    /// The events, as (source partition, ordinal, page view), in the order they were read.
    pub(crate) fn events(&self) -> impl Iterator<Item = (u32, u64, PageView<'_>)> {
        self.events.iter().map(|e| {
            let pv = PageView {
                user_id: e.user_id,
                postcode: self.text[e.postcode.clone()].into(),
                webpage: self.text[e.webpage.clone()].into(),
                timestamp: e.timestamp,
            };
            (e.source, e.ordinal, pv)
        })
    }

    /// How far each relaying source has come, after the events above.
    pub(crate) fn progress(&self) -> &[(u32, PartitionTime)] {
        &self.progress
    }

    fn is_empty(&self) -> bool {
        self.events.is_empty() && self.progress.is_empty()
    }
}

enum Message {
    Batch(Relayed),
    /// The worker relays nothing more in this run.
    Stopped(usize),
}

/// What the counting worker has committed, shared with the workers that wait for it.
struct Counted {
    /// Per relaying source, the highest ordinal the counting partition committed as counted.
    high_water: BTreeMap<u32, u64>,
    /// The counting worker is running: once it is gone, nothing more will be committed.
    running: bool,
}

struct Shared {
    counted: Mutex<Counted>,
    changed: Condvar,
    /// A relaying worker waits for the counting worker's next commit.
    wanted: AtomicBool,
}

/// One worker's end of the relay: the counting worker (0) receives, the others send.
pub(super) struct Relay {
    worker: usize,
    workers: usize,
    shared: Arc<Shared>,
    tx: SyncSender<Message>,
    /// The counting worker's receiving end, with messages taken while waiting.
    rx: Option<(Receiver<Message>, VecDeque<Message>)>,
    pending: Relayed,
    /// Per source, the highest ordinal sent and not yet known to be committed by the counter.
    sent: BTreeMap<u32, u64>,
    stopped: bool,
    /// Workers that said they relay nothing more (counting worker only).
    stopped_seen: BTreeSet<usize>,
}

impl Relay {
    /// The relays of an instance's `workers` workers, in worker order.
    pub(crate) fn for_workers(workers: usize) -> Vec<Relay> {
        let shared = Arc::new(Shared {
            counted: Mutex::new(Counted { high_water: BTreeMap::new(), running: true }),
            changed: Condvar::new(),
            wanted: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::sync_channel(CHANNEL_BATCHES);
        let mut rx = Some((rx, VecDeque::new()));
        (0..workers)
            .map(|worker| Relay {
                worker,
                workers,
                shared: shared.clone(),
                tx: tx.clone(),
                rx: if worker == 0 { rx.take() } else { None },
                pending: Relayed::default(),
                sent: BTreeMap::new(),
                stopped: false,
                stopped_seen: BTreeSet::new(),
            })
            .collect()
    }

    /// Queues one page view of `source` at `ordinal` for the counting worker.
    pub(crate) fn relay(&mut self, source: u32, ordinal: u64, pv: &PageView<'_>) {
        let text = &mut self.pending.text;
        let start = text.len();
        text.push_str(&pv.postcode);
        let mid = text.len();
        text.push_str(&pv.webpage);
        self.pending.events.push(RelayedEvent {
            source,
            ordinal,
            user_id: pv.user_id,
            timestamp: pv.timestamp,
            postcode: start..mid,
            webpage: mid..text.len(),
        });
    }

    /// Queues how far `source` has come (its newest event time, whether it finished).
    pub(crate) fn progress(&mut self, source: u32, time: &PartitionTime) {
        let progress = &mut self.pending.progress;
        match progress.iter_mut().find(|(s, _)| *s == source) {
            Some((_, t)) => *t = time.clone(),
            None => progress.push((source, time.clone())),
        }
    }

    /// Sends what is queued. Blocks while the channel is full.
    pub(crate) fn flush(&mut self) -> Result<(), PipelineError> {
        if self.pending.is_empty() || self.stopped {
            return Ok(());
        }
        // Noted per run of one source's events, not per event: ordinals grow within a source.
        let mut run: Option<(u32, u64)> = None;
        for e in &self.pending.events {
            match run.as_mut() {
                Some((source, ordinal)) if *source == e.source => *ordinal = e.ordinal,
                _ => {
                    if let Some((source, ordinal)) = run.replace((e.source, e.ordinal)) {
                        self.sent.insert(source, ordinal);
                    }
                }
            }
        }
        if let Some((source, ordinal)) = run {
            self.sent.insert(source, ordinal);
        }
        let (text, events) = (self.pending.text.len(), self.pending.events.len());
        let batch = std::mem::take(&mut self.pending);
        // The next batch is about as large: grow once, not by doubling.
        self.pending.text.reserve(text);
        self.pending.events.reserve(events);
        self.tx.send(Message::Batch(batch)).map_err(|_| counter_gone())
    }

    /// Before a relaying worker commits: waits until the counting worker has committed
    /// everything this worker relayed, asking it for a checkpoint. Errors when the counting
    /// worker stopped first, or lost the counting partition to another instance: this worker
    /// must not commit past what was counted.
    pub(crate) fn await_counted(&mut self) -> Result<(), PipelineError> {
        self.flush()?;
        if self.sent.is_empty() {
            return Ok(());
        }
        let mut counted = self.shared.counted.lock().map_err(|_| counter_gone())?;
        loop {
            self.sent.retain(|source, sent| counted.high_water.get(source).is_none_or(|hw| hw < sent));
            if self.sent.is_empty() {
                return Ok(());
            }
            if !counted.running {
                return Err(counter_gone());
            }
            self.shared.wanted.store(true, Ordering::Release);
            counted = self.shared.changed.wait_timeout(counted, WAIT_SLICE).map_err(|_| counter_gone())?.0;
        }
    }

    /// Tells the counting worker this worker relays nothing more in this run. Whatever is
    /// queued is sent first; anything queued later is dropped.
    pub(crate) fn stop(&mut self) -> Result<(), PipelineError> {
        if self.stopped || self.rx.is_some() {
            return Ok(());
        }
        let flushed = self.flush();
        self.stopped = true;
        flushed?;
        self.tx.send(Message::Stopped(self.worker)).map_err(|_| counter_gone())
    }

    /// True for the worker that hosts the counting partition and receives.
    pub(crate) fn is_counter(&self) -> bool {
        self.rx.is_some()
    }

    /// Counting worker: whether a relaying worker waits for a checkpoint. Clears the request,
    /// so call it before [`Relay::receive`]: what was sent before the request is then taken.
    pub(crate) fn checkpoint_wanted(&self) -> bool {
        self.is_counter() && self.shared.wanted.swap(false, Ordering::AcqRel)
    }

    /// Counting worker: the batches relayed since the last call, in order per worker.
    pub(crate) fn receive(&mut self) -> Vec<Relayed> {
        let mut out = Vec::new();
        let Some((rx, taken)) = self.rx.as_mut() else { return out };
        let mut next = taken.pop_front();
        loop {
            let message = match next.take() {
                Some(m) => m,
                None => match rx.try_recv() {
                    Ok(m) => m,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                },
            };
            match message {
                Message::Batch(b) => out.push(b),
                Message::Stopped(w) => {
                    self.stopped_seen.insert(w);
                }
            }
            next = taken.pop_front();
        }
        out
    }

    /// Counting worker: waits up to `timeout` for something to receive (instead of sleeping
    /// when its own input has ended and others still relay).
    pub(crate) fn wait(&mut self, timeout: Duration) {
        let Some((rx, taken)) = self.rx.as_mut() else { return };
        if !taken.is_empty() {
            return;
        }
        match rx.recv_timeout(timeout) {
            Ok(m) => taken.push_back(m),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
        }
    }

    /// Counting worker: whether every other worker has said it relays nothing more (and all
    /// it sent was received).
    pub(crate) fn all_stopped(&self) -> bool {
        !self.is_counter() || self.stopped_seen.len() + 1 >= self.workers
    }

    /// Counting worker: a checkpoint committed counting every relayed source up to
    /// `high_water`; wakes the workers waiting for it.
    pub(crate) fn committed(&self, high_water: impl IntoIterator<Item = (u32, u64)>) {
        if let Ok(mut counted) = self.shared.counted.lock() {
            counted.high_water.extend(high_water);
        }
        self.shared.changed.notify_all();
    }
}

impl Relay {
    /// Counting worker: it commits nothing more for the others (it stops, or another instance
    /// took the counting partition); a worker waiting for it stops waiting, with an error.
    pub(crate) fn close(&self) {
        if let Ok(mut counted) = self.shared.counted.lock() {
            counted.running = false;
        }
        self.shared.changed.notify_all();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if self.is_counter() {
            self.close();
        } else {
            // A worker that failed still releases the counting worker's last checkpoint.
            let _ = self.stop();
        }
    }
}

fn counter_gone() -> PipelineError {
    PipelineError::Incompatible(
        "worker 0, which counts the windows of every input file, stopped or lost them to another instance; this worker does not commit what worker 0 did not count"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(postcode: &str, timestamp: i64) -> PageView<'_> {
        PageView { user_id: 7, postcode: postcode.into(), webpage: "www.example.com/a".into(), timestamp }
    }

    #[test]
    fn relayed_page_views_and_progress_arrive_whole_and_in_order() {
        let mut relays = Relay::for_workers(2);
        let mut sender = relays.pop().unwrap();
        let mut counter = relays.pop().unwrap();
        sender.relay(1, 10, &view("SW1A 1AA", 1_000));
        sender.relay(1, 11, &view("W1J 7NT", 2_000));
        sender.progress(1, &PartitionTime { max_event_ms: Some(2_000), ..PartitionTime::default() });
        sender.progress(1, &PartitionTime { max_event_ms: Some(2_500), ..PartitionTime::default() });
        sender.flush().unwrap();
        let got = counter.receive();
        assert_eq!(got.len(), 1);
        let events: Vec<_> =
            got[0].events().map(|(s, o, pv)| (s, o, pv.postcode.into_owned(), pv.timestamp)).collect();
        assert_eq!(events, vec![(1, 10, "SW1A 1AA".into(), 1_000), (1, 11, "W1J 7NT".into(), 2_000)]);
        assert_eq!(
            got[0].progress(),
            &[(1, PartitionTime { max_event_ms: Some(2_500), ..PartitionTime::default() })]
        );
        assert!(!counter.all_stopped());
        sender.stop().unwrap();
        assert!(counter.receive().is_empty());
        assert!(counter.all_stopped());
    }

    #[test]
    fn a_relaying_worker_commits_only_after_the_counter_committed_what_it_sent() {
        let mut relays = Relay::for_workers(2);
        let mut sender = relays.pop().unwrap();
        let counter = relays.pop().unwrap();
        sender.relay(1, 41, &view("SW1A 1AA", 1_000));
        sender.relay(1, 42, &view("SW1A 1AA", 1_000));
        let waiting = std::thread::spawn(move || {
            sender.await_counted().unwrap();
            sender
        });
        while !counter.checkpoint_wanted() {
            std::thread::yield_now();
        }
        counter.committed([(1, 41)]);
        // Short of what was sent: the relaying worker keeps waiting, and asks again.
        while !counter.checkpoint_wanted() {
            std::thread::yield_now();
        }
        assert!(!waiting.is_finished(), "a commit short of what was sent released the relaying worker");
        counter.committed([(1, 42)]);
        let mut sender = waiting.join().unwrap();
        // Nothing new relayed: no wait.
        sender.await_counted().unwrap();
    }

    #[test]
    fn a_relaying_worker_does_not_commit_once_the_counter_gave_up_its_partition() {
        let mut relays = Relay::for_workers(2);
        let mut sender = relays.pop().unwrap();
        let counter = relays.pop().unwrap();
        sender.relay(1, 5, &view("SW1A 1AA", 1_000));
        let waiting = std::thread::spawn(move || sender.await_counted());
        while !counter.checkpoint_wanted() {
            std::thread::yield_now();
        }
        counter.close();
        assert!(waiting.join().unwrap().is_err());
    }

    #[test]
    fn a_relaying_worker_does_not_commit_when_the_counter_is_gone() {
        let mut relays = Relay::for_workers(2);
        let mut sender = relays.pop().unwrap();
        sender.relay(1, 5, &view("SW1A 1AA", 1_000));
        sender.flush().unwrap();
        drop(relays);
        assert!(sender.await_counted().is_err());
    }
}
