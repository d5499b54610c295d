//! Kafka for the tests: the broker (scripts/kafka-local), topics, producing with datagen, and
//! what the tables must hold for what was produced.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use pageviews::datagen::{datagen_record, run_datagen, DatagenConfig};
use pageviews::event::decode;
use pageviews::sink::jsonl;
use pageviews::source::{GeneratorConfig, KafkaConfig};
use pageviews::{PipelineConfig, Shutdown, SourceConfig};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::{files, workspace};

/// The broker: `PAGEVIEWS_TEST_BROKERS` if set (scripts/test sets it), else the project's
/// local broker (started once).
pub fn broker() -> &'static str {
    static BROKER: OnceLock<String> = OnceLock::new();
    BROKER.get_or_init(|| {
        if let Ok(b) = std::env::var("PAGEVIEWS_TEST_BROKERS") {
            return b;
        }
        crate::script("kafka-local", &["start"])
    })
}

/// `HOST:PORT` of [`broker`]'s SASL_PLAINTEXT listener (`scripts/kafka-local sasl`): SASL/PLAIN,
/// user `pageviews`, password `pageviews-test`.
pub fn broker_sasl() -> String {
    broker();
    crate::script("kafka-local", &["sasl"])
}

/// `HOST:PORT` of the JMX exporter agent on [`broker`] (`scripts/kafka-local metrics`, with
/// the `KAFKA_LOCAL_DIR` scripts/test exports, so it is the same broker).
pub fn broker_metrics() -> String {
    broker();
    crate::script("kafka-local", &["metrics"])
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

pub fn generator(seed: u64, start: &str, count: u64) -> GeneratorConfig {
    GeneratorConfig {
        rate: 0,
        count: Some(count),
        max_late_ms: 8_000,
        seed,
        start_ms: pageviews_core::time::parse_timestamp(start).expect("a timestamp"),
        interval_us: None,
    }
}

pub fn produce(topic: &str, generator: GeneratorConfig, bad_ratio: f64) {
    produce_to(broker(), topic, generator, bad_ratio);
}

/// Produces the stream on a thread of its own, while the test runs instances against it.
pub fn produce_in_background(
    topic: &str,
    generator: GeneratorConfig,
    bad_ratio: f64,
) -> std::thread::JoinHandle<()> {
    let topic = topic.to_string();
    std::thread::spawn(move || produce(&topic, generator, bad_ratio))
}

/// Produces the stream with datagen's own code, keyed by postcode (the topic gets 3
/// partitions when created).
pub fn produce_to(brokers: &str, topic: &str, generator: GeneratorConfig, bad_ratio: f64) {
    datagen(brokers, topic, generator, bad_ratio, true);
}

/// Creates a topic with Kafka's own kafka-topics tool.
pub fn create_topic(topic: &str, partitions: u32) {
    // The broker must be up first; a test may create a topic before anything else.
    let _ = broker();
    let status = std::process::Command::new(workspace().join("scripts/kafka-local"))
        .current_dir(workspace())
        .args(["topics", "--create", "--topic", topic, "--partitions", &partitions.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("run scripts/kafka-local topics");
    assert!(status.success(), "creating topic {topic} failed");
}

/// Deletes `topic` and creates it again, empty, with `partitions` partitions (the broker
/// refuses the creation while the deletion is under way, so it is retried).
pub fn recreate_topic(topic: &str, partitions: u32) {
    let kafka_local = |args: &[&str]| {
        std::process::Command::new(workspace().join("scripts/kafka-local"))
            .current_dir(workspace())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run scripts/kafka-local topics")
            .success()
    };
    assert!(kafka_local(&["topics", "--delete", "--topic", topic]), "deleting topic {topic} failed");
    let n = partitions.to_string();
    crate::wait_for("the topic is created again", Duration::from_secs(60), || {
        kafka_local(&["topics", "--create", "--topic", topic, "--partitions", &n])
    });
}

/// Rows missing from `got` and rows `got` holds more often than `want`: (lost, duplicated).
/// Both must be sorted.
pub fn lost_and_duplicated(got: &[String], want: &[String]) -> (usize, usize) {
    let (mut i, mut j, mut lost, mut duplicated) = (0, 0, 0, 0);
    while i < got.len() || j < want.len() {
        match (got.get(i), want.get(j)) {
            (Some(g), Some(w)) if g == w => (i, j) = (i + 1, j + 1),
            (Some(g), Some(w)) if g < w => (duplicated, i) = (duplicated + 1, i + 1),
            (Some(_), None) => (duplicated, i) = (duplicated + 1, i + 1),
            _ => (lost, j) = (lost + 1, j + 1),
        }
    }
    (lost, duplicated)
}

/// A broker of a test's own (its own state folder and ports), for tests that stop it.
pub struct OwnBroker {
    dir: tempfile::TempDir,
    /// Its bootstrap address; the same across stop and start.
    pub bootstrap: String,
}

impl OwnBroker {
    /// Starts a fresh broker.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut broker = OwnBroker { dir, bootstrap: String::new() };
        broker.bootstrap = broker.script("start");
        broker
    }

    fn script(&self, cmd: &str) -> String {
        let out = std::process::Command::new(workspace().join("scripts/kafka-local"))
            .current_dir(workspace())
            .arg(cmd)
            .env("KAFKA_LOCAL_DIR", self.dir.path())
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/kafka-local");
        assert!(out.status.success(), "scripts/kafka-local {cmd} failed");
        String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_string()
    }

    /// Stops the broker; its data stays.
    pub fn stop(&self) {
        self.script("stop");
    }

    /// Starts it again at the same address.
    pub fn restart(&self) {
        let again = self.script("start");
        assert_eq!(again, self.bootstrap, "the broker came back at another address");
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.script("stop");
    }
}

/// Every record of `topic` now, per partition in offset order, as a plain consumer reads it.
pub fn read_topic(topic: &str) -> BTreeMap<u32, Vec<Vec<u8>>> {
    use rdkafka::Message;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let ends = end_offsets(broker(), topic, partitions);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out: BTreeMap<u32, Vec<Vec<u8>>> = (0..partitions as u32).map(|p| (p, Vec::new())).collect();
    let done = |out: &BTreeMap<u32, Vec<Vec<u8>>>| {
        ends.iter().all(|(p, end)| out[&(*p as u32)].len() as i64 >= *end)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done(&out) {
        assert!(std::time::Instant::now() < deadline, "reading {topic} back timed out");
        if let Some(Ok(msg)) = consumer.poll(Duration::from_millis(100)) {
            out.get_mut(&(msg.partition() as u32)).unwrap().push(msg.payload().unwrap_or_default().to_vec());
        }
    }
    out
}

/// Produces datagen's records of `stream` without keys (`pageviews datagen --unkeyed`): each
/// goes to a random partition. Paced at `stream.rate` records/s when it is set.
pub fn produce_unkeyed(topic: &str, stream: &GeneratorConfig, bad_ratio: f64) {
    produce_unkeyed_to(broker(), topic, stream, bad_ratio);
}

/// [`produce_unkeyed`] to the broker at `brokers`; a missing topic is created with 3
/// partitions, as datagen creates one.
pub fn produce_unkeyed_to(brokers: &str, topic: &str, stream: &GeneratorConfig, bad_ratio: f64) {
    datagen(brokers, topic, stream.clone(), bad_ratio, false);
}

/// Runs datagen's own code to the end of `generator`'s stream; the topic gets 3 partitions
/// when created. Its producer is idempotent, so a retried batch never lands after the next
/// one (the references judge each partition's records in offset order).
fn datagen(brokers: &str, topic: &str, generator: GeneratorConfig, bad_ratio: f64, keyed: bool) {
    let config = DatagenConfig {
        brokers: brokers.to_string(),
        topic: topic.to_string(),
        partitions: 3,
        generator,
        bad_ratio,
        keyed,
        options: Vec::new(),
    };
    let summary = run_datagen(&config, &Shutdown::default(), false).expect("datagen");
    assert_eq!(summary.failed, 0);
}

/// The records of `stream` in production order (datagen's, malformed ones included).
pub fn stream_records(stream: &GeneratorConfig, bad_ratio: f64) -> Vec<Vec<u8>> {
    (0..stream.count.unwrap())
        .map(|seq| {
            let mut line = Vec::new();
            datagen_record(stream, bad_ratio, seq, &mut line);
            line
        })
        .collect()
}

/// The late rows and windows under `out` are the reference's for what `topic` holds: each
/// event judged by its own partition's watermark, every other one counted
/// ([`crate::event_time`]). For runs whose input ended (every window emitted) and where no
/// partition went idle. Returns the number of late rows.
pub fn assert_event_time_reference(out: &Path, topic: &str) -> usize {
    use crate::event_time::{outcome_of, per_partition, Rules};
    let want = per_partition(read_topic(topic).values().map(Vec::as_slice), Rules::default());
    let got = outcome_of(out);
    assert!(got == want, "late rows and windows differ from the reference\n{}", got.diff(&want));
    got.late.len()
}

/// The page_views rows and dead-letter count the pipeline must write for these streams.
pub fn expected(streams: &[(GeneratorConfig, f64)]) -> (Vec<String>, u64) {
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

/// The page_views rows under `root` as sorted JSON lines, whatever the files' format.
pub fn page_view_lines(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for file in files(&root.join("page_views")) {
        let bytes = std::fs::read(&file).expect("read a page_views file");
        let text = crate::table_file_text("page_views", &bytes, &file.display().to_string());
        out.extend(text.lines().map(str::to_string));
    }
    out.sort();
    out
}

pub fn kafka_config(topic: &str, group: &str, out: &Path, until_end: bool) -> PipelineConfig {
    kafka_config_at(broker(), topic, group, out, until_end)
}

/// A pipeline reading `topic` at `brokers`, committing every 500 ms.
pub fn kafka_config_at(
    brokers: &str,
    topic: &str,
    group: &str,
    out: &Path,
    until_end: bool,
) -> PipelineConfig {
    let source = SourceConfig::Kafka(KafkaConfig {
        brokers: brokers.to_string(),
        topic: topic.to_string(),
        group: group.to_string(),
        until_end,
        options: Vec::new(),
        on_offset_reset: Default::default(),
    });
    let mut config = PipelineConfig::new(source, out.display().to_string());
    config.checkpoint_interval = Duration::from_millis(500);
    config
}

/// The group's committed offset per partition, as `kafka-consumer-groups` would show it.
pub fn committed_offsets(brokers: &str, topic: &str, group: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", group).create().unwrap();
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

/// Each partition's end offset (the next offset to be written).
pub fn end_offsets(brokers: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    (0..partitions)
        .map(|p| (p, consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap().1))
        .collect()
}

/// A generated stream from 2020-01-01 00:00:00, produced at `rate` events/s.
pub fn paced(seed: u64, count: u64, rate: u64) -> GeneratorConfig {
    GeneratorConfig { rate, ..generator(seed, "2020-01-01 00:00:00", count) }
}

/// Both tables against what was produced: nothing lost, nothing twice, and `verify` clean
/// (aggregates equal page views minus late ones, per postcode and window). Returns the
/// records produced.
pub fn assert_exactly_once(out: &Path, streams: &[(GeneratorConfig, f64)]) -> usize {
    let (want_rows, want_bad) = expected(streams);
    let got = page_view_lines(out);
    let (lost, duplicated) = lost_and_duplicated(&got, &want_rows);
    let dead = crate::rows(out, "dead_letters").len() as u64;
    eprintln!(
        "records {}, lost {lost}, duplicated {duplicated}, dead letters {dead}",
        want_rows.len() as u64 + want_bad
    );
    assert_eq!((lost, duplicated), (0, 0), "page_views against what was produced");
    assert_eq!(dead, want_bad, "dead letters against the malformed records produced");
    crate::assert_verified(out);
    want_rows.len() + want_bad as usize
}

/// The log file of a pipeline writing `out`.
pub fn log_path(out: &Path) -> std::path::PathBuf {
    out.with_extension("log")
}

/// What the pipelines writing `out` logged.
pub fn log_text(out: &Path) -> String {
    std::fs::read_to_string(log_path(out)).unwrap_or_default()
}

/// Stops a pipeline writing `out` with SIGTERM and asserts it exits 0 (its log if not).
pub fn sigterm(child: &mut std::process::Child, out: &Path) {
    let ok = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM must exit 0, got {status}\n{}", log_text(out));
}

/// Spawns `cmd` (the pageviews binary) reading `topic` into `out`, committing every
/// `interval`, logging at info to `log_path(out)`.
pub fn spawn_kafka_run(
    mut cmd: std::process::Command,
    brokers: &str,
    topic: &str,
    group: &str,
    out: &Path,
    interval: &str,
    extra: &[&str],
) -> std::process::Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log_path(out)).expect("open log");
    cmd.args(["run", "--brokers", brokers, "--topic", topic, "--group", group])
        .args(["--checkpoint-interval", interval])
        .args(if extra.contains(&"--http") { &[][..] } else { &["--http", "off"][..] })
        .arg("--output")
        .arg(out)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn pageviews")
}

/// Adds partitions to `topic`, with Kafka's own kafka-topics tool.
pub fn add_partitions(topic: &str, partitions: u32) {
    let status = std::process::Command::new(workspace().join("scripts/kafka-local"))
        .current_dir(workspace())
        .args(["topics", "--alter", "--topic", topic, "--partitions", &partitions.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("run scripts/kafka-local topics");
    assert!(status.success(), "adding partitions to {topic} failed");
}

/// How many members the consumer group `group` has now (static members that stopped stay
/// members until their session times out).
pub fn group_members(group: &str) -> usize {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", broker()).create().unwrap();
    consumer
        .fetch_group_list(Some(group), Duration::from_secs(5))
        .map(|list| list.groups().iter().map(|g| g.members().len()).sum())
        .unwrap_or(usize::MAX)
}

/// A [`pageviews::source::Restore`] without a commit log, for tests that drive a
/// `KafkaSource` directly: every assigned partition gets claim 1 and no committed state.
pub struct NoRestore;

impl pageviews::source::Restore for NoRestore {
    fn restore(
        &mut self,
        partitions: &[u32],
    ) -> Result<Vec<(u32, pageviews::source::Restored)>, pageviews::core::commit::CheckpointError> {
        Ok(partitions.iter().map(|p| (*p, pageviews::source::Restored { claim: 1, state: None })).collect())
    }
}

/// [`NoRestore`], boxed as `KafkaSource::new` takes it.
pub fn no_restore() -> Box<dyn pageviews::source::Restore> {
    Box::new(NoRestore)
}
