//! What a committed checkpoint tells the outside: metrics, the status behind `/api/status`
//! and `/`, and a debug log line. Kept apart from the commit itself, which must not depend on
//! how it is reported.

use std::time::Duration;

use pageviews_core::commit::Manifest;
use pageviews_core::table::Table;
use pageviews_core::time::format_timestamp;
use tracing::{debug, warn};

use super::worker::Pipeline;
use crate::metrics::TableLabel;
use crate::window::NO_WATERMARK;

impl Pipeline {
    /// Counts what checkpoint `manifest` committed, `elapsed` after it began. Rows count when
    /// their checkpoint commits; files and bytes when they roll.
    pub(super) fn report_checkpoint(&self, manifest: &Manifest, elapsed: Duration) {
        let m = &self.metrics;
        let p = &self.pending;
        for (table, rows) in [
            (Table::PageViews, p.page_views),
            (Table::PageViewAggregates, p.page_view_aggregates),
            (Table::LatePageViews, p.late_page_views),
            (Table::DeadLetters, p.dead_letters),
        ] {
            m.rows_committed.get_or_create(&TableLabel { table: table.name() }).inc_by(rows);
            let open = manifest.open.iter().filter(|f| f.table == table).count();
            m.open_files.get_or_create(&TableLabel { table: table.name() }).set(open as i64);
        }
        for f in &manifest.files {
            let label = TableLabel { table: f.table.name() };
            m.files_committed.get_or_create(&label).inc();
            m.bytes_committed.get_or_create(&label).inc_by(f.bytes);
        }
        m.checkpoints.inc();
        m.checkpoint_duration.observe(elapsed.as_secs_f64());
        m.last_checkpoint.set(self.clock.wall_ms() as f64 / 1000.0);
        m.open_windows.set(manifest.open_windows.len() as i64);
        if elapsed > self.checkpoint_interval {
            warn!(?elapsed, "checkpoint took longer than the checkpoint interval");
        }
        debug!(
            seq = manifest.seq,
            files = manifest.files.len(),
            open = manifest.open.len(),
            markers = manifest.markers.len(),
            ?elapsed,
            "checkpoint committed"
        );
        if let Ok(mut st) = self.status.lock() {
            st.last_checkpoint = Some(manifest.seq);
            st.totals = manifest.totals.clone();
            st.watermark = (manifest.watermark != NO_WATERMARK).then(|| format_timestamp(manifest.watermark));
        }
    }
}
