//! Exactly once across crashes: kill -9 at arbitrary instants, restart, and the tables
//! equal those of an uninterrupted run. SIGTERM takes a final checkpoint and exits 0.

mod common;

use std::io::Write;
use std::ops::Range;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use pageviews::source::GeneratorConfig;

/// A generated input with late events (timestamps up to 8 s behind, watermark delay 5 s)
/// and a malformed record every 997 lines.
fn generated_input(dir: &Path, records: u64) -> String {
    generated_file(dir, "input.jsonl", 0..records, 8_000)
}

/// The generator's records `seqs`, with timestamps up to `max_late_ms` behind, and a
/// malformed record every 997 lines, in file `name`.
fn generated_file(dir: &Path, name: &str, seqs: Range<u64>, max_late_ms: u64) -> String {
    let gen = GeneratorConfig {
        rate: 0,
        count: None,
        max_late_ms,
        seed: 11,
        start_ms: 1_577_836_800_000,
        interval_us: None,
    };
    let path = dir.join(name);
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut line = Vec::with_capacity(256);
    for seq in seqs {
        line.clear();
        if seq % 997 == 500 {
            line.extend_from_slice(format!("{{\"user_id\": {seq}, \"broken\n").as_bytes());
        } else {
            gen.write_record(seq, &mut line);
            line.push(b'\n');
        }
        file.write_all(&line).unwrap();
    }
    file.flush().unwrap();
    path.display().to_string()
}

/// Two files, the first and second half of one generated stream, with no event later than
/// the watermark delay (5 s): no event is late however the files interleave, so two workers
/// reading them at once must write what one worker reading them in turn writes.
fn generated_halves(dir: &Path, records: u64) -> [String; 2] {
    let half = records / 2;
    [
        generated_file(dir, "first.jsonl", 0..half, 4_000),
        generated_file(dir, "second.jsonl", half..records, 4_000),
    ]
}

/// [`generated_halves`] of `records`, and the tables one worker reading them in turn writes,
/// under `dir/reference`.
fn halves_and_reference(dir: &Path, records: u64) -> ([String; 2], std::path::PathBuf) {
    let inputs = generated_halves(dir, records);
    let reference = dir.join("reference");
    let summary = run_files(&inputs, &reference, |c| c.windows.idle_timeout_ms = 3_600_000);
    assert_eq!(summary.totals.late_page_views, 0, "no event may be late in either reading order");
    assert!(summary.totals.dead_letters > 100, "the input must exercise dead letters");
    (inputs, reference)
}

/// `pageviews run` with two workers over `inputs` into `out`, checkpointing every 100 ms. No
/// input turns idle: a worker slowed by a loaded machine must not move the watermark on.
fn two_workers<'a>(inputs: &'a [String; 2], out: &'a str) -> Vec<&'a str> {
    #[rustfmt::skip]
    let args = ["run", "--input", &inputs[0], "--input", &inputs[1], "--workers", "2", "--idle-timeout", "1h",
        "--output", out, "--checkpoint-interval", "100ms", "--http", "off"];
    args.to_vec()
}

/// The tables of `got` equal those of `want`: every table row for row, dead letters but for
/// when they were received.
fn assert_same_tables(got: &Path, want: &Path, context: &str) {
    for table in ["page_views", "late_page_views", "page_view_aggregates"] {
        let (want, got) = (row_multiset(want, table, &[]), row_multiset(got, table, &[]));
        assert_eq!(got.len(), want.len(), "{table}: row count {context}");
        assert!(got == want, "{table}: rows differ from the uninterrupted run {context}");
    }
    // Dead letters are partitioned by when they were received, which differs between runs.
    let strip = |root: &Path| {
        let mut v: Vec<String> = rows(root, "dead_letters")
            .into_iter()
            .map(|mut r| {
                r.value.as_object_mut().unwrap().remove("received_at");
                r.value.to_string()
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(strip(got), strip(want), "dead letters {context}");
}

fn spawn(args: &[&str]) -> Child {
    bin().args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn pageviews")
}

/// Starts the pipeline again and again, killing it with SIGKILL shortly after each new
/// checkpoint, until a run finishes by itself. Returns how many kills hit a running process.
fn run_with_kills(args: &[&str], out: &Path, rng: &mut Lcg, max_kills: usize) -> usize {
    let mut kills = 0;
    loop {
        let before = commit_count(out);
        let mut child = spawn(args);
        if kills < max_kills {
            // Wait for progress (a new checkpoint) or the end, then kill at a random instant.
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                if child.try_wait().unwrap().is_some() || commit_count(out) > before {
                    break;
                }
                assert!(Instant::now() < deadline, "no checkpoint within 120 s");
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(rng.below(120)));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                assert_only_committed_files(out);
                continue;
            }
        }
        let status = child.wait().unwrap();
        assert!(status.success(), "the final run failed: {status}");
        return kills;
    }
}

#[test]
fn kill_9_during_a_file_run_then_restart_gives_the_same_tables_as_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = generated_input(dir.path(), 400_000);
    let reference = dir.path().join("reference");
    let summary = run_files(std::slice::from_ref(&input), &reference, |_| {});
    assert!(summary.totals.late_page_views > 100, "the input must exercise late events");
    assert!(summary.totals.dead_letters > 100, "the input must exercise dead letters");

    let out = dir.path().join("crashed");
    let out_s = out.display().to_string();
    let args =
        ["run", "--input", &input, "--output", &out_s, "--checkpoint-interval", "100ms", "--http", "off"];
    let mut rng = Lcg::from_env_or_clock();
    let kills = run_with_kills(&args, &out, &mut rng, 6);
    assert!(kills >= 3, "only {kills} kills hit a running pipeline; the input is too small to test recovery");
    assert_same_tables(&out, &reference, &format!("after {kills} kills"));
    assert_verified(&out);
}

/// ORC files span checkpoints as Parquet files do (a stripe per checkpoint, a file tail in
/// each checkpoint's tail object): every kill leaves open files that recovery seals at their
/// committed rows, and the tables read back as the uninterrupted JSON-lines run's.
#[test]
fn kill_9_during_an_orc_run_seals_every_open_file_at_its_committed_rows() {
    let dir = tempfile::tempdir().unwrap();
    let input = generated_input(dir.path(), 200_000);
    let reference = dir.path().join("reference");
    run_files(std::slice::from_ref(&input), &reference, |_| {});

    let out = dir.path().join("crashed");
    let out_s = out.display().to_string();
    let args = [
        "run",
        "--input",
        &input,
        "--output",
        &out_s,
        "--format",
        "orc",
        "--checkpoint-interval",
        "100ms",
        "--http",
        "off",
    ];
    let mut rng = Lcg::from_env_or_clock();
    let kills = run_with_kills(&args, &out, &mut rng, 4);
    assert!(kills >= 2, "only {kills} kills hit a running pipeline; the input is too small to test recovery");
    assert_same_tables(&out, &reference, &format!("after {kills} kills"));
    assert_verified(&out);
}

/// Two workers over two files: the second relays what it reads to the first, which counts
/// every window, and commits a position only once the first committed counting it. A kill
/// between their commits must neither lose nor double a count. `PAGEVIEWS_SOAK_KILLS=N`
/// raises the number of kills (scripts/soak does, outside CI).
#[test]
fn kill_9_during_a_two_worker_file_run_gives_the_tables_of_one_worker() {
    let dir = tempfile::tempdir().unwrap();
    let max_kills = soak_kills(6);
    // Input for every kill to land in a running pipeline: each run reads up to ~50,000.
    let (inputs, reference) = halves_and_reference(dir.path(), 400_000.max(50_000 * max_kills as u64));

    let out = dir.path().join("crashed");
    let out_s = out.display().to_string();
    let args = two_workers(&inputs, &out_s);
    let kills = run_with_kills(&args, &out, &mut Lcg::from_env_or_clock(), max_kills);
    let (want, got) = (row_multiset(&reference, "page_views", &[]), row_multiset(&out, "page_views", &[]));
    let (lost, duplicated) = unmatched(&want, &got);
    eprintln!("kills {kills}, records {}, lost {lost}, duplicated {duplicated}", want.len());
    assert!(kills >= 3, "only {kills} kills hit a running pipeline; the input is too small to test recovery");
    let members: Vec<String> = holders(&out).into_values().collect();
    assert_eq!(members, ["0-w0", "0-w1"], "each file was read by its own worker");
    assert_same_tables(&out, &reference, &format!("after {kills} kills"));
    assert_verified(&out);
}

/// A second instance started on the same files and output takes them over. The first, with
/// two workers, stops with an error rather than wait for a count that moved to the second;
/// the second's tables equal one uninterrupted worker's.
#[test]
fn a_second_instance_takes_the_files_over_and_the_first_two_workers_stop() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, reference) = halves_and_reference(dir.path(), 600_000);

    let out = dir.path().join("out");
    let out_s = out.display().to_string();
    let args = |id| [&two_workers(&inputs, &out_s)[..], &["--instance-id", id]].concat();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut first =
        bin().args(args("a")).stdout(Stdio::null()).stderr(log.reopen().unwrap()).spawn().unwrap();
    wait_for("the first instance's checkpoints", Duration::from_secs(60), || commit_count(&out) >= 3);
    let second = bin().args(args("b")).output().unwrap();
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    let stopped = poll_until(Duration::from_secs(60), || first.try_wait().unwrap().is_some());
    let first_log = std::fs::read_to_string(log.path()).unwrap();
    assert!(stopped, "the first instance went on after losing its files:\n{first_log}");
    // It stops with an error: its next commit is fenced, or the second's recovery removed
    // the uploads it had in flight, whichever comes first.
    let status = first.wait().unwrap();
    assert!(!status.success(), "the first instance lost its files yet exited 0:\n{first_log}");
    assert_same_tables(&out, &reference, "after the takeover");
    assert_verified(&out);
}

/// Rows of sorted `want` missing from sorted `got`, and rows of `got` beyond `want`'s.
fn unmatched(want: &[String], got: &[String]) -> (usize, usize) {
    let (mut i, mut j, mut lost, mut extra) = (0, 0, 0, 0);
    while i < want.len() || j < got.len() {
        match (want.get(i), got.get(j)) {
            (Some(w), Some(g)) if w == g => (i, j) = (i + 1, j + 1),
            (Some(w), Some(g)) if w < g => (i, lost) = (i + 1, lost + 1),
            (Some(_), None) => (i, lost) = (i + 1, lost + 1),
            _ => (j, extra) = (j + 1, extra + 1),
        }
    }
    (lost, extra)
}

/// SIGTERM reaches both workers while the second relays to the first: the first takes what
/// the second read before its last checkpoint, both exit with everything committed, and the
/// same command again finishes the tables.
#[test]
fn sigterm_stops_two_workers_cleanly_and_the_same_command_finishes_the_tables() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, reference) = halves_and_reference(dir.path(), 400_000);

    let out = dir.path().join("out");
    let out_s = out.display().to_string();
    let args = two_workers(&inputs, &out_s);
    let mut child = spawn(&args);
    wait_for("a checkpoint", Duration::from_secs(60), || commit_count(&out) >= 3);
    let ok = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM must exit 0, got {status}");
    let read = committed(&out).records_read;
    assert!(read < 400_000, "the run ended before SIGTERM reached it; give it more input");
    assert_only_committed_files(&out);
    assert_verified(&out);

    assert!(spawn(&args).wait().unwrap().success());
    assert_same_tables(&out, &reference, "after SIGTERM and a second run");
    assert_verified(&out);
}

#[test]
fn the_generator_replays_exactly_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let common = [
        "--rate",
        "0",
        "--count",
        "300000",
        "--seed",
        "5",
        "--start-time",
        "2020-01-01 00:00:00",
        "--http",
        "off",
    ];
    let reference = dir.path().join("reference");
    let ref_s = reference.display().to_string();
    let mut args = vec!["run", "--output", &ref_s];
    args.extend(common);
    assert!(spawn(&args).wait().unwrap().success());

    let out = dir.path().join("crashed");
    let out_s = out.display().to_string();
    let mut args = vec!["run", "--output", &out_s, "--checkpoint-interval", "50ms"];
    args.extend(common);
    let kills = run_with_kills(&args, &out, &mut Lcg::from_env_or_clock(), 4);
    assert!(kills >= 2, "only {kills} kills hit a running pipeline");
    for table in ["page_views", "late_page_views", "page_view_aggregates"] {
        assert!(
            row_multiset(&out, table, &[]) == row_multiset(&reference, table, &[]),
            "{table} differs from the uninterrupted run after {kills} kills"
        );
    }
    assert_eq!(rows(&out, "page_views").len(), 300_000);
    assert_verified(&out);
}

#[test]
fn sigterm_takes_a_final_checkpoint_and_exits_zero_within_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out_s = out.display().to_string();
    let mut child =
        spawn(&["run", "--output", &out_s, "--rate", "5000", "--checkpoint-interval", "2s", "--http", "off"]);
    wait_for("the first checkpoint", Duration::from_secs(60), || commit_count(&out) >= 1);
    let before = commit_count(&out);
    let sent = Instant::now();
    let ok = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM must exit 0, got {status}");
    assert!(sent.elapsed() < Duration::from_secs(2), "took {:?} to stop", sent.elapsed());
    assert_eq!(commit_count(&out), before + 1, "exactly one final checkpoint");
    // Everything generated up to the final position is committed, and nothing beyond it.
    let Some(pageviews::core::commit::Position::Generator { next_seq, .. }) =
        positions(&out).get(&0).cloned()
    else {
        panic!("the generator's partition is committed")
    };
    assert_eq!(rows(&out, "page_views").len() as u64, next_seq);
    assert_verified(&out);
}

#[test]
fn resuming_with_other_inputs_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_input(dir.path(), "a.jsonl", &[view(1, "A", "2020-01-01 00:00:00")]);
    let b = write_input(dir.path(), "b.jsonl", &[view(2, "B", "2020-01-01 00:00:00")]);
    let out = dir.path().join("out");
    run_files(&[a], &out, |_| {});
    let out_s = out.display().to_string();
    let res = bin().args(["run", "--input", &b, "--output", &out_s, "--http", "off"]).output().unwrap();
    assert!(!res.status.success());
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(
        stderr.contains("a.jsonl") && stderr.contains("b.jsonl") && stderr.contains("--output"),
        "{stderr}"
    );
    assert_eq!(rows(&out, "page_views").len(), 1, "nothing of b was written");
}
