//! Taking a checkpoint: close what must close, collect every task's files and state, and
//! commit them as one log entry; then publish, release revoked partitions, and report.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use object_store::path::Path;
use pageviews_core::commit::{TaskState, Totals, View};
use pageviews_core::table::{Partition, Table};
use pageviews_core::time::HOUR_MS;

use tracing::debug;

use super::worker::Pipeline;

/// How long a checkpoint waits for the exchange topic to take what was forwarded before it
/// is put off.
const EXCHANGE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
use super::PipelineError;

/// What decides that an hour partition is complete.
#[derive(Debug, Clone, Copy)]
pub(super) struct Completion {
    pub watermark_delay_ms: i64,
    pub allowed_lateness_ms: i64,
    pub commit_delay_ms: i64,
    /// Source partitions known: one without a committed state yet holds every hour back.
    pub source_partitions: u32,
}

impl Completion {
    /// True once every source partition's watermark (dead letters: the wall clock) has passed
    /// the end of `p` plus the commit delay: no task will write an on-time row to it any
    /// more. Finished and idle partitions hold nothing back; a partition without events yet
    /// holds at the start of time, or just before its first event when that is known
    /// ([`PartitionTime::hold`]), and one no task has committed yet holds everything back.
    ///
    /// [`PartitionTime::hold`]: pageviews_core::commit::PartitionTime::hold
    pub fn passed(&self, p: Partition, tasks: &[&TaskState], wall_ms: i64) -> bool {
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
    pub fn first_unpassed_hour(&self, max_event_ms: i64) -> i64 {
        max_event_ms
            .saturating_sub(self.watermark_delay_ms)
            .saturating_sub(self.allowed_lateness_ms)
            .saturating_sub(self.commit_delay_ms)
            .div_euclid(HOUR_MS)
    }

    /// True once `p` has passed and no task has a file of it open: its `_SUCCESS` can go.
    pub fn complete(&self, p: Partition, tasks: &[&TaskState], wall_ms: i64) -> bool {
        self.passed(p, tasks, wall_ms)
            && !tasks.iter().any(|t| t.open.iter().any(|f| f.table == p.table && f.hour == p.hour))
    }
}

impl Pipeline {
    /// Rolls the page_views files of hours a task's own event time has passed, between
    /// checkpoints: no on-time row of that partition goes to them any more. A replay crosses
    /// hours faster than checkpoints come, and each open file holds up to a part of encoded
    /// rows, so a day-long file peaked at 187 MiB with all 24 hours open until the next
    /// checkpoint. Only page_views: the other tables' rows follow the counting watermark or
    /// the wall clock, and are small. Judged on the task alone, this may roll a file early
    /// (a later row of the hour opens another), never late; `_SUCCESS` still waits for the
    /// checkpoint's rule over every task.
    pub(super) fn roll_passed_hours(&mut self) {
        let rules = self.completion();
        for task in self.tasks.values_mut() {
            let Some(max) = task.time.max_event_ms else { continue };
            let below = rules.first_unpassed_hour(max);
            let writer = &mut task.writers.page_views;
            if writer.open_hours().any(|h| h < below) {
                writer.close_complete(|h| h < below);
            }
        }
    }

    /// Commits everything processed so far. Skipped when nothing changed and no partition
    /// completed, unless `force`. The files of tasks in `closing` close (their partitions
    /// are being given up, or the pipeline stops), so all they committed is visible.
    pub(super) fn checkpoint(&mut self, force: bool, closing: &[u32]) -> Result<(), PipelineError> {
        let wall = self.clock.wall_ms();
        let rules = self.completion();
        // Hours every task has passed, judged on the view's states of the other instances'
        // tasks and on the running state of ours: their files close now.
        let passed: BTreeSet<Partition> = {
            let log = self.log.lock().map_err(|_| poisoned())?;
            let mine = self.provisional_states();
            let tasks = merged(log.view(), &mine);
            let open: BTreeSet<Partition> = self.tasks.values().flat_map(|t| t.open_partitions()).collect();
            open.into_iter()
                .chain(log.view().unmarked.iter().copied())
                .filter(|p| rules.passed(*p, &tasks, wall))
                .collect()
        };
        // A file rolled on age counts: its rows become visible, and its upload's failure must
        // stop the run, also when the source has nothing new.
        let rolled = |t: &super::task::Task| t.writers.iter().iter().any(|w| w.has_rolled());
        let dirty = self.tasks.values().any(|t| t.dirty || rolled(t)) || !closing.is_empty();
        if !dirty && !force && passed.is_empty() {
            self.report_caught_up();
            return Ok(());
        }
        // Real elapsed time: a measurement for metrics and logs, never a decision.
        let began = Instant::now();
        // A run's last checkpoint waits for the exchange however long it is away; any other
        // is taken later, while the loop goes on serving the consumer (its group session,
        // its rebalances).
        let last =
            !closing.is_empty() && closing.len() == self.tasks.len() && self.source.revoking().is_empty();
        let wait = (!last).then_some(EXCHANGE_WAIT);
        if !self.settle_exchange(wait)? {
            debug!("the exchange topic does not take events now: the checkpoint waits");
            return Ok(());
        }
        if let Some(relay) = self.relay.as_mut() {
            // Nothing relayed may be committed here before the counting worker counted it.
            relay.await_counted()?;
        }
        for task in self.tasks.values_mut() {
            let close_all = closing.contains(&task.partition);
            for w in task.writers.all() {
                let table = w.table();
                w.close_complete(|hour| passed.contains(&Partition { table, hour }));
                if close_all {
                    w.close_all();
                }
            }
        }
        for task in self.tasks.values_mut() {
            let cp = task.cp + 1;
            for w in task.writers.all() {
                w.start_checkpoint(cp)?;
            }
        }
        let mut states = Vec::with_capacity(self.tasks.len());
        for task in self.tasks.values_mut() {
            let next = task.cp + 2;
            let (mut files, mut open) = (std::mem::take(&mut task.sealed), Vec::new());
            for w in task.writers.all() {
                let (closed, still_open) = w.finish_checkpoint(next)?;
                files.extend(closed);
                open.extend(still_open);
            }
            task.sealed = files.clone();
            let Some(position) = self.source.position(task.partition) else { continue };
            states.push(task.state(position, files, open));
        }
        let committed_states = states.clone();
        let committed = {
            let mut log = self.log.lock().map_err(|_| poisoned())?;
            log.commit(states, |view, mine| {
                let tasks = merged(view, mine);
                let touched = mine
                    .iter()
                    .flat_map(|t| t.files.iter().map(|f| Partition { table: f.table, hour: f.hour }));
                let candidates: BTreeSet<Partition> = view.unmarked.iter().copied().chain(touched).collect();
                candidates.into_iter().filter(|p| rules.complete(*p, &tasks, wall)).collect()
            })?
        };
        self.drop_fenced(&committed.fenced)?;
        if let Some(relay) = self.relay.as_ref().filter(|r| r.is_counter()) {
            let counted = committed_states
                .iter()
                .filter(|s| !committed.fenced.contains(&s.partition))
                .filter_map(|s| s.counting.as_ref())
                .flat_map(|c| c.inputs.iter().filter_map(|(p, i)| Some((*p, i.high_water?))));
            relay.committed(counted);
        }
        let mut positions = BTreeMap::new();
        let mut rows = Totals::default();
        let mut stale_tails = Vec::new();
        for state in &committed_states {
            if committed.fenced.contains(&state.partition) {
                continue;
            }
            positions.insert(state.partition, state.position.clone());
            if let Some(task) = self.tasks.get_mut(&state.partition) {
                rows.add(&task.pending);
                stale_tails.extend(task.committed(state));
            }
        }
        for p in closing {
            // Given up or stopping: everything read is committed and visible.
            if self.source.revoking().contains(p) {
                self.tasks.remove(p);
            }
        }
        self.delete_tails(stale_tails);
        self.sync_exchange()?;
        self.source.committed(&positions);
        self.checkpoints += 1;
        self.report_checkpoint(&committed_states, &rows, committed.version, began.elapsed());
        Ok(())
    }

    /// Deletes tails no committed state names any more, so `_staging` does not grow with
    /// every checkpoint of a long-open file. Best effort: one left behind (a failure, a kill)
    /// is removed when the partition is next recovered.
    fn delete_tails(&self, tails: Vec<String>) {
        if tails.is_empty() {
            return;
        }
        let storage = &self.setup.storage;
        let deletes = tails.iter().map(|t| async move { (t, storage.delete(&Path::from(t.as_str())).await) });
        for (tail, result) in storage.block_on(futures::future::join_all(deletes)) {
            if let Err(e) = result {
                debug!(tail, error = %e, "could not delete a superseded tail; recovery will");
            }
        }
    }

    fn completion(&self) -> Completion {
        Completion {
            watermark_delay_ms: self.setup.rules.watermark_delay_ms,
            allowed_lateness_ms: self.setup.rules.allowed_lateness_ms,
            commit_delay_ms: self.partition_commit_delay_ms,
            source_partitions: self.setup.source_partitions,
        }
    }

    /// Our tasks' states as they stand, for deciding completion before the checkpoint.
    fn provisional_states(&self) -> Vec<TaskState> {
        self.tasks
            .values()
            .filter_map(|t| Some(t.state(self.source.position(t.partition)?, Vec::new(), Vec::new())))
            .collect()
    }
}

/// The view's task states with `mine` in place of the ones they supersede.
fn merged<'a>(view: &'a View, mine: &'a [TaskState]) -> Vec<&'a TaskState> {
    let ours: BTreeSet<u32> = mine.iter().map(|t| t.partition).collect();
    view.tasks.values().filter(|t| !ours.contains(&t.partition)).chain(mine.iter()).collect()
}

pub(super) fn poisoned() -> PipelineError {
    PipelineError::Incompatible("a thread panicked while holding the commit log".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pageviews_core::commit::{PartitionTime, Position};

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
