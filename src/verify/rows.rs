//! The rows themselves: every table file read back (Parquet through the JSON-lines view) and
//! checked against its partition, its commit record, and the other tables of its pipeline.

use std::collections::{BTreeMap, HashMap, HashSet};

use object_store::path::Path;
use pageviews_core::commit::layout::FileName;
use pageviews_core::storage::Storage;
use pageviews_core::table::Table;
use pageviews_core::time::{format_timestamp, hour_of, parse_timestamp, partition_dir};
use serde::Deserialize;

use super::committed::{Committed, Pending};
use super::{Report, VerifyError};
use crate::event::decode;

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

/// One pipeline's rows, as far as the cross-table checks need them.
#[derive(Default)]
struct PipelineRows {
    /// (postcode, window end) → on-time page views minus late ones.
    counted: HashMap<(String, i64), i64>,
    /// (postcode, window end) → emitted views.
    emitted: HashMap<(String, i64), u64>,
    /// (hour, row) → late rows not yet matched by a page_views row.
    late_rows: HashMap<(i64, Vec<u8>), u64>,
    /// Source partition → rows of its files per table.
    by_partition: BTreeMap<u32, BTreeMap<Table, u64>>,
}

/// Reads every listed file and checks rows, partitions, windows and per-partition counts.
pub(super) fn audit(
    storage: &Storage,
    committed: &Committed,
    listed: &BTreeMap<Table, Vec<Path>>,
    pending: &Pending,
    report: &mut Report,
) -> Result<(), VerifyError> {
    let mut pipelines: BTreeMap<String, PipelineRows> = BTreeMap::new();
    // The late table first, so page_views can consume its rows: late ⊆ page_views.
    for table in [Table::LatePageViews, Table::PageViews, Table::PageViewAggregates, Table::DeadLetters] {
        let mut rows = 0u64;
        for path in &listed[&table] {
            let dir = path.to_string();
            let Some(name) = FileName::parse(&dir) else {
                report.violation(format!("{dir} is not a file pageviews writes"));
                continue;
            };
            let (pipeline, partition) = (name.pipeline.to_string(), name.partition);
            let window_ms = committed.pipelines.get(&pipeline).map_or(60_000, |p| p.window_ms);
            let raw = storage.block_on(storage.get(path))?;
            let size = raw.len() as u64;
            let columnar = match path.extension() {
                Some(crate::sink::parquet::EXTENSION) => Some(
                    crate::sink::parquet::to_jsonl(table, raw.clone())
                        .map_err(|e| ("Parquet", e.to_string())),
                ),
                Some(crate::sink::orc::EXTENSION) => {
                    Some(crate::sink::orc::to_jsonl(table, &raw).map_err(|e| ("ORC", e.to_string())))
                }
                _ => None,
            };
            let bytes = match columnar {
                None => raw,
                Some(Ok((lines, _))) => bytes::Bytes::from(lines),
                Some(Err((format, e))) => {
                    report.violation(format!("{dir} is not a readable {format} file: {e}"));
                    continue;
                }
            };
            let in_file = bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count() as u64;
            if let Some(rec) = committed.file(&dir) {
                if (in_file, size) != (rec.rows, rec.bytes) {
                    report.violation(format!(
                        "{dir} holds {in_file} rows in {size} bytes, but its commit recorded {} rows in {} bytes",
                        rec.rows, rec.bytes
                    ));
                }
            }
            let p = pipelines.entry(pipeline).or_default();
            *p.by_partition.entry(partition).or_default().entry(table).or_default() += in_file;
            for (i, line) in bytes.split(|&b| b == b'\n').enumerate().filter(|(_, l)| !l.is_empty()) {
                rows += 1;
                let at = || format!("{dir}:{}", i + 1);
                check_row(table, line, &dir, window_ms, p, report, &at);
            }
        }
        report.rows.insert(table.name(), rows);
    }
    for (id, rows) in &pipelines {
        check_windows(id, rows, pending, report);
    }
    let present: HashSet<&str> = listed.values().flatten().map(|p| p.as_ref()).collect();
    check_partition_counts(committed, &pipelines, &present, report);
    check_totals(committed, report);
    Ok(())
}

fn check_row(
    table: Table,
    line: &[u8],
    dir: &str,
    window_ms: i64,
    p: &mut PipelineRows,
    report: &mut Report,
    at: &dyn Fn() -> String,
) {
    match table {
        Table::PageViews | Table::LatePageViews => {
            let Ok(pv) = decode(line, usize::MAX) else {
                report.violation(format!("{} is not a page view row", at()));
                return;
            };
            check_partition(report, dir, pv.timestamp, at);
            let end = pv.timestamp.div_euclid(window_ms) * window_ms + window_ms;
            let key = (pv.postcode.to_string(), end);
            if table == Table::PageViews {
                *p.counted.entry(key).or_default() += 1;
                if let Some(n) = p.late_rows.get_mut(&(hour_of(pv.timestamp), view_key(&pv))) {
                    *n = n.saturating_sub(1);
                }
            } else {
                *p.counted.entry(key).or_default() -= 1;
                *p.late_rows.entry((hour_of(pv.timestamp), view_key(&pv))).or_default() += 1;
            }
        }
        Table::PageViewAggregates => {
            let Some(row) = serde_json::from_slice::<AggregateRow>(line).ok() else {
                report.violation(format!("{} is not an aggregate row", at()));
                return;
            };
            let Ok(end) = parse_timestamp(&row.window) else {
                report.violation(format!("{} has a bad window end", at()));
                return;
            };
            check_partition(report, dir, end, at);
            if p.emitted.insert((row.postcode.clone(), end), row.views).is_some() {
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
                return;
            };
            if let Ok(ts) = parse_timestamp(&row.received_at) {
                check_partition(report, dir, ts, at);
            }
            *report.dead_letters_by_reason.entry(row.reason).or_default() += 1;
        }
    }
}

/// Every late row matches a page view, and every emitted window's views equal page views
/// minus late ones — unless its raw partitions are still open.
fn check_windows(pipeline: &str, p: &PipelineRows, pending: &Pending, report: &mut Report) {
    let open = |table: Table, hour: i64| pending.hours.contains(&(pipeline.to_string(), table, hour));
    let unmatched: u64 =
        p.late_rows.iter().filter(|(key, _)| !open(Table::PageViews, key.0)).map(|(_, n)| n).sum();
    if unmatched > 0 {
        report.violation(format!(
            "{unmatched} late_page_views row(s) of {pipeline} have no matching page_views row"
        ));
    }
    let windows: HashSet<i64> = p.emitted.keys().map(|(_, end)| *end).collect();
    report.windows += windows.len() as u64;
    for ((postcode, end), views) in &p.emitted {
        let hour = hour_of(end - 1);
        if open(Table::PageViews, hour) || open(Table::LatePageViews, hour) {
            report.windows_pending += 1;
            continue;
        }
        let expected = p.counted.get(&(postcode.clone(), *end)).copied().unwrap_or(0);
        if expected != *views as i64 {
            report.violation(format!(
                "window ending {} for {postcode:?} has views {views} but page_views − late_page_views = {expected}",
                format_timestamp(*end)
            ));
        }
    }
}

/// Per source partition: the rows of its files (visible, plus those committed into files
/// still open) equal what its committed state counted. A record committed twice — say by two
/// instances that both believed they held its partition — shows up here.
fn check_partition_counts(
    committed: &Committed,
    pipelines: &BTreeMap<String, PipelineRows>,
    present: &HashSet<&str>,
    report: &mut Report,
) {
    for (id, commits) in &committed.pipelines {
        let found = pipelines.get(id);
        for (partition, task) in &commits.tasks {
            let visible = |t: Table| {
                found
                    .and_then(|p| p.by_partition.get(partition))
                    .and_then(|m| m.get(&t))
                    .copied()
                    .unwrap_or(0)
            };
            let waiting = |t: Table| -> u64 {
                task.open
                    .iter()
                    .filter(|f| f.table == t && !present.contains(f.path.as_str()))
                    .map(|f| f.rows)
                    .sum()
            };
            let t = &task.totals;
            for (table, want) in [
                (Table::PageViews, t.page_views),
                (Table::DeadLetters, t.dead_letters),
                (Table::LatePageViews, t.late_page_views),
                (Table::PageViewAggregates, t.page_view_aggregates),
            ] {
                let got = visible(table) + waiting(table);
                if got != want {
                    report.violation(format!(
                        "partition {partition} of {id} committed {want} {} rows, but its files hold {got}",
                        table.name()
                    ));
                }
            }
        }
    }
}

/// Rows per table (visible plus committed into open files) equal the committed totals, and
/// records read = page views + dead letters, per pipeline.
fn check_totals(committed: &Committed, report: &mut Report) {
    if !committed.pipelines.is_empty() {
        let t = report.totals.clone();
        for (table, want) in [
            (Table::PageViews, t.page_views),
            (Table::LatePageViews, t.late_page_views),
            (Table::PageViewAggregates, t.page_view_aggregates),
            (Table::DeadLetters, t.dead_letters),
        ] {
            let rows = report.rows.get(table.name()).copied().unwrap_or(0);
            let waiting = report.pending.get(table.name()).copied().unwrap_or(0);
            if rows + waiting != want {
                let open =
                    if waiting > 0 { format!(" and {waiting} in files still open") } else { String::new() };
                report.violation(format!(
                    "{} holds {rows} rows{open} but the checkpoints committed {want}",
                    table.name()
                ));
            }
        }
    }
    for (id, p) in &committed.pipelines {
        let t = &p.totals;
        if t.records_read != t.page_views + t.dead_letters {
            report.violation(format!(
                "{id}: {} records read but {} page views + {} dead letters",
                t.records_read, t.page_views, t.dead_letters
            ));
        }
    }
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
