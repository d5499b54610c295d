//! Reading committed tables back: rows of every file, what the checkpoints say, and the
//! `pageviews verify` audit.

use std::path::{Path, PathBuf};

use pageviews_core::commit::index::read_index;
use pageviews_core::commit::{Totals, View};
use pageviews_core::storage::Storage;
use pageviews_core::table::Table;

/// One committed row with the partition folder it was found in (`day=…/hour=…`).
#[derive(Debug, Clone)]
pub struct Row {
    pub partition: String,
    pub value: serde_json::Value,
}

/// Every row of `table` under `root`, from every file in the table folder; Parquet and ORC files
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
    } else if name.ends_with(".orc") {
        let table = Table::from_name(table).expect("a table");
        let (jsonl, _) =
            pageviews::sink::orc::to_jsonl(table, bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
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

/// The commit log of every pipeline under `root`, folded (read through the same code as
/// `verify` and the SQL client).
pub fn views(root: &Path) -> Vec<(String, View)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let storage = Storage::open(&root.display().to_string(), rt.handle().clone()).expect("open output");
    let mut ids: Vec<String> = std::fs::read_dir(root.join("_checkpoints"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    ids.sort();
    ids.into_iter()
        .map(|id| {
            let view = rt.block_on(View::load(&storage, &id)).unwrap_or_else(|e| panic!("{id}: {e}"));
            (id, view)
        })
        .collect()
}

/// What the commit logs under `root` committed (zeros before the first commit). Committed
/// rows may still sit in files that have not rolled, so this, not the visible rows, is
/// what a test of a running pipeline waits for.
pub fn committed(root: &Path) -> Totals {
    let mut totals = Totals::default();
    for (_, view) in views(root) {
        totals.add(&view.totals());
    }
    totals
}

/// Checkpoints committed under `root`, over every pipeline and instance.
pub fn commit_count(root: &Path) -> u64 {
    views(root).iter().map(|(_, v)| v.commits).sum()
}

/// Asserts the part of the guarantees that must hold at every instant, even right after a
/// kill -9: every file in a table folder is one a commit names — completed, or open (which
/// recovery seals) — or a `_SUCCESS` marker.
pub fn assert_only_committed_files(root: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let storage = Storage::open(&root.display().to_string(), rt.handle().clone()).expect("open output");
    let mut named = std::collections::HashSet::new();
    for (_, view) in views(root) {
        let indexed =
            rt.block_on(read_index(&storage, &view.index, &view.recent_files)).expect("read the index");
        named.extend(indexed.into_iter().map(|f| f.path));
        for task in view.tasks.values() {
            named.extend(task.open.iter().map(|f| f.path.clone()));
            named.extend(task.files.iter().map(|f| f.path().to_string()));
        }
    }
    for table in ["page_views", "page_view_aggregates", "late_page_views", "dead_letters"] {
        for f in files(&root.join(table)) {
            if f.file_name().is_some_and(|n| n == "_SUCCESS") {
                continue;
            }
            let rel = f.strip_prefix(root).expect("under the root").display().to_string();
            assert!(named.contains(&rel), "{rel} is visible but no commit names it");
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

/// Where each source partition resumes, as committed under `root` (one pipeline).
pub fn positions(root: &Path) -> std::collections::BTreeMap<u32, pageviews_core::commit::Position> {
    views(root).into_iter().flat_map(|(_, v)| v.tasks.into_iter().map(|(p, t)| (p, t.position))).collect()
}

/// Which instance (member) holds each source partition now, per the commit log under `root`.
pub fn holders(root: &Path) -> std::collections::BTreeMap<u32, String> {
    claims(root).into_iter().map(|(p, (_, member))| (p, member)).collect()
}

/// The newest claim of each source partition under `root`: its number and the member that
/// took it (a partition given up and taken again, by anyone, gets a higher number).
pub fn claims(root: &Path) -> std::collections::BTreeMap<u32, (u64, String)> {
    let mut newest = std::collections::BTreeMap::new();
    for (_, view) in views(root) {
        for (p, c) in view.claims {
            let slot = newest.entry(p).or_insert((c.claim, c.member.clone()));
            if c.claim > slot.0 {
                *slot = (c.claim, c.member);
            }
        }
    }
    newest
}

/// The runs holding partitions of the pipelines under `root`, per member: a restarted
/// instance shows up as a new run once it has claimed something.
pub fn runs_of(root: &Path, member: &str) -> std::collections::BTreeSet<String> {
    views(root)
        .into_iter()
        .flat_map(|(_, v)| v.claims.into_values())
        .filter(|c| c.member == member)
        .map(|c| c.run)
        .collect()
}
