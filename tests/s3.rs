//! S3 output against a real S3-compatible server (moto, started by scripts/s3-local):
//! both tables commit and verify there, files span checkpoints as multipart uploads, and
//! kill -9 with an upload open recovers exactly once and leaves no upload behind.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use object_store::path::Path as ObjectPath;
use pageviews::core::commit::{OpenFileState, View};
use pageviews::core::storage::Storage;
use pageviews::core::table::Table;

/// Every object under the root, relative to it.
fn objects(rt: &tokio::runtime::Runtime, storage: &Storage) -> Vec<String> {
    let mut out: Vec<String> = rt
        .block_on(storage.list(&ObjectPath::from("")))
        .expect("list the bucket")
        .into_iter()
        .map(|p| p.to_string())
        .collect();
    out.sort();
    out
}

/// Unfinished multipart uploads under every table.
fn uploads(rt: &tokio::runtime::Runtime, storage: &Storage) -> Vec<String> {
    let mut out = Vec::new();
    for t in Table::ALL {
        out.extend(
            rt.block_on(storage.list_uploads(&ObjectPath::from(t.name())))
                .unwrap()
                .into_iter()
                .map(|u| u.path),
        );
    }
    out
}

/// A table's rows on S3 as sorted lines, minus the fields named in `drop`.
fn s3_rows(rt: &tokio::runtime::Runtime, storage: &Storage, table: &str, drop: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for path in rt.block_on(storage.list(&ObjectPath::from(table))).unwrap() {
        if path.filename() == Some("_SUCCESS") {
            continue;
        }
        let bytes = rt.block_on(storage.get(&path)).unwrap();
        let text = table_file_text(table, &bytes, path.as_ref());
        let partition = path
            .as_ref()
            .rsplit_once('/')
            .map(|(dir, _)| dir.trim_start_matches(&format!("{table}/")).to_string());
        for line in text.lines() {
            let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
            for f in drop {
                value.as_object_mut().unwrap().remove(*f);
            }
            out.push(format!("{}|{value}", partition.clone().unwrap_or_default()));
        }
    }
    out.sort();
    out
}

/// The open files of the pipeline's newest committed state.
fn committed_open_files(rt: &tokio::runtime::Runtime, storage: &Storage) -> Vec<OpenFileState> {
    match rt.block_on(View::load(storage, "generator")) {
        Ok(view) => view.tasks.into_values().flat_map(|t| t.open).collect(),
        Err(_) => Vec::new(),
    }
}

fn run_args<'a>(output: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "--output",
        output,
        "--http",
        "off",
        "--seed",
        "5",
        "--start-time",
        "2020-01-01 00:10:00",
    ];
    args.extend_from_slice(extra);
    args
}

/// `pageviews` with the test server's `AWS_*` settings.
fn s3_bin() -> std::process::Command {
    let mut cmd = bin();
    s3::envs(&mut cmd);
    cmd
}

fn run_to_end(args: &[&str]) {
    let out = s3_bin().args(args).stderr(Stdio::piped()).output().expect("run pageviews");
    assert!(out.status.success(), "pageviews {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_run_to_s3_commits_tables_equal_to_a_local_run_and_verifies_there() {
    for format in ["jsonl", "parquet"] {
        let bucket = s3::bucket("pv-run");
        let url = format!("s3://{bucket}/warehouse/pv");
        let extra = ["--count", "30000", "--rate", "0", "--max-late-ms", "8000", "--format", format];
        run_to_end(&run_args(&url, &extra));
        let local = tempfile::tempdir().unwrap();
        let local_out = local.path().display().to_string();
        run_to_end(&run_args(&local_out, &extra));

        let (rt, storage) = s3::storage(&url);
        let report = pageviews::verify::verify(&storage).unwrap();
        assert!(report.is_clean(), "{format}: verify on S3:\n{report}");
        assert_eq!(report.rows.get("page_views"), Some(&30_000), "{format}:\n{report}");
        assert!(
            report.rows.get("late_page_views").is_some_and(|n| *n > 0),
            "{format}: late rows expected:\n{report}"
        );
        for (table, drop) in
            [("page_views", &[][..]), ("page_view_aggregates", &[][..]), ("late_page_views", &[][..])]
        {
            assert_eq!(
                s3_rows(&rt, &storage, table, drop),
                row_multiset(local.path(), table, drop),
                "{format}: {table} on S3 differs from the same run on local disk"
            );
        }
        let objects = objects(&rt, &storage);
        let ext = format!(".{format}");
        assert!(
            objects
                .iter()
                .all(|o| o.starts_with("_checkpoints/") || o.ends_with("/_SUCCESS") || o.ends_with(&ext)),
            "{format}: only tables, markers and checkpoints remain: {objects:?}"
        );
        assert!(objects.iter().any(|o| o == "page_views/day=2020-01-01/hour=00/_SUCCESS"), "{objects:?}");
        assert!(uploads(&rt, &storage).is_empty(), "{format}: no upload left open");

        let cli = s3_bin().args(["verify", "--output", &url]).output().unwrap();
        assert!(cli.status.success(), "pageviews verify on S3: {}", String::from_utf8_lossy(&cli.stdout));
    }
}

#[test]
fn kill_9_with_a_multipart_upload_open_recovers_exactly_once_and_aborts_the_orphans() {
    let bucket = s3::bucket("pv-kill");
    let url = format!("s3://{bucket}/t");
    // 300k events at 50k/s: a page_views file of ~30 MiB grows in 5 MiB parts over 6 s,
    // spanning many 500 ms checkpoints.
    let extra =
        ["--count", "300000", "--rate", "50000", "--checkpoint-interval", "500ms", "--part-size", "5MiB"];
    let args = run_args(&url, &extra);
    let (rt, storage) = s3::storage(&url);
    let mut child = s3_bin().args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Kill once a checkpoint records an open file with uploaded parts.
    wait_for("a checkpoint with an open multipart upload", Duration::from_secs(60), || {
        committed_open_files(&rt, &storage).iter().any(|f| f.table == Table::PageViews && !f.parts.is_empty())
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let open_before = uploads(&rt, &storage);
    assert!(!open_before.is_empty(), "the kill left uploads open (what recovery must handle)");
    assert!(
        objects(&rt, &storage).iter().all(|o| !o.starts_with("page_views/") || o.ends_with("_SUCCESS")),
        "nothing of the open file is visible before recovery"
    );

    let started = Instant::now();
    run_to_end(&args);
    eprintln!("restart ran to the end in {:?}", started.elapsed());
    assert!(uploads(&rt, &storage).is_empty(), "recovery completed or aborted every upload");
    assert!(
        objects(&rt, &storage).iter().all(|o| !o.starts_with("_staging/")),
        "no staged object left: {:?}",
        objects(&rt, &storage)
    );
    let report = pageviews::verify::verify(&storage).unwrap();
    assert!(report.is_clean(), "{report}");

    let local = tempfile::tempdir().unwrap();
    let local_out = local.path().display().to_string();
    run_to_end(&run_args(&local_out, &extra));
    for table in ["page_views", "page_view_aggregates", "late_page_views"] {
        let (got, want) = (s3_rows(&rt, &storage, table, &[]), row_multiset(local.path(), table, &[]));
        assert_eq!(got.len(), want.len(), "{table}: rows after kill -9 and recovery vs an uninterrupted run");
        assert!(got == want, "{table}: the rows differ from an uninterrupted run");
    }
}
