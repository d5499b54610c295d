//! What a committed checkpoint tells the outside: metrics, the status behind `/api/status`
//! and `/`, and a debug log line. Kept apart from the commit itself, which must not depend on
//! how it is reported.
//!
//! Freshness: how far behind the newest event each kind of reader sees is. `pageviews sql`
//! sees every committed row, so its newest event is the newest page view the log committed
//! (the tasks' event times in the view, every instance's); readers of the table folders see
//! rolled files only, so theirs is the newest page view in a file this instance rolled (the
//! page_views writers keep it) or in a task that committed with no file open. Both are fixed
//! at each checkpoint and turned into seconds behind the wall clock at each checkpoint and
//! once a second between them.

use std::time::Duration;

use pageviews_core::commit::{TaskState, Totals};
use pageviews_core::table::Table;
use pageviews_core::time::format_timestamp;
use tracing::{debug, warn};

use super::worker::Pipeline;
use crate::http::Freshness;
use crate::metrics::{ReaderLabel, TableLabel};
use crate::window::NO_WATERMARK;

impl Pipeline {
    /// Counts what log entry `version` committed for this instance's tasks (`states`, with
    /// `rows` new rows), `elapsed` after the checkpoint began. Rows count when their
    /// checkpoint commits; files and bytes when they roll.
    pub(super) fn report_checkpoint(
        &self,
        states: &[TaskState],
        rows: &Totals,
        version: u64,
        elapsed: Duration,
    ) {
        let m = &self.metrics;
        for (table, n) in [
            (Table::PageViews, rows.page_views),
            (Table::PageViewAggregates, rows.page_view_aggregates),
            (Table::LatePageViews, rows.late_page_views),
            (Table::DeadLetters, rows.dead_letters),
        ] {
            m.rows_committed.get_or_create(&TableLabel { table: table.name() }).inc_by(n);
            let open = states.iter().flat_map(|s| &s.open).filter(|f| f.table == table).count();
            m.open_files.get_or_create(&TableLabel { table: table.name() }).set(open as i64);
        }
        let files = states.iter().flat_map(|s| &s.files);
        for f in files.clone() {
            let label = TableLabel { table: f.table.name() };
            m.files_committed.get_or_create(&label).inc();
            m.bytes_committed.get_or_create(&label).inc_by(f.bytes);
        }
        m.checkpoints.inc();
        m.checkpoint_duration.observe(elapsed.as_secs_f64());
        m.last_checkpoint.set(self.clock.wall_ms() as f64 / 1000.0);
        let open_windows: usize =
            states.iter().filter_map(|s| s.counting.as_ref()).map(|c| c.open_windows.len()).sum();
        m.open_windows.set(open_windows as i64);
        if elapsed > self.checkpoint_interval {
            warn!(?elapsed, "checkpoint took longer than the checkpoint interval");
        }
        debug!(
            version,
            tasks = states.len(),
            files = files.count(),
            open = states.iter().map(|s| s.open.len()).sum::<usize>(),
            ?elapsed,
            "checkpoint committed"
        );
        let watermark = states
            .iter()
            .filter_map(|s| s.counting.as_ref())
            .map(|c| c.watermark)
            .filter(|w| *w != NO_WATERMARK)
            .min();
        let (totals, sql_newest) = self
            .log
            .lock()
            .map(|l| (l.view().totals(), l.view().tasks.values().filter_map(|t| t.time.max_event_ms).max()))
            .unwrap_or_default();
        let closed = states.iter().filter(|s| s.open.is_empty()).filter_map(|s| s.time.max_event_ms);
        let rolled = self.tasks.values().filter_map(|t| t.writers.page_views.rolled_newest_ms());
        let folders_newest = closed.chain(rolled).max();
        if let Ok(mut st) = self.status.lock() {
            st.last_checkpoint = Some(version);
            st.totals = totals;
            st.watermark = watermark.map(format_timestamp);
            let visible = [sql_newest, folders_newest];
            for (newest, now_visible) in st.freshness.newest_ms.iter_mut().zip(visible) {
                *newest = (*newest).max(now_visible);
            }
            // Under the same lock, so the status never shows a checkpoint with the
            // freshness of the one before.
            self.update_freshness(&mut st.freshness);
        }
    }

    /// Turns the newest event times each reader sees into seconds behind the wall clock:
    /// into `pageviews_freshness_seconds{reader}` and the status. Called at each checkpoint
    /// and once a second by the record loop.
    pub(super) fn report_freshness(&self) {
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
