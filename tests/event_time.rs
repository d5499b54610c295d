//! Lateness is a function of each partition's records, not of timing, against the real
//! broker. The same records, keyed by postcode or not keyed at all, over 1, 4 and 6
//! partitions, produced before the run (a backlog) or while it runs, read by one worker, two
//! workers or three instances, give exactly the late rows and windows of the reference
//! (`pageviews_testkit::event_time`): each event judged by its own partition's watermark,
//! every other event counted.
//!
//! Each topic holds two streams two hours of event time apart. The first is out of order by
//! less than the watermark delay: there the tables must equal the single-stream reference
//! (what one ordered reader of every record decides: nothing late). The second is out of
//! order by up to 3 minutes, far past the 5 s delay: there the late rows are those behind
//! their own partition's watermark, at most what one ordered reader marks late, and at most
//! what a Flink job with per-partition watermarks can mark late (it judges an event by the
//! minimum over every partition's watermark, never above the event's own partition's).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pageviews::metrics::Metrics;
use pageviews::source::GeneratorConfig;
use pageviews::{PipelineConfig, Shutdown};
use pageviews_testkit::event_time::{outcome_of, per_partition, single_stream, Outcome, Rules};
use pageviews_testkit::kafka::*;

/// Records per stream; a topic holds two.
const RECORDS: u64 = 6_000;
const BAD: f64 = 0.01;
/// Records a second when produced while the pipeline runs.
const LIVE_RATE: u64 = 4_000;

/// The two streams of a topic: 20 ms of event time apart (two minutes each), the first out
/// of order by at most 4 s (less than the 5 s delay), the second by up to 3 minutes.
fn streams(seed: u64, rate: u64) -> [GeneratorConfig; 2] {
    streams_of(RECORDS, seed, rate)
}

fn streams_of(records: u64, seed: u64, rate: u64) -> [GeneratorConfig; 2] {
    let at = |start: &str, max_late_ms: u64, seed: u64| GeneratorConfig {
        max_late_ms,
        interval_us: Some(20_000),
        rate,
        ..generator(seed, start, records)
    };
    [at("2020-01-01 00:00:00", 4_000, seed), at("2020-01-01 02:00:00", 180_000, seed + 1)]
}

fn produce_streams(topic: &str, streams: &[GeneratorConfig; 2], keyed: bool) {
    for stream in streams {
        if keyed {
            produce(topic, stream.clone(), BAD);
        } else {
            produce_unkeyed(topic, stream, BAD);
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Deployment {
    OneWorker,
    TwoWorkers,
    ThreeInstances,
}

const DEPLOYMENTS: [Deployment; 3] =
    [Deployment::OneWorker, Deployment::TwoWorkers, Deployment::ThreeInstances];

/// Starts `deployment` on `topic` into `out`.
fn start(
    deployment: Deployment,
    topic: &str,
    group: &str,
    out: &Path,
    until_end: bool,
    shutdown: &Shutdown,
) -> Vec<pageviews::RunHandle> {
    let config = |id: &str| {
        let mut c: PipelineConfig = kafka_config(topic, group, out, until_end);
        c.instance_id = id.to_string();
        // Produced live, a partition must not count as idle because the producer paused.
        c.windows.idle_timeout_ms = 60_000;
        c
    };
    let configs = match deployment {
        Deployment::OneWorker => vec![config("a")],
        Deployment::TwoWorkers => vec![PipelineConfig { workers: 2, ..config("a") }],
        Deployment::ThreeInstances => vec![config("a"), config("b"), config("c")],
    };
    configs
        .into_iter()
        .map(|c| {
            let metrics = Arc::new(Metrics::new(&c.pipeline_id));
            pageviews::start(c, shutdown.clone(), metrics).expect("start")
        })
        .collect()
}

fn join(runs: Vec<pageviews::RunHandle>) {
    for run in runs {
        run.join().expect("run");
    }
}

/// Reads `topic` with `deployment` to its end and returns what the tables hold. With
/// `produce`, the deployment runs while it produces, until it has committed every record;
/// one more run then reads to the end, which emits the windows still open.
fn read(deployment: Deployment, topic: &str, dir: &Path, produce: Option<&dyn Fn()>) -> Outcome {
    let out = dir.join(format!("{topic}-{deployment:?}"));
    let group = unique("group");
    match produce {
        None => join(start(deployment, topic, &group, &out, true, &Shutdown::default())),
        Some(produce) => {
            let shutdown = Shutdown::default();
            let runs = start(deployment, topic, &group, &out, false, &shutdown);
            produce();
            let all = poll_until(Duration::from_secs(120), || committed(&out).records_read >= 2 * RECORDS);
            assert!(
                all,
                "{deployment:?}: not every record committed in 120 s: {:?}, partitions held by {:?}",
                committed(&out),
                holders(&out)
            );
            shutdown.trigger();
            join(runs);
            // Another group: the stopped instances stay members of theirs until their
            // sessions time out. Positions come from the commit log.
            join(start(Deployment::OneWorker, topic, &unique("group"), &out, true, &Shutdown::default()));
        }
    }
    assert_verified(&out);
    let read = committed(&out).records_read;
    if read != 2 * RECORDS {
        let held: usize = read_topic(topic).values().map(Vec::len).sum();
        panic!(
            "{deployment:?}: every record read once: {read} read of {} produced; the topic holds {held}, \
             the committed positions are {:?}",
            2 * RECORDS,
            positions(&out)
        );
    }
    outcome_of(&out)
}

/// The reference for `topic` as it holds its records now, checked against the single-stream
/// reference of `streams`: equal in the first stream's hour, at most as many late rows in
/// the second's.
fn reference(topic: &str, streams: &[GeneratorConfig; 2]) -> Outcome {
    let rules = Rules::default();
    let reference = per_partition(read_topic(topic).values().map(Vec::as_slice), rules);
    let [ordered, disordered] = streams.clone().map(|s| single_stream(&stream_records(&s, BAD), rules));
    let first_hour = |lines: &[String]| -> Vec<String> {
        lines.iter().filter(|l| l.starts_with("2020-01-01 00:")).cloned().collect()
    };
    assert!(ordered.late.is_empty(), "nothing in the first stream is later than the delay");
    let early_late = first_hour(&reference.late);
    assert!(
        early_late.is_empty(),
        "late in the first stream, as the topic holds it: {:?}",
        &early_late[..early_late.len().min(5)]
    );
    assert_eq!(first_hour(&reference.aggregates), ordered.aggregates, "the first stream's windows");
    assert!(!reference.late.is_empty(), "the second stream must exercise late events");
    assert!(reference.late.len() <= disordered.late.len(), "never more late than one ordered reader");
    eprintln!(
        "{topic}: {} late ({} for one ordered reader), {} aggregate rows",
        reference.late.len(),
        disordered.late.len(),
        reference.aggregates.len()
    );
    reference
}

fn case(partitions: u32, keyed: bool) {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let seed = u64::from(partitions) * 10 + u64::from(keyed);
    // A backlog: produced first, then read by each deployment.
    let records = streams(seed, 0);
    let topic = unique(&format!("backlog-{partitions}-{keyed}"));
    create_topic(&topic, partitions);
    produce_streams(&topic, &records, keyed);
    let want = reference(&topic, &records);
    for deployment in DEPLOYMENTS {
        let got = read(deployment, &topic, dir.path(), None);
        assert!(got == want, "backlog, {deployment:?}: differs from the reference\n{}", got.diff(&want));
    }
    // Produced while it runs: each deployment reads a topic of its own.
    let records = streams(seed, LIVE_RATE);
    for deployment in DEPLOYMENTS {
        let topic = unique(&format!("live-{partitions}-{keyed}"));
        create_topic(&topic, partitions);
        let got = read(deployment, &topic, dir.path(), Some(&|| produce_streams(&topic, &records, keyed)));
        let want = reference(&topic, &records);
        assert!(got == want, "live, {deployment:?}: differs from the reference\n{}", got.diff(&want));
    }
}

/// One partition: keyed or not, its records are the same.
#[test]
fn one_partition_counts_what_one_ordered_reader_counts() {
    case(1, true);
}

#[test]
fn four_partitions_keyed_give_the_reference_for_any_deployment_and_timing() {
    case(4, true);
}

#[test]
fn four_partitions_unkeyed_give_the_reference_for_any_deployment_and_timing() {
    case(4, false);
}

#[test]
fn six_partitions_keyed_give_the_reference_for_any_deployment_and_timing() {
    case(6, true);
}

#[test]
fn six_partitions_unkeyed_give_the_reference_for_any_deployment_and_timing() {
    case(6, false);
}

/// Files over workers: the two streams cut in order into four files, read by one to four
/// workers (a worker per file at most), give the reference of the files as partitions,
/// however far one worker runs ahead of another.
#[test]
fn files_over_any_number_of_workers_give_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<Vec<u8>> =
        streams_of(100_000, 5, 0).iter().flat_map(|s| stream_records(s, BAD)).collect();
    let files: Vec<&[Vec<u8>]> = records.chunks(records.len() / 4).collect();
    let paths: Vec<String> = files
        .iter()
        .enumerate()
        .map(|(i, lines)| {
            let text: Vec<String> = lines.iter().map(|l| String::from_utf8_lossy(l).into_owned()).collect();
            write_input(dir.path(), &format!("part-{i}.jsonl"), &text)
        })
        .collect();
    let want = per_partition(files.iter().copied(), Rules::default());
    assert!(!want.late.is_empty());
    for workers in 1..=4 {
        let out = dir.path().join(format!("workers-{workers}"));
        let summary = run_files(&paths, &out, |c| c.workers = workers);
        assert!(summary.reached_end);
        assert_verified(&out);
        let got = outcome_of(&out);
        assert!(got == want, "{workers} workers: differs from the reference\n{}", got.diff(&want));
    }
}
