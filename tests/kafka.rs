//! Kafka in, against a real Apache Kafka broker started by `scripts/kafka-local`.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use pageviews::datagen::{datagen_record, run_datagen, DatagenConfig};
use pageviews::event::decode;
use pageviews::sink::jsonl;
use pageviews::source::{GeneratorConfig, KafkaConfig};
use pageviews::{PipelineConfig, Shutdown, SourceConfig};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// The broker: `PAGEVIEWS_TEST_BROKERS` if set (scripts/test sets it), else the project's
/// local broker (started once).
fn broker() -> &'static str {
    static BROKER: OnceLock<String> = OnceLock::new();
    BROKER.get_or_init(|| {
        if let Ok(b) = std::env::var("PAGEVIEWS_TEST_BROKERS") {
            return b;
        }
        let out = std::process::Command::new("scripts/kafka-local")
            .arg("start")
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/kafka-local start");
        assert!(out.status.success(), "scripts/kafka-local start failed");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().last().expect("kafka-local prints the bootstrap address").trim().to_string()
    })
}

/// A name no other test (or earlier run) uses.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn generator(seed: u64, start: &str, count: u64) -> GeneratorConfig {
    GeneratorConfig {
        rate: 0,
        count: Some(count),
        max_late_ms: 8_000,
        seed,
        start_ms: pageviews::event::timestamp::parse_timestamp(start).unwrap(),
    }
}

fn produce(topic: &str, generator: GeneratorConfig, bad_ratio: f64) {
    let config = DatagenConfig {
        brokers: broker().to_string(),
        topic: topic.to_string(),
        partitions: 3,
        generator,
        bad_ratio,
        options: Vec::new(),
    };
    let summary = run_datagen(&config, &Shutdown::default(), false).expect("datagen");
    assert_eq!(summary.failed, 0);
}

/// The page_views rows and dead-letter count the pipeline must write for these streams.
fn expected(streams: &[(GeneratorConfig, f64)]) -> (Vec<String>, u64) {
    let mut rows = Vec::new();
    let mut bad = 0;
    for (g, ratio) in streams {
        for seq in 0..g.count.unwrap() {
            let mut rec = Vec::new();
            datagen_record(g, *ratio, seq, &mut rec);
            match decode(&rec, 1 << 20) {
                Ok(pv) => {
                    let mut line = Vec::new();
                    jsonl::write_view(&mut line, &pv);
                    rows.push(String::from_utf8(line).unwrap().trim_end().to_string());
                }
                Err(_) => bad += 1,
            }
        }
    }
    rows.sort();
    (rows, bad)
}

fn page_view_lines(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for file in files(&root.join("page_views")) {
        out.extend(std::fs::read_to_string(file).unwrap().lines().map(str::to_string));
    }
    out.sort();
    out
}

fn kafka_config(topic: &str, group: &str, out: &Path, until_end: bool) -> PipelineConfig {
    let source = SourceConfig::Kafka(KafkaConfig {
        brokers: broker().to_string(),
        topic: topic.to_string(),
        group: group.to_string(),
        until_end,
        options: Vec::new(),
    });
    let mut config = PipelineConfig::new(source, out.display().to_string());
    config.checkpoint_interval = Duration::from_millis(500);
    config
}

fn committed_offsets(topic: &str, group: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", broker()).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

fn end_offsets(topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", broker()).create().unwrap();
    (0..partitions)
        .map(|p| (p, consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap().1))
        .collect()
}

#[test]
fn datagen_to_three_partitions_then_until_end_writes_exactly_what_was_produced() {
    let dir = tempfile::tempdir().unwrap();
    let (topic, group) = (unique("views"), unique("group"));
    let stream = generator(7, "2020-01-01 00:00:00", 30_000);
    produce(&topic, stream.clone(), 0.02);
    let out = dir.path().join("out");
    let summary = pageviews::run(kafka_config(&topic, &group, &out, true), Shutdown::default()).unwrap();
    assert!(summary.reached_end);

    let (want_rows, want_bad) = expected(&[(stream, 0.02)]);
    assert!(want_bad > 300, "the stream must carry malformed records");
    let got = page_view_lines(&out);
    assert_eq!(got.len(), want_rows.len(), "page_views row count");
    assert!(got == want_rows, "page_views holds exactly the valid records produced");
    let dead = rows(&out, "dead_letters");
    assert_eq!(dead.len() as u64, want_bad);
    let mut reasons: Vec<String> =
        dead.iter().map(|r| r.value["reason"].as_str().unwrap().to_string()).collect();
    reasons.sort();
    reasons.dedup();
    assert_eq!(
        reasons,
        ["bad_timestamp", "invalid_json", "invalid_utf8", "missing_field", "not_an_object", "wrong_type"]
    );
    assert!(dead.iter().all(|r| r.value["source"] == topic.as_str()));
    let report = assert_verified(&out);
    assert!(report.windows > 0);
    // The manifest's positions reached the group, where lag tooling reads them.
    assert_eq!(committed_offsets(&topic, &group, 3), end_offsets(&topic, 3));
}

#[test]
fn records_from_kafkas_own_console_producer_are_read_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let (topic, group) = (unique("console"), unique("group"));
    let create = std::process::Command::new("scripts/kafka-local")
        .args(["topics", "--create", "--topic", &topic, "--partitions", "1"])
        .status()
        .unwrap();
    assert!(create.success());
    let mut producer = std::process::Command::new("scripts/kafka-local")
        .args(["console-producer", "--topic", &topic])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let sw = ["00:00:05", "00:00:47", "00:00:36", "00:01:53", "00:01:32"];
    let w1 = ["00:00:03", "00:00:08", "00:01:31", "00:01:19", "00:01:42"];
    {
        let stdin = producer.stdin.as_mut().unwrap();
        for (i, (a, b)) in sw.iter().zip(w1).enumerate() {
            writeln!(stdin, "{}", view(i as i64, "SW1A 1AA", &format!("2020-01-01 {a}"))).unwrap();
            writeln!(stdin, "{}", view(i as i64, "W1J 7NT", &format!("2020-01-01 {b}"))).unwrap();
        }
        writeln!(stdin, "this is not json").unwrap();
    }
    drop(producer.stdin.take());
    assert!(producer.wait().unwrap().success());

    let out = dir.path().join("out");
    pageviews::run(kafka_config(&topic, &group, &out, true), Shutdown::default()).unwrap();
    let mut aggs: Vec<String> = rows(&out, "page_view_aggregates")
        .iter()
        .map(|r| format!("{} {} {}", r.value["postcode"], r.value["window"], r.value["views"]))
        .collect();
    aggs.sort();
    assert_eq!(
        aggs,
        vec![
            r#""SW1A 1AA" "2020-01-01 00:01:00.000" 3"#,
            r#""SW1A 1AA" "2020-01-01 00:02:00.000" 2"#,
            r#""W1J 7NT" "2020-01-01 00:01:00.000" 2"#,
            r#""W1J 7NT" "2020-01-01 00:02:00.000" 3"#,
        ]
    );
    assert_eq!(rows(&out, "page_views").len(), 10);
    let dead = rows(&out, "dead_letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].value["payload"].as_str(), dead[0].value["offset"].as_u64()),
        (Some("this is not json"), Some(10))
    );
    assert_verified(&out);
}

#[test]
fn an_empty_partition_does_not_hold_back_the_windows() {
    let dir = tempfile::tempdir().unwrap();
    let (topic, group) = (unique("idle"), unique("group"));
    let create = std::process::Command::new("scripts/kafka-local")
        .args(["topics", "--create", "--topic", &topic, "--partitions", "3"])
        .status()
        .unwrap();
    assert!(create.success());
    // Two and a half minutes of events, all in partition 0; partitions 1 and 2 stay empty.
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", broker()).create().unwrap();
    for s in 0..150 {
        let line = view(s, "SW1A 1AA", &format!("2020-01-01 00:{:02}:{:02}", s / 60, s % 60));
        producer.send(BaseRecord::<(), _>::to(&topic).partition(0).payload(line.as_bytes())).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let out = dir.path().join("out");
    let mut config = kafka_config(&topic, &group, &out, false);
    config.idle_timeout_ms = 1_000;
    config.checkpoint_interval = Duration::from_millis(200);
    let shutdown = Shutdown::default();
    let runner = {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || pageviews::run(config, shutdown))
    };
    // Without idle detection the two empty partitions would keep the watermark at its
    // start and no window would ever be emitted while the pipeline runs.
    wait_for("windows ending 00:01 and 00:02", Duration::from_secs(60), || {
        rows(&out, "page_view_aggregates").len() >= 2
    });
    assert!(!runner.is_finished(), "the windows came from a running pipeline, not a final flush");
    shutdown.trigger();
    runner.join().unwrap().unwrap();
    let mut aggs: Vec<(String, u64)> = rows(&out, "page_view_aggregates")
        .iter()
        .map(|r| (r.value["window"].as_str().unwrap().to_string(), r.value["views"].as_u64().unwrap()))
        .collect();
    aggs.sort();
    assert_eq!(
        aggs,
        vec![("2020-01-01 00:01:00.000".to_string(), 60), ("2020-01-01 00:02:00.000".to_string(), 60)],
        "the window ending 00:03 stays open: the watermark (00:02:24) has not passed it"
    );
    assert_verified(&out);
}

#[test]
fn restarting_with_the_same_group_continues_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (topic, group) = (unique("restart"), unique("group"));
    let out = dir.path().join("out");
    let first = generator(21, "2020-01-01 00:00:00", 8_000);
    produce(&topic, first.clone(), 0.01);
    pageviews::run(kafka_config(&topic, &group, &out, true), Shutdown::default()).unwrap();
    let after_first = page_view_lines(&out).len();

    let second = generator(22, "2020-01-01 01:00:00", 6_000);
    produce(&topic, second.clone(), 0.01);
    let summary = pageviews::run(kafka_config(&topic, &group, &out, true), Shutdown::default()).unwrap();
    assert!(summary.reached_end);

    let (want_rows, want_bad) = expected(&[(first, 0.01), (second, 0.01)]);
    let got = page_view_lines(&out);
    assert!(got.len() > after_first, "the second run read the new records");
    assert_eq!(got.len(), want_rows.len(), "nothing read twice, nothing missed");
    assert!(got == want_rows);
    assert_eq!(rows(&out, "dead_letters").len() as u64, want_bad);
    assert_verified(&out);
    assert_eq!(committed_offsets(&topic, &group, 3), end_offsets(&topic, 3));
}
