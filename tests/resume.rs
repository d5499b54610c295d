//! Resuming the generator: the same command run again on the same --output continues the
//! stream in its checkpoint, without --seed or --start-time; --count is the stream's total;
//! and events that continue a stream are never late because of the restart.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::*;
use pageviews::core::commit::{Facts, Position, SourceIdentity};
use pageviews::source::GeneratorConfig;
use pageviews_testkit::kafka::{expected, page_view_lines};

fn run(out: &Path, extra: &[&str]) -> Output {
    bin().args(["run", "--http", "off", "--output"]).arg(out).args(extra).output().expect("run pageviews")
}

/// The generator's committed position under `out` (the pipeline has one partition).
fn generator_position(out: &Path) -> (u64, i64) {
    match positions(out).get(&0) {
        Some(Position::Generator { next_seq, shift_ms }) => (*next_seq, *shift_ms),
        other => panic!("a generator position expected, found {other:?}"),
    }
}

/// The stream the pipeline under `out` was created with (its facts).
fn generator_stream(out: &Path) -> (u64, i64) {
    // The default pipeline id comes from the source: `generator`.
    let bytes =
        std::fs::read(out.join("_checkpoints/generator/pipeline.json")).expect("the pipeline's facts");
    match serde_json::from_slice::<Facts>(&bytes).expect("facts parse").source {
        SourceIdentity::Generator { seed, start_ms } => (seed, start_ms),
        other => panic!("a generator pipeline expected, found {other:?}"),
    }
}

fn run_ok(out: &Path, extra: &[&str]) -> String {
    let o = run(out, extra);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "pageviews run {extra:?} failed:\n{stderr}");
    stderr
}

#[test]
fn the_same_bounded_command_twice_says_there_is_nothing_left_and_a_larger_count_adds_on_time_events() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    run_ok(&out, &["--count", "3000", "--rate", "0"]);
    assert_eq!(committed(&out).page_views, 3000);

    // No --seed: the checkpoint's stream, and nothing of it is missing.
    let again = run_ok(&out, &["--count", "3000", "--rate", "0"]);
    assert!(again.contains("nothing left to generate"), "{again}");
    assert_eq!(committed(&out).records_read, 3000, "nothing was added");

    // A larger --count adds the rest of the stream. The first run's end emitted every
    // window, so the continuation starts after them: none of its events is late.
    run_ok(&out, &["--count", "6000", "--rate", "0"]);
    let totals = committed(&out);
    assert_eq!((totals.records_read, totals.page_views), (6000, 6000));
    assert_eq!(totals.late_page_views, 0, "a restart made continued events late");
    let views: u64 =
        rows(&out, "page_view_aggregates").iter().map(|r| r.value["views"].as_u64().unwrap()).sum();
    assert_eq!(views, 6000, "every event is counted in a window exactly once");
    let (next_seq, shift_ms) = generator_position(&out);
    assert_eq!(next_seq, 6000);
    assert!(shift_ms > 0, "the continuation was moved past the emitted windows");
    assert_verified(&out);
}

#[test]
fn ctrl_c_then_the_same_command_continues_the_stream_in_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // A plain `pageviews run`: random seed, start time now, 1000 events/s, until Ctrl-C.
    let args = ["--checkpoint-interval", "200ms"];
    let mut before = 0;
    for round in 0..2 {
        let child = bin()
            .args(["run", "--http", "off", "--output"])
            .arg(&out)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for("progress past the last run", Duration::from_secs(60), || {
            committed(&out).records_read >= before + 500
        });
        let sent =
            std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
        assert!(sent.success());
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "round {round}: {}", String::from_utf8_lossy(&o.stderr));
        before = committed(&out).records_read;
    }
    // Both runs together hold exactly records 0..N of the checkpoint's one stream.
    let (next_seq, shift_ms) = generator_position(&out);
    let (seed, start_ms) = generator_stream(&out);
    assert_eq!((next_seq, shift_ms), (before, 0), "a Ctrl-C emits no window early, so nothing shifts");
    let stream = GeneratorConfig {
        rate: 1000,
        count: Some(next_seq),
        max_late_ms: 1000,
        seed,
        start_ms,
        interval_us: None,
    };
    let (want, _) = expected(&[(stream, 0.0)]);
    let got = page_view_lines(&out);
    assert_eq!(got.len(), want.len());
    assert!(got == want, "page_views is not the checkpoint's stream, once");
    assert_eq!(committed(&out).late_page_views, 0);
    assert_verified(&out);
}

#[test]
fn a_seed_or_start_time_given_explicitly_must_match_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    run_ok(&out, &["--count", "100", "--rate", "0", "--seed", "7", "--start-time", "2020-01-01 00:00:00"]);
    // The same values, given again, continue.
    run_ok(&out, &["--count", "200", "--rate", "0", "--seed", "7", "--start-time", "2020-01-01 00:00:00"]);
    assert_eq!(committed(&out).records_read, 200);
    for (flags, want) in [
        (["--seed", "8"], ["--seed 7", "--seed 8"]),
        (["--start-time", "2021-01-01 00:00:00"], ["2020-01-01 00:00:00.000", "2021-01-01 00:00:00.000"]),
    ] {
        let o = run(&out, &[&["--count", "300", "--rate", "0"][..], &flags[..]].concat());
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{flags:?} must be refused");
        assert!(want.iter().all(|w| stderr.contains(w)), "{flags:?}: {stderr}");
    }
    assert_eq!(committed(&out).records_read, 200, "a refused run commits nothing");
}
