//! The command line: clap definitions, each flag with its env var where one is conventional
//! (`KAFKA_BOOTSTRAP`, `PAGEVIEWS_*`), validated once into the plain config types the library takes.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};

mod catalog;
mod generator;
mod parse;

pub(crate) use catalog::{CatalogArgs, IcebergArgs};
pub(crate) use generator::{DatagenArgs, GeneratorArgs};
pub(crate) use parse::{parse_duration, parse_key_value, parse_size};

use crate::logging::LogFormat;
use crate::pipeline::{PipelineConfig, SourceConfig};
use crate::source::{InputMode, KafkaConfig, OffsetReset};

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
// `CatalogArgs` speaks as `run`, which commits to the tables; `verify` audits them, with help
// of its own.
#[command(
    mut_arg("catalog", |a| a.help("Also audit the Iceberg tables in this catalog against the commit log (default: the output's catalog.db when there is one)")),
    mut_arg("namespace", |a| a.help("The Iceberg namespace of the tables")),
    mut_arg("catalog_warehouse", |a| a.help("REST catalog: the warehouse")),
    mut_arg("catalog_credential", |a| a.help("REST catalog: OAuth2 client credentials `ID:SECRET`")),
)]
pub struct VerifyArgs {
    /// Table root to audit: a directory, file://, s3://bucket/prefix or az://container/prefix URL.
    #[arg(long, env = "PAGEVIEWS_OUTPUT", default_value = "./data", value_name = "URL")]
    pub output: String,

    #[command(flatten)]
    catalog: CatalogArgs,
}

impl VerifyArgs {
    /// The catalog to audit, if any: the one given, or the output's `catalog.db` if it exists.
    pub fn iceberg(&self) -> Option<crate::sink::iceberg::IcebergConfig> {
        let catalog = match &self.catalog.catalog {
            Some(c) => c.clone(),
            None => {
                let default = crate::sink::iceberg::IcebergConfig::default_catalog(&self.output)?;
                let exists = std::path::Path::new(default.trim_start_matches("sqlite:")).exists();
                exists.then_some(default)?
            }
        };
        Some(self.catalog.config(catalog))
    }
}

/// Output file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// JSON lines, one object per row (timestamps as `yyyy-MM-dd HH:mm:ss.SSS`, UTC).
    Jsonl,
    /// Parquet: typed columns (timestamps as timestamp(ms, UTC)), dictionary-encoded
    /// strings, snappy; what DuckDB, Spark, Trino and pyarrow read best.
    Parquet,
    /// ORC: typed columns (timestamps as TIMESTAMP in UTC), dictionary-encoded strings,
    /// snappy; what Hive, Spark and Trino read natively.
    Orc,
}

impl From<Format> for crate::sink::Format {
    fn from(f: Format) -> Self {
        match f {
            Format::Jsonl => crate::sink::Format::Jsonl,
            Format::Parquet => crate::sink::Format::Parquet,
            Format::Orc => crate::sink::Format::Orc,
        }
    }
}

/// Flags of `pageviews run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// JSON-lines file to read instead of the generator; repeat for several, `-` is stdin.
    /// Run again on the same --output, an input that begins with the bytes committed from it
    /// (the same file, or one that grew; the same stream piped again) goes on where it
    /// stopped, and any other content is read from its start as new.
    #[arg(long, value_name = "PATH")]
    pub(crate) input: Vec<String>,

    /// How an --input with a committed position is taken: `auto` tells by its content, and
    /// refuses where it cannot (a checkpoint written before inputs were identified, or more
    /// than 64 MiB of stdin committed); `continue` takes it as the content committed, or
    /// grown, and refuses one that is not; `new` reads every input from its start as new
    /// content.
    #[arg(long, value_enum, default_value_t = InputMode::Auto)]
    pub(crate) input_mode: InputMode,

    /// Table root: a directory, file:// URL, s3://bucket/prefix or az://container/prefix. S3
    /// is configured the AWS way: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, and
    /// for S3-compatible servers AWS_ENDPOINT_URL (plus AWS_ALLOW_HTTP=true for plain http).
    /// Azure Blob Storage from AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY or
    /// AZURE_STORAGE_SAS_KEY (AZURE_STORAGE_USE_EMULATOR=true for Azurite).
    #[arg(long, env = "PAGEVIEWS_OUTPUT", default_value = "./data", value_name = "URL")]
    pub(crate) output: String,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    pub(crate) format: Format,

    /// Iceberg tables.
    #[command(flatten)]
    pub(crate) iceberg: IcebergArgs,

    /// The built-in generator (used when neither --brokers nor --input is given).
    #[command(flatten)]
    pub(crate) generator: GeneratorArgs,

    /// Kafka bootstrap servers; when set, the source is Kafka.
    #[arg(long, env = "KAFKA_BOOTSTRAP", value_name = "HOST:PORT,…")]
    pub(crate) brokers: Option<String>,

    /// Kafka source topic.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "page_views")]
    pub(crate) topic: String,

    /// Kafka consumer group.
    #[arg(long, env = "CONSUMER_GROUP", default_value = "pageviews")]
    pub(crate) group: String,

    /// Kafka: stop after reaching the end offsets seen at start, commit, and exit 0.
    #[arg(long)]
    pub(crate) until_end: bool,

    /// Kafka: when a checkpoint's position does not fit its partition any more (outside its
    /// offsets, or another record before it: the topic was deleted and created again, or
    /// truncated): `fail` stops with the topic, partition and offsets; `earliest` reads the
    /// partition from its start; `latest` from its end. Logged and counted either way.
    #[arg(long, env = "PAGEVIEWS_ON_OFFSET_RESET", value_enum, default_value_t = OffsetReset::Fail, value_name = "DECISION")]
    pub(crate) on_offset_reset: OffsetReset,

    /// A librdkafka property for the consumer, e.g. security.protocol=SASL_SSL or
    /// fetch.max.bytes=104857600; repeatable, and applied over pageviews' own settings.
    #[arg(long = "kafka-option", env = "KAFKA_OPTIONS", value_delimiter = ',', value_parser = parse_key_value, value_name = "KEY=VALUE")]
    pub(crate) kafka_options: Vec<(String, String)>,

    /// How often the tables commit.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) checkpoint_interval: Duration,

    /// Out-of-orderness bound: the watermark trails the highest event time by this much.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) watermark_delay: Duration,

    /// Tumbling window size.
    #[arg(long, default_value = "1m", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) window: Duration,

    /// Keep a window open this long past its end before emitting it.
    #[arg(long, default_value = "0s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) allowed_lateness: Duration,

    /// A partition with no records this long stops holding the watermark back.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) idle_timeout: Duration,

    /// Roll a file once it reaches this size (e.g. 128MiB).
    #[arg(long, default_value = "128MiB", value_parser = parse_size, value_name = "SIZE")]
    pub(crate) roll_size: u64,

    /// Roll a file once it has been open this long. Files span checkpoints; `pageviews sql`
    /// sees their committed rows at once, but readers of the table folders (DuckDB, Spark,
    /// pyarrow) only once they roll, so this bounds how far behind those readers are. At
    /// 1000 events/s a minute makes 60 page_views files an hour (6.5 MiB JSON lines, 440 KiB
    /// Parquet). Files also roll when their partition is complete and when the pipeline stops.
    #[arg(long, default_value = "1m", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) roll_age: Duration,

    /// Upload files in parts of this size (object stores need at least 5MiB). Each open file
    /// holds up to a part in memory. [default: 8MiB on S3 and Azure, 1MiB on a local disk]
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub(crate) part_size: Option<u64>,

    /// Most files open at once per table; past it the least recently written one rolls.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub(crate) max_open_files: usize,

    /// Wait this long after a partition's hour ends (event time; dead letters: wall-clock
    /// time) before closing its files and writing its _SUCCESS marker.
    #[arg(long, default_value = "0s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) partition_commit_delay: Duration,

    /// Records larger than this are dead letters (reason `oversized`).
    #[arg(long, default_value = "1MiB", value_parser = parse_size, value_name = "SIZE")]
    pub(crate) max_record_bytes: u64,

    /// This instance of the deployment. Instances of one deployment share --pipeline-id,
    /// --group and --output, and the consumer group spreads the topic's partitions over them;
    /// each needs its own id (a second process with the same id is refused on a local disk
    /// while the first runs; elsewhere the newer one takes over and the older one stops).
    #[arg(long, env = "PAGEVIEWS_INSTANCE_ID", default_value = "0", value_name = "ID")]
    pub(crate) instance_id: String,

    /// Workers in this process, each a thread over its own partitions. Kafka: each is a
    /// member of the consumer group, the same as that many instances in one process. Files
    /// (several --input): file i goes to worker i mod N and N files are read at once, so their
    /// event times interleave as Kafka partitions do (one worker reads them one after another);
    /// at most one worker per file runs. The generator runs in one worker.
    #[arg(long, env = "PAGEVIEWS_WORKERS", default_value_t = 1, value_name = "N")]
    pub(crate) workers: usize,
    /// Events dated more than this ahead of this machine's clock become dead letters
    /// (reason future_timestamp) instead of moving the watermark there, which would make
    /// every later event late. The default is Kafka's for record timestamps.
    #[arg(long, env = "PAGEVIEWS_MAX_FUTURE", default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) max_future: Duration,

    /// How long a storage call is retried in place when it fails for a reason that passes
    /// (timeouts, refused or reset connections, 5xx, S3's SlowDown, Azure's ServerBusy)
    /// before the run stops. Failures that do not pass (access denied, no such bucket or
    /// container, disk full) stop it at once.
    #[arg(long, env = "PAGEVIEWS_STORAGE_RETRY_TIMEOUT", default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) storage_retry_timeout: Duration,

    /// On a store that does not fence (s3rver), how long this instance counts as running
    /// after it last renewed its lease; it renews every third of it. For tests, which
    /// cannot wait a minute for a lease to lapse.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION", hide = true)]
    pub(crate) lease: Duration,

    /// Names this pipeline's checkpoints and files; two pipelines may share an --output
    /// only with different ids. Default: from the source, `generator`, `files` or
    /// `kafka-<topic>`, so each source keeps its own checkpoint in a shared output.
    #[arg(long, env = "PAGEVIEWS_PIPELINE_ID", value_name = "ID")]
    pub pipeline_id: Option<String>,

    /// Serve /metrics, /healthz and /api/status here; `off` disables.
    #[arg(long, env = "PAGEVIEWS_HTTP", default_value = "127.0.0.1:9249", value_name = "ADDR")]
    pub(crate) http: String,
}

fn millis(d: Duration, what: &str) -> anyhow::Result<i64> {
    i64::try_from(d.as_millis()).with_context(|| format!("{what} is too large"))
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
                    bail!("--count, --seed, --start-time and --event-interval configure the generator; they cannot be used with --brokers");
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
                    bail!("--count, --seed, --start-time and --event-interval configure the generator; they cannot be used with --input");
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
        pageviews_kafka::check_option_files(&self.kafka_options)?;
        if let Some((_, protocol)) = self
            .kafka_options
            .iter()
            .rev()
            .find(|(k, _)| k == "group.protocol")
            .filter(|(_, v)| v != "classic")
        {
            bail!(
                "--kafka-option group.protocol={protocol}: pageviews runs Kafka's classic group protocol \
                 (cooperative-sticky). Under the consumer protocol (KIP-848) a static member restarted after \
                 a crash is refused until its session times out, and --until-end cannot see the group's \
                 assignments (docs/scale.md)"
            );
        }
        if self.input_mode != InputMode::Auto && !matches!(source, SourceConfig::Files(_)) {
            bail!("--input-mode applies to --input (files and stdin)");
        }
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
        config.windows.watermark_delay_ms = millis(self.watermark_delay, "--watermark-delay")?;
        config.windows.window_ms = window_ms;
        config.windows.allowed_lateness_ms = millis(self.allowed_lateness, "--allowed-lateness")?;
        config.windows.idle_timeout_ms = millis(self.idle_timeout, "--idle-timeout")? as u64;
        config.files.roll_bytes = self.roll_size.max(1);
        config.files.roll_age = self.roll_age;
        config.files.format = self.format.into();
        if let Some(size) = self.part_size {
            config.files.part_bytes = Some(usize::try_from(size).context("--part-size is too large")?.max(1));
        }
        config.files.max_open_files = self.max_open_files.max(1);
        config.partition_commit_delay_ms = millis(self.partition_commit_delay, "--partition-commit-delay")?;
        config.max_record_bytes =
            usize::try_from(self.max_record_bytes).context("--max-record-bytes is too large")?;
        config.max_future_ms = millis(self.max_future, "--max-future")?;
        config.storage_retry_timeout = self.storage_retry_timeout;
        config.input_mode = self.input_mode;
        config.iceberg = self.iceberg.config(&config.output)?;
        if let Some(iceberg) = config.iceberg.as_mut() {
            if self.format != Format::Parquet {
                bail!("--table-format iceberg writes Parquet data files: add --format parquet (Iceberg tables of JSON lines are not readable by Iceberg engines)");
            }
            iceberg.retry_timeout = self.storage_retry_timeout;
        }
        if self.lease < Duration::from_millis(300) {
            bail!("--lease must be at least 300ms");
        }
        config.lease = self.lease;
        config.http.addr = http;
        if self.instance_id.is_empty()
            || !self.instance_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("--instance-id {:?} may hold only letters, digits, '-' and '_'", self.instance_id);
        }
        if self.workers == 0 {
            bail!("--workers must be at least 1");
        }
        if self.workers > 1 && matches!(config.source, SourceConfig::Generator(_)) {
            bail!("--workers above 1 needs a Kafka source (--brokers) or several --input files: the generator runs in one worker");
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
    fn the_consumer_group_protocol_is_refused_and_classic_taken() {
        let config = |protocol: &str| {
            let option = format!("group.protocol={protocol}");
            let args = ["pageviews", "run", "--brokers", "k:9092", "--kafka-option", &option];
            let Command::Run(args) = Cli::try_parse_from(args).unwrap().command else {
                panic!("run expected")
            };
            args.into_config().map(drop).map_err(|e| e.to_string())
        };
        let err = config("consumer").unwrap_err();
        assert!(err.starts_with("--kafka-option group.protocol=consumer: pageviews runs"), "{err}");
        assert_eq!(config("classic"), Ok(()));
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
        assert_eq!(c.files.roll_age, Duration::from_secs(60));
        assert_eq!(
            (c.windows.watermark_delay_ms, c.windows.window_ms, c.windows.idle_timeout_ms),
            (5_000, 60_000, 1_000)
        );
        assert_eq!(c.http.addr, Some("127.0.0.1:9249".parse().unwrap()));
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

    #[test]
    fn verify_reads_the_catalog_flags_run_takes() {
        let flags = ["--catalog", "http://rest:8181", "--namespace", "site", "--catalog-warehouse", "w"];
        let cli =
            Cli::try_parse_from([&["pageviews", "run", "--table-format", "iceberg"][..], &flags].concat())
                .unwrap();
        let Command::Run(args) = cli.command else { panic!("run expected") };
        let run = args.iceberg.config("./data").unwrap().expect("iceberg");
        let cli = Cli::try_parse_from([&["pageviews", "verify"][..], &flags].concat()).unwrap();
        let Command::Verify(args) = cli.command else { panic!("verify expected") };
        let verify = args.iceberg().expect("a catalog");
        for c in [run, verify] {
            assert_eq!((c.catalog.as_str(), c.namespace.as_str()), ("http://rest:8181", "site"));
            assert_eq!(c.warehouse.as_deref(), Some("w"));
        }
    }

    #[test]
    fn several_workers_take_kafka_partitions_or_input_files_but_not_the_generator() {
        let config = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["pageviews", "run", "--workers", "2"], args].concat()).unwrap();
            let Command::Run(args) = cli.command else { panic!("run expected") };
            args.into_config().map(|c| c.workers).map_err(|e| e.to_string())
        };
        assert_eq!(config(&["--input", "a.jsonl", "--input", "b.jsonl"]), Ok(2));
        assert_eq!(config(&["--brokers", "k:9092"]), Ok(2));
        let err = config(&["--rate", "5"]).unwrap_err();
        assert!(err.contains("--workers") && err.contains("generator"), "{err}");
    }
}
