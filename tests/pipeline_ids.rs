//! Pipeline ids and resuming, as `pageviews run` users meet them: the same command run
//! again resumes its stream, pipelines on different sources share an output under ids taken
//! from their sources, and an output written when every source's id was `pageviews` is
//! refused with what to pass.

mod common;

use common::*;
use pageviews::source::GeneratorConfig;
use pageviews_core::commit::{Facts, SourceIdentity};

fn run(out: &std::path::Path, args: &[&str]) -> std::process::Output {
    bin().args(["run", "--http", "off", "--output"]).arg(out).args(args).output().unwrap()
}

/// The pipeline ids under `out`, from their commit logs.
fn ids(out: &std::path::Path) -> Vec<String> {
    views(out).into_iter().map(|(id, _)| id).collect()
}

// Relies on the generator's resume (branch storage2): a seed drawn at random gives way to
// the pipeline's, and --count is the stream's total.
#[test]
fn the_same_command_run_again_resumes_its_stream() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("data");
    for (count, total) in [("300", 300), ("700", 700)] {
        // No --seed: a random one, which a resumed checkpoint's replaces.
        let done = run(&out, &["--rate", "0", "--count", count]);
        assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
        assert_eq!(committed(&out).records_read, total);
    }
    assert_eq!(ids(&out), ["generator"]);
    // One stream: the second run went on at record 300 of the first run's seed (its event
    // times moved past the windows the first run's end emitted), so the table holds records
    // 0..300 of that stream as the first run wrote them, and 700 rows in all.
    let facts: Facts =
        serde_json::from_slice(&std::fs::read(out.join("_checkpoints/generator/pipeline.json")).unwrap())
            .unwrap();
    let SourceIdentity::Generator { seed, start_ms } = facts.source else { panic!("a generator pipeline") };
    let first =
        GeneratorConfig { rate: 0, count: Some(300), max_late_ms: 1000, seed, start_ms, interval_us: None };
    let (want, _) = pageviews_testkit::kafka::expected(&[(first, 0.0)]);
    let got = pageviews_testkit::kafka::page_view_lines(&out);
    assert_eq!(got.len(), 700, "700 rows, each record once");
    assert!(want.iter().all(|l| got.contains(l)), "records 0..300 are the first seed's");
    assert_verified(&out);
}

#[test]
fn sources_share_an_output_under_their_own_ids() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("data");
    let input = write_input(dir.path(), "in.jsonl", &original_example_lines());
    for args in
        [&["--rate", "0", "--count", "100", "--start-time", "2021-01-01 00:00:00"][..], &["--input", &input]]
    {
        let done = run(&out, args);
        assert!(done.status.success(), "{args:?}: {}", String::from_utf8_lossy(&done.stderr));
    }
    assert_eq!(ids(&out), ["files", "generator"]);
    assert_eq!(rows(&out, "page_views").len(), 110);
    assert_verified(&out);
}

#[test]
fn an_output_of_the_old_default_id_is_refused_with_what_to_pass() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("data");
    // Written before ids came from the source. A fixed stream (seed and start), so resuming
    // does not depend on how a random one is resumed.
    let stream = ["--rate", "0", "--seed", "7", "--start-time", "2021-01-01 00:00:00"];
    let done = run(&out, &[&stream[..], &["--count", "10", "--pipeline-id", "pageviews"]].concat());
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));

    let refused = run(&out, &[&stream[..], &["--count", "20"]].concat());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("checkpoints of pipeline `pageviews`") && stderr.contains("--pipeline-id pageviews"),
        "{stderr}"
    );
    assert_eq!(committed(&out).records_read, 10, "nothing was written");
    assert_eq!(ids(&out), ["pageviews"]);
    // Named explicitly, either way works.
    for id in ["pageviews", "generator"] {
        let done = run(&out, &[&stream[..], &["--count", "20", "--pipeline-id", id]].concat());
        assert!(done.status.success(), "{id}: {}", String::from_utf8_lossy(&done.stderr));
    }
    assert_eq!(ids(&out), ["generator", "pageviews"]);
}
