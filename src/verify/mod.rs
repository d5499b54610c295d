//! `pageviews verify`: audits a table root against the guarantees in ARCHITECTURE.md.
//!
//! Reads only what is committed — each pipeline's commit log (its newest snapshot, the entries
//! after it, and the index of completed files) and the table files — through the same storage
//! layer the pipeline writes with. Each pipeline id is audited as one pipeline, however many
//! instances wrote it (files name the pipeline that wrote them), and checks:
//! - every file in a table folder is a file its pipeline committed, and every committed file
//!   is present (nothing uncommitted visible, nothing committed lost) — except files a task's
//!   newest state records as still open, which a running instance (or the next recovery)
//!   completes; their rows count as pending;
//! - every file holds the rows and bytes its commit recorded;
//! - every row sits in the partition its time says;
//! - no (postcode, window) is emitted twice by a pipeline, whichever instance counted it;
//! - for every emitted window, `views = page_views − late_page_views` per postcode;
//! - every late row is also a page_views row;
//! - per source partition, the rows of its files equal what its committed state counted,
//!   so no record is in two instances' files; and records read = page_views + dead_letters;
//! - every hour the log records as complete has its `_SUCCESS` marker (the newest entries'
//!   markers count as pending: a running instance or the next recovery writes them).

mod committed;
mod iceberg;
mod rows;

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use object_store::path::Path;
use pageviews_core::commit::{CheckpointError, Totals};
use pageviews_core::storage::{Storage, StorageError};
use pageviews_core::table::Table;
use thiserror::Error;

use committed::Committed;

/// Why the audit itself could not run (as opposed to finding violations).
#[derive(Debug, Error)]
pub enum VerifyError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A commit log cannot be read.
    #[error(transparent)]
    Log(#[from] CheckpointError),
    /// The Iceberg tables cannot be read.
    #[error(transparent)]
    Iceberg(#[from] crate::sink::iceberg::IcebergError),
}

/// What the audit found.
#[derive(Debug, Default)]
pub struct Report {
    /// Committed log entries found, over all pipelines.
    pub(crate) checkpoints: usize,
    /// Rows per table.
    pub rows: BTreeMap<&'static str, u64>,
    /// Distinct windows emitted.
    pub windows: u64,
    /// Dead letters by reason.
    pub dead_letters_by_reason: BTreeMap<String, u64>,
    /// Rows per table committed into files a running pipeline still has open.
    pub pending: BTreeMap<&'static str, u64>,
    /// Windows whose raw partitions are still open, so their counts were not checked yet.
    pub(crate) windows_pending: u64,
    /// `_SUCCESS` markers the newest entries recorded and storage does not hold yet.
    pub markers_pending: u64,
    /// Committed totals, summed over pipelines.
    pub totals: Totals,
    /// Iceberg tables audited: per table, live data files and rows of the current snapshot.
    pub iceberg: BTreeMap<&'static str, (u64, u64)>,
    /// Committed files of log versions newer than their Iceberg table holds yet.
    pub iceberg_pending: u64,
    /// Every guarantee broken, with where.
    pub violations: Vec<String>,
}

impl Report {
    /// True when no guarantee is broken.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    pub(crate) fn violation(&mut self, text: String) {
        // Past a few hundred, more lines help nobody; the count still tells the scale.
        if self.violations.len() < 200 {
            self.violations.push(text);
        } else if self.violations.len() == 200 {
            self.violations.push("… further violations not listed".into());
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "checkpoints      {}", self.checkpoints)?;
        for (table, rows) in &self.rows {
            writeln!(f, "{table:<21} {rows:>12} rows")?;
        }
        for (table, rows) in &self.pending {
            writeln!(f, "{table:<21} {rows:>12} rows in files still open")?;
        }
        writeln!(f, "windows emitted  {:>17}", self.windows)?;
        if self.windows_pending > 0 {
            writeln!(
                f,
                "  not yet checked  {:>15} (their page_views partitions are still open)",
                self.windows_pending
            )?;
        }
        if self.markers_pending > 0 {
            writeln!(
                f,
                "_SUCCESS pending  {:>16} (recorded by the newest checkpoints; a running instance or the next recovery writes them)",
                self.markers_pending
            )?;
        }
        for (table, (files, rows)) in &self.iceberg {
            writeln!(f, "iceberg {table:<21} {files:>6} files {rows:>12} rows")?;
        }
        if self.iceberg_pending > 0 {
            writeln!(
                f,
                "iceberg pending  {:>17} files (committed by the log after the table's newest snapshot; the next commit or recovery adds them)",
                self.iceberg_pending
            )?;
        }
        writeln!(f, "records read     {:>17}", self.totals.records_read)?;
        for (reason, n) in &self.dead_letters_by_reason {
            writeln!(f, "  dead letters {reason:<14} {n:>8}")?;
        }
        if self.violations.is_empty() {
            write!(f, "OK: every guarantee holds")
        } else {
            writeln!(f, "{} violation(s):", self.violations.len())?;
            for v in &self.violations {
                writeln!(f, "  - {v}")?;
            }
            Ok(())
        }
    }
}

/// Audits the table root, and the Iceberg tables in `iceberg`'s catalog against its logs:
/// each committed Parquet file of the versions a table holds is in its current snapshot
/// once, with the rows its commit recorded, and the snapshot holds no other data file.
pub fn verify_with(
    storage: &Storage,
    iceberg: Option<&crate::sink::iceberg::IcebergConfig>,
    env: &pageviews_core::storage::StoreEnv,
) -> Result<Report, VerifyError> {
    let mut report = verify(storage)?;
    if let Some(config) = iceberg {
        let committed = Committed::read(storage)?;
        iceberg::audit(storage, &committed, config, env, &mut report)?;
    }
    Ok(report)
}

/// Audits the table root.
pub fn verify(storage: &Storage) -> Result<Report, VerifyError> {
    let mut report = Report::default();
    let committed = Committed::read(storage)?;
    report.checkpoints = committed.entries;
    for p in committed.pipelines.values() {
        report.totals.add(&p.totals);
    }
    let mut listed: BTreeMap<Table, Vec<Path>> = BTreeMap::new();
    let mut markers = HashSet::new();
    for table in Table::ALL {
        let mut keep = Vec::new();
        for path in storage.block_on(storage.list(&Path::from(table.name())))? {
            if path.filename() == Some("_SUCCESS") {
                markers.insert(path.to_string());
                continue;
            }
            if committed.file(path.as_ref()).is_none() {
                report.violation(format!("{path} is in a table folder but no committed checkpoint names it"));
            }
            keep.push(path);
        }
        for text in storage.unlisted_local_files(&Path::from(table.name())) {
            report.violation(format!(
                "{text} is in a table folder but no committed checkpoint names it (a partial upload?)"
            ));
        }
        listed.insert(table, keep);
    }
    let present: HashSet<&str> = listed.values().flatten().map(|p| p.as_ref()).collect();
    let pending = committed.missing_or_pending(&present, &mut report);
    committed.missing_markers(&markers, &mut report);
    rows::audit(storage, &committed, &listed, &pending, &mut report)?;
    Ok(report)
}
