//! Taking a checkpoint: close what must close, collect the writers' files, and commit one
//! manifest through the commit protocol; then count what it committed.

use std::collections::BTreeSet;
use std::time::Instant;

use pageviews_core::commit::{Manifest, Totals, MANIFEST_VERSION};
use pageviews_core::table::{Partition, Table};
use pageviews_core::time::{format_timestamp, HOUR_MS};

use super::worker::Pipeline;
use super::PipelineError;
use crate::window::NO_WATERMARK;

impl Pipeline {
    /// True once partition `p` can no longer get on-time rows: the watermark (dead
    /// letters: the wall clock) has passed its end plus the commit delay.
    pub(super) fn partition_complete(&self, p: Partition, wm: i64, wall: i64) -> bool {
        if self.reached_end {
            return true;
        }
        let end = (p.hour + 1).saturating_mul(HOUR_MS).saturating_add(self.partition_commit_delay_ms);
        match p.table {
            Table::DeadLetters => wall >= end,
            _ => wm != NO_WATERMARK && wm >= end.saturating_add(self.allowed_lateness_ms),
        }
    }

    /// Commits everything processed so far: files, positions, watermarks, open windows.
    /// Skipped when nothing changed and no partition completed, unless `force` (the
    /// source is waiting on it). `last` closes every file (the pipeline is stopping).
    pub(super) fn checkpoint(&mut self, force: bool, last: bool) -> Result<(), PipelineError> {
        let (wm, wall) = (self.watermarks.current(), self.clock.wall_ms());
        let completed = |this: &Self| {
            this.unmarked.iter().any(|p| this.partition_complete(*p, wm, wall))
                || this.writers_open().any(|p| this.partition_complete(p, wm, wall))
        };
        if !self.dirty && !force && !completed(self) {
            return Ok(());
        }
        // Real elapsed time: a measurement for metrics and logs, never a decision.
        let began = Instant::now();
        let next = self.seq + 1;
        let done: Vec<Partition> =
            self.writers_open().filter(|p| self.partition_complete(*p, wm, wall)).collect();
        for w in self.writers.all() {
            let table = w.table();
            w.close_complete(|hour| done.contains(&Partition { table, hour }));
            if last {
                w.close_all();
            }
        }
        for w in self.writers.all() {
            w.start_checkpoint(self.seq)?;
        }
        let (mut files, mut open) = (Vec::new(), Vec::new());
        for w in self.writers.all() {
            let (closed, still_open) = w.finish_checkpoint(next)?;
            files.extend(closed);
            open.extend(still_open);
        }
        self.unmarked.extend(files.iter().map(|f| Partition { table: f.table, hour: f.hour }));
        self.unmarked.extend(open.iter().map(|f| Partition { table: f.table, hour: f.hour }));
        let still_open: BTreeSet<Partition> =
            open.iter().map(|f| Partition { table: f.table, hour: f.hour }).collect();
        let markers: Vec<Partition> = self
            .unmarked
            .iter()
            .copied()
            .filter(|p| !still_open.contains(p) && self.partition_complete(*p, wm, wall))
            .collect();
        for p in &markers {
            self.unmarked.remove(p);
        }
        let mut totals = self.committed.clone();
        totals.records_read += self.pending.records_read;
        totals.page_views += self.pending.page_views;
        totals.late_page_views += self.pending.late_page_views;
        totals.page_view_aggregates += self.pending.page_view_aggregates;
        totals.dead_letters += self.pending.dead_letters;
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            pipeline: self.pipeline_id.clone(),
            seq: self.seq,
            created_at: format_timestamp(self.clock.wall_ms()),
            source: self.source.checkpoint(),
            watermark: self.watermarks.current(),
            partitions: self.watermarks.partitions(),
            window_ms: self.windows.size_ms(),
            open_windows: self.windows.snapshot(),
            emitted_through: self.windows.emitted_through(),
            files,
            open,
            unmarked: self.unmarked.iter().copied().collect(),
            markers,
            totals,
        };
        self.checkpoints.commit(&manifest)?;
        self.source.committed(&manifest.source);
        self.report_checkpoint(&manifest, began.elapsed());
        self.committed = manifest.totals;
        self.pending = Totals::default();
        self.seq = next;
        self.dirty = false;
        Ok(())
    }
}
