//! Faults against the real broker: kill -9 at random instants while datagen produces, the
//! broker stopped mid-run (briefly, and past the group session), the output made unwritable
//! mid-run, and SIGTERM. After each, the tables hold every produced record exactly once and
//! `verify` is clean.
//!
//! `PAGEVIEWS_SOAK_KILLS=N` raises the number of kills (scripts/soak does, outside CI).

mod common;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use common::*;
use pageviews_testkit::kafka::*;

/// The pipeline binary reading `topic`, committing every `interval`; stderr goes to `log`.
fn spawn_run(brokers: &str, topic: &str, group: &str, out: &Path, interval: &str, extra: &[&str]) -> Child {
    spawn_kafka_run(bin(), brokers, topic, group, out, interval, extra)
}

/// Runs to the end of the topic and exits 0, as an operator's last run would.
fn drain(brokers: &str, topic: &str, group: &str, out: &Path) {
    let status = spawn_run(brokers, topic, group, out, "500ms", &["--until-end"]).wait().unwrap();
    assert!(status.success(), "the draining run failed: {status}\n{}", log_text(out));
}

#[test]
fn kill_9_at_random_instants_while_datagen_produces_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (topic, group) = (unique("kill"), unique("group"));
    let out = dir.path().join("out");
    let kills = soak_kills(20);
    create_topic(&topic, 3);
    // Production spans the kills: about 0.6 s of producing per kill.
    let stream = paced(31, 2_500 * kills as u64, 4_000);
    let producer = produce_in_background(&topic, stream.clone(), 0.01);
    let mut rng = Lcg::from_env_or_clock();
    for _ in 0..kills {
        let before = commit_count(&out);
        // No partition may turn idle while a restart catches up: the windows must be the
        // reference's.
        let mut child = spawn_run(broker(), &topic, &group, &out, "200ms", &["--idle-timeout", "1h"]);
        // Usually after a fresh checkpoint, sometimes before the first one of this run.
        poll_until(Duration::from_secs(3), || commit_count(&out) > before);
        // The kill instant itself: random, so kills land in every phase of a checkpoint.
        std::thread::sleep(Duration::from_millis(rng.below(300)));
        assert!(child.try_wait().unwrap().is_none(), "the pipeline stopped by itself:\n{}", log_text(&out));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_only_committed_files(&out);
    }
    producer.join().unwrap();
    drain(broker(), &topic, &group, &out);
    let records = assert_exactly_once(&out, &[(stream, 0.01)]);
    let late = assert_event_time_reference(&out, &topic);
    eprintln!("kills {kills}, records {records}, lost 0, duplicated 0, late {late}");
    assert_eq!(committed_offsets(broker(), &topic, &group, 3), end_offsets(broker(), &topic, 3));
}

/// How long the broker stays away.
enum Outage {
    /// Until the pipeline has noticed, as a broker restart: the group session (10 s) survives.
    Short,
    /// Until the group session has timed out: librdkafka revokes the assignment as lost and
    /// forgets its member id. The broker comes back while a commit made then could still be
    /// waiting for it, which is when a stale commit would get this static member fenced.
    PastTheSession,
}

#[test]
fn a_short_broker_outage_is_waited_out_without_a_restart() {
    broker_outage(Outage::Short, true);
}

#[test]
fn a_broker_outage_past_the_group_session_is_waited_out_without_a_restart() {
    broker_outage(Outage::PastTheSession, true);
}

/// Events of an unkeyed topic travel through the exchange, which must take them before a
/// checkpoint commits: the checkpoints wait for the broker while the loop goes on serving
/// the consumer.
#[test]
fn a_broker_outage_while_events_are_forwarded_is_waited_out_without_a_restart() {
    broker_outage(Outage::PastTheSession, false);
}

fn broker_outage(outage: Outage, keyed: bool) {
    let broker = OwnBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let (topic, group) = (unique("outage"), unique("group"));
    let out = dir.path().join("out");
    let first = generator(41, "2020-01-01 00:00:00", 20_000);
    let second = generator(42, "2020-01-01 00:10:00", 20_000);
    let produce = |stream: &pageviews::source::GeneratorConfig| {
        if keyed {
            produce_to(&broker.bootstrap, &topic, stream.clone(), 0.01);
        } else {
            produce_unkeyed_to(&broker.bootstrap, &topic, stream, 0.01);
        }
    };
    produce(&first);
    let mut child = spawn_run(&broker.bootstrap, &topic, &group, &out, "200ms", &[]);
    let first_half = poll_until(Duration::from_secs(60), || committed(&out).records_read == 20_000);
    assert!(
        first_half,
        "the first half was not committed in 60 s ({:?}):\n{}",
        committed(&out),
        log_text(&out)
    );

    broker.stop();
    let session_lost = || log_text(&out).contains("session timed out");
    match outage {
        Outage::Short => {
            // Back as soon as the pipeline has noticed, as after a broker restart.
            wait_for("the outage to be noticed", Duration::from_secs(30), || {
                log_text(&out).contains("Kafka unavailable")
            });
            assert!(!session_lost(), "the session timed out in a short outage:\n{}", log_text(&out));
        }
        Outage::PastTheSession => {
            let lost = poll_until(Duration::from_secs(60), session_lost);
            assert!(lost, "the group session did not time out during the outage:\n{}", log_text(&out));
        }
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the pipeline gave up during the outage:\n{}",
        log_text(&out)
    );
    broker.restart();
    produce(&second);
    let resumed = poll_until(Duration::from_secs(120), || committed(&out).records_read == 40_000);
    assert!(resumed, "the second half was not committed in 120 s:\n{}", log_text(&out));
    assert!(child.try_wait().unwrap().is_none(), "the same process carried on");
    // Commits to the group resume once Kafka is back, so lag monitors see the pipeline
    // current, also when the restarted broker refused the first ones (it did not know the
    // member until it rejoined) and no new record comes to make a checkpoint.
    let group_current = || {
        committed_offsets(&broker.bootstrap, &topic, &group, 3) == end_offsets(&broker.bootstrap, &topic, 3)
    };
    let current = poll_until(Duration::from_secs(60), group_current);
    assert!(current, "the group's offsets stayed behind after the outage:\n{}", log_text(&out));

    let ok = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
    assert!(child.wait().unwrap().success(), "{}", log_text(&out));
    let log = log_text(&out);
    assert!(log.contains("Kafka unavailable"), "the outage is logged:\n{log}");
    assert!(log.contains("Kafka reachable again"), "the recovery is logged:\n{log}");
    assert_exactly_once(&out, &[(first, 0.01), (second, 0.01)]);
    // And the final checkpoint leaves them there.
    let (committed, ends) =
        (committed_offsets(&broker.bootstrap, &topic, &group, 3), end_offsets(&broker.bootstrap, &topic, 3));
    assert_eq!(committed, ends, "the group's offsets after the outage:\n{log}");
}

#[test]
fn an_unwritable_output_stops_the_pipeline_cleanly_and_a_restart_continues_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (topic, group) = (unique("unwritable"), unique("group"));
    let out = dir.path().join("out");
    create_topic(&topic, 3);
    let stream = paced(51, 20_000, 4_000);
    let producer = produce_in_background(&topic, stream.clone(), 0.01);
    let mut child = spawn_run(broker(), &topic, &group, &out, "200ms", &[]);
    wait_for("a first checkpoint", Duration::from_secs(60), || commit_count(&out) >= 1);

    // The fault: the checkpoint folder turns into a file. Tests run as root here, so
    // permissions would not stop a write; a path that cannot be a directory does.
    let checkpoints = out.join("_checkpoints");
    let aside = out.join("_checkpoints.aside");
    std::fs::rename(&checkpoints, &aside).unwrap();
    std::fs::write(&checkpoints, b"not a directory").unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "a checkpoint that cannot be written must stop the pipeline");
    let log = log_text(&out);
    assert!(log.contains("_checkpoints"), "the error names the path that failed:\n{log}");

    // Cleared: no partial checkpoint, nothing visible that no checkpoint names.
    std::fs::remove_file(&checkpoints).unwrap();
    std::fs::rename(&aside, &checkpoints).unwrap();
    assert_only_committed_files(&out);
    producer.join().unwrap();
    drain(broker(), &topic, &group, &out);
    assert_exactly_once(&out, &[(stream, 0.01)]);
}

#[test]
fn sigterm_takes_a_final_checkpoint_and_commits_its_offsets_to_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let (topic, group) = (unique("sigterm"), unique("group"));
    let out = dir.path().join("out");
    create_topic(&topic, 3);
    let stream = paced(61, 12_000, 4_000);
    let producer = produce_in_background(&topic, stream.clone(), 0.0);
    let http = free_loopback_addr();
    let mut child = spawn_run(broker(), &topic, &group, &out, "2s", &["--http", &http.to_string()]);
    wait_for("the first checkpoint", Duration::from_secs(60), || commit_count(&out) >= 1);
    // SIGTERM while records read since the last checkpoint wait for the next one.
    let mut read = 0.0;
    wait_for("records read beyond the last checkpoint", Duration::from_secs(30), || {
        read = metric(&http_get(http, "/metrics").1, "pageviews_records_read_total").unwrap_or(0.0);
        read > committed(&out).records_read as f64
    });
    let before = commit_count(&out);
    let sent = Instant::now();
    sigterm(&mut child, &out);
    assert!(sent.elapsed() < Duration::from_secs(2), "took {:?} to stop", sent.elapsed());
    assert!(commit_count(&out) > before, "a final checkpoint\n{}", log_text(&out));
    assert!(committed(&out).records_read as f64 >= read, "everything read is committed");

    // The final commit's positions are what the tables hold and what the group has.
    let positions: std::collections::BTreeMap<i32, i64> = positions(&out)
        .into_iter()
        .map(|(p, at)| match at {
            pageviews::core::commit::Position::Kafka { offset, .. } => (p as i32, offset),
            other => panic!("a Kafka position, not {other:?}"),
        })
        .collect();
    assert_eq!(rows(&out, "page_views").len() as i64, positions.values().sum::<i64>());
    assert_eq!(committed_offsets(broker(), &topic, &group, 3), positions);

    producer.join().unwrap();
    drain(broker(), &topic, &group, &out);
    assert_exactly_once(&out, &[(stream, 0.0)]);
}
