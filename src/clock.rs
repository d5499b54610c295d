//! Time as a parameter: the pipeline reads processing time and wall-clock time, and waits,
//! only through a [`Clock`], so tests drive time instead of sleeping.
//!
//! Processing time paces the generator, judges idleness, ages files and schedules
//! checkpoints; wall-clock time stamps dead letters and completes their partitions. Event
//! time never comes from a clock: it comes from the records.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the pipeline gets the time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Processing time: milliseconds since the clock started, never going back.
    fn now_ms(&self) -> u64;
    /// Wall-clock time, UTC milliseconds since the epoch.
    fn wall_ms(&self) -> i64;
    /// Waits `d` of this clock's time.
    fn sleep(&self, d: Duration);
}

/// The machine's clocks.
#[derive(Debug)]
pub struct SystemClock {
    started: Instant,
}

impl SystemClock {
    /// A clock whose processing time starts now.
    pub fn new() -> Self {
        SystemClock { started: Instant::now() }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn wall_ms(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// Virtual time for tests: it moves only when the pipeline waits on it or a test calls
/// [`ManualClock::advance`], and a wait returns at once. A generator paced at 1000 events/s
/// on this clock makes a minute of events as fast as the machine can.
///
/// A test can also hold time at a point ([`ManualClock::hold_at`]): a wait that would pass it
/// blocks until [`ManualClock::release`], so the test looks at the pipeline frozen at an
/// exact instant of its run ([`ManualClock::held`] tells when it is).
#[derive(Debug)]
pub struct ManualClock {
    state: Mutex<ManualState>,
    moved: Condvar,
    wall_start_ms: i64,
}

#[derive(Debug)]
struct ManualState {
    now_ms: u64,
    hold_at_ms: u64,
    /// Waits blocked at the hold.
    held: usize,
}

impl ManualClock {
    /// A clock at processing time 0 whose wall clock reads `wall_start_ms`.
    pub fn new(wall_start_ms: i64) -> Self {
        ManualClock {
            state: Mutex::new(ManualState { now_ms: 0, hold_at_ms: u64::MAX, held: 0 }),
            moved: Condvar::new(),
            wall_start_ms,
        }
    }

    fn state(&self) -> MutexGuard<'_, ManualState> {
        // The state is two integers, always consistent: a panic elsewhere cannot corrupt it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves time forward by `d`, past any hold.
    pub fn advance(&self, d: Duration) {
        self.state().now_ms += d.as_millis() as u64;
        self.moved.notify_all();
    }

    /// Waits on this clock will not move it past `ms` until [`ManualClock::release`].
    pub fn hold_at(&self, ms: u64) {
        self.state().hold_at_ms = ms;
        self.moved.notify_all();
    }

    /// Lets time move freely again.
    pub fn release(&self) {
        self.hold_at(u64::MAX);
    }

    /// How many waits are blocked at the hold now. Time reaching the hold is not enough to
    /// know the pipeline is frozen: the wait that moved it there may have returned, and the
    /// loop may still be working at that instant.
    pub fn held(&self) -> usize {
        self.state().held
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.state().now_ms
    }

    fn wall_ms(&self) -> i64 {
        self.wall_start_ms.saturating_add(self.now_ms() as i64)
    }

    fn sleep(&self, d: Duration) {
        let mut st = self.state();
        // At least a millisecond, so a loop that waits for time to pass always sees it pass.
        let target = st.now_ms + (d.as_millis() as u64).max(1);
        if target > st.hold_at_ms {
            st.held += 1;
            while target > st.hold_at_ms {
                if st.now_ms < st.hold_at_ms {
                    st.now_ms = st.hold_at_ms;
                    self.moved.notify_all();
                }
                st = self.moved.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            st.held -= 1;
        }
        st.now_ms = st.now_ms.max(target);
        self.moved.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_time_moves_only_when_waited_on_or_advanced() {
        let clock = ManualClock::new(1_000);
        assert_eq!((clock.now_ms(), clock.wall_ms()), (0, 1_000));
        clock.sleep(Duration::from_millis(250));
        clock.advance(Duration::from_secs(1));
        assert_eq!((clock.now_ms(), clock.wall_ms()), (1_250, 2_250));
        clock.sleep(Duration::ZERO);
        assert_eq!(clock.now_ms(), 1_251, "a wait always lets time pass");
    }

    #[test]
    fn a_held_clock_stops_waits_at_the_hold_until_released() {
        let clock = std::sync::Arc::new(ManualClock::new(0));
        clock.hold_at(1_000);
        let sleeper = {
            let clock = clock.clone();
            std::thread::spawn(move || clock.sleep(Duration::from_secs(5)))
        };
        while clock.held() == 0 {
            std::thread::yield_now();
        }
        assert!(!sleeper.is_finished(), "the wait is held at 1 s");
        assert_eq!(clock.now_ms(), 1_000);
        clock.release();
        sleeper.join().unwrap();
        assert_eq!(clock.now_ms(), 5_000);
    }
}
