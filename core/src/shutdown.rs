//! The request to stop, shared by everything that waits: the record loop, storage retries,
//! the wait for a broker. A stop is honoured within [`STOP_GRACE`] in every state: what can
//! still be committed in that time is, and a wait that would outlast it gives up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

// Tokio's clock, so tests of the waits can drive it (it is the system clock otherwise).
use tokio::time::Instant;

/// How long after a stop request a wait may still go on (a storage call retrying through an
/// outage, a flush to a broker that is away) before it gives up. The final checkpoint needs
/// the rest of the few seconds a supervisor grants (Kubernetes: 30 s by default).
pub const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct State {
    triggered: AtomicBool,
    at: OnceLock<Instant>,
}

/// Asks a running pipeline to checkpoint and stop. Cheap to clone; safe from signal tasks.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<State>);

impl Shutdown {
    /// Requests shutdown.
    pub fn trigger(&self) {
        let _ = self.0.at.set(Instant::now());
        self.0.triggered.store(true, Ordering::SeqCst);
    }

    /// True once shutdown was requested.
    pub fn is_triggered(&self) -> bool {
        self.0.triggered.load(Ordering::SeqCst)
    }

    /// True once shutdown was requested longer than [`STOP_GRACE`] ago: a wait gives up.
    pub fn grace_passed(&self) -> bool {
        self.grace_left().is_some_and(|left| left.is_zero())
    }

    /// What is left of the grace once shutdown was requested; `None` before.
    pub fn grace_left(&self) -> Option<Duration> {
        self.0.at.get().map(|at| STOP_GRACE.saturating_sub(at.elapsed()))
    }

    /// Waits until shutdown is requested (checking every 50 ms).
    pub async fn triggered(&self) {
        while !self.is_triggered() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sleeps for `d`, or less once shutdown is requested; true when it was.
    pub fn sleep(&self, d: Duration) -> bool {
        let until = std::time::Instant::now() + d;
        loop {
            if self.is_triggered() {
                return true;
            }
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_is_seen_at_once_and_its_grace_runs_from_the_request() {
        let stop = Shutdown::default();
        assert!(!stop.is_triggered() && !stop.grace_passed());
        let waiter = {
            let stop = stop.clone();
            std::thread::spawn(move || stop.sleep(Duration::from_secs(60)))
        };
        stop.trigger();
        assert!(waiter.join().unwrap(), "a sleep ends when the stop comes");
        assert!(stop.is_triggered());
        assert!(!stop.grace_passed(), "the grace has only begun");
    }
}
