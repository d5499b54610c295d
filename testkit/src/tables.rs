//! Reading committed tables back: rows of every file, what the checkpoints say, and the
//! `pageviews verify` audit.

use std::path::{Path, PathBuf};

use pageviews_core::commit::{Manifest, Totals};
use pageviews_core::storage::Storage;
use pageviews_core::table::Table;

/// One committed row with the partition folder it was found in (`day=…/hour=…`).
#[derive(Debug, Clone)]
pub struct Row {
    pub partition: String,
    pub value: serde_json::Value,
}

/// Every row of `table` under `root`, from every file in the table folder; Parquet files
/// are read as the JSON lines they hold.
pub fn rows(root: &Path, table: &str) -> Vec<Row> {
    let mut out = Vec::new();
    for file in files(&root.join(table)) {
        let rel = file.strip_prefix(root.join(table)).expect("under table");
        let partition = rel.parent().map(|p| p.display().to_string()).unwrap_or_default();
        let text = table_file_text(
            table,
            &std::fs::read(&file).expect("read table file"),
            &file.display().to_string(),
        );
        for line in text.lines().filter(|l| !l.is_empty()) {
            let value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: {e}: {line}", file.display()));
            out.push(Row { partition: partition.clone(), value });
        }
    }
    out
}

/// A table file's rows as JSON lines, whatever its format.
pub fn table_file_text(table: &str, bytes: &[u8], name: &str) -> String {
    if name.ends_with(".parquet") {
        let table = Table::from_name(table).expect("a table");
        let (jsonl, _) = pageviews::sink::parquet::to_jsonl(table, bytes::Bytes::copy_from_slice(bytes))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        String::from_utf8(jsonl).expect("utf-8 rows")
    } else {
        String::from_utf8(bytes.to_vec()).unwrap_or_else(|e| panic!("{name}: {e}"))
    }
}

/// Rows of a table as sorted JSON strings, minus `drop` fields: a multiset to compare runs.
pub fn row_multiset(root: &Path, table: &str, drop: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = rows(root, table)
        .into_iter()
        .map(|mut r| {
            if let Some(obj) = r.value.as_object_mut() {
                for f in drop {
                    obj.remove(*f);
                }
            }
            format!("{}|{}", r.partition, r.value)
        })
        .collect();
    out.sort();
    out
}

/// Every regular file below `dir`, recursively, sorted.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Runs `pageviews verify` logic on `root` and fails the test with its report if any
/// guarantee is broken.
pub fn assert_verified(root: &Path) -> pageviews::verify::Report {
    let report = audit(root);
    assert!(report.is_clean(), "verify found violations:\n{report}");
    report
}

/// The `pageviews verify` audit of `root`, without judging its outcome.
pub fn audit(root: &Path) -> pageviews::verify::Report {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let storage = Storage::open(&root.display().to_string(), rt.handle().clone()).expect("open output");
    pageviews::verify::verify(&storage).expect("verify runs")
}

/// The newest committed manifest under a local `root`, if any.
pub fn newest_manifest(root: &Path) -> Option<Manifest> {
    files(&root.join("_checkpoints"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .max()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|bytes| serde_json::from_slice::<Manifest>(&bytes).ok())
}

/// What the newest checkpoint under `root` committed (zeros before the first). Committed
/// rows may still sit in files that have not rolled, so this, not the visible rows, is
/// what a test of a running pipeline waits for.
pub fn committed(root: &Path) -> Totals {
    newest_manifest(root).map(|m| m.totals).unwrap_or_default()
}

/// Number of committed manifests under `root`.
pub fn manifest_count(root: &Path) -> usize {
    files(&root.join("_checkpoints")).iter().filter(|p| p.extension().is_some_and(|e| e == "json")).count()
}

/// Asserts the part of the guarantees that must hold at every instant, even right after a kill -9:
/// every file in a table folder is named by a committed manifest, as a rolled file, as an
/// open one (which recovery seals) or as a `_SUCCESS` marker.
pub fn assert_only_committed_files(root: &Path) {
    let mut named = std::collections::HashSet::new();
    for m in files(&root.join("_checkpoints")) {
        let manifest: Manifest = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
        named.extend(manifest.files.iter().map(|f| f.path().to_string()));
        named.extend(manifest.open.iter().map(|f| f.path.clone()));
        named.extend(manifest.markers.iter().map(|p| p.marker().to_string()));
    }
    for table in ["page_views", "page_view_aggregates", "late_page_views", "dead_letters"] {
        for f in files(&root.join(table)) {
            let rel = f.strip_prefix(root).unwrap().display().to_string();
            assert!(named.contains(&rel), "{rel} is visible but no committed checkpoint names it");
        }
    }
}

/// page_view_aggregates as sorted `"postcode" "window end" views` lines.
pub fn aggregate_lines(root: &Path) -> Vec<String> {
    let mut aggs: Vec<String> = rows(root, "page_view_aggregates")
        .iter()
        .map(|r| format!("{} {} {}", r.value["postcode"], r.value["window"], r.value["views"]))
        .collect();
    aggs.sort();
    aggs
}
