//! When an hour partition is complete: the rule behind `_SUCCESS`, and behind rolling a
//! task's page_views files between checkpoints.

use pageviews_core::commit::TaskState;
use pageviews_core::table::{Partition, Table};
use pageviews_core::time::HOUR_MS;

use super::task::TaskSetup;

/// What decides that an hour partition is complete.
#[derive(Debug, Clone, Copy)]
pub(super) struct Completion {
    pub(crate) watermark_delay_ms: i64,
    pub(crate) allowed_lateness_ms: i64,
    pub(crate) commit_delay_ms: i64,
    /// Source partitions known: one without a committed state yet holds every hour back.
    pub(crate) source_partitions: u32,
}

impl Completion {
    /// The rules for tasks made with `setup`, with `--partition-commit-delay`
    /// `commit_delay_ms`.
    pub(crate) fn of(setup: &TaskSetup, commit_delay_ms: i64) -> Self {
        Completion {
            watermark_delay_ms: setup.rules.watermark_delay_ms,
            allowed_lateness_ms: setup.rules.allowed_lateness_ms,
            commit_delay_ms,
            source_partitions: setup.source_partitions,
        }
    }

    /// True once every source partition's watermark (dead letters: the wall clock) has passed
    /// the end of `p` plus the commit delay: no task will write an on-time row to it any
    /// more. Finished and idle partitions hold nothing back; a partition without events yet
    /// holds at the start of time, or just before its first event when that is known
    /// ([`PartitionTime::hold`]), and one no task has committed yet holds everything back.
    ///
    /// [`PartitionTime::hold`]: pageviews_core::commit::PartitionTime::hold
    pub(crate) fn passed(&self, p: Partition, tasks: &[&TaskState], wall_ms: i64) -> bool {
        let all_known = (0..self.source_partitions).all(|s| tasks.iter().any(|t| t.partition == s));
        if all_known && !tasks.is_empty() && tasks.iter().all(|t| t.time.finished) {
            return true;
        }
        let end = (p.hour + 1).saturating_mul(HOUR_MS).saturating_add(self.commit_delay_ms);
        if p.table == Table::DeadLetters {
            return wall_ms >= end;
        }
        let need = end.saturating_add(self.allowed_lateness_ms);
        let delay = self.watermark_delay_ms;
        let holding: Vec<i64> = tasks.iter().filter_map(|t| t.time.hold(delay)).collect();
        // When every partition is idle nothing moves the watermark, as for the windows: an
        // hour passes only as far as the idle partitions with events had passed it. A
        // pause of the whole stream must not complete the hour it is in.
        let watermark = if holding.is_empty() {
            let idle = tasks.iter().filter(|t| !t.time.finished && t.time.max_event_ms.is_some());
            idle.map(|t| t.time.own_watermark(delay)).min()
        } else {
            holding.into_iter().min()
        };
        all_known && watermark.is_none_or(|wm| wm >= need)
    }

    /// The first hour a source partition whose newest event is `max_event_ms` has not
    /// passed (by [`Completion::passed`]'s rule for that partition alone): every hour before
    /// it has.
    pub(crate) fn first_unpassed_hour(&self, max_event_ms: i64) -> i64 {
        max_event_ms
            .saturating_sub(self.watermark_delay_ms)
            .saturating_sub(self.allowed_lateness_ms)
            .saturating_sub(self.commit_delay_ms)
            .div_euclid(HOUR_MS)
    }

    /// True once `p` has passed and no task has a file of it open: its `_SUCCESS` can go.
    pub(crate) fn complete(&self, p: Partition, tasks: &[&TaskState], wall_ms: i64) -> bool {
        self.passed(p, tasks, wall_ms)
            && !tasks.iter().any(|t| t.open.iter().any(|f| f.table == p.table && f.hour == p.hour))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    use pageviews_core::commit::{PartitionTime, Position, Totals};

    fn task(max_event_ms: i64) -> TaskState {
        TaskState {
            partition: 0,
            claim: 1,
            cp: 0,
            position: Position::Generator { next_seq: 0, shift_ms: 0 },
            time: PartitionTime { max_event_ms: Some(max_event_ms), ..PartitionTime::default() },
            counting: None,
            forwarded_to: BTreeSet::new(),
            files: Vec::new(),
            open: Vec::new(),
            totals: Totals::default(),
        }
    }

    #[test]
    fn the_first_unpassed_hour_is_where_the_completion_rule_stops() {
        let rules = Completion {
            watermark_delay_ms: 5_000,
            allowed_lateness_ms: 2_000,
            commit_delay_ms: 60_000,
            source_partitions: 1,
        };
        // Around the moment hour 3 passes (its end + commit delay + lateness + watermark
        // delay), and far before the epoch.
        let edge = 4 * HOUR_MS + 67_000;
        for max in [edge - 1, edge, edge + 1, 0, -3 * HOUR_MS] {
            let state = task(max);
            let first = rules.first_unpassed_hour(max);
            for hour in [first - 2, first - 1, first, first + 1] {
                let p = Partition { table: Table::PageViews, hour };
                assert_eq!(rules.passed(p, &[&state], 0), hour < first, "max {max}, hour {hour}");
            }
        }
    }
}
