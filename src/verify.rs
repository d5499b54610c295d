//! `pageviews verify`: audits a table root against the guarantees of DESIGN §4.
//!
//! Reads only what is committed — manifests and table files — through the same storage
//! layer the pipeline writes with, and checks:
//! - every file in a table folder is named by a committed manifest, and every file a
//!   manifest names is present (nothing uncommitted visible, nothing committed lost) —
//!   except files the newest manifest records as still open, which a running pipeline
//!   (or the next recovery) completes; their rows count as pending;
//! - every row sits in the partition its time says;
//! - no (postcode, window) is emitted twice;
//! - for every emitted window, `views = page_views − late_page_views` per postcode;
//! - every late row is also a page_views row;
//! - every file holds the rows and bytes its checkpoint recorded;
//! - row counts equal the newest manifest's totals, and records read = page_views +
//!   dead_letters (each record in exactly one of them).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use object_store::path::Path;
use serde::Deserialize;
use thiserror::Error;

use crate::event::decode;
use pageviews_core::commit::{Manifest, Totals};
use pageviews_core::storage::{Storage, StorageError};
use pageviews_core::table::Table;
use pageviews_core::time::{format_timestamp, hour_of, parse_timestamp, partition_dir};

/// Why the audit itself could not run (as opposed to finding violations).
#[derive(Debug, Error)]
pub enum VerifyError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A manifest cannot be parsed.
    #[error("checkpoint manifest {path} is unreadable: {reason}")]
    Manifest {
        /// Its path.
        path: String,
        /// The parse error.
        reason: String,
    },
}

/// What the audit found.
#[derive(Debug, Default)]
pub struct Report {
    /// Committed checkpoints found, over all pipelines.
    pub checkpoints: usize,
    /// Rows per table.
    pub rows: BTreeMap<&'static str, u64>,
    /// Distinct windows emitted.
    pub windows: u64,
    /// Dead letters by reason.
    pub dead_letters_by_reason: BTreeMap<String, u64>,
    /// Rows per table committed into files a running pipeline still has open.
    pub pending: BTreeMap<&'static str, u64>,
    /// Windows whose raw partitions are still open, so their counts were not checked yet.
    pub windows_pending: u64,
    /// Newest manifest totals, summed over pipelines.
    pub totals: Totals,
    /// Every guarantee broken, with where.
    pub violations: Vec<String>,
}

impl Report {
    /// True when no guarantee is broken.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    fn violation(&mut self, text: String) {
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

/// What the newest checkpoint naming a file says of it.
struct FileRecord<'a> {
    pipeline: &'a str,
    seq: u64,
    table: Table,
    hour: i64,
    rows: u64,
    bytes: u64,
    open: bool,
}

#[derive(Deserialize)]
struct AggregateRow {
    postcode: String,
    window: String,
    views: u64,
}

#[derive(Deserialize)]
struct DeadLetterRow {
    reason: String,
    received_at: String,
}

/// Audits the table root.
pub fn verify(storage: &Storage) -> Result<Report, VerifyError> {
    let mut report = Report::default();
    let manifests = read_manifests(storage)?;
    report.checkpoints = manifests.len();
    // The newest record of every file: rolled (must be present) or open. A file open in
    // a pipeline's newest checkpoint may still be in progress; one open in an older
    // checkpoint and never named again was sealed by recovery, so it must be present.
    let mut latest: HashMap<&str, FileRecord> = HashMap::new();
    let mut newest: HashMap<&str, &Manifest> = HashMap::new();
    let mut window_ms = None;
    for m in &manifests {
        let rolled = m.files.iter().map(|f| (f.path(), f.table, f.hour, f.rows, f.bytes, false));
        let open = m.open.iter().map(|f| (f.path.as_str(), f.table, f.hour, f.rows, f.bytes, true));
        for (path, table, hour, rows, bytes, open) in rolled.chain(open) {
            let (pipeline, seq) = (m.pipeline.as_str(), m.seq);
            latest.insert(path, FileRecord { pipeline, seq, table, hour, rows, bytes, open });
        }
        let slot = newest.entry(m.pipeline.as_str()).or_insert(m);
        if m.seq > slot.seq {
            *slot = m;
        }
        window_ms = Some(m.window_ms);
    }
    for m in newest.values() {
        let t = &m.totals;
        report.totals.records_read += t.records_read;
        report.totals.page_views += t.page_views;
        report.totals.late_page_views += t.late_page_views;
        report.totals.page_view_aggregates += t.page_view_aggregates;
        report.totals.dead_letters += t.dead_letters;
    }

    let mut files: BTreeMap<Table, Vec<Path>> = BTreeMap::new();
    for table in Table::ALL {
        let listed = storage.block_on(storage.list(&Path::from(table.name())))?;
        let mut keep = Vec::new();
        for path in listed {
            let text = path.to_string();
            if path.filename() == Some("_SUCCESS") {
                continue;
            }
            if !latest.contains_key(text.as_str()) {
                report.violation(format!("{text} is in a table folder but no committed checkpoint names it"));
            }
            keep.push(path);
        }
        for text in storage.unlisted_local_files(&Path::from(table.name())) {
            report.violation(format!(
                "{text} is in a table folder but no committed checkpoint names it (a partial upload?)"
            ));
        }
        files.insert(table, keep);
    }
    let present: HashSet<String> = files.values().flatten().map(|p| p.to_string()).collect();
    // Rows committed into files still open, and their partitions, whose checks must wait.
    let mut pending: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut pending_hours: HashSet<(Table, i64)> = HashSet::new();
    for (path, rec) in &latest {
        if present.contains(*path) {
            continue;
        }
        let in_progress = rec.open && newest.get(rec.pipeline).is_some_and(|m| m.seq == rec.seq);
        if in_progress {
            *pending.entry(rec.table.name()).or_default() += rec.rows;
            pending_hours.insert((rec.table, rec.hour));
        } else {
            report.violation(format!(
                "{path} is named by checkpoint {} of {} but missing",
                rec.seq, rec.pipeline
            ));
        }
    }
    report.pending = pending.clone();
    let recorded: HashMap<&str, (u64, u64)> = latest.iter().map(|(p, r)| (*p, (r.rows, r.bytes))).collect();

    let window_ms = window_ms.unwrap_or(60_000);
    // (postcode, window end) → on-time page views minus late ones, and the emitted views.
    let mut counted: HashMap<(String, i64), i64> = HashMap::new();
    let mut emitted: HashMap<(String, i64), u64> = HashMap::new();
    let mut late_rows: HashMap<(i64, Vec<u8>), u64> = HashMap::new();
    // The late table first, so page_views can consume its rows: late ⊆ page_views.
    for table in [Table::LatePageViews, Table::PageViews, Table::PageViewAggregates, Table::DeadLetters] {
        let mut rows = 0u64;
        for path in &files[&table] {
            let raw = storage.block_on(storage.get(path))?;
            let dir = path.to_string();
            let size = raw.len() as u64;
            let bytes = if path.extension() == Some(crate::sink::parquet::EXTENSION) {
                match crate::sink::parquet::to_jsonl(table, raw) {
                    Ok((lines, _)) => bytes::Bytes::from(lines),
                    Err(e) => {
                        report.violation(format!("{dir} is not a readable Parquet file: {e}"));
                        continue;
                    }
                }
            } else {
                raw
            };
            let in_file = bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count() as u64;
            if let Some(&(want_rows, want_bytes)) = recorded.get(dir.as_str()) {
                if (in_file, size) != (want_rows, want_bytes) {
                    report.violation(format!(
                        "{dir} holds {in_file} rows in {size} bytes, but its checkpoint recorded {want_rows} rows in {want_bytes} bytes"
                    ));
                }
            }
            for (i, line) in bytes.split(|&b| b == b'\n').enumerate().filter(|(_, l)| !l.is_empty()) {
                rows += 1;
                let at = || format!("{dir}:{}", i + 1);
                match table {
                    Table::PageViews | Table::LatePageViews => {
                        let Ok(pv) = decode(line, usize::MAX) else {
                            report.violation(format!("{} is not a page view row", at()));
                            continue;
                        };
                        check_partition(&mut report, &dir, pv.timestamp, &at);
                        let end = pv.timestamp.div_euclid(window_ms) * window_ms + window_ms;
                        let key = (pv.postcode.to_string(), end);
                        if table == Table::PageViews {
                            *counted.entry(key).or_default() += 1;
                            if !late_rows.is_empty() {
                                if let Some(n) = late_rows.get_mut(&(hour_of(pv.timestamp), view_key(&pv))) {
                                    *n = n.saturating_sub(1);
                                }
                            }
                        } else {
                            *counted.entry(key).or_default() -= 1;
                            *late_rows.entry((hour_of(pv.timestamp), view_key(&pv))).or_default() += 1;
                        }
                    }
                    Table::PageViewAggregates => {
                        let Some(row) = serde_json::from_slice::<AggregateRow>(line).ok() else {
                            report.violation(format!("{} is not an aggregate row", at()));
                            continue;
                        };
                        let Ok(end) = parse_timestamp(&row.window) else {
                            report.violation(format!("{} has a bad window end", at()));
                            continue;
                        };
                        check_partition(&mut report, &dir, end, &at);
                        if emitted.insert((row.postcode.clone(), end), row.views).is_some() {
                            report.violation(format!(
                                "window ending {} for {:?} is emitted twice (again at {})",
                                row.window,
                                row.postcode,
                                at()
                            ));
                        }
                    }
                    Table::DeadLetters => {
                        let Some(row) = serde_json::from_slice::<DeadLetterRow>(line).ok() else {
                            report.violation(format!("{} is not a dead-letter row", at()));
                            continue;
                        };
                        if let Ok(ts) = parse_timestamp(&row.received_at) {
                            check_partition(&mut report, &dir, ts, &at);
                        }
                        *report.dead_letters_by_reason.entry(row.reason).or_default() += 1;
                    }
                }
            }
        }
        report.rows.insert(table.name(), rows);
    }
    let unmatched: u64 = late_rows
        .iter()
        .filter(|(key, _)| !pending_hours.contains(&(Table::PageViews, key.0)))
        .map(|(_, n)| n)
        .sum();
    if unmatched > 0 {
        report.violation(format!("{unmatched} late_page_views row(s) have no matching page_views row"));
    }
    let windows: HashSet<i64> = emitted.keys().map(|(_, end)| *end).collect();
    report.windows = windows.len() as u64;
    for ((postcode, end), views) in &emitted {
        let hour = hour_of(end - 1);
        if pending_hours.contains(&(Table::PageViews, hour))
            || pending_hours.contains(&(Table::LatePageViews, hour))
        {
            report.windows_pending += 1;
            continue;
        }
        let expected = counted.get(&(postcode.clone(), *end)).copied().unwrap_or(0);
        if expected != *views as i64 {
            report.violation(format!(
                "window ending {} for {postcode:?} has views {views} but page_views − late_page_views = {expected}",
                format_timestamp(*end)
            ));
        }
    }
    let counts = report.rows.clone();
    let rows = |t: Table| counts.get(t.name()).copied().unwrap_or(0);
    let t = report.totals.clone();
    if !manifests.is_empty() {
        for (table, want) in [
            (Table::PageViews, t.page_views),
            (Table::LatePageViews, t.late_page_views),
            (Table::PageViewAggregates, t.page_view_aggregates),
            (Table::DeadLetters, t.dead_letters),
        ] {
            let waiting = report.pending.get(table.name()).copied().unwrap_or(0);
            if rows(table) + waiting != want {
                let open =
                    if waiting > 0 { format!(" and {waiting} in files still open") } else { String::new() };
                report.violation(format!(
                    "{} holds {} rows{open} but the checkpoints committed {want}",
                    table.name(),
                    rows(table)
                ));
            }
        }
        if t.records_read != t.page_views + t.dead_letters {
            report.violation(format!(
                "{} records read but {} page views + {} dead letters",
                t.records_read, t.page_views, t.dead_letters
            ));
        }
    }
    Ok(report)
}

fn view_key(pv: &crate::event::PageView<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    crate::event::write_view_fields(&mut out, pv);
    out
}

fn check_partition(report: &mut Report, path: &str, ms: i64, at: &dyn Fn() -> String) {
    let want = partition_dir(hour_of(ms));
    if !path.contains(&format!("/{want}/")) {
        report.violation(format!("{} belongs in {want}", at()));
    }
}

fn read_manifests(storage: &Storage) -> Result<Vec<Manifest>, VerifyError> {
    let mut out = Vec::new();
    for path in storage.block_on(storage.list(&Path::from("_checkpoints")))? {
        if path.extension() != Some("json") {
            continue;
        }
        let bytes = storage.block_on(storage.get(&path))?;
        let m: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| VerifyError::Manifest { path: path.to_string(), reason: e.to_string() })?;
        out.push(m);
    }
    out.sort_by_key(|m| (m.pipeline.clone(), m.seq));
    Ok(out)
}
