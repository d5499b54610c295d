//! Kafka in, against a real Apache Kafka broker started by `scripts/kafka-local`.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use pageviews::Shutdown;
use pageviews_testkit::kafka::*;
use rdkafka::config::ClientConfig;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

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
    // The log entry's positions reached the group, where lag tooling reads them.
    assert_eq!(committed_offsets(broker(), &topic, &group, 3), end_offsets(broker(), &topic, 3));
}

#[test]
fn records_from_kafkas_own_console_producer_are_read_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let (topic, group) = (unique("console"), unique("group"));
    create_topic(&topic, 1);
    let mut producer = std::process::Command::new("scripts/kafka-local")
        .args(["console-producer", "--topic", &topic])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let stdin = producer.stdin.as_mut().unwrap();
        for (i, (a, b)) in SW1A_1AA.iter().zip(W1J_7NT).enumerate() {
            writeln!(stdin, "{}", view(i as i64, "SW1A 1AA", &format!("2020-01-01 {a}"))).unwrap();
            writeln!(stdin, "{}", view(i as i64, "W1J 7NT", &format!("2020-01-01 {b}"))).unwrap();
        }
        writeln!(stdin, "this is not json").unwrap();
    }
    drop(producer.stdin.take());
    assert!(producer.wait().unwrap().success());

    let out = dir.path().join("out");
    pageviews::run(kafka_config(&topic, &group, &out, true), Shutdown::default()).unwrap();
    assert_eq!(
        aggregate_lines(&out),
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
    create_topic(&topic, 3);
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
    config.windows.idle_timeout_ms = 1_000;
    config.checkpoint_interval = Duration::from_millis(200);
    let shutdown = Shutdown::default();
    let runner = {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || pageviews::run(config, shutdown))
    };
    // Without idle detection the two empty partitions would keep the watermark at its
    // start and no window would ever be emitted while the pipeline runs.
    wait_for("windows ending 00:01 and 00:02", Duration::from_secs(60), || {
        committed(&out).page_view_aggregates >= 2
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
    assert_eq!(committed_offsets(broker(), &topic, &group, 3), end_offsets(broker(), &topic, 3));
}

/// A checkpoint's positions are checked against the partition before they are trusted: a
/// topic deleted and created again is refused, whether it came back longer (the saved
/// offset fits, the record before it does not) or shorter (the offset is past its end), and
/// `--on-offset-reset` decides where to read instead.
#[test]
fn a_topic_deleted_and_created_again_is_refused_until_told_where_to_read() {
    let dir = tempfile::tempdir().unwrap();
    let (topic, group) = (unique("recreated"), unique("group"));
    let out = dir.path().join("out");
    let run = |extra: &[&str]| {
        bin()
            .args(["run", "--brokers", broker(), "--topic", &topic, "--group", &group, "--until-end"])
            .args(["--http", "off", "--checkpoint-interval", "1s", "--output"])
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    create_topic(&topic, 1);
    produce(&topic, generator(1, "2020-01-01 00:00:00", 500), 0.0);
    assert!(run(&[]).status.success());
    assert_eq!(committed(&out).page_views, 500);

    // Created again, longer: offset 500 exists, but the record before it is another one.
    recreate_topic(&topic, 1);
    produce(&topic, generator(2, "2020-01-01 01:00:00", 2000), 0.0);
    let refused = run(&[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a recreated topic must not be read from a stale offset:\n{stderr}");
    assert!(
        stderr.contains("partition 0")
            && stderr.contains("position 500")
            && stderr.contains("--on-offset-reset"),
        "the error names the partition, the offset and the way out:\n{stderr}"
    );
    assert_eq!(committed(&out).page_views, 500, "nothing is read before the decision");
    assert!(run(&["--on-offset-reset", "earliest"]).status.success());
    assert_eq!(committed(&out).page_views, 2500, "earliest reads the new topic whole");

    // Created again, shorter: offset 2000 is past its end.
    recreate_topic(&topic, 1);
    produce(&topic, generator(3, "2020-01-01 02:00:00", 100), 0.0);
    let refused = run(&[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("outside its offsets [0, 100]"), "{stderr}");
    assert!(run(&["--on-offset-reset", "latest"]).status.success());
    assert_eq!(committed(&out).page_views, 2500, "latest reads only what comes next");
    assert_verified(&out);
}

#[test]
fn datagen_unkeyed_spreads_each_postcode_over_the_partitions_and_produces_the_same_records() {
    let topic = unique("unkeyed");
    let out = bin()
        .args(["datagen", "--brokers", broker(), "--topic", &topic, "--partitions", "3", "--unkeyed"])
        .args(["--rate", "0", "--count", "3000", "--seed", "5", "--max-late-ms", "8000"])
        .args(["--start-time", "2020-01-01 00:00:00"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let by_partition = read_topic(&topic);
    // Keyed by postcode, each postcode would be in exactly one partition.
    let postcode = |r: &Vec<u8>| serde_json::from_slice::<serde_json::Value>(r).unwrap()["postcode"].clone();
    let sets: Vec<std::collections::BTreeSet<String>> =
        by_partition.values().map(|rs| rs.iter().map(|r| postcode(r).to_string()).collect()).collect();
    let spread = sets[0].intersection(&sets[1]).chain(sets[1].intersection(&sets[2])).count();
    assert!(spread > 0, "some postcode is in two partitions: {sets:?}");
    let mut got: Vec<Vec<u8>> = by_partition.into_values().flatten().collect();
    let mut want = stream_records(&generator(5, "2020-01-01 00:00:00", 3000), 0.0);
    got.sort();
    want.sort();
    assert!(got == want, "the same 3000 records as the keyed stream");
}

#[test]
fn datagen_reports_a_generator_that_cannot_go_on_after_flushing_what_it_produced() {
    let topic = unique("range");
    // Stamps pass 9999-12-31 23:59:59.999 after 2000 records: datagen must say so and fail,
    // not stop quietly as if --count had been reached.
    let out = bin()
        .args(["datagen", "--brokers", broker(), "--topic", &topic, "--partitions", "1", "--rate", "0"])
        .args(["--count", "5000", "--max-late-ms", "0", "--start-time", "9999-12-31 23:59:58"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("after 2000 records") && stderr.contains("outside years 0000..=9999"),
        "{stderr}"
    );
    assert_eq!(
        end_offsets(broker(), &topic, 1),
        [(0, 2000)].into_iter().collect(),
        "the records before it were delivered"
    );
}

#[test]
fn a_max_late_ms_too_large_to_compute_with_is_refused_not_a_panic() {
    for sub in [
        &["run", "--http", "off", "--output", "/nonexistent/never"][..],
        &["datagen", "--brokers", "127.0.0.1:9"][..],
    ] {
        let out = bin()
            .args(sub)
            .args(["--count", "10", "--max-late-ms", "18446744073709551615"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{sub:?}: a usage error: {stderr}");
        assert!(stderr.contains("--max-late-ms") && !stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn an_oversized_kafka_record_is_handed_out_cut_to_the_prefix_its_dead_letter_keeps() {
    use pageviews::source::{Batch, KafkaSource, Poll, Source};
    let (topic, group) = (unique("big"), unique("group"));
    create_topic(&topic, 1);
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", broker()).create().unwrap();
    let big = format!(r#"{{"user_id": 1, "pad": "{}"}}"#, "x".repeat(200_000));
    let small = view(1, "A", "2020-01-01 00:00:00");
    for payload in [&big, &small] {
        producer.send(BaseRecord::<(), _>::to(&topic).payload(payload.as_str())).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let config = kafka_config(&topic, &group, std::path::Path::new("/unused"), true);
    let pageviews::SourceConfig::Kafka(k) = config.source else { unreachable!() };
    let metrics = std::sync::Arc::new(pageviews::metrics::Metrics::new("pageviews"));
    let mut source = KafkaSource::new(k, &unique("member"), pageviews_testkit::kafka::no_restore(), metrics)
        .unwrap()
        .with_max_record_bytes(1024);
    let mut batch = Batch::default();
    let mut got = Vec::new();
    wait_for("both records", Duration::from_secs(30), || {
        batch.clear();
        assert!(source.poll(&mut batch, 100, 0).unwrap() != Poll::End || got.len() == 2);
        got.extend(batch.records().iter().map(|r| (r.len, batch.payload(r).len())));
        got.len() >= 2
    });
    assert_eq!(got[0], (big.len() as u64, 1024), "only the kept prefix is copied, with the full length");
    assert_eq!(got[1], (small.len() as u64, small.len()));
}
