//! Scale-out against the real broker: instances of one deployment (one pipeline id, group and
//! output) share a topic through the consumer group, partitions move with their state, and
//! the tables come out exactly as one process would write them.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use pageviews::{PipelineConfig, Shutdown};
use pageviews_testkit::kafka::*;

/// An instance of the deployment reading `topic` into `out`.
fn instance(topic: &str, group: &str, out: &Path, id: &str, until_end: bool) -> PipelineConfig {
    let mut config = kafka_config(topic, group, out, until_end);
    config.instance_id = id.to_string();
    config
}

/// Tables a single process writes from the same topic, for comparison.
fn single_process(topic: &str, dir: &Path) -> std::path::PathBuf {
    let out = dir.join("single");
    let summary =
        pageviews::run(kafka_config(topic, &unique("single"), &out, true), Shutdown::default()).unwrap();
    assert!(summary.reached_end);
    assert_verified(&out);
    out
}

fn assert_same_tables(got: &Path, want: &Path) {
    for table in ["page_views", "page_view_aggregates", "late_page_views", "dead_letters"] {
        let drop: &[&str] = if table == "dead_letters" { &["received_at"] } else { &[] };
        let (g, w) = (row_multiset(got, table, drop), row_multiset(want, table, drop));
        assert_eq!(g.len(), w.len(), "{table}: row count");
        assert!(g == w, "{table}: the rows differ from a single process's");
    }
}

#[test]
fn three_instances_on_a_keyed_topic_write_what_one_process_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (topic, group) = (unique("keyed"), unique("group"));
    create_topic(&topic, 6);
    let stream = generator(71, "2020-01-01 00:00:00", 60_000);
    produce(&topic, stream.clone(), 0.01);
    let out = dir.path().join("out");
    let runs: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|id| {
            let config = instance(&topic, &group, &out, id, true);
            std::thread::spawn(move || pageviews::run(config, Shutdown::default()))
        })
        .collect();
    for run in runs {
        let summary = run.join().unwrap().unwrap();
        assert!(summary.reached_end);
    }
    let report = assert_verified(&out);
    assert_eq!(
        report.rows.get("page_views").copied(),
        Some(expected(&[(stream.clone(), 0.01)]).0.len() as u64)
    );
    assert_same_tables(&out, &single_process(&topic, dir.path()));
}

#[test]
fn an_unkeyed_topic_gives_one_row_per_postcode_and_window_across_instances() {
    let dir = tempfile::tempdir().unwrap();
    let (topic, group) = (unique("unkeyed"), unique("group"));
    create_topic(&topic, 4);
    // Round-robin over the partitions, whatever the postcode: every partition holds every
    // postcode, so counting has to bring each postcode's events together.
    produce_unkeyed(&topic, generator(72, "2020-01-01 00:00:00", 40_000), 4);
    let out = dir.path().join("out");
    let runs: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|id| {
            let config = instance(&topic, &group, &out, id, true);
            std::thread::spawn(move || pageviews::run(config, Shutdown::default()))
        })
        .collect();
    for run in runs {
        run.join().unwrap().unwrap();
    }
    let report = assert_verified(&out);
    assert_eq!(report.rows.get("page_views").copied(), Some(40_000));
    let aggregates = rows(&out, "page_view_aggregates");
    let mut keys: Vec<(String, String)> =
        aggregates.iter().map(|r| (r.value["postcode"].to_string(), r.value["window"].to_string())).collect();
    let all = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), all, "one row per postcode and window");
    let views: u64 = aggregates.iter().map(|r| r.value["views"].as_u64().unwrap()).sum();
    let late = rows(&out, "late_page_views").len() as u64;
    assert_eq!(views + late, 40_000, "views + late = page_views");
}

/// Produces the stream round-robin over `partitions`, without keys.
fn produce_unkeyed(topic: &str, stream: pageviews::source::GeneratorConfig, partitions: i32) {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let producer: ThreadedProducer<DefaultProducerContext> =
        rdkafka::config::ClientConfig::new().set("bootstrap.servers", broker()).create().unwrap();
    let mut line = Vec::new();
    for seq in 0..stream.count.unwrap() {
        line.clear();
        stream.write_record(seq, &mut line);
        let record =
            BaseRecord::<(), _>::to(topic).partition((seq % partitions as u64) as i32).payload(&line);
        producer.send(record).map_err(|(e, _)| e).unwrap();
        if seq % 10_000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}
