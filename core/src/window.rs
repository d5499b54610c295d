//! Event time: the watermark of a counting partition and the tumbling window count.
//!
//! Sits between decode and whatever counts. The pipeline's tasks and the SQL client's
//! streaming queries over the Kafka topic both judge events with this module, so a window
//! holds the same events for both. Guarantees (ARCHITECTURE.md §4):
//! - an event is late when its window fires under the watermark of its own source partition
//!   (the highest event time that partition delivered before it, minus the bound): a
//!   function of the partition's records, judged where they are read
//!   ([`WindowSpec::behind_own_partition`]);
//! - a counting partition's watermark is the minimum over every source partition of the
//!   pipeline, read or not yet read, leaving out only finished ones and idle ones (caught up
//!   with their end and silent), and never moves backwards ([`Watermarks`]). So a window
//!   fires only once no source can still deliver an event on time for it;
//! - a window `[start, end)` is emitted once, when the watermark reaches `end - 1 +
//!   allowed_lateness` (Flink's rule), and an event whose window was already emitted is
//!   late: it never changes an emitted count.
//!
//! Nothing here reads a clock: idleness is declared by the source that is idle.

use std::collections::{BTreeMap, HashMap};

use rustc_hash::FxBuildHasher;

pub use crate::commit::{PartitionTime, WindowCount, NO_WATERMARK};

/// A counting partition's watermark over the source partitions that may feed it.
#[derive(Debug, Clone)]
pub struct Watermarks {
    delay_ms: i64,
    /// Every source partition known, with what it last declared. One never heard from
    /// holds the watermark at its start.
    inputs: BTreeMap<u32, PartitionTime>,
    current: i64,
}

impl Watermarks {
    /// A tracker with the out-of-orderness bound, going on from `current` over `inputs`.
    pub fn new(delay_ms: i64, current: i64, inputs: BTreeMap<u32, PartitionTime>) -> Self {
        Watermarks { delay_ms, inputs, current }
    }

    /// The counting watermark.
    pub fn current(&self) -> i64 {
        self.current
    }

    /// What each source partition last declared, for the checkpoint.
    pub fn inputs(&self) -> &BTreeMap<u32, PartitionTime> {
        &self.inputs
    }

    /// Makes `partition` a source that holds the watermark back until it says how far it
    /// has come (a partition of the topic, or a file, not read yet).
    pub fn add_source(&mut self, partition: u32) {
        self.inputs.entry(partition).or_default();
    }

    /// Takes what `partition` declares now. Its newest event time never goes back (a
    /// replay after a crash declares less than was seen); whether it is finished or idle,
    /// and its first event, are as declared. Returns true when the watermark may have moved.
    pub fn declare(&mut self, partition: u32, time: &PartitionTime) -> bool {
        let known = self.inputs.entry(partition).or_default();
        let max_event_ms = known.max_event_ms.max(time.max_event_ms);
        let first_event_ms = time.first_event_ms.or(known.first_event_ms);
        let next = PartitionTime { max_event_ms, first_event_ms, finished: time.finished, idle: time.idle };
        let changed = *known != next;
        *known = next;
        changed
    }

    /// An event of `partition` at `event_ms`: moves its newest event time (and wakes it if
    /// it was idle). Returns true when the watermark may have moved.
    #[inline]
    pub fn observe(&mut self, partition: u32, event_ms: i64) -> bool {
        let known = self.inputs.entry(partition).or_default();
        let woke = std::mem::take(&mut known.idle);
        match known.max_event_ms {
            Some(max) if max >= event_ms => woke,
            _ => {
                known.max_event_ms = Some(event_ms);
                true
            }
        }
    }

    /// Recomputes the watermark: the minimum over the sources that hold it back. When none
    /// does (all finished or idle) it stays where it is.
    pub fn advance(&mut self) -> i64 {
        let min = self.inputs.values().filter_map(|t| t.hold(self.delay_ms)).min();
        if let Some(wm) = min {
            self.current = self.current.max(wm);
        }
        self.current
    }

    /// True when every source has finished.
    pub fn all_finished(&self) -> bool {
        self.inputs.values().all(|t| t.finished)
    }
}

/// Postcodes are short and not attacker-chosen in a way that matters for a per-window map,
/// and SipHash was a visible share of the per-record cost: FxHash instead.
type Counts = HashMap<Box<str>, u64, FxBuildHasher>;

/// The windows' shape: epoch-aligned tumbling windows of `size_ms`, emitted `lateness_ms`
/// after their end passes the watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    size_ms: i64,
    lateness_ms: i64,
}

impl WindowSpec {
    /// Windows of `size_ms`, emitted `lateness_ms` after their end passes the watermark.
    pub fn new(size_ms: i64, lateness_ms: i64) -> Self {
        WindowSpec { size_ms, lateness_ms }
    }

    /// The windows' size, ms.
    pub fn size_ms(&self) -> i64 {
        self.size_ms
    }

    /// The end of the window holding `event_ms`.
    #[inline]
    pub fn window_end(&self, event_ms: i64) -> i64 {
        event_ms.div_euclid(self.size_ms) * self.size_ms + self.size_ms
    }

    /// True when the window ending at `end` fires at (or before) `watermark`.
    #[inline]
    pub fn fires(&self, end: i64, watermark: i64) -> bool {
        end.saturating_sub(1).saturating_add(self.lateness_ms) <= watermark
    }

    /// The end of the newest window that fires at `watermark`: what a watermark means for
    /// the windows, which moves once a window, not once a millisecond.
    pub fn fired_through(&self, watermark: i64) -> i64 {
        if watermark == NO_WATERMARK {
            return NO_WATERMARK;
        }
        self.window_end(watermark.saturating_add(1).saturating_sub(self.lateness_ms)) - self.size_ms
    }

    /// True when the window of `event_ms` fires at `watermark`: an event behind the
    /// watermark of its own partition is late, wherever it would be counted.
    #[inline]
    pub fn behind(&self, event_ms: i64, watermark: i64) -> bool {
        self.fires(self.window_end(event_ms), watermark)
    }

    /// The own-partition lateness rule: true when the window of `event_ms` fires under the
    /// watermark of its own source partition, `own` (its newest event time before this
    /// event, minus `delay_ms`). The event is then late wherever it would be counted: a
    /// function of the partition's records alone, so the same events are late whoever
    /// reads the partition, whenever, and however fast the other partitions go.
    #[inline]
    pub fn behind_own_partition(&self, own: &PartitionTime, delay_ms: i64, event_ms: i64) -> bool {
        self.behind(event_ms, own.own_watermark(delay_ms))
    }
}

/// Epoch-aligned tumbling windows, each holding an `S`, and which of them were emitted: the
/// bookkeeping every counter of windows shares (the pipeline's views per postcode, the SQL
/// client's accumulators per group), so that they open, fire and refuse late events alike.
#[derive(Debug, Clone)]
pub struct TumblingWindows<S> {
    spec: WindowSpec,
    /// Open windows by their end.
    open: BTreeMap<i64, S>,
    /// Every window ending at or before this was emitted: either the watermark passed it,
    /// or the end of a bounded input flushed it. Events for those windows are late even if
    /// the watermark (kept real across a flush, so a later run can go on) has not passed.
    emitted_through: i64,
}

impl<S> TumblingWindows<S> {
    /// No window open, none emitted.
    pub fn new(spec: WindowSpec) -> Self {
        TumblingWindows { spec, open: BTreeMap::new(), emitted_through: NO_WATERMARK }
    }

    /// The windows' shape.
    pub fn spec(&self) -> WindowSpec {
        self.spec
    }

    /// The window ending at `end`, opened empty if it is not open yet. The caller checks
    /// lateness first with [`Self::is_late`].
    #[inline]
    pub fn window_mut(&mut self, end: i64) -> &mut S
    where
        S: Default,
    {
        self.open.entry(end).or_default()
    }

    /// True when the event's window has already been emitted, or fires at `watermark`.
    #[inline]
    pub fn is_late(&self, event_ms: i64, watermark: i64) -> bool {
        let end = self.spec.window_end(event_ms);
        end <= self.emitted_through || self.spec.fires(end, watermark)
    }

    /// The end of the last emitted window, for the checkpoint.
    pub fn emitted_through(&self) -> i64 {
        self.emitted_through
    }

    /// The earliest open window's end, to check cheaply whether anything can fire.
    pub fn next_end(&self) -> Option<i64> {
        self.open.keys().next().copied()
    }

    /// The open windows, oldest first.
    pub fn open(&self) -> impl Iterator<Item = (i64, &S)> {
        self.open.iter().map(|(end, s)| (*end, s))
    }

    /// How many windows are open.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Removes every window that fires at `watermark` and hands it to `emit`, oldest first.
    pub fn fire(&mut self, watermark: i64, mut emit: impl FnMut(i64, S)) {
        while let Some(entry) = self.open.first_entry() {
            let end = *entry.key();
            if !self.spec.fires(end, watermark) {
                break;
            }
            let window = entry.remove();
            self.emitted_through = self.emitted_through.max(end);
            emit(end, window);
        }
    }

    /// Takes the emitted mark from a checkpoint.
    pub fn restore_emitted(&mut self, emitted_through: i64) {
        self.emitted_through = emitted_through;
    }
}

/// Tumbling, epoch-aligned counts per postcode.
#[derive(Debug, Clone)]
pub struct TumblingCount {
    windows: TumblingWindows<Counts>,
}

impl TumblingCount {
    /// Windows of `size_ms`, emitted `lateness_ms` after their end passes the watermark.
    pub fn new(size_ms: i64, lateness_ms: i64) -> Self {
        TumblingCount { windows: TumblingWindows::new(WindowSpec::new(size_ms, lateness_ms)) }
    }

    /// Window size in ms.
    pub fn size_ms(&self) -> i64 {
        self.windows.spec().size_ms
    }

    /// The end of the window holding `event_ms`.
    #[inline]
    pub fn window_end(&self, event_ms: i64) -> i64 {
        self.windows.spec().window_end(event_ms)
    }

    /// True when the window ending at `end` fires at (or before) `watermark`.
    #[inline]
    pub fn fires(&self, end: i64, watermark: i64) -> bool {
        self.windows.spec().fires(end, watermark)
    }

    /// Counts an on-time event. The caller checks lateness first with [`Self::is_late`].
    #[inline]
    pub fn add(&mut self, event_ms: i64, postcode: &str) {
        let counts = self.windows.window_mut(self.window_end(event_ms));
        match counts.get_mut(postcode) {
            Some(n) => *n += 1,
            None => {
                counts.insert(postcode.into(), 1);
            }
        }
    }

    /// True when the event's window has already been emitted.
    #[inline]
    pub fn is_late(&self, event_ms: i64, watermark: i64) -> bool {
        self.windows.is_late(event_ms, watermark)
    }

    /// The end of the last emitted window, for the checkpoint.
    pub fn emitted_through(&self) -> i64 {
        self.windows.emitted_through()
    }

    /// Emits every open window: the end of a bounded input.
    pub fn flush(&mut self, out: &mut Vec<WindowCount>) {
        self.fire(i64::MAX, out);
    }

    /// The earliest open window's end, to check cheaply whether anything can fire.
    pub fn next_end(&self) -> Option<i64> {
        self.windows.next_end()
    }

    /// Removes and returns every window that fires at `watermark`, oldest first, postcodes
    /// sorted so output is deterministic.
    pub fn fire(&mut self, watermark: i64, out: &mut Vec<WindowCount>) {
        self.windows.fire(watermark, |end, counts| {
            let mut counts: Vec<_> = counts.into_iter().collect();
            counts.sort_unstable();
            out.extend(counts.into_iter().map(|(p, views)| WindowCount { end, postcode: p.into(), views }));
        });
    }

    /// Open windows, for the checkpoint.
    pub fn snapshot(&self) -> Vec<WindowCount> {
        let mut out = Vec::new();
        for (end, counts) in self.windows.open() {
            let mut counts: Vec<_> = counts.iter().collect();
            counts.sort_unstable();
            out.extend(counts.into_iter().map(|(p, &views)| WindowCount {
                end,
                postcode: p.to_string(),
                views,
            }));
        }
        out
    }

    /// Restores open windows and the emitted mark from a checkpoint.
    pub fn restore(&mut self, windows: &[WindowCount], emitted_through: i64) {
        self.windows.restore_emitted(emitted_through);
        for w in windows {
            *self.windows.window_mut(w.end).entry(w.postcode.as_str().into()).or_default() += w.views;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn a_window_fires_when_the_watermark_reaches_its_last_millisecond() {
        let mut w = TumblingCount::new(MIN, 0);
        w.add(5_000, "A");
        let mut out = Vec::new();
        w.fire(MIN - 2, &mut out);
        assert!(out.is_empty());
        w.fire(MIN - 1, &mut out);
        assert_eq!(out, vec![WindowCount { end: MIN, postcode: "A".into(), views: 1 }]);
        assert!(w.is_late(59_999, MIN - 1));
        assert!(!w.is_late(60_000, MIN - 1));
    }

    #[test]
    fn allowed_lateness_delays_firing_and_lateness() {
        let w = TumblingCount::new(MIN, 2_000);
        assert!(!w.fires(MIN, MIN - 1));
        assert!(w.fires(MIN, MIN + 1_999));
        assert!(!w.is_late(1, MIN + 1_998));
    }

    #[test]
    fn windows_before_the_epoch_align_to_it() {
        let w = TumblingCount::new(MIN, 0);
        assert_eq!(w.window_end(-1), 0);
        assert_eq!(w.window_end(-MIN), 0);
        assert_eq!(w.window_end(0), MIN);
    }

    fn sources(n: u32) -> Watermarks {
        let mut wm = Watermarks::new(5_000, NO_WATERMARK, BTreeMap::new());
        for p in 0..n {
            wm.add_source(p);
        }
        wm
    }

    fn at(max: i64) -> PartitionTime {
        PartitionTime { max_event_ms: Some(max), ..PartitionTime::default() }
    }

    #[test]
    fn a_source_not_read_yet_holds_the_watermark_at_its_start() {
        let mut wm = sources(3);
        wm.observe(0, 100_000);
        wm.declare(1, &at(90_000));
        assert_eq!(wm.advance(), NO_WATERMARK, "source 2 has said nothing: it may hold anything");
        wm.declare(2, &at(50_000));
        assert_eq!(wm.advance(), 45_000);
    }

    #[test]
    fn only_finished_and_idle_sources_stop_holding_the_watermark_and_it_never_goes_back() {
        let mut wm = sources(2);
        wm.observe(0, 100_000);
        wm.declare(1, &at(50_000));
        assert_eq!(wm.advance(), 45_000);
        wm.declare(1, &PartitionTime { idle: true, ..at(50_000) });
        assert_eq!(wm.advance(), 95_000, "an idle source holds nothing back");
        // It wakes with old data: it holds again, but the watermark does not go back.
        wm.observe(1, 60_000);
        assert_eq!(wm.advance(), 95_000);
        assert!(!wm.inputs()[&1].idle, "an event wakes an idle source");
        wm.observe(0, 200_000);
        assert_eq!(wm.advance(), 95_000, "source 1 at 60 000 holds it");
        wm.declare(1, &PartitionTime { finished: true, ..at(60_000) });
        assert_eq!(wm.advance(), 195_000);
    }

    #[test]
    fn a_replay_declaring_less_than_was_seen_does_not_move_a_source_back() {
        let mut wm = sources(2);
        wm.declare(0, &at(100_000));
        wm.declare(1, &at(100_000));
        assert_eq!(wm.advance(), 95_000);
        wm.declare(1, &at(10_000));
        assert_eq!(wm.inputs()[&1].max_event_ms, Some(100_000));
    }

    #[test]
    fn a_known_first_event_holds_the_watermark_just_before_it() {
        let mut wm = Watermarks::new(0, NO_WATERMARK, BTreeMap::new());
        wm.observe(0, 600_000);
        wm.declare(1, &PartitionTime { first_event_ms: Some(120_000), ..PartitionTime::default() });
        assert_eq!(wm.advance(), 119_999);
        let spec = WindowSpec::new(MIN, 0);
        assert!(!spec.fires(spec.window_end(120_000), 119_999), "its first event's window is open");
        assert!(spec.fires(spec.window_end(119_999), 119_999), "the window before it fires");
    }

    #[test]
    fn an_event_is_behind_when_its_window_fires_at_the_watermark() {
        let spec = WindowSpec::new(MIN, 0);
        assert!(spec.behind(59_999, MIN - 1));
        assert!(!spec.behind(60_000, MIN - 1));
        assert!(!spec.behind(59_999, MIN - 2));
        assert!(!spec.behind(0, NO_WATERMARK), "nothing is behind before the first event");
    }

    #[test]
    fn an_event_is_behind_its_own_partitions_watermark_whatever_the_others_did() {
        let spec = WindowSpec::new(MIN, 0);
        let own = at(MIN + 4_999);
        assert!(spec.behind_own_partition(&own, 5_000, 59_999), "the first window fires at 59 999");
        assert!(!spec.behind_own_partition(&own, 5_001, 59_999), "a longer delay keeps it open");
        assert!(!spec.behind_own_partition(&own, 5_000, MIN), "the next window is open");
        let quiet = PartitionTime::default();
        assert!(!spec.behind_own_partition(&quiet, 0, -MIN), "nothing is behind before a first event");
    }

    #[test]
    fn snapshot_and_restore_round_trip_open_windows() {
        let mut w = TumblingCount::new(MIN, 0);
        for (t, p) in [(1, "B"), (2, "A"), (MIN + 1, "A"), (3, "B")] {
            w.add(t, p);
        }
        let snap = w.snapshot();
        let mut back = TumblingCount::new(MIN, 0);
        back.restore(&snap, NO_WATERMARK);
        assert_eq!(back.snapshot(), snap);
        let mut out = Vec::new();
        back.fire(i64::MAX, &mut out);
        let views: Vec<_> = out.iter().map(|c| (c.end, c.postcode.as_str(), c.views)).collect();
        assert_eq!(views, vec![(MIN, "A", 1), (MIN, "B", 2), (2 * MIN, "A", 1)]);
    }
}

#[cfg(test)]
mod generic_tests {
    use super::*;

    #[test]
    fn windows_of_any_state_fire_in_order_once_and_refuse_late_events() {
        let mut w: TumblingWindows<Vec<&str>> = TumblingWindows::new(WindowSpec::new(60_000, 0));
        for (t, v) in [(61_000, "b"), (1_000, "a"), (2_000, "c")] {
            assert!(!w.is_late(t, NO_WATERMARK));
            w.window_mut(w.spec().window_end(t)).push(v);
        }
        let mut fired = Vec::new();
        w.fire(119_999, |end, s| fired.push((end, s)));
        assert_eq!(fired, vec![(60_000, vec!["a", "c"]), (120_000, vec!["b"])]);
        assert_eq!((w.emitted_through(), w.open_count()), (120_000, 0));
        assert!(w.is_late(119_999, NO_WATERMARK), "an emitted window stays closed");
        assert!(!w.is_late(120_000, 119_999));
    }
}

#[cfg(test)]
mod flush_tests {
    use super::*;

    #[test]
    fn after_a_flush_emitted_windows_stay_closed_and_later_ones_stay_open() {
        let mut w = TumblingCount::new(60_000, 0);
        w.add(1_000, "A");
        w.add(61_000, "A");
        let mut out = Vec::new();
        w.flush(&mut out);
        assert_eq!(out.len(), 2);
        let wm = 61_000 - 5_000;
        assert!(w.is_late(59_000, wm), "its window was flushed");
        assert!(w.is_late(119_999, wm), "the flushed window ending 120 000 is closed too");
        assert!(!w.is_late(120_000, wm), "a window after the flush is open");
    }
}
