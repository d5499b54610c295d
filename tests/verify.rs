//! `pageviews verify` must pass a committed run and catch every kind of tampering it audits.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pageviews::metrics::Metrics;
use pageviews::source::GeneratorConfig;
use pageviews::verify::Report;
use pageviews::{PipelineConfig, Shutdown, SourceConfig};

/// A fresh committed run with rows in all four tables: the original example read grouped by
/// postcode (W1J 7NT's first two events are late) plus one malformed record.
fn committed_run() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = original_example_grouped_lines();
    lines.push(r#"{"user_id": 1,"#.to_string());
    let input = write_input(dir.path(), "in.jsonl", &lines);
    let out = dir.path().join("out");
    run_files(&[input], &out, |_| {});
    (dir, out)
}

/// Asserts the audit is not clean and that one violation contains every piece of `wanted`.
fn assert_violation(report: &Report, wanted: &[&str]) {
    assert!(!report.is_clean(), "tampering went unnoticed:\n{report}");
    assert!(
        report.violations.iter().any(|v| wanted.iter().all(|w| v.contains(w))),
        "no violation mentions all of {wanted:?}:\n{report}"
    );
}

/// The one committed file of `table`, which this small run writes exactly one of.
fn only_file(root: &Path, table: &str) -> PathBuf {
    let found: Vec<PathBuf> =
        files(&root.join(table)).into_iter().filter(|p| !p.ends_with("_SUCCESS")).collect();
    assert_eq!(found.len(), 1, "{table}: {found:?}");
    found.into_iter().next().unwrap()
}

/// A path as verify names it: relative to the table root, `/`-separated.
fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap().display().to_string()
}

fn edit_lines(path: &Path, edit: impl FnOnce(&mut Vec<String>)) {
    let mut lines: Vec<String> = std::fs::read_to_string(path).unwrap().lines().map(String::from).collect();
    edit(&mut lines);
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// Replaces `from` with `to` in the one line of `path` holding `from`; returns its line number.
fn edit_line(path: &Path, from: &str, to: &str) -> usize {
    let mut at = 0;
    edit_lines(path, |lines| {
        let found: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].contains(from)).collect();
        assert_eq!(found.len(), 1, "{from} in {lines:?}");
        at = found[0];
        lines[at] = lines[at].replace(from, to);
    });
    at + 1
}

fn cli_verify(root: &Path) -> std::process::Output {
    bin().args(["verify", "--output", &root.display().to_string()]).output().unwrap()
}

#[test]
fn a_clean_run_with_late_and_malformed_records_verifies_and_the_cli_exits_zero_with_row_counts() {
    let (_dir, out) = committed_run();
    let report = assert_verified(&out);
    let want = [("page_views", 10), ("late_page_views", 2), ("page_view_aggregates", 3), ("dead_letters", 1)];
    for (table, n) in want {
        assert_eq!(report.rows.get(table), Some(&n), "{table}:\n{report}");
    }
    assert_eq!(report.totals.records_read, 11);

    let cli = cli_verify(&out);
    let stdout = String::from_utf8_lossy(&cli.stdout);
    assert_eq!(cli.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&cli.stderr));
    assert!(stdout.contains("OK: every guarantee holds"), "{stdout}");
    for (table, n) in want {
        let line = format!("{table} {n} rows");
        assert!(
            stdout.lines().any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == line),
            "no `{line}` in:\n{stdout}"
        );
    }
}

#[test]
fn a_line_removed_from_a_committed_page_views_file_fails_verify_and_the_cli_exits_one() {
    let (_dir, out) = committed_run();
    edit_lines(&only_file(&out, "page_views"), |l| {
        l.remove(0);
    });
    let violation = "page_views holds 9 rows but the checkpoints committed 10";
    assert_violation(&audit(&out), &[violation]);

    let cli = cli_verify(&out);
    let stdout = String::from_utf8_lossy(&cli.stdout);
    assert_eq!(cli.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(violation), "{stdout}");
    assert!(String::from_utf8_lossy(&cli.stderr).contains("violation(s) in"));
}

#[test]
fn an_aggregate_row_emitted_twice_fails_verify_naming_its_window_and_postcode() {
    let (_dir, out) = committed_run();
    let file = only_file(&out, "page_view_aggregates");
    let mut copy_at = 0;
    edit_lines(&file, |l| {
        let first = l.iter().find(|r| r.contains(r#""window":"2020-01-01 00:01:00.000""#)).unwrap().clone();
        l.push(first);
        copy_at = l.len();
    });
    let again = format!("again at {}:{copy_at}", rel(&out, &file));
    let window = r#"window ending 2020-01-01 00:01:00.000 for "SW1A 1AA" is emitted twice"#;
    assert_violation(&audit(&out), &[window, &again]);
}

#[test]
fn aggregate_views_that_differ_from_page_views_minus_late_fail_verify() {
    let (_dir, out) = committed_run();
    // Its two late events belong to the window before, so 3 is the only right count here.
    let file = only_file(&out, "page_view_aggregates");
    let row = r#""W1J 7NT","window_start":"2020-01-01 00:01:00.000","window":"2020-01-01 00:02:00.000""#;
    edit_line(&file, &format!(r#"{row},"views":3"#), &format!(r#"{row},"views":5"#));
    assert_violation(
        &audit(&out),
        &[
            r#"window ending 2020-01-01 00:02:00.000 for "W1J 7NT" has views 5 but page_views − late_page_views = 3"#,
        ],
    );
}

#[test]
fn a_stray_file_in_a_table_partition_fails_verify_naming_the_file() {
    let (_dir, out) = committed_run();
    let committed = only_file(&out, "late_page_views");
    let stray = committed.with_file_name("part-stray.jsonl");
    std::fs::copy(&committed, &stray).unwrap();
    let named = format!("{} is in a table folder but no committed checkpoint names it", rel(&out, &stray));
    assert_violation(&audit(&out), &[&named]);
}

#[test]
fn a_committed_file_deleted_from_its_table_fails_verify_naming_the_file() {
    let (_dir, out) = committed_run();
    let file = only_file(&out, "page_view_aggregates");
    std::fs::remove_file(&file).unwrap();
    assert_violation(&audit(&out), &[&rel(&out, &file), "named by checkpoint 1 of files but missing"]);
}

#[test]
fn a_page_view_whose_time_leaves_its_partition_fails_verify_naming_the_row_and_its_hour() {
    let (_dir, out) = committed_run();
    let file = only_file(&out, "page_views");
    assert!(rel(&out, &file).contains("/day=2020-01-01/hour=00/"), "{file:?}");
    // An on-time row, so no late row loses its match and only the partition is wrong.
    let line = edit_line(&file, "2020-01-01 00:01:53", "2020-01-01 05:01:53");
    let at = format!("{}:{line} belongs in day=2020-01-01/hour=05", rel(&out, &file));
    assert_violation(&audit(&out), &[&at]);
}

#[test]
fn a_removed_dead_letter_fails_verify_so_every_record_read_stays_accounted_for() {
    let (_dir, out) = committed_run();
    edit_lines(&only_file(&out, "dead_letters"), |l| l.clear());
    // Read = page views + dead letters holds among the log entry's own totals; what a lost
    // dead letter breaks is the table's row count against them.
    assert_violation(&audit(&out), &["dead_letters holds 0 rows but the checkpoints committed 1"]);
}

#[test]
fn a_row_edited_in_place_fails_verify_against_the_size_its_checkpoint_recorded() {
    let (_dir, out) = committed_run();
    let file = only_file(&out, "page_views");
    // Same postcode, window and row count: only the file's recorded size can tell.
    edit_lines(&file, |l| l[0] = l[0].replacen(r#""user_id":1,"#, r#""user_id":10,"#, 1));
    assert!(std::fs::read_to_string(&file).unwrap().contains(r#""user_id":10,"#), "the edit took");
    assert_violation(&audit(&out), &[&rel(&out, &file), "holds 10 rows in", "recorded 10 rows in"]);
}

#[test]
fn a_stray_file_that_looks_like_a_partial_upload_is_still_found() {
    let (_dir, out) = committed_run();
    // object_store's local listing hides `name#<digits>`; Hive and Spark would read it.
    let file = only_file(&out, "page_views");
    let stray = file.with_file_name("stray.jsonl#1");
    std::fs::copy(&file, &stray).unwrap();
    assert_violation(&audit(&out), &[&rel(&out, &stray), "no committed checkpoint names it"]);
}

#[test]
fn a_success_marker_the_newest_checkpoint_recorded_counts_as_pending_not_as_a_violation() {
    let (_dir, out) = committed_run();
    // As after a kill -9 between the checkpoint and its publication: the next recovery (or
    // the running instance) writes it, so verify waits for it instead of failing.
    let markers: Vec<PathBuf> =
        files(&out.join("page_views")).into_iter().filter(|p| p.ends_with("_SUCCESS")).collect();
    assert_eq!(markers.len(), 1, "{markers:?}");
    std::fs::remove_file(&markers[0]).unwrap();
    let report = assert_verified(&out);
    assert_eq!(report.markers_pending, 1, "{report}");
    let stdout = String::from_utf8_lossy(&cli_verify(&out).stdout).into_owned();
    assert!(stdout.contains("_SUCCESS pending"), "{stdout}");
}

#[test]
fn a_running_pipeline_whose_hour_is_in_open_files_only_verifies_clean_with_those_rows_pending() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // Paced at 1,000 events/s from the top of an hour: for the test's few seconds every row
    // is in that hour's page_views file, open until it rolls (1 min).
    let generator = GeneratorConfig {
        rate: 1_000,
        count: None,
        max_late_ms: 0,
        seed: 9,
        start_ms: pageviews::core::time::parse_timestamp("2020-01-01 00:00:00").unwrap(),
        interval_us: None,
    };
    let mut config =
        PipelineConfig::new(SourceConfig::Generator(generator.into()), out.display().to_string());
    config.checkpoint_interval = Duration::from_millis(100);
    let metrics = Arc::new(Metrics::new(&config.pipeline_id));
    let run = pageviews::start(config, Shutdown::default(), metrics).unwrap();
    wait_for("rows committed", Duration::from_secs(60), || committed(&out).page_views > 0);
    let report = assert_verified(&out);
    assert!(report.pending.get("page_views").is_some_and(|&n| n > 0), "{report}");
    run.shutdown().trigger();
    run.join().unwrap();
}
