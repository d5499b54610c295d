//! The Kafka topic as a table, against the real broker, each answer checked against one
//! computed another way:
//! - batch mode counts what the topic holds up to its end offsets at the statement's start:
//!   the records produced minus the bad ones, which are skipped and counted;
//! - a streaming tumbling-window query over an unkeyed, out-of-order topic with late and bad
//!   records prints each window once, with the counts of the event-time reference model
//!   (`testkit::event_time`, the pipeline's rules computed from the records alone), and the
//!   late events it reports are the reference's; SIGTERM ends it with exit 0; Flink's
//!   `GROUP BY TUMBLE(…)` prints the same windows;
//! - a streaming projection prints a produced row within a second, and Ctrl-C (SIGINT) ends
//!   it with exit 0;
//! - the topic joins the committed tables: views per hour agree with `page_views` and with
//!   the generator's records;
//! - SASL settings pass through, and a refused password names the cause and is printed
//!   nowhere.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use pageviews::source::GeneratorConfig;
use pageviews::Shutdown;
use pageviews_core::time::{format_timestamp, parse_timestamp};
use pageviews_testkit::event_time::{per_partition, Rules};
use pageviews_testkit::kafka::{
    broker, broker_sasl, create_topic, expected, generator, kafka_config, produce, produce_unkeyed,
    read_topic, unique,
};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// `pageviews-sql --brokers <suite's> --topic TOPIC ARGS`.
fn sql(topic: &str, args: &[&str]) -> Command {
    sql_at(broker(), topic, args)
}

/// `pageviews-sql --brokers BROKERS --topic TOPIC ARGS`.
fn sql_at(brokers: &str, topic: &str, args: &[&str]) -> Command {
    let mut cmd = command(env!("CARGO_BIN_EXE_pageviews-sql"));
    let dir = std::env::temp_dir();
    cmd.current_dir(dir).args(["--brokers", brokers, "--topic", topic]).args(args);
    cmd
}

/// A statement's output lines as they come, from a child's stdout or stderr.
fn lines(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
}

fn producer() -> BaseProducer {
    ClientConfig::new().set("bootstrap.servers", broker()).create().unwrap()
}

/// Sends `record` to `partition` (or where librdkafka places it) and waits until the broker has it.
fn send(producer: &BaseProducer, topic: &str, partition: Option<i32>, record: &str) {
    let mut r = BaseRecord::<(), _>::to(topic).payload(record);
    if let Some(p) = partition {
        r = r.partition(p);
    }
    producer.send(r).map_err(|(e, _)| e).unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
}

#[test]
fn a_batch_count_is_the_records_produced_minus_the_bad_ones_up_to_the_statements_start() {
    let topic = unique("sql-batch");
    let stream = generator(7, "2024-01-01 00:00:00", 4_000);
    produce(&topic, stream.clone(), 0.05);
    let (valid, bad) = expected(&[(stream, 0.05)]);
    assert!(bad > 0);
    let count = format!("SELECT count(*) AS n FROM kafka.\"{topic}\"");
    let out = sql(&topic, &["--format", "csv", "-e", &count]).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, format!("n\n{}\n", valid.len()));
    assert!(stderr.contains(&format!("kafka.{topic}: {bad} records skipped (")), "{stderr}");

    // The same count by partition and postcode, joined with itself: a plan DataFusion runs
    // whole, each scan bounded at its start.
    let per_postcode = format!(
        "SELECT sum(a.n) AS n FROM (SELECT postcode, count(*) AS n FROM kafka.\"{topic}\" GROUP BY postcode) a \
         JOIN (SELECT DISTINCT postcode FROM kafka.\"{topic}\") b ON a.postcode = b.postcode"
    );
    let out = sql(&topic, &["--format", "csv", "-e", &per_postcode]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("n\n{}\n", valid.len()));
}

/// The topic joins the committed tables: after the pipeline read the topic to its end, the
/// views per hour in `kafka.<topic>` and in `page_views` agree row for row, and both are the
/// valid records the generator produced, per hour.
#[test]
fn the_topic_joins_the_committed_tables_hour_for_hour() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let topic = unique("sql-join");
    create_topic(&topic, 3);
    // One event a second: 00:30 to 02:10, three hours.
    let stream =
        GeneratorConfig { interval_us: Some(1_000_000), ..generator(13, "2024-01-01 00:30:00", 6_000) };
    produce(&topic, stream.clone(), 0.05);
    let summary =
        pageviews::run(kafka_config(&topic, &unique("group"), &out, true), Shutdown::default()).unwrap();
    assert!(summary.reached_end);
    let (valid, _) = expected(&[(stream, 0.05)]);
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for row in &valid {
        let row: serde_json::Value = serde_json::from_str(row).unwrap();
        let at = match &row["timestamp"] {
            serde_json::Value::String(s) => s.clone(),
            ms => format_timestamp(ms.as_i64().unwrap()),
        };
        *want.entry(format!("{}:00:00", &at[..13])).or_default() += 1;
    }
    assert!(want.len() > 1, "the stream spans hours: {want:?}");

    let per_hour = format!(
        "SELECT k.hour, k.n AS topic, t.n AS tables FROM \
         (SELECT date_trunc('hour', \"timestamp\") AS hour, count(*) AS n FROM kafka.\"{topic}\" GROUP BY 1) k \
         FULL JOIN (SELECT date_trunc('hour', \"timestamp\") AS hour, count(*) AS n FROM page_views GROUP BY 1) t \
         ON k.hour = t.hour ORDER BY 1"
    );
    let out = sql(&topic, &["--output", &out.display().to_string(), "--format", "csv", "-e", &per_hour])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let got: BTreeMap<String, u64> = stdout
        .lines()
        .skip(1)
        .map(|row| {
            let cells: Vec<&str> = row.split(',').collect();
            assert_eq!(cells.len(), 3, "{row}");
            assert_eq!(cells[1], cells[2], "the topic and the tables differ in an hour: {row}");
            (cells[0].replace('T', " ")[..19].to_string(), cells[1].parse().unwrap())
        })
        .collect();
    assert_eq!(got, want, "views per hour, against the generator's valid records");
}

/// The topic through the SASL/PLAIN listener: the right password reads what the plain
/// listener reads; a refused one ends the statement with the broker's reason and an exit
/// status that is not 0, and the password is printed nowhere.
#[test]
fn sasl_settings_pass_through_and_a_refused_password_is_never_printed() {
    let topic = unique("sql-sasl");
    let stream = generator(11, "2024-01-01 00:00:00", 1_000);
    produce(&topic, stream.clone(), 0.0);
    let (valid, _) = expected(&[(stream, 0.0)]);
    let count = format!("SELECT count(*) AS n FROM kafka.\"{topic}\"");
    let brokers = broker_sasl();
    let run = |password: &str| {
        let password = format!("sasl.password={password}");
        #[rustfmt::skip]
        let out = sql_at(&brokers, &topic, &["--format", "csv", "-e", &count,
                "--kafka-option", "security.protocol=SASL_PLAINTEXT",
                "--kafka-option", "sasl.mechanism=PLAIN", "--kafka-option", "sasl.username=pageviews",
                "--kafka-option", &password])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = run("pageviews-test");
    assert!(ok, "{stderr}");
    assert_eq!(stdout, format!("n\n{}\n", valid.len()));

    let secret = "Wrong-sql-pw-7c1e";
    let (ok, stdout, stderr) = run(secret);
    assert!(!ok, "a refused password is not a result:\n{stdout}{stderr}");
    assert!(stderr.to_lowercase().contains("authentication"), "names the cause:\n{stderr}");
    assert!(!stdout.contains(secret) && !stderr.contains(secret), "printed the password:\n{stdout}{stderr}");
}

/// A page view at `ms`.
fn page_view(user: i64, postcode: &str, ms: i64) -> String {
    format!(r#"{{"user_id":{user},"postcode":"{postcode}","webpage":"w","timestamp":{ms}}}"#)
}

#[test]
fn a_streaming_window_query_prints_each_window_once_with_the_reference_counts() {
    let topic = unique("sql-windows");
    // Ten minutes of event time, up to 8 s out of order (the watermark allows 5 s), placed
    // at random as kcat places unkeyed records, with bad ones among them.
    let stream =
        GeneratorConfig { interval_us: Some(100_000), ..generator(11, "2024-01-01 00:00:00", 6_000) };
    produce_unkeyed(&topic, &stream, 0.02);
    // An event an hour later in every partition moves every partition's event time past
    // every window above, so each closes whatever the reading order.
    let after = stream.start_ms + 3_600_000;
    let p = producer();
    for partition in 0..3 {
        send(&p, &topic, Some(partition), &page_view(0, "LATER", after));
    }
    let reference = per_partition(read_topic(&topic).values().map(Vec::as_slice), Rules::default());
    let want: BTreeSet<String> =
        reference.aggregates.iter().filter(|a| !a.contains("|LATER|")).cloned().collect();
    assert!(want.len() > 20 && !reference.late.is_empty(), "{reference:?}");
    let late = format!("{} late events not counted", reference.late.len());

    let date_bin = format!(
        "SELECT date_bin(INTERVAL '1 minute', \"timestamp\") AS window_start, postcode, count(*) AS views \
         FROM kafka.\"{topic}\" GROUP BY 1, 2"
    );
    let by_date_bin = follow_windows(&topic, &date_bin, &want, &late, |f| {
        let end = parse_timestamp(f[0]).unwrap() + 60_000;
        format!("{}|{}|{}", format_timestamp(end), f[1], f[2])
    });

    // Flink's group window, over the same records: the same windows, each ending a minute
    // after it starts.
    let tumble = format!(
        "SELECT TUMBLE_START(\"timestamp\", INTERVAL '1' MINUTE) AS window_start, \
                TUMBLE_END(\"timestamp\", INTERVAL '1' MINUTE) AS window_end, postcode, COUNT(*) AS views \
         FROM kafka.\"{topic}\" GROUP BY TUMBLE(\"timestamp\", INTERVAL '1' MINUTE), postcode"
    );
    let by_tumble = follow_windows(&topic, &tumble, &want, &late, |f| {
        let (start, end) = (parse_timestamp(f[0]).unwrap(), parse_timestamp(f[1]).unwrap());
        assert_eq!(end - start, 60_000, "{f:?}");
        format!("{}|{}|{}", format_timestamp(end), f[2], f[3])
    });
    assert_eq!(by_tumble, by_date_bin);
}

/// Follows `query` in streaming mode from the earliest offset until it has printed every
/// window of `want` (each CSV row read as `window|postcode|views` by `as_window`), or a
/// minute passed, and stops it with SIGTERM. Asserts that it printed each window once,
/// exactly the windows of `want`, reported `late` and counted the bad records; returns the
/// windows.
fn follow_windows(
    topic: &str,
    query: &str,
    want: &BTreeSet<String>,
    late: &str,
    as_window: impl Fn(&[&str]) -> String,
) -> BTreeSet<String> {
    let mut child =
        sql(topic, &["--mode", "streaming", "--startup", "earliest", "--format", "csv", "-e", query])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    let out = lines(child.stdout.take().unwrap());
    let err = lines(child.stderr.take().unwrap());
    let window = |line: &str| as_window(&line.split(',').collect::<Vec<_>>());
    let mut printed: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while printed.iter().filter(|r| want.contains(*r)).count() < want.len() && Instant::now() < deadline {
        let Ok(line) = out.recv_timeout(Duration::from_millis(200)) else { continue };
        if !line.starts_with("window_start,") {
            printed.push(window(&line));
        }
    }
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    let notes: Vec<String> = err.try_iter().collect();
    assert!(status.success(), "SIGTERM must end a stream with exit 0, got {status}: {notes:?}");
    printed.extend(out.try_iter().filter(|l| !l.starts_with("window_start,")).map(|l| window(&l)));

    let mut once = BTreeMap::new();
    for row in &printed {
        *once.entry(row.clone()).or_insert(0) += 1;
    }
    assert!(once.values().all(|n| *n == 1), "{query}: a window printed twice: {once:?}");
    let got: BTreeSet<String> = printed.into_iter().collect();
    let missing: Vec<_> = want.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(want).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{query}: missing {missing:?}, not in the reference {extra:?}"
    );
    assert!(notes.iter().any(|n| n.contains(late)), "{query}: want `{late}` in {notes:?}");
    let skipped = notes.iter().any(|n| n.contains("records skipped ("));
    assert!(skipped, "{query}: the bad records are counted: {notes:?}");
    got
}

#[test]
fn a_streaming_projection_prints_a_produced_row_within_a_second_and_ctrl_c_ends_it() {
    let topic = unique("sql-latency");
    create_topic(&topic, 3);
    // The broker that created it may take a moment to tell every client of it.
    let count = format!("SELECT count(*) FROM kafka.\"{topic}\"");
    wait_for("the new topic's metadata", Duration::from_secs(30), || {
        sql(&topic, &["-e", &count]).output().unwrap().status.success()
    });
    let query = format!("SELECT user_id, postcode FROM kafka.\"{topic}\" WHERE postcode = 'FAST'");
    let mut child = sql(&topic, &["--mode", "streaming", "--format", "csv", "-e", &query])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines(child.stdout.take().unwrap());
    let err = lines(child.stderr.take().unwrap());
    // It reads from the end offsets it asked for before saying so.
    let started = err.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(started.starts_with("[INFO] Following"), "{started}");

    let p = producer();
    let now_ms = || {
        let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        i64::try_from(d.as_millis()).unwrap()
    };
    let mut latencies = Vec::new();
    for user in 1..=10 {
        send(&p, &topic, None, &page_view(user - 1, "SLOW", now_ms()));
        let sent = Instant::now();
        send(&p, &topic, None, &page_view(user, "FAST", now_ms()));
        let want = format!("{user},FAST");
        loop {
            let line = out.recv_timeout(Duration::from_secs(5)).expect("the row is printed");
            if line == want {
                break;
            }
            assert!(line == "user_id,postcode", "only the filter's rows print: {line}");
        }
        latencies.push(sent.elapsed());
    }
    latencies.sort();
    eprintln!(
        "produce -> printed row: median {:?}, max {:?} over {} rows",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
        latencies.len()
    );
    assert!(latencies[latencies.len() - 1] < Duration::from_secs(1), "{latencies:?}");

    signal(&child, "INT");
    let status = child.wait().unwrap();
    let notes: Vec<String> = err.try_iter().collect();
    assert!(status.success(), "Ctrl-C ends a stream with exit 0, got {status}: {notes:?}");
    assert!(notes.iter().any(|n| n.starts_with("Received a total of 10 rows (stopped)")), "{notes:?}");
}
