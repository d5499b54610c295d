//! The pipeline: one loop from source to committed tables.
//!
//! ```text
//! source ──> decode ──> event time ──┬──> page_views writer ──────────────┐
//!                                    ├──> window count ──> aggregates writer
//!                                    ├──> late_page_views writer          ├──> checkpoint
//!                                    └── (decode errors) dead_letters ────┘
//! ```
//!
//! [`start`] opens the output, binds the HTTP endpoint and runs the loop (`worker`) on its
//! own thread, returning a [`RunHandle`]: the bound address, the live status, and the
//! [`Shutdown`] token. The loop is synchronous and batch-at-a-time; storage I/O runs on a
//! small tokio runtime beside it. Every checkpoint interval, at the end of bounded input and
//! on shutdown, the writers close their files and one manifest commits files, positions,
//! watermarks and open windows together (`checkpoint`, over `pageviews_core::commit`).

mod checkpoint;
mod inputs;
mod open;
mod relay;
mod replaced;
mod report;
mod restore;
mod task;
mod worker;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pageviews_core::commit::{CheckpointError, InstanceLock, Totals};
use pageviews_core::storage::{RetryPolicy, S3Env, Storage, StorageError, MIN_PART_BYTES};
use pageviews_core::table::Format;
pub use pageviews_core::Shutdown;
use thiserror::Error;
use tracing::info;

use crate::clock::{Clock, SystemClock};
use crate::http::{HttpState, Status, DEFAULT_HEADER_READ_TIMEOUT};
use crate::metrics::{Metrics, VERSION};
use crate::source::{GeneratorSpec, InputMode, KafkaConfig, SourceError};

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
    pub fn default_pipeline_id(&self) -> String {
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
pub const LEGACY_PIPELINE_ID: &str = "pageviews";

/// Everything `run` needs, validated.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// The source.
    pub source: SourceConfig,
    /// Table root: a path, `file://` or `s3://` URL.
    pub output: String,
    /// File format.
    pub format: Format,
    /// Names this pipeline's checkpoints, staging and files.
    pub pipeline_id: String,
    /// How often both tables commit.
    pub checkpoint_interval: Duration,
    /// Out-of-orderness bound.
    pub watermark_delay_ms: i64,
    /// Tumbling window size.
    pub window_ms: i64,
    /// How long after a window's end it still accepts events.
    pub allowed_lateness_ms: i64,
    /// A partition silent this long stops holding the watermark back.
    pub idle_timeout_ms: u64,
    /// File cutting.
    pub roll_bytes: u64,
    /// File cutting by age.
    pub roll_age: Duration,
    /// Upload part size; `None` picks one for the store ([`PipelineConfig::part_bytes_for`]).
    pub part_bytes: Option<usize>,
    /// Most files open at once per table.
    pub max_open_files: usize,
    /// Parquet rows per row group.
    pub row_group_rows: usize,
    /// How long after a partition's end (in event time; dead letters: processing time)
    /// its files close and its `_SUCCESS` marker is written.
    pub partition_commit_delay_ms: i64,
    /// Larger records are dead letters.
    pub max_record_bytes: usize,
    /// Events more than this far ahead of the wall clock are dead letters
    /// (`future_timestamp`), so they never move a watermark.
    pub max_future_ms: i64,
    /// Where to serve `/metrics`, `/healthz`, `/api/status` and `/`; `None` serves nothing.
    pub http: Option<SocketAddr>,
    /// How long an HTTP client may take to send a request's headers before it is
    /// disconnected.
    pub http_header_timeout: Duration,
    /// Records per poll.
    pub batch_size: usize,
    /// Where processing and wall-clock time come from (tests drive it).
    pub clock: Arc<dyn Clock>,
    /// The `AWS_*` settings an s3:// output is opened with (the process's, unless given).
    pub s3_env: S3Env,
    /// This instance of the deployment (one `--pipeline-id`, `--group` and `--output`).
    pub instance_id: String,
    /// Workers in this process, each over its own partitions: Kafka partitions as the group
    /// assigns them, or input files (file `i` to worker `i % workers`; no more workers than
    /// files run). The generator has one partition, so one worker.
    pub workers: usize,
    /// How long a storage call is retried after failures that pass (timeouts, 5xx,
    /// throttling, refused connections) before the run stops.
    pub storage_retry_timeout: Duration,
    /// Files: whether an input with a committed position is told by its content, or taken
    /// as the content committed, or as new content.
    pub input_mode: InputMode,
    /// On a store that does not fence, how long this instance counts as running after it
    /// last renewed its lease ([`pageviews_core::commit::Log::take_lease`]).
    pub lease: Duration,
}

impl PipelineConfig {
    /// The upload part size on a store: `part_bytes` when set, else 8 MiB on object stores
    /// (S3 wants parts of at least 5 MiB, and fewer parts are fewer requests) and 1 MiB on a
    /// local disk, where a part is a plain write. Every open file holds up to a part of
    /// encoded rows, and a worker has a file open per partition and hour, so on disk this
    /// keeps memory flat as partitions grow (six Kafka partitions peaked at 180 MiB with
    /// 8 MiB parts).
    pub fn part_bytes_for(&self, object_store: bool) -> usize {
        self.part_bytes.unwrap_or(if object_store { 8 << 20 } else { 1 << 20 })
    }

    /// Defaults of DESIGN §6 for a source and an output; the pipeline id is the source's
    /// ([`SourceConfig::default_pipeline_id`]).
    pub fn new(source: SourceConfig, output: impl Into<String>) -> Self {
        PipelineConfig {
            pipeline_id: source.default_pipeline_id(),
            source,
            output: output.into(),
            format: Format::Jsonl,
            checkpoint_interval: Duration::from_secs(10),
            watermark_delay_ms: 5_000,
            window_ms: 60_000,
            allowed_lateness_ms: 0,
            idle_timeout_ms: 1_000,
            roll_bytes: 128 << 20,
            // What a person watching can live with: folder readers a minute behind, 60
            // files an hour per table at 1000 events/s (`examples/roll_age.rs`).
            roll_age: Duration::from_secs(60),
            part_bytes: None,
            max_open_files: 16,
            row_group_rows: 1 << 17,
            partition_commit_delay_ms: 0,
            max_record_bytes: 1 << 20,
            max_future_ms: crate::event::DEFAULT_MAX_FUTURE.as_millis() as i64,
            http: None,
            http_header_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            batch_size: 8192,
            clock: Arc::new(SystemClock::new()),
            s3_env: S3Env::process(),
            instance_id: "0".into(),
            workers: 1,
            storage_retry_timeout: RetryPolicy::default().timeout,
            input_mode: InputMode::Auto,
            lease: pageviews_core::commit::DEFAULT_LEASE,
        }
    }
}

impl PipelineConfig {
    /// The output's storage, retrying failures that pass for `--storage-retry-timeout`, or
    /// until a few seconds after `shutdown` fires.
    fn storage(&self, rt: tokio::runtime::Handle, shutdown: &Shutdown) -> Result<Storage, StorageError> {
        let policy = RetryPolicy {
            timeout: self.storage_retry_timeout,
            stop: Some(shutdown.clone()),
            ..RetryPolicy::default()
        };
        Ok(Storage::open_with(&self.output, rt, &self.s3_env)?.with_retries(policy))
    }
}

impl SourceConfig {
    /// The source in words, for the status page.
    pub fn describe(&self) -> String {
        match self {
            SourceConfig::Generator(g) if g.stream.rate == 0 => "generator (unthrottled)".to_string(),
            SourceConfig::Generator(g) => format!("generator ({} events/s)", g.stream.rate),
            SourceConfig::Files(paths) => format!("files {}", paths.join(", ")),
            SourceConfig::Kafka(k) => format!("Kafka topic {} at {} (group {})", k.topic, k.brokers, k.group),
        }
    }
}

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Committed totals over the pipeline's life (including earlier runs).
    pub totals: Totals,
    /// Sequence number of the last committed checkpoint (0 if none).
    pub last_checkpoint: u64,
    /// True when a bounded source was read to its end.
    pub reached_end: bool,
}

/// Why the pipeline stopped with an error. Nothing is committed partially: the last
/// checkpoint stays the truth.
#[derive(Debug, Error)]
pub enum PipelineError {
    /// Reading the source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Writing a table failed.
    #[error("writing the tables failed: {0}")]
    Storage(#[from] StorageError),
    /// Committing or recovering a checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The HTTP address cannot be bound.
    #[error("cannot serve HTTP on {addr}: {source}; pick another address with --http, or --http off")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
    /// The checkpoint was made with settings this run cannot continue from.
    #[error("{0}")]
    Incompatible(String),
    /// The I/O runtime or the pipeline thread could not start.
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(std::io::Error),
    /// The pipeline thread panicked: a bug. The last checkpoint still holds.
    #[error(
        "the pipeline thread panicked; the last checkpoint still holds (this is a bug, please report it)"
    )]
    Panicked,
}

/// A running pipeline: where it serves HTTP, what it is doing, and how to stop it.
///
/// The HTTP endpoint outlives the pipeline thread: after a bounded run ends, `/api/status`
/// and `/` still show its final state until the handle is joined or dropped.
pub struct RunHandle {
    http: Option<SocketAddr>,
    status: Arc<Mutex<Status>>,
    shutdown: Shutdown,
    metrics: Arc<Metrics>,
    thread: std::thread::JoinHandle<Result<Summary, PipelineError>>,
    /// Storage I/O and the HTTP server run here.
    runtime: tokio::runtime::Runtime,
}

impl RunHandle {
    /// The address `/metrics`, `/healthz`, `/api/status` and `/` are served on (the port is
    /// the one actually bound, also when the config asked for port 0).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// A snapshot of what `/api/status` reports.
    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The cancellation token: trigger it and the pipeline checkpoints and stops.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// The metrics the pipeline exports.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// True once the pipeline thread has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the pipeline to end, then stops serving HTTP.
    pub fn join(self) -> Result<Summary, PipelineError> {
        let result = self.thread.join().unwrap_or_else(|_| Err(PipelineError::Panicked));
        // Let in-flight uploads of a failed run finish or fail; nothing uncommitted is visible.
        self.runtime.shutdown_timeout(Duration::from_secs(5));
        result
    }
}

/// Starts the pipeline on its own thread. Errors found before it runs (an unusable output,
/// an HTTP address that cannot be bound) come back here; the rest from [`RunHandle::join`].
pub fn start(
    mut config: PipelineConfig,
    shutdown: Shutdown,
    metrics: Arc<Metrics>,
) -> Result<RunHandle, PipelineError> {
    match &config.source {
        SourceConfig::Generator(_) if config.workers > 1 => {
            return Err(PipelineError::Incompatible(
                "the generator is one partition and runs in one worker; leave --workers at 1".into(),
            ));
        }
        SourceConfig::Files(paths) if config.workers > paths.len().max(1) => {
            info!(workers = config.workers, inputs = paths.len(), "one worker per input file, no more");
            config.workers = paths.len().max(1);
        }
        _ => {}
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("pageviews-io")
        .enable_all()
        .build()
        .map_err(PipelineError::Runtime)?;
    let storage = config.storage(rt.handle().clone(), &shutdown)?.with_observer(metrics.clone());
    if storage.is_object_store() && config.part_bytes_for(true) < MIN_PART_BYTES {
        return Err(PipelineError::Incompatible(format!(
            "object stores need upload parts of at least {} MiB; raise --part-size",
            MIN_PART_BYTES >> 20
        )));
    }
    if metrics.pipeline() != config.pipeline_id {
        return Err(PipelineError::Incompatible(format!(
            "the metrics handle labels series with pipeline {:?} but this run's --pipeline-id is {:?}; create it with Metrics::new(&config.pipeline_id)",
            metrics.pipeline(),
            config.pipeline_id
        )));
    }
    // Held until the run ends: a second run of this instance on a local disk is refused.
    let lock = InstanceLock::take(&storage, &config.pipeline_id, &config.instance_id)?;
    let status = Arc::new(Mutex::new(Status {
        pipeline: config.pipeline_id.clone(),
        instance: config.instance_id.clone(),
        workers: config.workers.max(1),
        version: VERSION.to_string(),
        source: config.source.describe(),
        output: config.output.clone(),
        state: "starting".into(),
        checkpoint_interval_seconds: config.checkpoint_interval.as_secs_f64(),
        watermark_delay_seconds: config.watermark_delay_ms as f64 / 1000.0,
        ..Status::default()
    }));
    let http = match config.http {
        Some(addr) => {
            let state = HttpState::new(metrics.clone(), status.clone(), config.clock.clone());
            let bound = rt
                .block_on(crate::http::serve_with_timeout(addr, state, config.http_header_timeout))
                .map_err(|source| PipelineError::Http { addr, source })?;
            info!(%bound, "serving the status page at /, /metrics, /healthz and /api/status");
            Some(bound)
        }
        None => None,
    };
    let (st, m, stop) = (status.clone(), metrics.clone(), shutdown.clone());
    let thread = std::thread::Builder::new()
        .name("pageviews-pipeline".into())
        .spawn(move || {
            let _lock = lock;
            let result = run_workers(&config, &storage, &m, &st, &stop);
            if let Ok(mut s) = st.lock() {
                match &result {
                    Ok(_) => s.state = "stopped".into(),
                    Err(e) => {
                        s.state = "failed".into();
                        s.error = Some(pageviews_core::secrets::scrub(&e.to_string()).into_owned());
                    }
                }
            }
            result
        })
        .map_err(PipelineError::Runtime)?;
    Ok(RunHandle { http, status, shutdown, metrics, thread, runtime: rt })
}

/// Runs `config.workers` workers, each on its own thread over its own partitions, until all
/// end. A worker that fails stops the others (they checkpoint first): the instance runs whole
/// or not at all, and a supervisor's restart takes every partition back.
fn run_workers(
    config: &PipelineConfig,
    storage: &Storage,
    metrics: &Arc<Metrics>,
    status: &Arc<Mutex<Status>>,
    shutdown: &Shutdown,
) -> Result<Summary, PipelineError> {
    // Before any worker reads: a log that lost its newest entries would have them read again.
    storage.block_on(pageviews_core::commit::check_head(storage, &config.pipeline_id))?;
    let gate = open::StartGate::new(config.workers.max(1));
    // Files counted in one worker: the others relay to it in memory.
    let relays = match &config.source {
        SourceConfig::Files(_) if config.workers > 1 => relay::Relay::for_workers(config.workers),
        _ => Vec::new(),
    };
    let mut relays = relays.into_iter().map(Some).collect::<Vec<_>>().into_iter();
    // Files: which partition each input is read as, decided once for every worker.
    let mut shares = inputs::prepare(config, storage)?.into_iter();
    let results: Vec<Result<Summary, PipelineError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..config.workers.max(1))
            .map(|k| {
                let (storage, metrics, status) = (storage.clone(), metrics.clone(), status.clone());
                let siblings = open::Siblings {
                    gate: &gate,
                    relay: relays.next().flatten(),
                    inputs: shares.next(),
                    stop: shutdown,
                };
                std::thread::Builder::new().name(format!("pageviews-worker-{k}")).spawn_scoped(
                    scope,
                    move || {
                        let result = worker::Pipeline::open(config, k, siblings, storage, metrics, status)
                            .and_then(|mut pipeline| {
                                let result = pipeline.run_loop().map_err(|e| pipeline.explain(e));
                                pipeline.report_stopped();
                                result
                            });
                        if result.is_err() {
                            shutdown.trigger();
                        }
                        result
                    },
                )
            })
            .collect();
        workers
            .into_iter()
            .map(|w| match w {
                Ok(handle) => handle.join().unwrap_or(Err(PipelineError::Panicked)),
                Err(e) => Err(PipelineError::Runtime(e)),
            })
            .collect()
    });
    let mut summary: Option<Summary> = None;
    for result in results {
        let s = result?;
        summary = Some(match summary {
            None => s,
            Some(prev) => Summary {
                totals: if s.last_checkpoint >= prev.last_checkpoint { s.totals } else { prev.totals },
                last_checkpoint: s.last_checkpoint.max(prev.last_checkpoint),
                reached_end: prev.reached_end && s.reached_end,
            },
        });
    }
    summary.ok_or(PipelineError::Panicked)
}

/// Refuses an output that holds checkpoints of [`LEGACY_PIPELINE_ID`] and none of
/// `config.pipeline_id`, for a run whose id was derived from its source: such an output was
/// written before ids were derived, and a second pipeline beside the first would read the
/// same input again (a Kafka topic from its start).
pub fn refuse_legacy_output(config: &PipelineConfig, shutdown: &Shutdown) -> Result<(), PipelineError> {
    use pageviews_core::commit::layout::checkpoints_dir;
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(PipelineError::Runtime)?;
    let storage = config.storage(rt.handle().clone(), shutdown)?;
    let has_checkpoints =
        |id: &str| rt.block_on(storage.list(&checkpoints_dir(id))).map(|found| !found.is_empty());
    if config.pipeline_id != LEGACY_PIPELINE_ID
        && has_checkpoints(LEGACY_PIPELINE_ID)?
        && !has_checkpoints(&config.pipeline_id)?
    {
        return Err(PipelineError::Incompatible(format!(
            "{} holds the checkpoints of pipeline `{LEGACY_PIPELINE_ID}`, the id every source had before ids \
             were derived from the source (this run's is `{}`); continue it with --pipeline-id {LEGACY_PIPELINE_ID}, \
             or start a new pipeline beside it with --pipeline-id {}",
            config.output, config.pipeline_id, config.pipeline_id
        )));
    }
    Ok(())
}

/// Runs the pipeline until the source ends or `shutdown` fires, committing as it goes.
pub fn run(config: PipelineConfig, shutdown: Shutdown) -> Result<Summary, PipelineError> {
    let metrics = Arc::new(Metrics::new(&config.pipeline_id));
    run_with_metrics(config, shutdown, metrics)
}

/// [`run`] with a caller-supplied metrics handle (tests read it afterwards).
pub fn run_with_metrics(
    config: PipelineConfig,
    shutdown: Shutdown,
    metrics: Arc<Metrics>,
) -> Result<Summary, PipelineError> {
    start(config, shutdown, metrics)?.join()
}
