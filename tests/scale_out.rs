//! Scale-out against the real broker: instances of one deployment (one pipeline id, group and
//! output) share a topic through the consumer group, partitions move with their state, and
//! the tables come out exactly as one process would write them.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use pageviews::metrics::Metrics;
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

/// An unkeyed topic, its records placed by librdkafka's default partitioner: every
/// partition holds every postcode, so counting brings each postcode's events together
/// through the exchange. Two instances write one row per postcode and window, and exactly
/// the reference's late rows and windows: each event judged by its own partition's
/// watermark, whatever the other partition or instance had read.
#[test]
fn an_unkeyed_topic_gives_the_reference_windows_across_instances() {
    let dir = tempfile::tempdir().unwrap();
    let (topic, group) = (unique("unkeyed"), unique("group"));
    create_topic(&topic, 4);
    produce_unkeyed(&topic, &generator(72, "2020-01-01 00:00:00", 40_000), 0.0);
    let out = dir.path().join("out");
    let configs: Vec<_> = ["a", "b"].into_iter().map(|id| instance(&topic, &group, &out, id, true)).collect();
    let metrics: Vec<_> = configs.iter().map(|c| std::sync::Arc::new(Metrics::new(&c.pipeline_id))).collect();
    let runs: Vec<_> = configs
        .into_iter()
        .zip(metrics.iter().cloned())
        .map(|(config, metrics)| {
            std::thread::spawn(move || pageviews::start(config, Shutdown::default(), metrics).unwrap().join())
        })
        .collect();
    for run in runs {
        run.join().unwrap().unwrap();
    }
    let report = assert_verified(&out);
    assert_eq!(report.rows.get("page_views").copied(), Some(40_000));
    let late = assert_event_time_reference(&out, &topic) as u64;
    assert!(late > 0, "the input must exercise late events");
    // Late events count in the metric wherever they were judged.
    assert_eq!(metrics.iter().map(|m| m.late_events.get()).sum::<u64>(), late);
}

/// Instances join, leave, die and come back, and the topic grows, while events arrive: the
/// deployment's tables equal a single process's on the same topic, and the reference's late
/// rows and windows. Before the topic grows every partition counts its own postcodes (no
/// event moves); after it grows, postcodes arrive in new partitions and travel through the
/// exchange, and the counting partitions wait for the new partitions once the metadata shows
/// them.
#[test]
fn members_join_leave_die_and_the_topic_grows_and_the_tables_equal_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let (topic, group) = (unique("moving"), unique("group"));
    let out = dir.path().join("out");
    create_topic(&topic, 6);
    let a_stream = paced(81, 24_000, 4_000);
    let producer = produce_in_background(&topic, a_stream.clone(), 0.01);
    // No partition may turn idle while a restart catches up: the windows must be the
    // reference's.
    let spawn = |id: &str| {
        let args = ["--instance-id", id, "--idle-timeout", "1h"];
        spawn_kafka_run(bin(), broker(), &topic, &group, &out, "300ms", &args)
    };
    let held_by = |id: &str| holders(&out).values().filter(|m| m.as_str() == id).count();
    let mut a = spawn("a");
    wait_for("a holds every partition", Duration::from_secs(60), || held_by("a") == 6);
    let mut b = spawn("b");
    wait_for("b takes partitions", Duration::from_secs(60), || held_by("b") > 0);
    let mut c = spawn("c");
    wait_for("c takes partitions", Duration::from_secs(60), || held_by("c") > 0);
    // kill -9 b mid-stream; restarted with its id, it takes its partitions back.
    let before = runs_of(&out, "b");
    b.kill().unwrap();
    b.wait().unwrap();
    let mut b = spawn("b");
    wait_for("b is back", Duration::from_secs(90), || !runs_of(&out, "b").is_subset(&before));
    // c leaves the group for good.
    sigterm(&mut c, &out);
    producer.join().unwrap();
    // One process through the same history, for comparison: created before the topic grows.
    let (single, one) = (dir.path().join("single"), unique("one"));
    pageviews::run(kafka_config(&topic, &one, &single, true), Shutdown::default()).unwrap();

    // The topic grows; the next events are keyed over nine partitions.
    add_partitions(&topic, 9);
    let b_stream = pageviews::source::GeneratorConfig {
        rate: 4_000,
        max_late_ms: 0,
        ..generator(82, "2020-01-01 00:30:00", 12_000)
    };
    produce(&topic, b_stream.clone(), 0.0);
    let total = expected(&[(a_stream.clone(), 0.01)]).0.len() + expected(&[(b_stream.clone(), 0.0)]).0.len();
    wait_for("every event committed", Duration::from_secs(120), || {
        committed(&out).page_views as usize == total
    });
    assert!(held_by("a") + held_by("b") == 9, "the new partitions are read: {:?}", holders(&out));
    sigterm(&mut a, &out);
    sigterm(&mut b, &out);
    // Static members stay in the group until their session ends; the draining run starts
    // after that, as an operator's would, so it is handed every partition at once.
    wait_for("the group is empty", Duration::from_secs(60), || group_members(&group) == 0);
    // The operator's last run reads to the end and emits the windows still open.
    let status = spawn_kafka_run(
        bin(),
        broker(),
        &topic,
        &group,
        &out,
        "300ms",
        &["--instance-id", "a", "--until-end"],
    )
    .wait()
    .unwrap();
    assert!(status.success(), "the draining run failed\n{}", log_text(&out));
    assert_exactly_once(&out, &[(a_stream.clone(), 0.01), (b_stream, 0.0)]);

    // The single process reads the rest.
    pageviews::run(kafka_config(&topic, &one, &single, true), Shutdown::default()).unwrap();
    assert_verified(&single);
    assert_same_tables(&out, &single);
    assert_event_time_reference(&out, &topic);
}

/// Under the eager protocol (an operator's `partition.assignment.strategy`) a member the group
/// gives no partition has nothing to checkpoint, yet a rebalance revokes its empty assignment
/// too, and the group assigns anew only once every member gave up what it held. One
/// partition, members joining one by one: b takes it, c joins and gets nothing (the range
/// assignor orders members by id), and a's join revokes c's nothing. Had c kept waiting for a
/// checkpoint, nobody would read until the rebalance timed out (300 s).
#[test]
fn a_member_holding_nothing_gives_up_its_empty_assignment_and_the_group_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let (topic, group) = (unique("empty-member"), unique("group"));
    let out = dir.path().join("out");
    create_topic(&topic, 1);
    let first = generator(83, "2020-01-01 00:00:00", 2_000);
    produce(&topic, first.clone(), 0.0);
    let spawn = |id: &str| {
        let args = ["--instance-id", id, "--kafka-option", "partition.assignment.strategy=range"];
        spawn_kafka_run(bin(), broker(), &topic, &group, &out, "300ms", &args)
    };
    // The newest claim of the partition: its number and who holds it.
    let claim = || claims(&out).get(&0).cloned();
    let mut b = spawn("b");
    wait_for("b holds the partition", Duration::from_secs(60), || claim().is_some_and(|(_, m)| m == "b"));
    let taken = claim().map_or(0, |(n, _)| n);
    let mut c = spawn("c");
    wait_for("c's join hands the partition back to b", Duration::from_secs(60), || {
        claim().is_some_and(|(n, m)| n > taken && m == "b")
    });
    let mut a = spawn("a");
    let moved = poll_until(Duration::from_secs(60), || claim().is_some_and(|(_, m)| m == "a"));
    assert!(moved, "the group never assigned anew after a joined: {:?}\n{}", claim(), log_text(&out));
    let second = generator(84, "2020-01-01 00:10:00", 1_000);
    produce(&topic, second.clone(), 0.0);
    let streams = [(first, 0.0), (second, 0.0)];
    let total = expected(&streams).0.len();
    wait_for("every event committed", Duration::from_secs(60), || {
        committed(&out).page_views as usize == total
    });
    for child in [&mut a, &mut b, &mut c] {
        sigterm(child, &out);
    }
    assert_verified(&out);
    assert_exactly_once(&out, &streams);
}

/// Cooperative rebalancing: a member joining a running one takes its share of the partitions
/// while the other reads on. Every partition the first member keeps is still read under the
/// claim it took at the start (an eager rebalance revokes everything, and each partition is
/// claimed anew when assigned again), and both tables hold every record exactly once.
#[test]
fn a_member_joining_takes_partitions_while_the_others_keep_reading_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let (topic, group) = (unique("cooperative"), unique("group"));
    let out = dir.path().join("out");
    create_topic(&topic, 6);
    let stream = paced(86, 12_000, 4_000);
    let producer = produce_in_background(&topic, stream.clone(), 0.01);
    let spawn = |id: &str| {
        let args = ["--instance-id", id, "--idle-timeout", "1h"];
        spawn_kafka_run(bin(), broker(), &topic, &group, &out, "300ms", &args)
    };
    let held_by = |claims: &std::collections::BTreeMap<u32, (u64, String)>, id: &str| {
        claims.values().filter(|(_, m)| m == id).count()
    };
    let mut a = spawn("a");
    wait_for("a holds every partition", Duration::from_secs(60), || held_by(&claims(&out), "a") == 6);
    let first = claims(&out);
    let mut b = spawn("b");
    wait_for("a and b hold three partitions each", Duration::from_secs(60), || {
        let now = claims(&out);
        held_by(&now, "a") == 3 && held_by(&now, "b") == 3
    });
    let shared = claims(&out);
    for (p, (claim, member)) in &shared {
        if member == "a" {
            assert_eq!(
                first[p].0, *claim,
                "a's partition {p} was given up and claimed again: {first:?} then {shared:?}"
            );
        }
    }
    producer.join().unwrap();
    let total = expected(&[(stream.clone(), 0.01)]);
    wait_for("every record committed", Duration::from_secs(60), || {
        let c = committed(&out);
        c.page_views as usize == total.0.len() && c.dead_letters == total.1
    });
    sigterm(&mut a, &out);
    sigterm(&mut b, &out);
    assert_verified(&out);
    assert_exactly_once(&out, &[(stream, 0.01)]);
}

/// Kills and rebalances across three instances while events arrive: at every step one
/// instance is killed with SIGKILL and restarted (its partitions come back to it), or
/// stopped for good and another started (the group rebalances). Afterwards every produced
/// record is in the tables exactly once and `verify` is clean. `PAGEVIEWS_SOAK_KILLS=N`
/// raises the number of steps (scripts/soak does, outside CI).
#[test]
fn kill_9_and_rebalances_across_instances_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (topic, group) = (unique("soak"), unique("group"));
    let out = dir.path().join("out");
    let steps = soak_kills(6);
    create_topic(&topic, 6);
    let stream = paced(91, 1_500 * steps as u64 + 6_000, 4_000);
    let producer = produce_in_background(&topic, stream.clone(), 0.01);
    let spawn = |id: &str| {
        let args = ["--instance-id", id, "--idle-timeout", "1h"];
        spawn_kafka_run(bin(), broker(), &topic, &group, &out, "200ms", &args)
    };
    let mut running: Vec<(String, std::process::Child)> =
        ["a", "b", "c"].iter().map(|id| (id.to_string(), spawn(id))).collect();
    let mut rng = Lcg::from_env_or_clock();
    let (mut kills, mut rebalances, mut next_id) = (0, 0, 0);
    for _ in 0..steps {
        // Let the group settle and commit a little, then strike at a random instant.
        let before = commit_count(&out);
        poll_until(Duration::from_secs(5), || commit_count(&out) > before);
        std::thread::sleep(Duration::from_millis(rng.below(400)));
        let victim = rng.below(running.len() as u64) as usize;
        let (id, mut child) = running.swap_remove(victim);
        if rng.below(3) == 0 {
            // Leave for good (SIGTERM) and let a new instance join.
            let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            child.wait().unwrap();
            next_id += 1;
            let id = format!("n{next_id}");
            running.push((id.clone(), spawn(&id)));
            rebalances += 2;
        } else {
            child.kill().unwrap();
            child.wait().unwrap();
            kills += 1;
            running.push((id.clone(), spawn(&id)));
            rebalances += 1;
        }
    }
    producer.join().unwrap();
    let total = expected(&[(stream.clone(), 0.01)]);
    wait_for("every record committed", Duration::from_secs(180), || {
        let c = committed(&out);
        c.page_views as usize == total.0.len() && c.dead_letters == total.1
    });
    for (_, mut child) in running {
        let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        child.wait().unwrap();
    }
    let status =
        spawn_kafka_run(bin(), broker(), &topic, &group, &out, "300ms", &["--until-end"]).wait().unwrap();
    assert!(status.success(), "the draining run failed\n{}", log_text(&out));
    let records = assert_exactly_once(&out, &[(stream, 0.01)]);
    let late = assert_event_time_reference(&out, &topic);
    eprintln!("kills {kills}, rebalances {rebalances}, records {records}, lost 0, duplicated 0, late {late}");
}

/// The exchange consumer as the pipeline drives it when partitions are taken and given up one
/// after another: hosted sets change many times in a row, and partitions hosted again are read
/// from the offsets asked for. librdkafka 2.12 aborted the process (confluentinc/librdkafka#5573)
/// when each change replaced the whole assignment; here every change must also read exactly
/// what the hosted partitions hold from the offsets given.
#[test]
fn the_exchange_follows_rapid_changes_of_hosted_partitions_from_the_offsets_given() {
    use pageviews::source::exchange::{Exchange, Item};
    use std::collections::BTreeMap;
    let topic = unique("exchange");
    let config = pageviews::source::KafkaConfig {
        brokers: broker().to_string(),
        topic: topic.clone(),
        group: unique("group"),
        until_end: false,
        options: Vec::new(),
        on_offset_reset: pageviews::source::OffsetReset::Fail,
    };
    let mut exchange = Exchange::open(&config, &topic, 3).unwrap();
    for counting in 0..3u32 {
        for ordinal in 0..10u64 {
            exchange.forward(counting, 7, ordinal, b"k", format!("{counting}/{ordinal}").as_bytes()).unwrap();
        }
    }
    exchange.flush(&Shutdown::default()).unwrap();
    // Reads until `want` records came, or 30 s passed.
    let read = |exchange: &mut Exchange, want: usize| -> Vec<(u32, i64, String)> {
        let mut got = Vec::new();
        poll_until(Duration::from_secs(30), || {
            let mut items = Vec::new();
            exchange.poll(&mut items, 100).unwrap();
            for item in items {
                if let Item::Record { counting, offset, payload, .. } = item {
                    got.push((counting, offset, String::from_utf8(payload).unwrap()));
                }
            }
            got.len() >= want
        });
        got.sort();
        got
    };
    let all: BTreeMap<u32, Option<i64>> = (0..3).map(|p| (p, None)).collect();
    exchange.assign(all.clone()).unwrap();
    assert_eq!(read(&mut exchange, 30).len(), 30, "every forwarded record is read");
    // Taken and given up one by one, many times over, faster than fetchers stop.
    for round in 0..50i64 {
        for hosted in [vec![0], vec![0, 1], vec![1], vec![0, 1, 2], vec![]] {
            exchange.assign(hosted.iter().map(|&p| (p, Some(round % 10))).collect()).unwrap();
        }
    }
    // Hosted again from given offsets: partition 1 from offset 4, partition 2 from the start.
    exchange.assign(BTreeMap::from([(1, Some(4)), (2, None)])).unwrap();
    let got = read(&mut exchange, 16);
    let want: Vec<(u32, i64, String)> =
        (4..10).map(|o| (1, o, format!("1/{o}"))).chain((0..10).map(|o| (2, o, format!("2/{o}")))).collect();
    assert_eq!(got, want, "exactly the hosted partitions, from the offsets given");
    // Absence cannot be polled for: half a second of reading brings nothing more.
    let mut more = Vec::new();
    let arrived = poll_until(Duration::from_millis(500), || {
        exchange.poll(&mut more, 100).unwrap();
        !more.is_empty()
    });
    assert!(!arrived, "nothing from partitions not hosted: {more:?}");
}
