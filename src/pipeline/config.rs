//! What a pipeline is run with: its source, its output, and the rules for windows, files
//! and HTTP, validated (by `cli` or the caller) before `start`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pageviews_core::storage::{RetryPolicy, Storage, StorageError, StoreEnv};
use pageviews_core::table::Format;

use super::Shutdown;
use crate::clock::{Clock, SystemClock};
use crate::http::DEFAULT_HEADER_READ_TIMEOUT;
use crate::source::{GeneratorSpec, InputMode, KafkaConfig};

/// Where records come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceConfig {
    /// The built-in generator (a resumed run continues the checkpoint's stream).
    Generator(GeneratorSpec),
    /// JSON-lines files (`-` is stdin), read in order.
    Files(Vec<String>),
    /// A Kafka topic, as a consumer group member.
    Kafka(KafkaConfig),
}

impl SourceConfig {
    /// The pipeline id this source runs under unless one is given: `generator`, `files`, or
    /// `kafka-<topic>` (with characters other than letters, digits, `-` and `_` as `_`). A
    /// pipeline id names a source's checkpoints, so a generator run and a Kafka run can share
    /// an output, and the same command run again resumes its own checkpoint.
    pub(crate) fn default_pipeline_id(&self) -> String {
        match self {
            SourceConfig::Generator(_) => "generator".into(),
            SourceConfig::Files(_) => "files".into(),
            SourceConfig::Kafka(k) => {
                let topic: String = k
                    .topic
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
                    .collect();
                format!("kafka-{topic}")
            }
        }
    }
}

/// The pipeline id every source ran under before ids were derived from the source.
pub(crate) const LEGACY_PIPELINE_ID: &str = "pageviews";

/// Everything `run` needs, validated.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// The source.
    pub source: SourceConfig,
    /// Table root: a path, `file://` or `s3://` URL.
    pub output: String,
    /// Names this pipeline's checkpoints, staging and files.
    pub pipeline_id: String,
    /// This instance of the deployment (one `--pipeline-id`, `--group` and `--output`).
    pub instance_id: String,
    /// Workers in this process, each over its own partitions: Kafka partitions as the group
    /// assigns them, or input files (file `i` to worker `i % workers`; no more workers than
    /// files run). The generator has one partition, so one worker.
    pub workers: usize,
    /// How often the tables commit.
    pub checkpoint_interval: Duration,
    /// Windows and event time.
    pub windows: WindowRules,
    /// The table files: format, rolling, uploads.
    pub files: FileRules,
    /// The status page, metrics and health endpoints.
    pub http: HttpConfig,
    /// How long after a partition's end (in event time; dead letters: processing time)
    /// its files close and its `_SUCCESS` marker is written.
    pub partition_commit_delay_ms: i64,
    /// Larger records are dead letters.
    pub max_record_bytes: usize,
    /// Events more than this far ahead of the wall clock are dead letters
    /// (`future_timestamp`), so they never move a watermark.
    pub max_future_ms: i64,
    /// Records per poll.
    pub batch_size: usize,
    /// Where processing and wall-clock time come from (tests drive it).
    pub clock: Arc<dyn Clock>,
    /// The `AWS_*` or `AZURE_*` settings a bucket output is opened with (the process's, unless given).
    pub store_env: StoreEnv,
    /// How long a storage call is retried after failures that pass (timeouts, 5xx,
    /// throttling, refused connections) before the run stops.
    pub storage_retry_timeout: Duration,
    /// Files: whether an input with a committed position is told by its content, or taken
    /// as the content committed, or as new content.
    pub input_mode: InputMode,
    /// On a store that does not fence, how long this instance counts as running after it
    /// last renewed its lease ([`pageviews_core::commit::Log::take_lease`]).
    pub lease: Duration,
    /// The Iceberg tables the log's files are also committed to (`--table-format
    /// iceberg`); `None` keeps the Hive layout alone.
    pub iceberg: Option<crate::sink::iceberg::IcebergConfig>,
}

/// Windows and event time: the same for every task of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowRules {
    /// Tumbling window size.
    pub window_ms: i64,
    /// How long after a window's end it still accepts events.
    pub(crate) allowed_lateness_ms: i64,
    /// Out-of-orderness bound: a partition's watermark is its newest event time minus this.
    pub watermark_delay_ms: i64,
    /// A partition caught up with its end and silent this long stops holding watermarks
    /// back.
    pub idle_timeout_ms: u64,
}

impl WindowRules {
    /// The windows' shape.
    pub(crate) fn spec(&self) -> crate::window::WindowSpec {
        crate::window::WindowSpec::new(self.window_ms, self.allowed_lateness_ms)
    }
}

/// How table files are written, before the store decides the part size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRules {
    /// File format.
    pub format: Format,
    /// File cutting.
    pub roll_bytes: u64,
    /// File cutting by age.
    pub roll_age: Duration,
    /// Upload part size; `None` picks one for the store ([`FileRules::part_bytes_for`]).
    pub part_bytes: Option<usize>,
    /// Most files open at once per table.
    pub(crate) max_open_files: usize,
    /// Parquet rows per row group.
    pub row_group_rows: usize,
}

impl FileRules {
    /// The upload part size on a store: `part_bytes` when set, else 8 MiB on object stores
    /// (S3 wants parts of at least 5 MiB, and fewer parts are fewer requests) and 1 MiB on a
    /// local disk, where a part is a plain write. Every open file holds up to a part of
    /// encoded rows, and a worker has a file open per partition and hour, so on disk this
    /// keeps memory flat as partitions grow (six Kafka partitions peaked at 180 MiB with
    /// 8 MiB parts).
    pub(crate) fn part_bytes_for(&self, object_store: bool) -> usize {
        self.part_bytes.unwrap_or(if object_store { 8 << 20 } else { 1 << 20 })
    }

    /// What each table writer of pipeline `pipeline_id` is made with.
    pub(crate) fn writer(
        &self,
        pipeline_id: &str,
        object_store: bool,
        timestamps: crate::sink::parquet::TimestampUnit,
    ) -> crate::sink::WriterConfig {
        crate::sink::WriterConfig {
            pipeline_id: pipeline_id.to_string(),
            format: self.format,
            roll_bytes: self.roll_bytes,
            roll_age_ms: self.roll_age.as_millis() as u64,
            part_bytes: self.part_bytes_for(object_store),
            max_open_files: self.max_open_files,
            row_group_rows: self.row_group_rows,
            timestamps,
        }
    }
}

/// Where the status page, `/metrics` and `/healthz` are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConfig {
    /// The address; `None` serves nothing.
    pub addr: Option<SocketAddr>,
    /// How long a client may take to send a request's headers before it is disconnected.
    pub header_timeout: Duration,
}

impl PipelineConfig {
    /// The defaults for a source and an output; the pipeline id is the source's
    /// (`SourceConfig::default_pipeline_id`).
    pub fn new(source: SourceConfig, output: impl Into<String>) -> Self {
        PipelineConfig {
            pipeline_id: source.default_pipeline_id(),
            source,
            output: output.into(),
            instance_id: "0".into(),
            workers: 1,
            checkpoint_interval: Duration::from_secs(10),
            windows: WindowRules {
                window_ms: 60_000,
                allowed_lateness_ms: 0,
                watermark_delay_ms: 5_000,
                idle_timeout_ms: 1_000,
            },
            files: FileRules {
                format: Format::Jsonl,
                roll_bytes: 128 << 20,
                // What a person watching can live with: folder readers a minute behind, 60
                // files an hour per table at 1000 events/s (`examples/roll_age.rs`).
                roll_age: Duration::from_secs(60),
                part_bytes: None,
                max_open_files: 16,
                row_group_rows: 1 << 17,
            },
            http: HttpConfig { addr: None, header_timeout: DEFAULT_HEADER_READ_TIMEOUT },
            partition_commit_delay_ms: 0,
            max_record_bytes: crate::event::DEFAULT_MAX_RECORD_BYTES,
            max_future_ms: crate::event::DEFAULT_MAX_FUTURE.as_millis() as i64,
            batch_size: 8192,
            clock: Arc::new(SystemClock::new()),
            store_env: StoreEnv::process(),
            storage_retry_timeout: RetryPolicy::default().timeout,
            input_mode: InputMode::Auto,
            lease: pageviews_core::commit::DEFAULT_LEASE,
            iceberg: None,
        }
    }
}

impl PipelineConfig {
    /// The output's storage, retrying failures that pass for `--storage-retry-timeout`, or
    /// until a few seconds after `shutdown` fires.
    pub(super) fn storage(
        &self,
        rt: tokio::runtime::Handle,
        shutdown: &Shutdown,
    ) -> Result<Storage, StorageError> {
        let policy = RetryPolicy {
            timeout: self.storage_retry_timeout,
            stop: Some(shutdown.clone()),
            ..RetryPolicy::default()
        };
        Ok(Storage::open_with(&self.output, rt, &self.store_env)?.with_retries(policy))
    }
}

impl SourceConfig {
    /// The source in words, for the status page.
    pub(crate) fn describe(&self) -> String {
        match self {
            SourceConfig::Generator(g) if g.stream.rate == 0 => "generator (unthrottled)".to_string(),
            SourceConfig::Generator(g) => format!("generator ({} events/s)", g.stream.rate),
            SourceConfig::Files(paths) => format!("files {}", paths.join(", ")),
            SourceConfig::Kafka(k) => format!("Kafka topic {} at {} (group {})", k.topic, k.brokers, k.group),
        }
    }
}
