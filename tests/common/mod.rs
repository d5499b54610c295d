//! Helpers shared by the integration tests: inputs, runs, and reading committed tables.
#![allow(dead_code)]

pub mod kafka;
pub mod s3;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pageviews::sink::Storage;
use pageviews::{PipelineConfig, Shutdown, SourceConfig, Summary};

/// Writes `lines` to `dir/name`, one per line, and returns the path as a string.
pub fn write_input(dir: &Path, name: &str, lines: &[String]) -> String {
    let path = dir.join(name);
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&path, text).expect("write input");
    path.display().to_string()
}

/// A page-view record as the original job's datagen wrote it.
pub fn view(user: i64, postcode: &str, ts: &str) -> String {
    format!(
        r#"{{"user_id": {user}, "postcode": "{postcode}", "webpage": "www.website.com/index.html", "timestamp": "{ts}"}}"#
    )
}

/// Runs the pipeline over files into `out` with default settings plus `tweak`.
pub fn run_files(paths: &[String], out: &Path, tweak: impl FnOnce(&mut PipelineConfig)) -> Summary {
    let mut config = PipelineConfig::new(SourceConfig::Files(paths.to_vec()), out.display().to_string());
    tweak(&mut config);
    pageviews::run(config, Shutdown::default()).expect("pipeline run")
}

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
        let table = pageviews::sink::Table::ALL.into_iter().find(|t| t.name() == table).expect("a table");
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

/// Polls `cond` until it holds, failing the test after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    assert!(poll_until(timeout, cond), "timed out after {timeout:?} waiting for {what}");
}

/// Polls `cond` every 5 ms until it holds (true) or `timeout` passes (false).
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// What the newest checkpoint under `root` committed (zeros before the first). Committed
/// rows may still sit in files that have not rolled, so this, not the visible rows, is
/// what a test of a running pipeline waits for.
pub fn committed(root: &Path) -> pageviews::checkpoint::Totals {
    files(&root.join("_checkpoints"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .max()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|bytes| serde_json::from_slice::<pageviews::checkpoint::Manifest>(&bytes).ok())
        .map(|m| m.totals)
        .unwrap_or_default()
}

/// Number of committed manifests under `root`.
pub fn manifest_count(root: &Path) -> usize {
    files(&root.join("_checkpoints")).iter().filter(|p| p.extension().is_some_and(|e| e == "json")).count()
}

/// The `pageviews` binary built for this test run.
pub fn bin() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pageviews"));
    // Tests give every flag they mean; flag defaults from the caller's environment must not
    // change the source or the output behind their back.
    for var in [
        "KAFKA_BOOTSTRAP",
        "KAFKA_TOPIC",
        "CONSUMER_GROUP",
        "KAFKA_OPTIONS",
        "ROWS_PER_SECOND",
        "MAX_LATE_RECORD",
        "PAGEVIEWS_OUTPUT",
        "PAGEVIEWS_HTTP",
        "PAGEVIEWS_PIPELINE_ID",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Asserts the part of §4 that must hold at every instant, even right after a kill -9:
/// every file in a table folder is named by a committed manifest, as a rolled file, as an
/// open one (which recovery seals) or as a `_SUCCESS` marker.
pub fn assert_only_committed_files(root: &Path) {
    let mut named = std::collections::HashSet::new();
    for m in files(&root.join("_checkpoints")) {
        let manifest: pageviews::checkpoint::Manifest =
            serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
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

/// GET `path` from `addr` over a plain socket: (status code, body).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

/// A counter or gauge's value in Prometheus text (`name value` lines, no labels).
pub fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A small deterministic random number source, so a failing kill schedule can be replayed.
pub struct Lcg(pub u64);

impl Lcg {
    /// From the clock, printed so a failure can be reproduced with `PAGEVIEWS_TEST_SEED`.
    pub fn from_env_or_clock() -> Self {
        let seed =
            std::env::var("PAGEVIEWS_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
            });
        eprintln!("kill schedule seed: PAGEVIEWS_TEST_SEED={seed}");
        Lcg(seed)
    }

    /// Next value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}
