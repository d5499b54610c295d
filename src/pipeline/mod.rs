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
//! on shutdown, the writers close their files and one log entry commits files, positions,
//! watermarks and open windows together (`checkpoint`, over `pageviews_core::commit`).

mod checkpoint;
mod completion;
mod config;
mod forward;
mod inputs;
mod open;
mod relay;
mod report;
mod restore;
mod task;
mod tasks;
mod worker;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use config::{PipelineConfig, SourceConfig};
pub(crate) use config::{WindowRules, LEGACY_PIPELINE_ID};
use pageviews_core::commit::{CheckpointError, InstanceLock, Totals};
use pageviews_core::storage::{Storage, StorageError, MIN_PART_BYTES};
pub use pageviews_core::Shutdown;
use thiserror::Error;
use tracing::info;

use crate::http::{HttpState, Status};
use crate::metrics::{Metrics, VERSION};
use crate::source::SourceError;

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Committed totals over the pipeline's life (including earlier runs).
    pub totals: Totals,
    /// Sequence number of the last committed checkpoint (0 if none).
    pub(crate) last_checkpoint: u64,
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
    /// The Iceberg tables cannot be opened or created.
    #[error("the Iceberg tables: {0}")]
    Iceberg(#[from] crate::sink::iceberg::IcebergError),
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
    if storage.is_object_store() && config.files.part_bytes_for(true) < MIN_PART_BYTES {
        return Err(PipelineError::Incompatible(format!(
            "object stores need upload parts of at least {} MiB; raise --part-size",
            MIN_PART_BYTES >> 20
        )));
    }
    if config.iceberg.is_some() && config.files.format != pageviews_core::table::Format::Parquet {
        return Err(PipelineError::Incompatible(
            "Iceberg tables hold Parquet files: give --format parquet with --table-format iceberg".into(),
        ));
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
        watermark_delay_seconds: config.windows.watermark_delay_ms as f64 / 1000.0,
        ..Status::default()
    }));
    let http = match config.http.addr {
        Some(addr) => {
            let state = HttpState::new(metrics.clone(), status.clone(), config.clock.clone());
            let bound = rt
                .block_on(crate::http::serve_with_timeout(addr, state, config.http.header_timeout))
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
    Ok(RunHandle { http, status, shutdown, thread, runtime: rt })
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
                        // Several workers, or instances in one test process, log side by side.
                        let _span =
                            tracing::info_span!("worker", member = %open::member_id(config, k)).entered();
                        let result = worker::Pipeline::open(config, k, siblings, storage, metrics, status)
                            .and_then(|mut pipeline| {
                                let result = pipeline.run_loop().map_err(|e| pipeline.explain(e));
                                pipeline.stopped();
                                pipeline.close();
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

/// Refuses an output that holds checkpoints of `LEGACY_PIPELINE_ID` and none of
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

/// An id for this process's run of a worker: tells a restarted instance from its zombie.
pub(super) fn run_id(wall_ms: i64, worker: usize) -> String {
    // Unique per process and per open within it (tests and library callers open several
    // pipelines in one process, in the same millisecond).
    static OPENED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{wall_ms:x}-{:x}-{n:x}-{worker}", std::process::id())
}
