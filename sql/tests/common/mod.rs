//! Helpers shared by the sql crate's integration tests: pipeline runs into a table root in
//! either format, and queries whose results come back as CSV lines. Inputs and fixtures come
//! from the shared test kit.
#![allow(dead_code, unused_imports)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use pageviews::sink::Format as WriteFormat;
use pageviews_core::time::format_timestamp;
use pageviews_sql::{output, Budget, QueryResult, Session, TableRoot};
pub use pageviews_testkit::{original_example_lines as original_example, *};

pub const POSTCODES: [&str; 3] = ["SW1A 1AA", "W1J 7NT", "EC1A 1BB"];

/// Milliseconds of 2020-01-01 00:00:00 UTC.
pub const BASE_MS: i64 = 1_577_836_800_000;

/// A page-view line at `ms`.
pub fn view(user: i64, postcode: &str, ms: i64) -> String {
    view_at(user, postcode, ms)
}

/// Runs the pipeline over `lines` into JSON-lines tables and returns the table root.
pub fn pipeline(dir: &Path, lines: &[String]) -> PathBuf {
    let out = dir.join("tables");
    pipeline_to(dir, lines, WriteFormat::Jsonl, &out.display().to_string());
    out
}

/// Runs the pipeline over `lines` into `output` (a path or an s3:// URL) in `format`.
pub fn pipeline_to(dir: &Path, lines: &[String], format: WriteFormat, output: &str) {
    let input = write_input(dir, &format!("input-{}.jsonl", format.extension()), lines);
    let summary = run_files_to(&[input], output, |c| c.files.format = format);
    assert!(summary.reached_end);
}

/// Three hours of events, 18 s apart, round-robin over three postcodes; every 50th event
/// after the first hundred is repeated 20 minutes in the past (late), and three lines are
/// malformed. Returns the lines and the on-time count per (postcode, window start).
pub fn three_hours() -> (Vec<String>, BTreeMap<(String, String), i64>) {
    let mut lines = Vec::new();
    let mut on_time: BTreeMap<(String, String), i64> = BTreeMap::new();
    for i in 0..600i64 {
        let ms = BASE_MS + i * 18_000;
        let postcode = POSTCODES[(i % 3) as usize];
        lines.push(view(i, postcode, ms));
        *on_time.entry((postcode.to_string(), format_timestamp(ms - ms % 60_000))).or_default() += 1;
        if i % 50 == 49 && i > 100 {
            lines.push(view(10_000 + i, postcode, ms - 20 * 60_000));
        }
        if i % 200 == 7 {
            lines.push(format!("{{\"user_id\": {i}, \"postcode\":"));
        }
    }
    (lines, on_time)
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime")
}

pub fn session(root: &Path) -> Session {
    session_on(&root.display().to_string())
}

/// A session on a root given as `--output` would be: a path or a bucket URL (with the test
/// store's settings).
pub fn session_on(url: &str) -> Session {
    let root = if store::is_bucket_url(url) {
        TableRoot::parse_with(url, &store::env())
    } else {
        TableRoot::parse(url)
    };
    let root = root.unwrap_or_else(|e| panic!("{url}: {e}"));
    runtime().block_on(Session::open(&root, budget())).unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// The budget of the tests' sessions: more than any of their statements needs.
pub fn budget() -> Budget {
    Budget::with_memory(1 << 30)
}

pub fn query(session: &Session, sql: &str) -> QueryResult {
    runtime().block_on(session.query(sql)).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// A query's rows as CSV lines, header first.
pub fn csv(session: &Session, sql: &str) -> Vec<String> {
    try_csv(session, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// [`csv`], or the statement's error as the session reports it.
pub fn try_csv(session: &Session, sql: &str) -> Result<Vec<String>, String> {
    let result = runtime().block_on(session.query(sql)).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    output::write_batches(&mut out, output::Format::Csv, &result.batches).expect("csv");
    Ok(String::from_utf8(out).expect("utf8").lines().map(str::to_string).collect())
}

pub fn single_i64(session: &Session, sql: &str) -> i64 {
    let rows = csv(session, sql);
    assert_eq!(rows.len(), 2, "{sql}: {rows:?}");
    rows[1].parse().unwrap_or_else(|e| panic!("{sql}: {:?}: {e}", rows[1]))
}
