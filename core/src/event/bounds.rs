//! Which decoded event times the pipeline takes, checked right after decoding.
//!
//! Two kinds of valid-looking timestamps would corrupt the tables if let through:
//! - one far ahead of the wall clock (a producer's clock or time zone gone wrong, a typo'd
//!   year) would move the watermark there, and every later event would be late until real
//!   time caught up — for an event dated 2100, forever. Events more than `--max-future`
//!   ahead are dead letters with reason `future_timestamp` instead, and never reach a
//!   watermark. Kafka's brokers apply the same idea to record timestamps
//!   (`message.timestamp.after.max.ms`, 1 hour by default since Kafka 4.0), as does Druid
//!   (`earlyMessageRejectionPeriod`).
//! - one whose window starts before year 0000 or ends after 9999-12-31 23:59:59.999 cannot
//!   be written: the tables' timestamps and partition folders have four-digit years. Such
//!   events are dead letters with reason `bad_timestamp` (the window is named in the error).

use std::time::Duration;

use crate::time::{TimestampError, MAX_MS, MIN_MS};

use super::{DecodeError, PageView};

/// The default `--max-future`: Kafka 4.0's default for how far ahead of the broker's clock a
/// record's timestamp may be (`message.timestamp.after.max.ms`). Clocks synchronised by NTP
/// are milliseconds apart, so an hour only catches timestamps that are wrong; and a wrong one
/// just under it holds the watermark at most an hour ahead.
pub const DEFAULT_MAX_FUTURE: Duration = Duration::from_secs(3600);

/// The event times a pipeline accepts: not too far in the future, and in a window the tables
/// can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTimeBounds {
    max_future_ms: i64,
    /// Earliest event time whose window starts in year 0000 or later.
    first_ms: i64,
    /// Latest event time whose window ends by 9999-12-31 23:59:59.999.
    last_ms: i64,
}

impl EventTimeBounds {
    /// Bounds for `--max-future` and `--window` (epoch-aligned windows of `window_ms`).
    pub fn new(max_future_ms: i64, window_ms: i64) -> Self {
        let size = window_ms.max(1);
        // Windows are [k·size, (k+1)·size): the first one that starts at or after MIN_MS,
        // and the last one whose end (shown as the `window` column) is at most MAX_MS.
        let k_first = MIN_MS.div_euclid(size) + i64::from(MIN_MS.rem_euclid(size) != 0);
        let k_last = MAX_MS.div_euclid(size) - 1;
        let first_ms = k_first.saturating_mul(size);
        let last_ms = k_last.saturating_add(1).saturating_mul(size).saturating_sub(1);
        EventTimeBounds { max_future_ms: max_future_ms.max(0), first_ms, last_ms }
    }

    /// `pv` if its event time is accepted at wall-clock time `wall_ms`; otherwise the dead
    /// letter's error.
    #[inline]
    pub fn check<'a>(&self, pv: PageView<'a>, wall_ms: i64) -> Result<PageView<'a>, DecodeError> {
        let ts = pv.timestamp;
        if ts > wall_ms.saturating_add(self.max_future_ms) {
            return Err(DecodeError::FutureTimestamp {
                timestamp: ts,
                wall: wall_ms,
                max_future_ms: self.max_future_ms,
            });
        }
        if ts < self.first_ms || ts > self.last_ms {
            return Err(DecodeError::BadTimestamp {
                value: crate::time::format_timestamp(ts),
                reason: TimestampError::WindowOutOfRange,
            });
        }
        Ok(pv)
    }

    /// The accepted event times whatever the clock: (first, last), UTC ms.
    pub fn window_range(&self) -> (i64, i64) {
        (self.first_ms, self.last_ms)
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::time::{format_timestamp, parse_timestamp};

    fn at(ts: i64) -> PageView<'static> {
        PageView { user_id: 1, postcode: Cow::Borrowed("A"), webpage: Cow::Borrowed("w"), timestamp: ts }
    }

    #[test]
    fn an_event_more_than_max_future_ahead_of_the_clock_is_refused() {
        let wall = parse_timestamp("2020-06-01 12:00:00").unwrap();
        let b = EventTimeBounds::new(3_600_000, 60_000);
        assert!(b.check(at(wall + 3_600_000), wall).is_ok(), "exactly max-future ahead is fine");
        let err = b.check(at(wall + 3_600_001), wall).unwrap_err();
        assert_eq!(err.reason().as_str(), "future_timestamp");
        let text = err.to_string();
        assert!(
            text.contains("2020-06-01 13:00:00.001") && text.contains("1h") && text.contains("--max-future"),
            "{text}"
        );
        assert!(b.check(at(MIN_MS), wall).is_ok(), "the past is never refused for being early");
    }

    #[test]
    fn the_first_and_last_accepted_events_have_windows_inside_the_supported_years() {
        for window in [1, 1_000, 60_000, 7 * 60_000, 3_600_000, 86_400_000, 7 * 86_400_000] {
            let b = EventTimeBounds::new(i64::MAX, window);
            let (first, last) = b.window_range();
            let start = first.div_euclid(window) * window;
            let end = last.div_euclid(window) * window + window;
            assert!(start >= MIN_MS && end <= MAX_MS, "window {window}: {start}..{end}");
            assert!(b.check(at(first), MAX_MS).is_ok() && b.check(at(last), MAX_MS).is_ok());
            // One millisecond further is a window that crosses an edge.
            for outside in [first - 1, last + 1] {
                if (MIN_MS..=MAX_MS).contains(&outside) {
                    let err = b.check(at(outside), MAX_MS).unwrap_err();
                    assert_eq!(
                        err.reason().as_str(),
                        "bad_timestamp",
                        "window {window}: {}",
                        format_timestamp(outside)
                    );
                }
            }
        }
        // One-minute windows: all of year 0000 but the last minute of 9999-12-31.
        let b = EventTimeBounds::new(i64::MAX, 60_000);
        assert_eq!(b.window_range(), (MIN_MS, parse_timestamp("9999-12-31 23:58:59.999").unwrap()));
    }
}
