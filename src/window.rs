//! Event time: per-partition watermarks and the tumbling window count.
//!
//! Sits between decode and the writers. Guarantees (DESIGN §4):
//! - a partition's watermark is the highest event time it delivered minus the bound; the
//!   pipeline's is the minimum over assigned partitions that are neither finished nor idle,
//!   and never moves backwards;
//! - a window `[start, end)` is emitted once, when the watermark reaches `end - 1 +
//!   allowed_lateness` (Flink's rule), and an event whose window was already emitted is
//!   late: it never changes an emitted count.
//!
//! Time is a parameter: idleness is judged against the `now_ms` the caller passes in.

use std::collections::{BTreeMap, HashMap};

use rustc_hash::FxBuildHasher;

pub use pageviews_core::commit::{PartitionTime, WindowCount, NO_WATERMARK};

/// One partition's event-time progress while running: what the checkpoint keeps, plus when
/// its last record came (not persisted: idleness restarts on recovery).
#[derive(Debug, Clone)]
struct Progress {
    time: PartitionTime,
    last_seen_ms: u64,
    assigned: bool,
}

/// Tracks watermarks across partitions.
#[derive(Debug, Clone)]
pub struct Watermarks {
    delay_ms: i64,
    idle_timeout_ms: u64,
    parts: BTreeMap<u32, Progress>,
    current: i64,
}

impl Watermarks {
    /// A tracker with the out-of-orderness bound and idle timeout, starting from `restored`.
    pub fn new(
        delay_ms: i64,
        idle_timeout_ms: u64,
        restored: Option<(i64, BTreeMap<u32, PartitionTime>)>,
    ) -> Self {
        let (current, times) = restored.unwrap_or((NO_WATERMARK, BTreeMap::new()));
        let parts = times
            .into_iter()
            .map(|(p, time)| (p, Progress { time, last_seen_ms: 0, assigned: false }))
            .collect();
        Watermarks { delay_ms, idle_timeout_ms, parts, current }
    }

    /// The pipeline watermark.
    pub fn current(&self) -> i64 {
        self.current
    }

    /// Per-partition progress, for the checkpoint.
    pub fn partitions(&self) -> BTreeMap<u32, PartitionTime> {
        self.parts.iter().map(|(p, progress)| (*p, progress.time.clone())).collect()
    }

    /// A partition starts delivering; idleness is measured from `now_ms`.
    pub fn assign(&mut self, partition: u32, now_ms: u64) {
        let p = self.part(partition);
        p.assigned = true;
        p.last_seen_ms = now_ms;
    }

    /// A partition was given up in a rebalance: it stops holding the watermark back until
    /// it is assigned again.
    pub fn revoke(&mut self, partition: u32) {
        self.part(partition).assigned = false;
    }

    /// A partition is done and stops holding the watermark back.
    pub fn finish(&mut self, partition: u32) {
        self.part(partition).time.finished = true;
    }

    fn part(&mut self, partition: u32) -> &mut Progress {
        self.parts.entry(partition).or_insert(Progress {
            time: PartitionTime::default(),
            last_seen_ms: 0,
            assigned: false,
        })
    }

    /// Records an event. Returns true when the pipeline watermark may have advanced.
    #[inline]
    pub fn observe(&mut self, partition: u32, event_ms: i64, now_ms: u64) -> bool {
        let p = self.part(partition);
        p.last_seen_ms = now_ms;
        p.assigned = true;
        match p.time.max_event_ms {
            Some(max) if max >= event_ms => false,
            _ => {
                p.time.max_event_ms = Some(event_ms);
                true
            }
        }
    }

    /// Recomputes the pipeline watermark from the partitions that hold it back.
    pub fn advance(&mut self, now_ms: u64) -> i64 {
        let mut min: Option<i64> = None;
        for p in self.parts.values() {
            let idle = now_ms.saturating_sub(p.last_seen_ms) >= self.idle_timeout_ms;
            if !p.assigned || p.time.finished || idle {
                continue;
            }
            let wm = p.time.max_event_ms.map_or(NO_WATERMARK, |m| m.saturating_sub(self.delay_ms));
            min = Some(min.map_or(wm, |x: i64| x.min(wm)));
        }
        if let Some(wm) = min {
            self.current = self.current.max(wm);
        }
        self.current
    }
}

/// Postcodes are short and not attacker-chosen in a way that matters for a per-window map,
/// and SipHash was a visible share of the per-record cost: FxHash instead.
type Counts = HashMap<Box<str>, u64, FxBuildHasher>;

/// Tumbling, epoch-aligned counts per postcode.
#[derive(Debug, Clone)]
pub struct TumblingCount {
    size_ms: i64,
    lateness_ms: i64,
    open: BTreeMap<i64, Counts>,
    /// Every window ending at or before this was emitted: either the watermark passed it,
    /// or the end of a bounded input flushed it. Events for those windows are late even if
    /// the watermark (kept real across a flush, so a later run can go on) has not passed.
    emitted_through: i64,
}

impl TumblingCount {
    /// Windows of `size_ms`, emitted `lateness_ms` after their end passes the watermark.
    pub fn new(size_ms: i64, lateness_ms: i64) -> Self {
        TumblingCount { size_ms, lateness_ms, open: BTreeMap::new(), emitted_through: NO_WATERMARK }
    }

    /// Window size in ms.
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

    /// Counts an on-time event. The caller checks lateness first with [`Self::is_late`].
    #[inline]
    pub fn add(&mut self, event_ms: i64, postcode: &str) {
        let counts = self.open.entry(self.window_end(event_ms)).or_default();
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
        let end = self.window_end(event_ms);
        end <= self.emitted_through || self.fires(end, watermark)
    }

    /// The end of the last emitted window, for the checkpoint.
    pub fn emitted_through(&self) -> i64 {
        self.emitted_through
    }

    /// Emits every open window: the end of a bounded input.
    pub fn flush(&mut self, out: &mut Vec<WindowCount>) {
        self.fire(i64::MAX, out);
    }

    /// The earliest open window's end, to check cheaply whether anything can fire.
    pub fn next_end(&self) -> Option<i64> {
        self.open.keys().next().copied()
    }

    /// Removes and returns every window that fires at `watermark`, oldest first, postcodes
    /// sorted so output is deterministic.
    pub fn fire(&mut self, watermark: i64, out: &mut Vec<WindowCount>) {
        while let Some(&end) = self.open.keys().next() {
            if !self.fires(end, watermark) {
                break;
            }
            let Some(counts) = self.open.remove(&end) else { break };
            self.emitted_through = self.emitted_through.max(end);
            let mut counts: Vec<_> = counts.into_iter().collect();
            counts.sort_unstable();
            out.extend(counts.into_iter().map(|(p, views)| WindowCount { end, postcode: p.into(), views }));
        }
    }

    /// Open windows, for the checkpoint.
    pub fn snapshot(&self) -> Vec<WindowCount> {
        let mut out = Vec::new();
        for (&end, counts) in &self.open {
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
        self.emitted_through = emitted_through;
        for w in windows {
            *self.open.entry(w.end).or_default().entry(w.postcode.as_str().into()).or_default() += w.views;
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

    #[test]
    fn the_watermark_is_the_minimum_over_active_partitions_and_never_goes_back() {
        let mut wm = Watermarks::new(5_000, 1_000, None);
        wm.assign(0, 0);
        wm.assign(1, 0);
        wm.observe(0, 100_000, 0);
        assert_eq!(wm.advance(0), NO_WATERMARK, "partition 1 has no data and is not idle yet");
        wm.observe(1, 50_000, 10);
        assert_eq!(wm.advance(10), 45_000);
        // Partition 1 goes quiet: after the idle timeout it no longer holds others back.
        wm.observe(0, 200_000, 1_500);
        assert_eq!(wm.advance(1_009), 45_000);
        assert_eq!(wm.advance(1_010), 195_000);
        // It wakes up with old data: the watermark does not go back.
        wm.observe(1, 60_000, 1_600);
        assert_eq!(wm.advance(1_600), 195_000);
    }

    #[test]
    fn a_finished_partition_stops_holding_the_watermark() {
        let mut wm = Watermarks::new(0, 60_000, None);
        wm.assign(0, 0);
        wm.assign(1, 0);
        wm.observe(0, 10, 0);
        wm.observe(1, 99, 0);
        assert_eq!(wm.advance(0), 10);
        wm.finish(0);
        assert_eq!(wm.advance(0), 99);
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
