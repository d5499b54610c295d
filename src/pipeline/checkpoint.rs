//! Taking a checkpoint: close what must close, collect every task's files and state, and
//! commit them as one log entry; then publish, release revoked partitions, and report.
//!
//! A checkpoint borrows the worker's parts for its length ([`Parts`]): it is the one step
//! that touches all of them, in the order ARCHITECTURE.md §5 gives.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use object_store::path::Path;
use pageviews_core::commit::{Log, TaskState, Totals, View};
use pageviews_core::table::Partition;
use tracing::{debug, warn};

use super::completion::Completion;
use super::forward::Forwarding;
use super::report::{Committed, Reporter};
use super::tasks::Tasks;
use super::{PipelineError, Shutdown};
use crate::clock::Clock;
use crate::source::Source;

/// How long a checkpoint waits for the exchange topic to take what was forwarded before it
/// is put off (doubled for each one put off in a row, to 8 s).
const EXCHANGE_WAIT: Duration = Duration::from_secs(1);

/// Why a checkpoint is taken, which decides what closes and how long it may wait.
#[derive(Debug, Clone, Copy)]
pub(super) enum Occasion<'a> {
    /// On schedule: skipped when nothing changed and no hour completed.
    Scheduled,
    /// Asked for by a relaying worker, which waits for it: taken even with nothing new.
    Asked,
    /// These partitions are given up: their files close, so all they committed is visible.
    Revoking(&'a [u32]),
    /// The run stops: every file closes, and the exchange is waited for (until the stop's
    /// grace passes) rather than the checkpoint put off.
    Last,
}

/// The worker's parts a checkpoint works on.
pub(super) struct Parts<'a> {
    pub(crate) tasks: &'a mut Tasks,
    pub(crate) source: &'a mut dyn Source,
    pub(crate) log: &'a Mutex<Log>,
    pub(crate) forwarding: &'a mut Forwarding,
    pub(crate) reporter: &'a Reporter,
    pub(crate) clock: &'a dyn Clock,
    pub(crate) stop: &'a Shutdown,
    /// `--partition-commit-delay`.
    pub(crate) commit_delay_ms: i64,
    /// Partitions come and go with a consumer group (Kafka); otherwise a fenced one was
    /// taken by another run for good.
    pub(crate) rebalances: bool,
}

impl Parts<'_> {
    fn completion(&self) -> Completion {
        Completion::of(self.tasks.setup(), self.commit_delay_ms)
    }

    /// Commits everything processed so far (see [`Occasion`] for when and what closes).
    pub(super) fn checkpoint(mut self, occasion: Occasion<'_>) -> Result<(), PipelineError> {
        let wall = self.clock.wall_ms();
        let rules = self.completion();
        let all = self.tasks.partitions();
        let (force, closing, last) = match occasion {
            Occasion::Scheduled => (false, &[][..], false),
            Occasion::Asked => (true, &[][..], false),
            Occasion::Revoking(partitions) => (true, partitions, false),
            Occasion::Last => (true, &all[..], true),
        };
        // Hours every task has passed, judged on the view's states of the other instances'
        // tasks and on the running state of ours: their files close now.
        let passed: BTreeSet<Partition> = {
            let log = self.log.lock().map_err(|_| poisoned())?;
            let mine = self.provisional_states();
            let tasks = merged(log.view(), &mine);
            let open: BTreeSet<Partition> = self.tasks.iter().flat_map(|t| t.open_partitions()).collect();
            open.into_iter()
                .chain(log.view().unmarked.iter().copied())
                .filter(|p| rules.passed(*p, &tasks, wall))
                .collect()
        };
        // A file rolled on age counts: its rows become visible, and its upload's failure must
        // stop the run, also when the source has nothing new.
        let rolled = |t: &super::task::Task| t.writers.iter().iter().any(|w| w.has_rolled());
        let dirty = self.tasks.iter().any(|t| t.dirty || rolled(t)) || !closing.is_empty();
        if !dirty && !force && passed.is_empty() {
            self.reporter.caught_up();
            return Ok(());
        }
        // Real elapsed time: a measurement for metrics and logs, never a decision.
        let began = Instant::now();
        // A run's last checkpoint waits for the exchange however long it is away (within the
        // stop's grace); any other is taken later, while the loop goes on serving the
        // consumer (its group session, its rebalances).
        let wait = (!last).then_some(EXCHANGE_WAIT);
        let now = self.clock.now_ms();
        if !self.forwarding.settle(self.tasks, now, wait, self.stop)? {
            debug!("the exchange topic does not take events now: the checkpoint waits");
            return Ok(());
        }
        for task in self.tasks.iter_mut() {
            let close_all = closing.contains(&task.partition);
            for w in task.writers.all() {
                let table = w.table();
                w.close_complete(|hour| passed.contains(&Partition { table, hour }));
                if close_all {
                    w.close_all();
                }
            }
        }
        for task in self.tasks.iter_mut() {
            let cp = task.cp + 1;
            for w in task.writers.all() {
                w.start_checkpoint(cp)?;
            }
        }
        let mut states = Vec::new();
        for task in self.tasks.iter_mut() {
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
        let (committed, totals, newest_committed_ms) = {
            let mut log = self.log.lock().map_err(|_| poisoned())?;
            let committed = log.commit(states, |view, mine| {
                let tasks = merged(view, mine);
                let touched = mine
                    .iter()
                    .flat_map(|t| t.files.iter().map(|f| Partition { table: f.table, hour: f.hour }));
                let candidates: BTreeSet<Partition> = view.unmarked.iter().copied().chain(touched).collect();
                candidates.into_iter().filter(|p| rules.complete(*p, &tasks, wall)).collect()
            })?;
            let view = log.view();
            (committed, view.totals(), view.tasks.values().filter_map(|t| t.time.max_event_ms).max())
        };
        self.drop_fenced(&committed.fenced)?;
        self.forwarding.committed(&committed_states, &committed.fenced);
        let mut positions = BTreeMap::new();
        let mut rows = Totals::default();
        let mut stale_tails = Vec::new();
        for state in &committed_states {
            if committed.fenced.contains(&state.partition) {
                continue;
            }
            positions.insert(state.partition, state.position.clone());
            if let Some(task) = self.tasks.get_mut(state.partition) {
                rows.add(&task.pending);
                stale_tails.extend(task.committed(state));
            }
        }
        let revoking = self.source.revoking();
        for p in closing.iter().filter(|p| revoking.contains(p)) {
            // Given up: everything read is committed and visible.
            self.tasks.remove(*p);
        }
        self.delete_tails(stale_tails);
        self.forwarding.sync(self.tasks)?;
        self.source.committed(&positions);
        let report = Committed {
            states: &committed_states,
            rows: &rows,
            version: committed.version,
            elapsed: began.elapsed(),
            totals,
            newest_committed_ms,
        };
        self.reporter.checkpoint(report, self.tasks, &*self.source);
        Ok(())
    }

    /// Drops the tasks of partitions another instance claimed: their uncommitted work is
    /// abandoned (the new holder reads it again from the committed position). Without a
    /// consumer group to hand them back, the run was replaced and stops with who took them.
    fn drop_fenced(&mut self, fenced: &[u32]) -> Result<(), PipelineError> {
        let counting = self.tasks.setup().counting_partitions;
        for &p in fenced {
            warn!(partition = p, "another instance holds this partition now; giving it up");
            // The windows the other workers relay to are counted elsewhere now: they must
            // not wait for this worker to commit them.
            self.forwarding.fenced(p, counting);
            self.tasks.remove(p);
            self.source.fenced(p);
        }
        self.forwarding.sync(self.tasks)?;
        match fenced.first().filter(|_| !self.rebalances) {
            Some(&partition) => {
                let log = self.log.lock().map_err(|_| poisoned())?;
                Err(log.replaced(partition).into())
            }
            None => Ok(()),
        }
    }

    /// Deletes tails no committed state names any more, so `_staging` does not grow with
    /// every checkpoint of a long-open file. Best effort: one left behind (a failure, a kill)
    /// is removed when the partition is next recovered.
    fn delete_tails(&self, tails: Vec<String>) {
        if tails.is_empty() {
            return;
        }
        let storage = &self.tasks.setup().storage;
        let deletes = tails.iter().map(|t| async move { (t, storage.delete(&Path::from(t.as_str())).await) });
        for (tail, result) in storage.block_on(futures::future::join_all(deletes)) {
            if let Err(e) = result {
                debug!(tail, error = %e, "could not delete a superseded tail; recovery will");
            }
        }
    }

    /// Our tasks' states as they stand, for deciding completion before the checkpoint.
    fn provisional_states(&self) -> Vec<TaskState> {
        self.tasks
            .iter()
            .filter_map(|t| Some(t.state(self.source.position(t.partition)?, Vec::new(), Vec::new())))
            .collect()
    }
}

/// The view's task states with `mine` in place of the ones they supersede.
fn merged<'a>(view: &'a View, mine: &'a [TaskState]) -> Vec<&'a TaskState> {
    let ours: BTreeSet<u32> = mine.iter().map(|t| t.partition).collect();
    view.tasks.values().filter(|t| !ours.contains(&t.partition)).chain(mine.iter()).collect()
}

/// The commit log's lock was poisoned: a worker panicked while holding it.
pub(super) fn poisoned() -> PipelineError {
    PipelineError::Incompatible("a thread panicked while holding the commit log".into())
}
