//! The tasks a worker holds, and what every task of an instance is made with: adding and
//! dropping them, and what is asked of all of them at once — counting watermarks, idleness,
//! rolling files, the late rows pending.

use std::collections::BTreeMap;

use tracing::info;

use super::completion::Completion;
use super::task::{Task, TaskSetup};
use super::PipelineError;
use crate::source::{Restored, Source};

/// The tasks of the source partitions this worker holds, by partition.
pub(super) struct Tasks {
    map: BTreeMap<u32, Task>,
    setup: TaskSetup,
}

impl Tasks {
    /// No task yet; new ones are made with `setup`.
    pub(crate) fn new(setup: TaskSetup) -> Self {
        Tasks { map: BTreeMap::new(), setup }
    }

    /// What every task is made with.
    pub(crate) fn setup(&self) -> &TaskSetup {
        &self.setup
    }

    /// Creates the tasks of partitions just taken, from what was restored.
    pub(crate) fn add(&mut self, restored: Vec<(u32, Restored)>, now_ms: u64) {
        for (partition, r) in restored {
            let task = Task::new(partition, r.claim, r.state, &self.setup, now_ms);
            self.map.insert(partition, task);
        }
    }

    pub(crate) fn remove(&mut self, partition: u32) -> Option<Task> {
        self.map.remove(&partition)
    }

    pub(crate) fn get_mut(&mut self, partition: u32) -> Option<&mut Task> {
        self.map.get_mut(&partition)
    }

    pub(crate) fn contains(&self, partition: u32) -> bool {
        self.map.contains_key(&partition)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Task> {
        self.map.values()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Task> {
        self.map.values_mut()
    }

    /// The partitions held.
    pub(crate) fn partitions(&self) -> Vec<u32> {
        self.map.keys().copied().collect()
    }

    /// Late rows written since the last checkpoint, over every task.
    pub(crate) fn late_pending(&self) -> u64 {
        self.map.values().map(|t| t.pending.late_page_views).sum()
    }

    /// Re-evaluates every counting watermark and fires what it passed.
    pub(crate) fn advance(&mut self, now_ms: u64) -> Result<(), PipelineError> {
        for task in self.map.values_mut().filter(|t| t.counter.is_some()) {
            task.advance(now_ms)?;
        }
        Ok(())
    }

    /// Judges which partitions are idle: caught up with their end (`source` says so) and
    /// without an event for the idle timeout. A partition that is behind is never idle,
    /// however long it waits to be read.
    pub(crate) fn judge_idle(&mut self, source: &dyn Source, now_ms: u64) {
        let timeout = self.setup.rules.idle_timeout_ms;
        for task in self.map.values_mut() {
            let idle =
                source.caught_up(task.partition) && now_ms.saturating_sub(task.last_seen_ms) >= timeout;
            task.set_idle(idle);
        }
    }

    /// A topic that gained partitions (`known` now): each new one holds every counting
    /// partition here back from now until it says how far it has come.
    pub(crate) fn add_sources(&mut self, known: u32) {
        let had = self.setup.source_partitions;
        if known <= had {
            return;
        }
        info!(from = had, to = known, "the topic has more partitions: counting waits for them too");
        for c in self.map.values_mut().filter_map(|t| t.counter.as_mut()) {
            for p in had..known {
                c.watermarks.add_source(p);
            }
        }
        self.setup.source_partitions = known;
    }

    /// Rolls the files open longer than the roll age.
    pub(crate) fn roll_aged(&mut self, now_ms: u64) {
        for task in self.map.values_mut() {
            for w in task.writers.all() {
                w.roll_aged(now_ms);
            }
        }
    }

    /// Rolls the page_views files of hours a task's own event time has passed, between
    /// checkpoints: no on-time row of that partition goes to them any more. A replay crosses
    /// hours faster than checkpoints come, and each open file holds up to a part of encoded
    /// rows, so a day-long file peaked at 187 MiB with all 24 hours open until the next
    /// checkpoint. Only page_views: the other tables' rows follow the counting watermark or
    /// the wall clock, and are small. Judged on the task alone, this may roll a file early
    /// (a later row of the hour opens another), never late; `_SUCCESS` still waits for the
    /// checkpoint's rule over every task.
    pub(crate) fn roll_passed_hours(&mut self, rules: &Completion) {
        for task in self.map.values_mut() {
            let Some(max) = task.time.max_event_ms else { continue };
            let below = rules.first_unpassed_hour(max);
            let writer = &mut task.writers.page_views;
            if writer.open_hours().any(|h| h < below) {
                writer.close_complete(|h| h < below);
            }
        }
    }

    /// Each held partition with the claim it is held under.
    pub(crate) fn held(&self) -> Vec<(u32, u64)> {
        self.map.values().map(|t| (t.partition, t.claim)).collect()
    }
}
