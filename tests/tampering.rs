//! `pageviews run` on an output changed outside pageviews: it stops before reading anything,
//! naming what is missing in the output's own terms (the log entry, the table file), rather
//! than failing on an internal path or writing rows a second time.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn run(out: &Path, args: &[&str]) -> std::process::Output {
    bin().args(["run", "--http", "off", "--output"]).arg(out).args(args).output().unwrap()
}

fn run_ok(out: &Path, args: &[&str]) {
    let done = run(out, args);
    assert!(done.status.success(), "{args:?}: {}", String::from_utf8_lossy(&done.stderr));
}

/// The generator's stream from a fixed seed and start, `extra` flags after.
fn generator<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    [&["--seed", "3", "--start-time", "2020-01-01 00:10:00"][..], extra].concat()
}

/// The newest entry of the generator pipeline's log, and its version.
fn newest_entry(out: &Path) -> (PathBuf, u64) {
    let dir = out.join("_checkpoints/generator/log");
    let newest = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).max().expect("log entries");
    let version = newest.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    (newest, version)
}

/// Runs `args` on the tampered `out` and asserts it is refused with every piece of `wanted`
/// in its error, having committed nothing.
fn assert_refused(out: &Path, args: &[&str], wanted: &[&str]) -> String {
    let before = (committed(out), commit_count(out));
    let done = run(out, args);
    let stderr = String::from_utf8_lossy(&done.stderr).into_owned();
    assert!(!done.status.success(), "the run went on:\n{stderr}");
    for w in wanted {
        assert!(stderr.contains(w), "no {w:?} in:\n{stderr}");
    }
    assert_eq!((committed(out), commit_count(out)), before, "nothing was committed:\n{stderr}");
    stderr
}

#[test]
fn a_deleted_newest_log_entry_whose_files_were_published_is_named_and_the_run_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // Paced, with short checkpoints: the last entry completes files the one before recorded
    // as still open.
    let args = generator(&["--count", "3000", "--rate", "2000", "--checkpoint-interval", "200ms"]);
    run_ok(&out, &args);
    let (newest, version) = newest_entry(&out);
    assert!(version > 3, "several commits: {version}");
    std::fs::remove_file(&newest).unwrap();
    let missing = format!("log entry {version}");
    assert_refused(&out, &args, &[&missing, "is missing"]);
    assert_refused(&out, &generator(&["--count", "6000", "--rate", "0"]), &[&missing]);
}

#[test]
fn a_deleted_newest_log_entry_whose_files_were_all_new_is_named_and_the_run_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // The first run ends with every file closed; the second run's entry holds only files it
    // opened itself.
    run_ok(&out, &generator(&["--count", "1000", "--rate", "0"]));
    let args = generator(&["--count", "2000", "--rate", "0"]);
    run_ok(&out, &args);
    let (newest, version) = newest_entry(&out);
    std::fs::remove_file(&newest).unwrap();
    assert_refused(&out, &args, &[&format!("log entry {version}"), "is missing"]);
}

#[test]
fn a_deleted_first_commit_is_named_and_the_run_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // One claim and one commit: without the commit, the log says nothing was ever written.
    let args = generator(&["--count", "1000", "--rate", "0"]);
    run_ok(&out, &args);
    let (newest, version) = newest_entry(&out);
    assert_eq!(version, 2);
    std::fs::remove_file(&newest).unwrap();
    assert_refused(&out, &args, &["log entry 2", "is missing"]);
}

#[test]
fn a_deleted_committed_file_is_named_with_the_entry_and_partition_that_committed_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), "in.jsonl", &original_example_lines());
    let out = dir.path().join("out");
    let args = ["--input", input.as_str()];
    run_ok(&out, &args);
    let file = files(&out.join("page_views")).into_iter().find(|p| !p.ends_with("_SUCCESS")).unwrap();
    std::fs::remove_file(&file).unwrap();
    let rel = file.strip_prefix(&out).unwrap().display().to_string();
    let stderr = assert_refused(&out, &args, &[&rel, "log entry 2", "partition 0"]);
    assert!(!stderr.contains("_staging"), "the table file is named, not where it was staged:\n{stderr}");
}
