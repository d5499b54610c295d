//! What a worker tells the outside: metrics, the status behind `/api/status` and `/`, and a
//! debug log line. Kept apart from the loop and the commit, which must not depend on how
//! they are reported.
//!
//! The loop calls in at five points, each a single line there: when it starts running
//! ([`Reporter::running`]), after each batch ([`Reporter::batch`]: live per-partition
//! state), after each commit ([`Reporter::checkpoint`]), when a checkpoint fell due with
//! nothing new to commit ([`Reporter::caught_up`]), and when it ends
//! ([`Reporter::stopped`]). The middle three are what `/healthz` judges progress by.
//!
//! Every worker of an instance shares one [`Status`]; each writes only the partitions it
//! holds (under its member name) and its own progress, and the instance-wide figures — the
//! watermark, open files and windows — are recomputed from all partitions' entries, so
//! workers never overwrite each other.
//!
//! Freshness: how far behind the newest event each kind of reader sees is. `pageviews sql`
//! sees every committed row, so its newest event is the newest page view the log committed
//! (the tasks' event times in the view, every instance's); readers of the table folders see
//! rolled files only, so theirs is the newest page view in a file this worker rolled (the
//! page_views writers keep it) or in a task that committed with no file open. Both are fixed
//! at each checkpoint and turned into seconds behind the wall clock at each checkpoint and
//! once a second between them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pageviews_core::commit::{Position, TaskState, Totals};
use pageviews_core::table::Table;
use pageviews_core::time::format_timestamp;
use tracing::{debug, warn};

use super::tasks::Tasks;
use crate::clock::Clock;
use crate::event::Reason;
use crate::http::{CheckpointStatus, Freshness, Progress, Status, TableStatus};
use crate::metrics::{Metrics, ReaderLabel, ReasonLabel, TableLabel};
use crate::source::{Batch, Source};
use crate::window::NO_WATERMARK;

/// How many recent checkpoints the status keeps.
pub(crate) const RECENT_CHECKPOINTS: usize = 10;

/// Rates are measured over the checkpoints of about this last stretch of wall time.
const RATE_WINDOW_MS: i64 = 60_000;

/// Rows of `table` in `totals`.
fn table_rows(totals: &Totals, table: Table) -> u64 {
    match table {
        Table::PageViews => totals.page_views,
        Table::PageViewAggregates => totals.page_view_aggregates,
        Table::LatePageViews => totals.late_page_views,
        Table::DeadLetters => totals.dead_letters,
    }
}

/// Rows per second of `table` between the oldest checkpoint within [`RATE_WINDOW_MS`] of
/// the newest and the newest (`recent` is newest first).
fn rows_per_second(recent: &[CheckpointStatus], table: Table) -> f64 {
    let Some(newest) = recent.first() else { return 0.0 };
    let oldest = recent.iter().rev().find(|c| newest.at_ms - c.at_ms <= RATE_WINDOW_MS);
    match oldest {
        Some(old) if newest.at_ms > old.at_ms => {
            let rows = table_rows(&newest.totals, table).saturating_sub(table_rows(&old.totals, table));
            rows as f64 * 1000.0 / (newest.at_ms - old.at_ms) as f64
        }
        _ => 0.0,
    }
}

/// A position as one number: the generator's next sequence number, the next Kafka offset,
/// a file's byte offset.
fn position_number(position: &Position) -> u64 {
    match position {
        Position::Generator { next_seq, .. } => *next_seq,
        Position::Kafka { offset, .. } => (*offset).max(0) as u64,
        Position::File { offset, .. } => *offset,
    }
}

/// What a checkpoint committed, for the report.
pub(super) struct Committed<'a> {
    /// This worker's task states as committed.
    pub(crate) states: &'a [TaskState],
    /// Rows they added.
    pub(crate) rows: &'a Totals,
    /// The log entry (0: everything was fenced, nothing written).
    pub(crate) version: u64,
    /// How long the checkpoint took.
    pub(crate) elapsed: Duration,
    /// The deployment's totals after the entry, and its newest committed event time.
    pub(crate) totals: Totals,
    pub(crate) newest_committed_ms: Option<i64>,
}

/// One worker's reporting: its member name, and the instance's metrics and status, which
/// every worker shares.
pub(super) struct Reporter {
    metrics: Arc<Metrics>,
    status: Arc<Mutex<Status>>,
    clock: Arc<dyn Clock>,
    member: String,
    checkpoint_interval: Duration,
    watermark_delay_ms: i64,
}

impl Reporter {
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        status: Arc<Mutex<Status>>,
        clock: Arc<dyn Clock>,
        member: String,
        checkpoint_interval: Duration,
        watermark_delay_ms: i64,
    ) -> Self {
        Reporter { metrics, status, clock, member, checkpoint_interval, watermark_delay_ms }
    }

    /// The instance's metrics, for the counters the loop keeps.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn progress(&self) -> Progress {
        Progress { at_ms: self.clock.now_ms(), wall_ms: self.clock.wall_ms() }
    }

    /// The loop starts: this worker's progress (for `/healthz`) is measured from here.
    pub(crate) fn running(&self) {
        let progress = self.progress();
        self.metrics.checkpoint_interval.set(self.checkpoint_interval.as_secs_f64());
        if let Ok(mut st) = self.status.lock() {
            st.progress.insert(self.member.clone(), progress);
        }
    }

    /// The loop ended: a worker done with its input is not a stalled one while the others
    /// go on.
    pub(crate) fn stopped(&self) {
        if let Ok(mut st) = self.status.lock() {
            st.progress.remove(&self.member);
        }
    }

    /// After each batch: records read and event time per partition this worker holds.
    /// Cheap next to decoding the batch: a pass over the records' partition numbers, which
    /// come in runs, and one over the worker's few tasks.
    pub(crate) fn batch(&self, batch: &Batch, tasks: &Tasks, source: &dyn Source) {
        let Ok(mut st) = self.status.lock() else { return };
        for run in batch.records().chunk_by(|a, b| a.partition == b.partition) {
            let partition = run[0].partition;
            if tasks.contains(partition) {
                let name = source.partition_name(partition);
                st.partition_mut(partition, name, &self.member).records_read += run.len() as u64;
            }
        }
        self.partitions(&mut st, tasks, source);
    }

    /// A checkpoint fell due but nothing changed since the last one: the tables hold
    /// everything read, as if it had committed (an idle source is not a stalled pipeline).
    pub(crate) fn caught_up(&self) {
        let progress = self.progress();
        if let Ok(mut st) = self.status.lock() {
            st.progress.insert(self.member.clone(), progress);
            self.caught_up_gauge(&st);
        }
    }

    /// Counts what a log entry committed for this worker's tasks. Rows count when their
    /// checkpoint commits; files and bytes when they roll.
    pub(crate) fn checkpoint(&self, c: Committed<'_>, tasks: &Tasks, source: &dyn Source) {
        let Committed { states, rows, version, elapsed, totals, newest_committed_ms: sql_newest } = c;
        let m = &self.metrics;
        for (table, n) in [
            (Table::PageViews, rows.page_views),
            (Table::PageViewAggregates, rows.page_view_aggregates),
            (Table::LatePageViews, rows.late_page_views),
            (Table::DeadLetters, rows.dead_letters),
        ] {
            m.rows_committed.get_or_create(&TableLabel { table: table.name() }).inc_by(n);
        }
        let files = states.iter().flat_map(|s| &s.files);
        for f in files.clone() {
            let label = TableLabel { table: f.table.name() };
            m.files_committed.get_or_create(&label).inc();
            m.bytes_committed.get_or_create(&label).inc_by(f.bytes);
        }
        m.checkpoints.inc();
        m.checkpoint_duration.observe(elapsed.as_secs_f64());
        if elapsed > self.checkpoint_interval {
            warn!(?elapsed, "checkpoint took longer than the checkpoint interval");
        }
        let open = states.iter().map(|s| s.open.len()).sum::<usize>();
        debug!(
            version,
            tasks = states.len(),
            files = files.clone().count(),
            open,
            ?elapsed,
            "checkpoint committed"
        );
        let closed = states.iter().filter(|s| s.open.is_empty()).filter_map(|s| s.time.max_event_ms);
        let rolled = tasks.iter().filter_map(|t| t.writers.page_views.rolled_newest_ms());
        let folders_newest = closed.chain(rolled).max();
        let (member, progress) = (self.member.clone(), self.progress());
        let Ok(mut st) = self.status.lock() else { return };
        for (newest, now_visible) in st.freshness.newest_ms.iter_mut().zip([sql_newest, folders_newest]) {
            *newest = (*newest).max(now_visible);
        }
        // Under the same lock, so the status never shows a checkpoint with the freshness of
        // the one before.
        self.update_freshness(&mut st.freshness);
        st.progress.insert(member.clone(), progress);
        // Version 0: everything this worker held was fenced, nothing was written.
        if version > 0 {
            let at = format_timestamp(progress.wall_ms);
            if st.last_checkpoint.is_none_or(|v| v <= version) {
                // Workers report concurrently: the newest version's totals win.
                st.last_checkpoint = Some(version);
                st.last_checkpoint_at = Some(at.clone());
                st.last_checkpoint_ms = Some(progress.wall_ms);
                st.totals = totals.clone();
            }
            let checkpoint = CheckpointStatus {
                version,
                member: member.clone(),
                tasks: states.len(),
                at,
                at_ms: progress.wall_ms,
                duration_seconds: elapsed.as_secs_f64(),
                files: files.count(),
                open_files: open,
                rows: rows.page_views + rows.page_view_aggregates + rows.late_page_views + rows.dead_letters,
                totals,
            };
            st.add_checkpoint(checkpoint, RECENT_CHECKPOINTS);
        }
        for state in states.iter().filter(|s| tasks.contains(s.partition)) {
            let entry = st.partition_mut(state.partition, source.partition_name(state.partition), &member);
            entry.position = Some(position_number(&state.position));
            entry.open_files = Table::ALL.map(|t| state.open.iter().filter(|f| f.table == t).count() as u64);
            entry.open_windows = state.counting.as_ref().map_or(0, |c| c.open_windows.len() as u64);
        }
        self.partitions(&mut st, tasks, source);
        self.tables(&mut st);
        self.caught_up_gauge(&st);
    }

    /// The partitions this worker holds, as they stand: claim, event time, watermarks; and
    /// the instance's watermark over every worker's partitions.
    fn partitions(&self, st: &mut Status, tasks: &Tasks, source: &dyn Source) {
        let member = &self.member;
        st.retain_held(member, |p| tasks.contains(p));
        let delay_ms = self.watermark_delay_ms;
        for task in tasks.iter() {
            let p = st.partition_mut(task.partition, source.partition_name(task.partition), member);
            p.claim = task.claim;
            p.finished = task.time.finished;
            if let Some(max) = task.time.max_event_ms {
                if p.watermark_ms != Some(max - delay_ms) {
                    p.max_event_time = Some(format_timestamp(max));
                    p.watermark_ms = Some(max - delay_ms);
                    p.watermark = Some(format_timestamp(max - delay_ms));
                }
            }
            let counting =
                task.counter.as_ref().map(|c| c.watermarks.current()).filter(|w| *w != NO_WATERMARK);
            if p.counting_watermark_ms != counting {
                p.counting_watermark_ms = counting;
                p.counting_watermark = counting.map(format_timestamp);
            }
        }
        let lowest = st.partitions.iter().filter_map(|p| p.counting_watermark_ms).min();
        if st.watermark_ms != lowest {
            st.watermark_ms = lowest;
            st.watermark = lowest.map(format_timestamp);
        }
        if let Some(wm) = lowest {
            self.metrics.watermark.set(wm as f64 / 1000.0);
        }
    }

    /// After the watermarks moved: this worker's partitions into the status, and the
    /// instance's watermark (the lowest over every worker's) into its gauge.
    pub(crate) fn watermarks(&self, tasks: &Tasks, source: &dyn Source) {
        if let Ok(mut st) = self.status.lock() {
            self.partitions(&mut st, tasks, source);
        }
    }

    /// Per-table rows, rates and files, and dead letters by reason, into the status; the
    /// instance's open files and windows into their gauges (summed over every worker's
    /// partitions, so one worker's commit does not hide another's files).
    fn tables(&self, st: &mut Status) {
        let m = &self.metrics;
        let tables: Vec<TableStatus> = Table::ALL
            .into_iter()
            .enumerate()
            .map(|(i, table)| {
                let label = TableLabel { table: table.name() };
                let open_files = st.partitions.iter().map(|p| p.open_files[i]).sum::<u64>();
                m.open_files.get_or_create(&label).set(open_files as i64);
                TableStatus {
                    table: table.name().to_string(),
                    rows: table_rows(&st.totals, table),
                    rows_per_second: rows_per_second(&st.checkpoints, table),
                    open_files,
                    files_committed: m.files_committed.get_or_create(&label).get(),
                    bytes_committed: m.bytes_committed.get_or_create(&label).get(),
                }
            })
            .collect();
        st.tables = tables;
        m.open_windows.set(st.partitions.iter().map(|p| p.open_windows).sum::<u64>() as i64);
        // The loop counts dead letters as it writes them, and a commit covers everything
        // written, so right after one the counters equal what this process committed.
        st.dead_letters_by_reason = Reason::ALL
            .into_iter()
            .map(|r| {
                let n = m.dead_letters.get_or_create(&ReasonLabel { reason: r.as_str() }).get();
                (r.as_str().to_string(), n)
            })
            .collect();
    }

    /// `pageviews_last_checkpoint_timestamp_seconds`: when the instance's tables last
    /// caught up, i.e. the oldest of its running workers' last progress — a stuck worker
    /// ages it even while the others commit.
    fn caught_up_gauge(&self, st: &Status) {
        if let Some(wall) = st.progress.values().map(|p| p.wall_ms).min() {
            self.metrics.last_checkpoint.set(wall as f64 / 1000.0);
        }
    }

    /// Turns the newest event times each reader sees into seconds behind the wall clock:
    /// into `pageviews_freshness_seconds{reader}` and the status. Called at each checkpoint
    /// and once a second by the record loop.
    pub(crate) fn freshness(&self) {
        if let Ok(mut st) = self.status.lock() {
            self.update_freshness(&mut st.freshness);
        }
    }

    fn update_freshness(&self, f: &mut Freshness) {
        let wall = self.clock.wall_ms();
        let [sql, folders] = f.newest_ms;
        for (reader, newest, seconds, event) in [
            ("sql", sql, &mut f.sql_seconds, &mut f.sql_newest_event),
            ("folders", folders, &mut f.folders_seconds, &mut f.folders_newest_event),
        ] {
            // Absent until known: a 0 before the first commit would read as perfectly fresh.
            let Some(newest) = newest else { continue };
            let behind = wall.saturating_sub(newest) as f64 / 1000.0;
            self.metrics.freshness.get_or_create(&ReaderLabel { reader }).set(behind);
            *seconds = Some(behind);
            *event = Some(format_timestamp(newest));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(at_ms: i64, page_views: u64) -> CheckpointStatus {
        CheckpointStatus { at_ms, totals: Totals { page_views, ..Totals::default() }, ..Default::default() }
    }

    #[test]
    fn rates_span_the_checkpoints_of_the_last_minute() {
        // Newest first: 1000 rows in the last 10 s, but the checkpoint 100 s ago is too old
        // to count.
        let recent = [cp(200_000, 5_000), cp(195_000, 4_500), cp(190_000, 4_000), cp(100_000, 0)];
        assert_eq!(rows_per_second(&recent, Table::PageViews), 100.0);
        assert_eq!(rows_per_second(&recent[..1], Table::PageViews), 0.0, "one checkpoint has no rate");
        assert_eq!(rows_per_second(&[], Table::DeadLetters), 0.0);
    }
}
