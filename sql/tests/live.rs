//! SQL on a running pipeline: a statement sees every row the newest checkpoint committed,
//! files still being written included, and never a row past it, in both formats.
//!
//! - the newcomer flow of the README: `pageviews run` in the background, `pageviews sql`
//!   shows rows within one checkpoint interval and a few seconds, while the table folders
//!   (and `--visible-only`) are still empty;
//! - statements racing checkpoints under load: each answer is exactly one checkpoint's
//!   totals, over every table at once, and answers never go back;
//! - a pipeline frozen mid-run (virtual time): counts equal the checkpoint's, a day/hour
//!   filter opens only that partition's open file, and `--visible-only` shows the folders.

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pageviews::clock::ManualClock;
use pageviews::metrics::Metrics;
use pageviews::source::GeneratorConfig;
use pageviews::{PipelineConfig, Shutdown, SourceConfig};

/// The README's first query.
const COUNT: &str = "SELECT count(*) AS events FROM page_views";

fn bins() -> Binaries {
    Binaries::beside_sql(env!("CARGO_BIN_EXE_pageviews-sql"))
}

/// The first number in a boxed result table (`| 123 |`).
fn first_cell(table: &str) -> Option<i64> {
    table
        .lines()
        .filter(|l| l.starts_with('|'))
        .nth(1)?
        .trim_matches(|c| c == '|' || c == ' ')
        .split(' ')
        .next()?
        .parse()
        .ok()
}

/// `pageviews sql ARGS -e SQL` in `dir`: (exit ok, stdout, stderr).
fn sql_in(dir: &std::path::Path, args: &[&str], statement: &str) -> (bool, String, String) {
    let out =
        bins().pageviews().current_dir(dir).arg("sql").args(args).args(["-e", statement]).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The README's quick start, in `format`: what a newcomer sees.
fn newcomer_sees_rows_within_a_checkpoint(format: &str) {
    let dir = tempfile::tempdir().unwrap();
    // As the README runs it (plus the format); the port is the environment's, so tests can
    // run side by side.
    let mut run: Child = bins()
        .pageviews()
        .current_dir(dir.path())
        .env("PAGEVIEWS_HTTP", free_loopback_addr().to_string())
        .args(["run", "--format", format])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    // One checkpoint interval (10 s) and a few seconds.
    let deadline = Duration::from_secs(15);
    let mut seen = None;
    while seen.is_none() && started.elapsed() < deadline {
        let (ok, stdout, stderr) = sql_in(dir.path(), &[], COUNT);
        assert!(ok, "{stderr}");
        if let Some(n) = first_cell(&stdout).filter(|n| *n > 0) {
            // Nothing rolled yet: the folders (what --visible-only and other readers see)
            // are empty, so these rows came from files still being written.
            let (ok, visible, stderr) = sql_in(dir.path(), &["--visible-only"], COUNT);
            assert!(ok, "{stderr}");
            assert_eq!(first_cell(&visible), Some(0), "{format}: no file has rolled yet:\n{visible}");
            seen = Some((n, started.elapsed()));
        }
    }
    let (n, after) = seen.unwrap_or_else(|| panic!("{format}: no rows in pageviews sql after {deadline:?}"));
    eprintln!("{format}: {n} rows in pageviews sql {after:.1?} after pageviews run started");
    let by_now = committed(&dir.path().join("data")).page_views as i64;
    assert!(n > 0 && n <= by_now, "{format}: {n} rows shown, {by_now} committed by now");

    interrupt(&run);
    let status = run.wait().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(status.success(), "{log}");
    // Stopped: every committed row is in a rolled file, and both views agree.
    let total = committed(&dir.path().join("data")).page_views as i64;
    for args in [&[][..], &["--visible-only"]] {
        let (ok, stdout, stderr) = sql_in(dir.path(), args, COUNT);
        assert!(ok, "{stderr}");
        assert_eq!(first_cell(&stdout), Some(total), "{format} {args:?}");
    }
}

#[test]
fn newcomer_sees_rows_in_pageviews_sql_within_a_checkpoint_json_lines() {
    newcomer_sees_rows_within_a_checkpoint("jsonl");
}

#[test]
fn newcomer_sees_rows_in_pageviews_sql_within_a_checkpoint_parquet() {
    newcomer_sees_rows_within_a_checkpoint("parquet");
}

/// Records the totals of every log entry of the pipeline under `root` while it runs, in
/// version order. Entries are pruned 16 versions after a snapshot covers them, so reading
/// the log every 100 ms, while checkpoints come every 100 ms, misses none; a gap fails.
struct LogWatcher {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Result<BTreeSet<Counts>, String>>,
}

/// (page_views, page_view_aggregates, late_page_views) as committed or as a statement saw them.
type Counts = (i64, i64, i64);

impl LogWatcher {
    fn start(root: &std::path::Path) -> LogWatcher {
        use pageviews_core::commit::{Entry, View};
        use std::sync::atomic::Ordering;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (root, flag) = (root.to_path_buf(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut view = View::default();
            let mut all = BTreeSet::from([(0, 0, 0)]);
            loop {
                let last_round = flag.load(Ordering::SeqCst);
                let logs = files(&root.join("_checkpoints")).into_iter().filter(|p| {
                    p.parent().is_some_and(|d| d.ends_with("log"))
                        && p.extension().is_some_and(|e| e == "json")
                });
                let mut entries: Vec<Entry> = logs
                    .filter_map(|p| std::fs::read(p).ok())
                    .filter_map(|b| serde_json::from_slice(&b).ok())
                    .filter(|e: &Entry| e.version > view.version)
                    .collect();
                entries.sort_by_key(|e| e.version);
                let mut gap = None;
                for e in entries {
                    if e.version != view.version + 1 {
                        // Half-written (read again next round), or pruned unread.
                        gap = Some(format!("entries {}..{} were not read", view.version + 1, e.version));
                        break;
                    }
                    view.apply(&e);
                    let t = view.totals();
                    all.insert((
                        t.page_views as i64,
                        t.page_view_aggregates as i64,
                        t.late_page_views as i64,
                    ));
                }
                if last_round {
                    return gap.map_or(Ok(all), Err);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        LogWatcher { stop, thread }
    }

    /// Every committed state's (page_views, page_view_aggregates, late_page_views).
    fn finish(self) -> BTreeSet<Counts> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap().unwrap_or_else(|e| panic!("the log watcher fell behind: {e}"))
    }
}

const TOTALS: &str = "SELECT (SELECT count(*) FROM page_views) AS views,
       (SELECT count(*) FROM page_view_aggregates) AS windows,
       (SELECT count(*) FROM late_page_views) AS late,
       (SELECT count(*) FROM page_views
        WHERE user_id IS NULL OR postcode IS NULL OR webpage IS NULL OR \"timestamp\" IS NULL) AS broken";

/// Statements while the pipeline checkpoints every 100 ms and rolls files every second,
/// under load (10,000 events/s on the test machine's shared cores): each sees exactly one
/// checkpoint, and none goes back.
fn reads_during_checkpoints_see_one_checkpoint_each(format: WriteFormat) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // 10,000 events/s from 00:00:57, 8 s of jitter against a 5 s watermark delay: the first
    // windows close, and late rows come, after about 8 s.
    let generator = GeneratorConfig {
        rate: 10_000,
        count: None,
        max_late_ms: 8_000,
        seed: 5,
        start_ms: BASE_MS + 57_000,
        interval_us: None,
    };
    let mut config =
        PipelineConfig::new(SourceConfig::Generator(generator.into()), out.display().to_string());
    config.files.format = format;
    config.checkpoint_interval = Duration::from_millis(100);
    config.files.roll_age = Duration::from_secs(1);
    let watcher = LogWatcher::start(&out);
    let run_metrics = Arc::new(Metrics::new(&config.pipeline_id));
    let run = pageviews::start(config, Shutdown::default(), run_metrics).unwrap();
    // Every table has committed rows before the statements start, so each is checked.
    wait_for("windows and late rows", Duration::from_secs(120), || {
        let t = committed(&out);
        t.page_view_aggregates > 0 && t.late_page_views > 0
    });

    let s = session(&out);
    let mut seen: Vec<(i64, i64, i64)> = Vec::new();
    let started = Instant::now();
    // At least 20 answers over at least 5 checkpoints: a release build answers 20 statements
    // within two 100 ms checkpoints, a debug build takes several.
    let distinct = |seen: &[(i64, i64, i64)]| seen.iter().collect::<BTreeSet<_>>().len();
    let mut expired = 0;
    while (seen.len() < 20 || distinct(&seen) < 5) && started.elapsed() < Duration::from_secs(60) {
        let row = match try_csv(&s, TOTALS) {
            Ok(row) => row,
            // Checkpoints every 100 ms can outrun the session's own retries of a statement in
            // a loaded debug build: it has no answer to judge, and the next statement runs.
            Err(e) if e.contains("read a new snapshot") => {
                expired += 1;
                continue;
            }
            Err(e) => panic!("{TOTALS}: {e}"),
        };
        let cells: Vec<i64> = row[1].split(',').map(|c| c.parse().unwrap()).collect();
        assert_eq!(cells[3], 0, "{format:?}: a partial row: {row:?}");
        seen.push((cells[0], cells[1], cells[2]));
    }
    run.shutdown().trigger();
    run.join().unwrap();

    let checkpoints = watcher.finish();
    for (i, obs) in seen.iter().enumerate() {
        assert!(checkpoints.contains(obs), "{format:?}: answer {i} {obs:?} is no checkpoint's totals");
        if i > 0 {
            assert!(obs.0 >= seen[i - 1].0, "{format:?}: page_views went back: {seen:?}");
        }
    }
    assert!(
        distinct(&seen) >= 5,
        "{format:?}: statements must meet several checkpoints ({expired} found their snapshot expired): {seen:?}"
    );
    assert!(seen.iter().all(|o| o.1 > 0 && o.2 > 0), "{format:?}: every table is read: {seen:?}");
}

#[test]
fn reads_during_checkpoints_under_load_see_one_checkpoint_each_json_lines() {
    reads_during_checkpoints_see_one_checkpoint_each(WriteFormat::Jsonl);
}

#[test]
fn reads_during_checkpoints_under_load_see_one_checkpoint_each_parquet() {
    reads_during_checkpoints_see_one_checkpoint_each(WriteFormat::Parquet);
}

/// A pipeline held at 35 s of virtual time, at 1000 events/s from 00:59:45: hour 00 is
/// complete (its files rolled), hour 01's file is open (roll age 10 min), the third
/// checkpoint is the newest.
fn frozen_mid_run(
    format: WriteFormat,
) -> (tempfile::TempDir, std::path::PathBuf, pageviews::RunHandle, Arc<ManualClock>) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let generator = GeneratorConfig {
        rate: 1000,
        count: None,
        max_late_ms: 0,
        seed: 9,
        start_ms: BASE_MS + 3_585_000,
        interval_us: None,
    };
    let clock = Arc::new(ManualClock::new(BASE_MS));
    clock.hold_at(35_000);
    let mut config =
        PipelineConfig::new(SourceConfig::Generator(generator.into()), out.display().to_string());
    config.files.format = format;
    config.files.roll_age = Duration::from_secs(600);
    config.clock = clock.clone();
    let metrics = Arc::new(Metrics::new(&config.pipeline_id));
    let run = pageviews::start(config, Shutdown::default(), metrics.clone()).unwrap();
    // Checkpoints at 10, 20 and 30 s; the clock stays at 35 s.
    wait_for("checkpoint 3", Duration::from_secs(60), || metrics.checkpoints.get() >= 3);
    (dir, out, run, clock)
}

#[test]
fn open_files_are_read_as_of_the_checkpoint_and_pruned_by_day_and_hour() {
    for format in [WriteFormat::Jsonl, WriteFormat::Parquet, WriteFormat::Orc] {
        let (_dir, out, run, clock) = frozen_mid_run(format);
        let totals = committed(&out);
        let s = session(&out);
        assert_eq!(single_i64(&s, "SELECT count(*) FROM page_views") as u64, totals.page_views, "{format:?}");
        assert_eq!(
            single_i64(&s, "SELECT count(*) FROM page_view_aggregates") as u64,
            totals.page_view_aggregates,
            "{format:?}"
        );
        assert!(query(&s, "SELECT * FROM page_views LIMIT 1").notes.is_empty(), "{format:?}");

        // Partitions: the open file of hour 01 alone is listed, under the path it will have.
        let plan = csv(&s, "EXPLAIN SELECT user_id FROM page_views WHERE day = '2020-01-01' AND hour = '01'")
            .join("\n");
        let physical =
            plan.split("physical_plan").nth(1).unwrap_or_else(|| panic!("no physical plan: {plan}"));
        assert!(physical.contains("page_views/day=2020-01-01/hour=01/part-"), "{format:?}: {physical}");
        assert!(!physical.contains("hour=00"), "{format:?}: {physical}");
        let hour_01 =
            single_i64(&s, "SELECT count(*) FROM page_views WHERE day = '2020-01-01' AND hour = '01'");
        let by_time = single_i64(
            &s,
            "SELECT count(*) FROM page_views
             WHERE \"timestamp\" >= '2020-01-01 01:00:00' AND \"timestamp\" < '2020-01-01 02:00:00'",
        );
        assert!(
            hour_01 > 0 && hour_01 == by_time,
            "{format:?}: {hour_01} rows in hour=01, {by_time} by time"
        );

        // The folders, as other readers see them: hour 00 is complete (its files rolled),
        // hour 01's file is open.
        let folders = pageviews_sql::TableRoot::parse(&out.display().to_string()).unwrap().visible_only();
        let visible = runtime().block_on(pageviews_sql::Session::open(&folders, budget())).unwrap();
        let shown = single_i64(&visible, "SELECT count(*) FROM page_views");
        assert!(shown > 0 && (shown as u64) < totals.page_views, "{format:?}: {shown} of {totals:?}");
        assert_eq!(
            single_i64(&visible, "SELECT count(*) FROM page_views WHERE hour = '01'"),
            0,
            "{format:?}: hour 01's file is open"
        );

        clock.release();
        run.shutdown().trigger();
        run.join().unwrap();
    }
}

/// Sends SIGINT, as Ctrl-C does.
fn interrupt(child: &Child) {
    let ok = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
}
