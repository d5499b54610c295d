//! The command line: clap definitions, each flag with its env var where DESIGN §6 names
//! one, validated once into the plain config types the library takes.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::logging::LogFormat;
use crate::pipeline::{PipelineConfig, SourceConfig};
use crate::source::{GeneratorConfig, GeneratorSpec, KafkaConfig, OffsetReset};
use pageviews_core::time::parse_timestamp;

/// Turns page-view events into two consistent, Hive-partitioned tables: every raw event,
/// and views per postcode per event-time window — exactly once, even across crashes.
#[derive(Debug, Parser)]
#[command(name = "pageviews", version, propagate_version = true)]
pub struct Cli {
    /// How log lines on stderr look: `text` for people (coloured only on a terminal), or
    /// `json`, one object per line, for log shippers. RUST_LOG filters them (default info).
    #[arg(long, global = true, env = "PAGEVIEWS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipeline: read events, write page_views, page_view_aggregates,
    /// late_page_views and dead_letters under --output, committing every checkpoint.
    ///
    /// Without --input it reads the built-in generator (1000 events/s, the original job's
    /// datagen). With --input or --count it exits 0 once everything read is committed;
    /// otherwise it runs until SIGINT/SIGTERM, which take a final checkpoint. Restarted on
    /// the same --output it resumes from its last checkpoint: nothing lost, nothing twice.
    Run(Box<RunArgs>),

    /// Audit a table root against the exactly-once guarantees: committed files only, no
    /// window twice, views = page_views − late per postcode and window, every record in
    /// exactly one of page_views and dead_letters. Exits 1 and names each violation.
    Verify(VerifyArgs),

    /// Produce generated page views to Kafka: the original job's datagen, keyed by
    /// postcode, at --rate per second, optionally mixed with malformed records.
    ///
    /// Creates the topic with --partitions when it is missing. Progress goes to stderr; on
    /// SIGINT it flushes what it has produced and exits 0.
    Datagen(DatagenArgs),

    /// SQL over the tables under --output: an interactive shell, -e "SQL", -f file.sql,
    /// --format table|csv|json, --print-catalog. Runs the `pageviews-sql` binary beside this
    /// one (`cargo build --release -p pageviews-sql`); `pageviews sql --help` shows its flags.
    Sql(SqlArgs),
}

/// Arguments of `pageviews sql`, passed through untouched to `pageviews-sql`.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct SqlArgs {
    /// Everything after `sql`, for `pageviews-sql`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0.., value_name = "ARGS")]
    pub args: Vec<std::ffi::OsString>,
}

/// Flags of `pageviews verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Table root to audit: a directory, file:// or s3://bucket/prefix URL.
    #[arg(long, env = "PAGEVIEWS_OUTPUT", default_value = "./data", value_name = "URL")]
    pub output: String,
}

/// Output file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// JSON lines, one object per row (timestamps as `yyyy-MM-dd HH:mm:ss.SSS`, UTC).
    Jsonl,
    /// Parquet: typed columns (timestamps as timestamp(ms, UTC)), dictionary-encoded
    /// strings, snappy; what DuckDB, Spark, Trino and pyarrow read best.
    Parquet,
}

impl From<Format> for crate::sink::Format {
    fn from(f: Format) -> Self {
        match f {
            Format::Jsonl => crate::sink::Format::Jsonl,
            Format::Parquet => crate::sink::Format::Parquet,
        }
    }
}

/// Flags of `pageviews run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// JSON-lines file to read instead of the generator; repeat for several, `-` is stdin.
    #[arg(long, value_name = "PATH")]
    pub input: Vec<String>,

    /// Table root: a directory, file:// URL, or s3://bucket/prefix. S3 is configured the
    /// AWS way: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, and for S3-compatible
    /// servers AWS_ENDPOINT_URL (plus AWS_ALLOW_HTTP=true for plain http).
    #[arg(long, env = "PAGEVIEWS_OUTPUT", default_value = "./data", value_name = "URL")]
    pub output: String,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    pub format: Format,

    /// The built-in generator (used when neither --brokers nor --input is given).
    #[command(flatten)]
    pub generator: GeneratorArgs,

    /// Kafka bootstrap servers; when set, the source is Kafka.
    #[arg(long, env = "KAFKA_BOOTSTRAP", value_name = "HOST:PORT,…")]
    pub brokers: Option<String>,

    /// Kafka source topic.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "page_views")]
    pub topic: String,

    /// Kafka consumer group.
    #[arg(long, env = "CONSUMER_GROUP", default_value = "pageviews")]
    pub group: String,

    /// Kafka: stop after reaching the end offsets seen at start, commit, and exit 0.
    #[arg(long)]
    pub until_end: bool,

    /// Kafka: when a checkpoint's position does not fit its partition any more (outside its
    /// offsets, or another record before it: the topic was deleted and created again, or
    /// truncated): `fail` stops with the topic, partition and offsets; `earliest` reads the
    /// partition from its start; `latest` from its end. Logged and counted either way.
    #[arg(long, env = "PAGEVIEWS_ON_OFFSET_RESET", value_enum, default_value_t = OffsetReset::Fail, value_name = "DECISION")]
    pub on_offset_reset: OffsetReset,

    /// A librdkafka property for the consumer, e.g. security.protocol=SASL_SSL or
    /// fetch.max.bytes=104857600; repeatable, and applied over pageviews' own settings.
    #[arg(long = "kafka-option", env = "KAFKA_OPTIONS", value_delimiter = ',', value_parser = parse_key_value, value_name = "KEY=VALUE")]
    pub kafka_options: Vec<(String, String)>,

    /// How often both tables commit.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub checkpoint_interval: Duration,

    /// Out-of-orderness bound: the watermark trails the highest event time by this much.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub watermark_delay: Duration,

    /// Tumbling window size.
    #[arg(long, default_value = "1m", value_parser = parse_duration, value_name = "DURATION")]
    pub window: Duration,

    /// Keep a window open this long past its end before emitting it.
    #[arg(long, default_value = "0s", value_parser = parse_duration, value_name = "DURATION")]
    pub allowed_lateness: Duration,

    /// A partition with no records this long stops holding the watermark back.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub idle_timeout: Duration,

    /// Roll a file once it reaches this size (e.g. 128MiB).
    #[arg(long, default_value = "128MiB", value_parser = parse_size, value_name = "SIZE")]
    pub roll_size: u64,

    /// Roll a file once it has been open this long. Files span checkpoints; `pageviews sql`
    /// sees their committed rows at once, but readers of the table folders (DuckDB, Spark,
    /// pyarrow) only once they roll, so this bounds how far behind those readers are. At
    /// 1000 events/s a minute makes 60 page_views files an hour (6.5 MiB JSON lines, 440 KiB
    /// Parquet). Files also roll when their partition is complete and when the pipeline stops.
    #[arg(long, default_value = "1m", value_parser = parse_duration, value_name = "DURATION")]
    pub roll_age: Duration,

    /// Upload files in parts of this size (object stores need at least 5MiB).
    #[arg(long, default_value = "8MiB", value_parser = parse_size, value_name = "SIZE")]
    pub part_size: u64,

    /// Most files open at once per table; past it the least recently written one rolls.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub max_open_files: usize,

    /// Wait this long after a partition's hour ends (event time; dead letters: wall-clock
    /// time) before closing its files and writing its _SUCCESS marker.
    #[arg(long, default_value = "0s", value_parser = parse_duration, value_name = "DURATION")]
    pub partition_commit_delay: Duration,

    /// Records larger than this are dead letters (reason `oversized`).
    #[arg(long, default_value = "1MiB", value_parser = parse_size, value_name = "SIZE")]
    pub max_record_bytes: u64,

    /// This instance of the deployment. Instances of one deployment share --pipeline-id,
    /// --group and --output, and the consumer group spreads the topic's partitions over them;
    /// each needs its own id (a second process with the same id is fenced).
    #[arg(long, env = "PAGEVIEWS_INSTANCE_ID", default_value = "0", value_name = "ID")]
    pub instance_id: String,

    /// Workers in this process, each a member of the consumer group over its own partitions
    /// (Kafka): the same as that many instances, in one process.
    #[arg(long, env = "PAGEVIEWS_WORKERS", default_value_t = 1, value_name = "N")]
    pub workers: usize,
    /// Events dated more than this ahead of this machine's clock become dead letters
    /// (reason future_timestamp) instead of moving the watermark there, which would make
    /// every later event late. The default is Kafka's for record timestamps.
    #[arg(long, env = "PAGEVIEWS_MAX_FUTURE", default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
    pub max_future: Duration,

    /// How long a storage call is retried in place when it fails for a reason that passes
    /// (timeouts, refused or reset connections, 5xx, S3's SlowDown) before the run stops.
    /// Failures that do not pass (access denied, no such bucket, disk full) stop it at once.
    #[arg(long, env = "PAGEVIEWS_STORAGE_RETRY_TIMEOUT", default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub storage_retry_timeout: Duration,

    /// Names this pipeline's checkpoints and files; two pipelines may share an --output
    /// only with different ids. Default: from the source, `generator`, `files` or
    /// `kafka-<topic>`, so each source keeps its own checkpoint in a shared output.
    #[arg(long, env = "PAGEVIEWS_PIPELINE_ID", value_name = "ID")]
    pub pipeline_id: Option<String>,

    /// Serve /metrics, /healthz and /api/status here; `off` disables.
    #[arg(long, env = "PAGEVIEWS_HTTP", default_value = "127.0.0.1:9249", value_name = "ADDR")]
    pub http: String,
}

/// The generator's flags, shared by `run` and `datagen` so both make the same stream.
#[derive(Debug, Args)]
pub struct GeneratorArgs {
    /// Generator: events per second (0 = as fast as possible). Event time advances 1000/N ms
    /// per event (1 ms at 0), so at 0 it runs ahead of the clock.
    #[arg(long, env = "ROWS_PER_SECOND", default_value_t = 1000, value_name = "N")]
    pub rate: u64,

    /// Generator: the stream's total number of events. A run on an --output that already
    /// holds part of the stream produces only the rest (after a crash too, so N stays N),
    /// and says so and exits when nothing is left; give a larger N to add events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,

    /// Generator: timestamps lie up to N ms before the event's nominal time (at most a
    /// year).
    #[arg(long, env = "MAX_LATE_RECORD", default_value_t = 1000, value_name = "N",
          value_parser = clap::value_parser!(u64).range(..=MAX_LATE_MS))]
    pub max_late_ms: u64,

    /// Generator: seed for a reproducible stream (default: random for a new output; a run
    /// that resumes a checkpoint continues its stream, and refuses a different --seed).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// Generator: event time of the first event, e.g. "2020-01-01 00:00:00" (default: now;
    /// with --rate 0 and --count, so that the last event is stamped now). A resumed run
    /// continues its checkpoint's stream, and refuses a different --start-time.
    #[arg(long, value_name = "TIMESTAMP")]
    pub start_time: Option<String>,
}

/// The largest --max-late-ms: a year, far more than any test of lateness needs, and far
/// from the ends of the supported years.
const MAX_LATE_MS: u64 = 365 * 24 * 3600 * 1000;

impl GeneratorArgs {
    /// True when any generator flag was given explicitly.
    fn any_set(&self) -> bool {
        self.count.is_some() || self.seed.is_some() || self.start_time.is_some()
    }

    /// The stream these flags describe, for a new output (unset seed: random; unset start:
    /// now, or with `--rate 0 --count N` now minus N ms so the stream does not run ahead of
    /// the clock).
    pub fn config(&self) -> anyhow::Result<GeneratorConfig> {
        let start_ms = match &self.start_time {
            Some(t) => parse_timestamp(t).map_err(|e| anyhow::anyhow!("--start-time {t:?}: {e}"))?,
            None => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                match (self.rate, self.count) {
                    (0, Some(n)) => now.saturating_sub(i64::try_from(n).unwrap_or(i64::MAX)),
                    (0, None) => {
                        tracing::warn!(
                            "--rate 0 without --count or --start-time: event time runs ahead of the clock \
                             (1 s per 1000 events), and events more than --max-future ahead become dead \
                             letters; give --start-time in the past for long runs"
                        );
                        now
                    }
                    _ => now,
                }
            }
        };
        Ok(GeneratorConfig {
            rate: self.rate,
            count: self.count,
            max_late_ms: self.max_late_ms,
            seed: self.seed.unwrap_or_else(random_seed),
            start_ms,
        })
    }

    /// [`GeneratorArgs::config`] with which of seed and start time were given, for `run`,
    /// which continues a checkpoint's stream unless told otherwise.
    pub fn spec(&self) -> anyhow::Result<GeneratorSpec> {
        Ok(GeneratorSpec {
            stream: self.config()?,
            seed_given: self.seed.is_some(),
            start_given: self.start_time.is_some(),
        })
    }
}

/// Flags of `pageviews datagen`.
#[derive(Debug, Args)]
pub struct DatagenArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP", value_name = "HOST:PORT,…")]
    pub brokers: String,

    /// Target topic; created when missing.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "page_views")]
    pub topic: String,

    /// Partitions of the topic when datagen creates it.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub partitions: i32,

    /// The stream to produce (the same generator as `run`'s embedded one).
    #[command(flatten)]
    pub generator: GeneratorArgs,

    /// Share of records replaced by malformed ones (0.0–1.0), one of each dead-letter kind
    /// in turn, for testing.
    #[arg(long, default_value_t = 0.0, value_name = "RATIO")]
    pub bad_ratio: f64,

    /// A librdkafka property for the producer, e.g. compression.type=lz4; repeatable, and
    /// applied over datagen's own settings.
    #[arg(long = "kafka-option", env = "KAFKA_OPTIONS", value_delimiter = ',', value_parser = parse_key_value, value_name = "KEY=VALUE")]
    pub kafka_options: Vec<(String, String)>,
}

impl DatagenArgs {
    /// Validates the flags.
    pub fn into_config(self) -> anyhow::Result<crate::datagen::DatagenConfig> {
        if !(0.0..=1.0).contains(&self.bad_ratio) {
            bail!("--bad-ratio must be between 0 and 1, got {}", self.bad_ratio);
        }
        if self.partitions < 1 {
            bail!("--partitions must be at least 1");
        }
        Ok(crate::datagen::DatagenConfig {
            brokers: self.brokers,
            topic: self.topic,
            partitions: self.partitions,
            generator: self.generator.config()?,
            bad_ratio: self.bad_ratio,
            options: self.kafka_options,
        })
    }
}

/// Parses `key=value` (the value may itself hold `=`).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, e.g. fetch.max.bytes=104857600, got {s:?}")),
    }
}

/// Parses `10s`, `1m`, `500ms`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 10s, 1m)"))
}

/// Parses a byte size: `1048576`, `64KiB`, `8MiB`, `1GiB` (also KB/MB/GB as powers of 1000).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size (examples: 64KiB, 8MiB)"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => return Err(format!("unknown size unit {other:?} (use KiB, MiB or GiB)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

/// librdkafka properties that name a file (or, for the CA, a folder) to read at start.
const TLS_FILE_OPTIONS: [&str; 5] = [
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.keystore.location",
    "ssl.crl.location",
];

/// Refuses a TLS file option whose file does not exist, naming it: librdkafka's own refusal
/// ("ssl.ca.location failed: x509 certificate routines::system lib") does not say which
/// file. `probe` (the CA) asks librdkafka to search the system's usual places.
fn check_tls_files(options: &[(String, String)]) -> anyhow::Result<()> {
    for (key, value) in options {
        if TLS_FILE_OPTIONS.contains(&key.as_str()) && value != "probe" {
            if let Err(e) = std::fs::metadata(value) {
                bail!("--kafka-option {key}={value}: cannot read {value}: {e}");
            }
        }
    }
    Ok(())
}

fn millis(d: Duration, what: &str) -> anyhow::Result<i64> {
    i64::try_from(d.as_millis()).with_context(|| format!("{what} is too large"))
}

fn random_seed() -> u64 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

impl RunArgs {
    /// Validates the flags into a pipeline configuration.
    pub fn into_config(self: Box<Self>) -> anyhow::Result<PipelineConfig> {
        let this = *self;
        this.validate()
    }

    fn validate(self) -> anyhow::Result<PipelineConfig> {
        let source = match (&self.brokers, self.input.is_empty()) {
            (Some(_), false) => bail!("--brokers and --input are two different sources; give one"),
            (Some(brokers), true) => {
                if self.generator.any_set() {
                    bail!("--count, --seed and --start-time configure the generator; they cannot be used with --brokers");
                }
                SourceConfig::Kafka(KafkaConfig {
                    brokers: brokers.clone(),
                    topic: self.topic.clone(),
                    group: self.group.clone(),
                    until_end: self.until_end,
                    on_offset_reset: self.on_offset_reset,
                    options: self.kafka_options.clone(),
                })
            }
            (None, false) => {
                if self.generator.any_set() {
                    bail!("--count, --seed and --start-time configure the generator; they cannot be used with --input");
                }
                if self.input.iter().filter(|p| *p == "-").count() > 1 {
                    bail!("stdin (-) can be given only once");
                }
                SourceConfig::Files(self.input.clone())
            }
            (None, true) => SourceConfig::Generator(self.generator.spec()?),
        };
        if !self.kafka_options.is_empty() && !matches!(source, SourceConfig::Kafka(_)) {
            bail!("--kafka-option configures the Kafka consumer; it needs --brokers");
        }
        check_tls_files(&self.kafka_options)?;
        if self.until_end && !matches!(source, SourceConfig::Kafka(_)) {
            bail!("--until-end applies to Kafka (--brokers); files and --count end by themselves");
        }
        let window_ms = millis(self.window, "--window")?;
        if window_ms <= 0 {
            bail!("--window must be at least 1ms");
        }
        if self.checkpoint_interval.is_zero() {
            bail!("--checkpoint-interval must be positive");
        }
        if let Some(id) = &self.pipeline_id {
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                bail!("--pipeline-id {id:?} may hold only letters, digits, '-' and '_'");
            }
        }
        let http = match self.http.as_str() {
            "off" | "none" | "" => None,
            addr => Some(addr.parse::<SocketAddr>().with_context(|| {
                format!("--http {addr:?} is not an address like 127.0.0.1:9249 (or `off`)")
            })?),
        };
        let mut config = PipelineConfig::new(source, self.output);
        if let Some(id) = self.pipeline_id {
            config.pipeline_id = id;
        }
        config.checkpoint_interval = self.checkpoint_interval;
        config.watermark_delay_ms = millis(self.watermark_delay, "--watermark-delay")?;
        config.window_ms = window_ms;
        config.allowed_lateness_ms = millis(self.allowed_lateness, "--allowed-lateness")?;
        config.idle_timeout_ms = millis(self.idle_timeout, "--idle-timeout")? as u64;
        config.roll_bytes = self.roll_size.max(1);
        config.roll_age = self.roll_age;
        config.format = self.format.into();
        config.part_bytes = usize::try_from(self.part_size).context("--part-size is too large")?.max(1);
        config.max_open_files = self.max_open_files.max(1);
        config.partition_commit_delay_ms = millis(self.partition_commit_delay, "--partition-commit-delay")?;
        config.max_record_bytes =
            usize::try_from(self.max_record_bytes).context("--max-record-bytes is too large")?;
        config.max_future_ms = millis(self.max_future, "--max-future")?;
        config.storage_retry_timeout = self.storage_retry_timeout;
        config.http = http;
        if self.instance_id.is_empty()
            || !self.instance_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("--instance-id {:?} may hold only letters, digits, '-' and '_'", self.instance_id);
        }
        if self.workers == 0 {
            bail!("--workers must be at least 1");
        }
        if self.workers > 1 && !matches!(config.source, SourceConfig::Kafka(_)) {
            bail!("--workers above 1 needs a Kafka source (--brokers): files and the generator run in one worker");
        }
        config.instance_id = self.instance_id;
        config.workers = self.workers;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse_as_people_write_them() {
        assert_eq!(parse_size("128MiB"), Ok(128 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert!(parse_size("12 parsecs").is_err());
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn generator_flags_with_input_are_refused() {
        let cli = Cli::try_parse_from(["pageviews", "run", "--input", "x.jsonl", "--count", "5"]).unwrap();
        let Command::Run(args) = cli.command else { panic!("run expected") };
        let err = args.into_config().unwrap_err().to_string();
        assert!(err.contains("--count"), "{err}");
    }

    #[test]
    fn defaults_follow_the_design() {
        let cli = Cli::try_parse_from(["pageviews", "run", "--seed", "1"]).unwrap();
        let Command::Run(args) = cli.command else { panic!("run expected") };
        let c = args.into_config().unwrap();
        assert_eq!(c.checkpoint_interval, Duration::from_secs(10));
        assert_eq!(c.roll_age, Duration::from_secs(60));
        assert_eq!((c.watermark_delay_ms, c.window_ms, c.idle_timeout_ms), (5_000, 60_000, 1_000));
        assert_eq!(c.http, Some("127.0.0.1:9249".parse().unwrap()));
        assert_eq!(c.pipeline_id, "generator");
        let SourceConfig::Generator(spec) = c.source else { panic!("generator expected") };
        let g = spec.stream;
        assert!(g.seed == 1 && spec.seed_given && !spec.start_given);
        assert_eq!((g.rate, g.max_late_ms, g.count), (1000, 1000, None));
    }

    #[test]
    fn the_pipeline_id_comes_from_the_source_unless_given() {
        let id = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["pageviews", "run"], args].concat()).unwrap();
            let Command::Run(args) = cli.command else { panic!("run expected") };
            args.into_config().unwrap().pipeline_id
        };
        assert_eq!(id(&[]), "generator");
        assert_eq!(id(&["--input", "a.jsonl"]), "files");
        assert_eq!(id(&["--brokers", "k:9092", "--topic", "site.views"]), "kafka-site_views");
        assert_eq!(id(&["--brokers", "k:9092", "--pipeline-id", "mine"]), "mine");
    }
}
