//! Object-store output against a real server, one per run (`PAGEVIEWS_TEST_STORE`): moto or
//! s3rver for S3 (scripts/s3-local), Azurite for Azure Blob Storage (scripts/azure-local);
//! scripts/test runs these against each. Both tables commit and verify there, files span
//! checkpoints as multipart uploads (S3) or staged blocks (Azure), kill -9 with an upload
//! open recovers exactly once and leaves no upload behind, and a store that cannot list
//! uploads says how orphans are cleaned instead. Outages are in `stores_outages.rs`, fencing
//! and the lease in `stores_fencing.rs`.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::stores::*;
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

/// The open files of the pipeline's newest committed state.
fn committed_open_files(rt: &tokio::runtime::Runtime, storage: &Storage) -> Vec<OpenFileState> {
    match rt.block_on(View::load(storage, "generator")) {
        Ok(view) => view.tasks.into_values().flat_map(|t| t.open).collect(),
        Err(_) => Vec::new(),
    }
}

/// `pageviews` for `verify`: on Azurite configured its own way (`AZURE_STORAGE_USE_EMULATOR`,
/// at `AZURITE_BLOB_STORAGE_URL`, object_store's well-known account), so that way is proven
/// too; elsewhere as [`store_bin`].
fn verify_bin() -> std::process::Command {
    if store::server() != "azurite" {
        return store_bin();
    }
    let mut cmd = bin();
    cmd.env("AZURE_STORAGE_USE_EMULATOR", "true").env("AZURITE_BLOB_STORAGE_URL", store::endpoint());
    cmd
}

fn run_to_end(args: &[&str]) {
    let out = store_bin().args(args).stderr(Stdio::piped()).output().expect("run pageviews");
    assert!(out.status.success(), "pageviews {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_run_to_a_bucket_commits_tables_equal_to_a_local_run_and_verifies_there() {
    for format in ["jsonl", "parquet"] {
        let bucket = store::bucket("pv-run");
        let url = store::url(&bucket, "warehouse/pv");
        let extra = ["--count", "30000", "--rate", "0", "--max-late-ms", "8000", "--format", format];
        run_to_end(&run_args(&url, &extra));
        let local = tempfile::tempdir().unwrap();
        let local_out = local.path().display().to_string();
        run_to_end(&run_args(&local_out, &extra));

        let (rt, storage) = store::storage(&url);
        let report = pageviews::verify::verify(&storage).unwrap();
        assert!(report.is_clean(), "{format}: verify in the bucket:\n{report}");
        assert_eq!(report.rows.get("page_views"), Some(&30_000), "{format}:\n{report}");
        assert!(
            report.rows.get("late_page_views").is_some_and(|n| *n > 0),
            "{format}: late rows expected:\n{report}"
        );
        for (table, drop) in
            [("page_views", &[][..]), ("page_view_aggregates", &[][..]), ("late_page_views", &[][..])]
        {
            assert_eq!(
                store_rows(&rt, &storage, table, drop),
                row_multiset(local.path(), table, drop),
                "{format}: {table} in the bucket differs from the same run on local disk"
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

        let cli = verify_bin().args(["verify", "--output", &url]).output().unwrap();
        assert!(cli.status.success(), "pageviews verify: {}", String::from_utf8_lossy(&cli.stdout));
    }
}

#[test]
fn kill_9_with_a_multipart_upload_open_recovers_exactly_once_and_aborts_the_orphans() {
    let bucket = store::bucket("pv-kill");
    let url = store::url(&bucket, "t");
    // 300k events at 50k/s: a page_views file of ~30 MiB grows in 5 MiB parts over 6 s,
    // spanning many 500 ms checkpoints.
    let extra =
        ["--count", "300000", "--rate", "50000", "--checkpoint-interval", "500ms", "--part-size", "5MiB"];
    let args = run_args(&url, &extra);
    let (rt, storage) = store::storage(&url);
    let mut child = store_bin().args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Kill once a checkpoint records an open file with uploaded parts.
    wait_for("a checkpoint with an open multipart upload", Duration::from_secs(60), || {
        committed_open_files(&rt, &storage).iter().any(|f| f.table == Table::PageViews && !f.parts.is_empty())
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let open_before = uploads(&rt, &storage);
    // s3rver cannot list uploads, so there the open ones cannot be seen (or aborted); on
    // Azure a file's staged blocks are listed by no call, and expire by themselves.
    if store::lists_uploads() {
        assert!(!open_before.is_empty(), "the kill left uploads open (what recovery must handle)");
    }
    assert!(
        objects(&rt, &storage).iter().all(|o| !o.starts_with("page_views/") || o.ends_with("_SUCCESS")),
        "nothing of the open file is visible before recovery"
    );

    let started = Instant::now();
    run_to_end(&args);
    eprintln!("restart ran to the end in {:?}", started.elapsed());
    let left = uploads(&rt, &storage);
    assert!(
        left.is_empty(),
        "recovery completed or aborted every upload: {left:?} (before: {open_before:?})"
    );
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
    let tables = ["page_views", "page_view_aggregates", "late_page_views"];
    assert_rows_as_uninterrupted(&rt, &storage, local.path(), &tables, "kill -9 and recovery");
}

#[test]
fn a_store_that_cannot_list_uploads_gets_one_warning_naming_the_lifecycle_rule_and_the_run_goes_on() {
    let bucket = store::bucket("pv-nolist");
    let url = store::url(&bucket, "n");
    // Two runs: the second recovers, which is where uploads are listed (for every table).
    for count in ["2000", "4000"] {
        let out = store_bin().args(run_args(&url, &["--count", count, "--rate", "0"])).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let warnings = stderr.lines().filter(|l| l.contains("AbortIncompleteMultipartUpload")).count();
        // s3rver answers ListMultipartUploads with 501; moto implements it; Azure's staged
        // blocks expire by themselves, so nothing is listed or warned about.
        let want = usize::from(store::server() == "s3rver");
        assert_eq!(warnings, want, "{stderr}");
    }
    let (_rt, storage) = store::storage(&url);
    let report = pageviews::verify::verify(&storage).unwrap();
    assert!(report.is_clean() && report.rows.get("page_views") == Some(&4000), "{report}");
}
