//! What a committed checkpoint tells the outside: metrics, the status behind `/api/status`
//! and `/`, and a debug log line. Kept apart from the commit itself, which must not depend on
//! how it is reported.

use std::time::Duration;

use pageviews_core::commit::{TaskState, Totals};
use pageviews_core::table::Table;
use pageviews_core::time::format_timestamp;
use tracing::{debug, warn};

use super::worker::Pipeline;
use crate::metrics::TableLabel;
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
        let totals = self.log.lock().map(|l| l.view().totals()).unwrap_or_default();
        if let Ok(mut st) = self.status.lock() {
            st.last_checkpoint = Some(version);
            st.totals = totals;
            st.watermark = watermark.map(format_timestamp);
        }
    }
}
