//! `pageviews sql` holds a statement to its memory budget. A statement that needs more than
//! `--memory-limit`, and more spill than `--spill-limit`, fails with "Resources exhausted"
//! and a hint, the process's memory stays bounded by the limit, and the script goes on with
//! the next statement.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use pageviews::{PipelineConfig, Shutdown, SourceConfig};

/// The memory limit of the hungry statements, in MiB.
const LIMIT_MIB: u64 = 64;

/// What the pool does not count, and may come on top of the baseline and the limit: record
/// batches in flight between operators, spill writers' buffers, the allocator's slack.
/// Measured at 0–12 MiB (docs/measurements.md), so this leaves five times that; a statement
/// without a budget passes it within seconds.
const UNCOUNTED_MIB: u64 = 64;

/// 300,000 generated page views (33 MB of JSON lines) under `dir`.
fn generated_root(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("tables");
    let generator = kafka::generator(42, "2020-01-01 00:00:00", 300_000);
    let config = PipelineConfig::new(SourceConfig::Generator(generator.into()), out.display().to_string());
    let summary = pageviews::run(config, Shutdown::default()).expect("the pipeline runs");
    assert!(summary.reached_end);
    out
}

/// A line of `/proc/<pid>/status` in KiB (`VmHWM`, `VmRSS`); `None` once the process is gone.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    line.trim().strip_suffix("kB")?.trim().parse().ok()
}

/// What a run of `pageviews-sql` did: its exit code, output and peak RSS.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    peak_mib: u64,
}

/// Runs `pageviews-sql` with `args` and `env`, polling its peak RSS (`VmHWM`) until it ends,
/// and kills it should its RSS pass `kill_above_mib`, so a statement without a budget cannot
/// take the machine's memory.
fn run_polled(args: &[&str], env: &[(&str, &str)], kill_above_mib: u64) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pageviews-sql"));
    cmd.env_remove("PAGEVIEWS_OUTPUT")
        .env_remove("PAGEVIEWS_SQL_MEMORY_LIMIT")
        .env_remove("PAGEVIEWS_SQL_SPILL_LIMIT");
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (key, value) in env {
        cmd.env(key, value);
    }
    let mut child = cmd.spawn().expect("pageviews-sql starts");
    let pid = child.id();
    // The pipes are drained beside the polling, so a full pipe never stalls the child.
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let stdout = std::thread::spawn(move || std::io::read_to_string(&mut out_pipe).unwrap_or_default());
    let stderr = std::thread::spawn(move || std::io::read_to_string(&mut err_pipe).unwrap_or_default());
    let mut peak_kib = 0;
    let mut killed = false;
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(hwm) = status_kib(pid, "VmHWM") {
            peak_kib = peak_kib.max(hwm);
        }
        if !killed && (peak_kib > kill_above_mib * 1024 || Instant::now() > deadline) {
            let _ = child.kill();
            killed = true;
        }
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let run = Run {
        code: status.code(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        peak_mib: peak_kib / 1024,
    };
    assert!(!killed, "killed at {} MiB of RSS (bound {kill_above_mib} MiB):\n{}", run.peak_mib, run.stderr);
    run
}

#[test]
fn statements_past_the_budget_fail_with_a_hint_in_bounded_memory_and_the_script_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let root = generated_root(dir.path());
    let root = root.to_str().expect("a UTF-8 path");
    let spill = dir.path().join("spill");
    std::fs::create_dir(&spill).unwrap();
    let env = [
        ("TMPDIR", spill.to_str().expect("a UTF-8 path")),
        ("PAGEVIEWS_SQL_MEMORY_LIMIT", "64MiB"),
        ("PAGEVIEWS_SQL_SPILL_LIMIT", "32MiB"),
    ];

    // The same binary, table and budget answering a count: what any statement costs.
    let baseline = run_polled(&["--output", root, "-e", "SELECT count(*) FROM page_views"], &env, 1024);
    assert_eq!(baseline.code, Some(0), "{}", baseline.stderr);
    let bound = baseline.peak_mib + LIMIT_MIB + UNCOUNTED_MIB;

    let script = dir.path().join("hungry.sql");
    std::fs::write(
        &script,
        "-- 9e10 rows to sort: the sort spills until --spill-limit\n\
         SELECT a.user_id, b.user_id FROM page_views a CROSS JOIN page_views b ORDER BY a.webpage, b.postcode;\n\
         -- 9e10 rows to print: the result is held, and counted, before it is printed\n\
         SELECT a.user_id, b.user_id FROM page_views a CROSS JOIN page_views b;\n\
         SELECT count(*) AS events FROM page_views;\n",
    )
    .unwrap();
    let hungry = run_polled(
        &["--output", root, "--format", "csv", "-f", script.to_str().expect("a UTF-8 path")],
        &env,
        bound,
    );
    let stderr = &hungry.stderr;
    assert_eq!(hungry.code, Some(1), "{stderr}");
    assert_eq!(hungry.stdout, "events\n300000\n", "the statement after the failing ones ran: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 2, "{stderr}");
    assert!(
        errors[0].contains("statement 1: Resources exhausted") && errors[0].contains("--spill-limit 32 MiB"),
        "{stderr}"
    );
    assert!(errors[1].contains("statement 2: Resources exhausted"), "{stderr}");
    let hints: Vec<&str> = stderr.lines().filter(|l| l.starts_with("hint: ")).collect();
    assert_eq!(hints.len(), 2, "{stderr}");
    assert!(hints[0].contains("raise --spill-limit"), "{stderr}");
    assert!(hints[1].contains("--memory-limit 64 MiB") && hints[1].contains("LIMIT"), "{stderr}");
    assert!(hungry.peak_mib <= bound, "peak RSS {} MiB, bound {bound} MiB", hungry.peak_mib);
    assert_eq!(std::fs::read_dir(&spill).unwrap().count(), 0, "spill files are removed");
    eprintln!(
        "peak RSS: baseline {} MiB, hungry {} MiB, bound {bound} MiB",
        baseline.peak_mib, hungry.peak_mib
    );
}

#[test]
fn a_result_printed_as_a_table_needs_no_more_memory_than_printed_as_csv() {
    let dir = tempfile::tempdir().unwrap();
    let root = generated_root(dir.path());
    let root = root.to_str().expect("a UTF-8 path");
    let env = [("PAGEVIEWS_SQL_MEMORY_LIMIT", "256MiB")];
    let all = "SELECT * FROM page_views";
    let csv = run_polled(&["--output", root, "--format", "csv", "-e", all], &env, 1024);
    assert_eq!(csv.code, Some(0), "{}", csv.stderr);
    assert_eq!(csv.stdout.lines().count(), 1 + 300_000);
    // One row at a time on top of the result, which both hold: what the allocator makes of
    // it is noise well under this.
    let slack_mib = 32;
    let table = run_polled(&["--output", root, "-e", all], &env, csv.peak_mib + slack_mib);
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    assert_eq!(table.stdout.lines().count(), 3 + 300_000 + 1 + 1, "rules, header, rows, footer");
    assert!(table.stdout.contains("+\n300000 rows in set ("), "the footer follows the table");
    eprintln!("peak RSS: as csv {} MiB, as a table {} MiB", csv.peak_mib, table.peak_mib);
}

#[test]
fn help_explains_the_budget_and_bad_sizes_are_refused() {
    let bin = env!("CARGO_BIN_EXE_pageviews-sql");
    let help = Command::new(bin).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for words in
        ["--memory-limit <SIZE>", "PAGEVIEWS_SQL_MEMORY_LIMIT", "512MiB", "25%", "--spill-limit <SIZE>"]
    {
        assert!(help.contains(words), "{words}: {help}");
    }
    let out = Command::new(bin).args(["--memory-limit", "lots", "--print-catalog"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("\"lots\" is not a size") && stderr.contains("4GiB"), "{stderr}");
}
