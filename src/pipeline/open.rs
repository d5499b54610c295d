//! Starting an instance: agree with the pipeline's fixed facts, open the commit log, take the
//! partitions a bounded source has (a Kafka source takes them as the group assigns them),
//! and build the record loop.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use pageviews_core::commit::{Facts, Log, Position, SourceIdentity, LOG_VERSION};
use pageviews_core::storage::Storage;
use pageviews_core::time::format_timestamp;
use tracing::info;

use super::forward::Forwarding;
use super::inputs::WorkerInputs;
use super::relay::Relay;
use super::report::Reporter;
use super::restore::LogRestorer;
use super::task::TaskSetup;
use super::tasks::Tasks;
use super::worker::{Assembly, Limits, Pipeline};
use super::{PipelineConfig, PipelineError, Shutdown, SourceConfig};
use crate::event::EventTimeBounds;
use crate::http::Status;
use crate::metrics::Metrics;
use crate::sink::iceberg::IcebergSink;
use crate::sink::parquet::TimestampUnit;
use crate::source::exchange::{exchange_topic, Exchange};
use crate::source::file::{first_event, reopen, Taken};
use crate::source::{FileSource, GeneratorSource, KafkaSource, Restored, Source, SourceError};

/// The workers of an instance join the consumer group together. A broker whose
/// `group.initial.rebalance.delay.ms` is short (0 in `scripts/kafka-local`; Kafka's default is
/// 3 s) completes a new group's first generation with whoever has joined: a worker whose commit
/// log took a few milliseconds longer to open waited for a second rebalance while its sibling
/// read every partition alone (docs/measurements.md).
pub(super) struct StartGate {
    expected: usize,
    arrived: Mutex<usize>,
    all_here: Condvar,
}

impl StartGate {
    /// A gate for `workers` workers.
    pub(crate) fn new(workers: usize) -> Self {
        StartGate { expected: workers, arrived: Mutex::new(0), all_here: Condvar::new() }
    }

    /// Waits until every worker has arrived, or `timeout` passed: a worker that failed before
    /// it arrived must not hold the others (they start, and stop on the shutdown it triggers).
    /// Returns whether all arrived.
    pub(crate) fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let Ok(mut arrived) = self.arrived.lock() else { return false };
        *arrived += 1;
        self.all_here.notify_all();
        while *arrived < self.expected {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            arrived = match self.all_here.wait_timeout(arrived, left) {
                Ok((guard, _)) => guard,
                Err(_) => return false,
            };
        }
        true
    }
}

/// How long a worker waits at the [`StartGate`] for its siblings.
const START_GATE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a worker shares with the other workers of its instance.
pub(super) struct Siblings<'a> {
    /// Kafka workers join the consumer group together.
    pub(crate) gate: &'a StartGate,
    /// Files over several workers: the relay to (or, in worker 0, from) the counting worker.
    pub(crate) relay: Option<Relay>,
    /// Files: the partitions this worker takes, and how each is read.
    pub(crate) inputs: Option<WorkerInputs>,
    /// The instance's stop request, which every wait at start honours.
    pub(crate) stop: &'a Shutdown,
}

impl Pipeline {
    /// Opens the pipeline's commit log for worker `worker` of this instance and restores what
    /// it holds. A Kafka source joins the group once every sibling is ready to; files are
    /// shared out among the workers.
    pub(super) fn open(
        config: &PipelineConfig,
        worker: usize,
        mut siblings: Siblings<'_>,
        storage: Storage,
        metrics: Arc<Metrics>,
        status: Arc<Mutex<Status>>,
    ) -> Result<Pipeline, PipelineError> {
        let wall = config.clock.wall_ms();
        // The source partitions there are now, and how many count windows if the pipeline is
        // created now: one per partition of a topic, one for files and the generator.
        let (identity, source_partitions, partitions) = match &config.source {
            SourceConfig::Generator(g) => {
                (SourceIdentity::Generator { seed: g.stream.seed, start_ms: g.stream.start_ms }, 1, 1)
            }
            SourceConfig::Files(paths) => {
                let partitions = siblings.inputs.as_ref().map_or(paths.len() as u32, |i| i.partitions);
                (SourceIdentity::Files { paths: paths.clone() }, partitions, 1)
            }
            SourceConfig::Kafka(k) => {
                let n = crate::source::kafka::partition_count(k, siblings.stop)?;
                (SourceIdentity::Kafka { topic: k.topic.clone() }, n, n)
            }
        };
        let run = super::run_id(wall, worker);
        let facts = Facts {
            version: LOG_VERSION,
            pipeline: config.pipeline_id.clone(),
            id: run.clone(),
            source: identity.clone(),
            counting_partitions: partitions,
            window_ms: config.windows.window_ms,
            created_at: format_timestamp(wall),
        };
        // One member of the deployment per worker: in the commit log, and in Kafka's group
        // as a static member (`group.instance.id`), so a restarted instance gets its
        // partitions back at once and a second process with the same id is fenced.
        let member = member_id(config, worker);
        let (mut log, facts) = Log::open(&storage, &config.pipeline_id, &member, &run, &facts)?;
        // A generator run continues the pipeline's stream: a seed or start time it was not
        // given comes from the facts (a random seed must not refuse the resume).
        let stream = match &config.source {
            SourceConfig::Generator(g) => Some(g.continue_stream(&facts.source)?),
            _ => None,
        };
        if stream.is_none() && facts.source != identity {
            return Err(SourceError::Mismatch {
                checkpoint: facts.source.describe(),
                this_run: identity.describe(),
            }
            .into());
        }
        if facts.window_ms != config.windows.window_ms {
            return Err(PipelineError::Incompatible(format!(
                "pipeline {} counts {} ms windows but --window is {} ms; keep the window size, or use another --output or --pipeline-id",
                facts.pipeline, facts.window_ms, config.windows.window_ms
            )));
        }
        if config.workers > 1 && !log.fencing() {
            // Workers append to one commit log; without create-only writes two of them could
            // write the same entry and one commit would silently replace the other.
            return Err(PipelineError::Incompatible(format!(
                "{} does not refuse a second create-only write, so the workers of one instance could overwrite each other's commits; run one worker (--workers 1) on this store, or use a store with conditional writes (S3, MinIO, local disk)",
                config.output
            )));
        }
        log.take_lease(config.lease)?;
        if let Some(iceberg) = &config.iceberg {
            let sink =
                IcebergSink::open(iceberg, &storage, &config.pipeline_id, &config.store_env, log.view())?;
            log.set_publisher(Box::new(sink));
        }
        if !log.view().tasks.is_empty() {
            info!(
                version = log.view().version,
                tasks = log.view().tasks.len(),
                "resuming from the commit log"
            );
        }
        let log = Arc::new(Mutex::new(log));
        let mut restorer =
            LogRestorer { log: log.clone(), resumable: !matches!(config.source, SourceConfig::Files(_)) };
        let mut restored: Vec<(u32, Restored)> = Vec::new();
        let event_time = EventTimeBounds::new(config.max_future_ms, config.windows.window_ms);
        // Files not read yet whose first event time is known: they hold the counting
        // watermark just before it, not at the start of time.
        let mut first_events: Vec<(u32, i64)> = Vec::new();
        // Files: finished partitions no worker takes, which the counting partition must know.
        let mut left_behind: Vec<(u32, pageviews_core::commit::PartitionTime)> = Vec::new();
        let source: Box<dyn Source> = match &config.source {
            SourceConfig::Generator(g) => {
                let stream = match stream {
                    Some(stream) => stream,
                    None => g.continue_stream(&facts.source)?,
                };
                restored = restore_all(&mut restorer, &[0])?;
                let state = restored.first().and_then(|(_, r)| r.state.as_ref());
                Box::new(GeneratorSource::resume(stream, state, config.windows.allowed_lateness_ms)?)
            }
            SourceConfig::Files(_) => {
                let Some(WorkerInputs { mut taken, left, .. }) = siblings.inputs.take() else {
                    return Err(PipelineError::Incompatible(format!(
                        "worker {worker} was started without its share of the inputs (a bug)"
                    )));
                };
                let ids: Vec<u32> = taken.iter().map(|t| t.partition).collect();
                restored = restore_all(&mut restorer, &ids)?;
                settle_restored(&mut restored, &mut taken)?;
                left_behind = left;
                let at: BTreeMap<u32, Position> = restored
                    .iter()
                    .filter_map(|(p, r)| Some((*p, r.state.as_ref()?.position.clone())))
                    .collect();
                let newest: BTreeMap<u32, i64> = restored
                    .iter()
                    .filter_map(|(p, r)| Some((*p, r.state.as_ref()?.time.max_event_ms?)))
                    .collect();
                let accept = |line: &[u8]| {
                    let pv = crate::event::decode(line, config.max_record_bytes).ok()?;
                    Some(event_time.check(pv, wall).ok()?.timestamp)
                };
                for t in taken.iter().filter(|t| t.read.is_some() && !newest.contains_key(&t.partition)) {
                    if let Some(ms) = first_event(&t.path, config.max_record_bytes, accept)? {
                        first_events.push((t.partition, ms));
                    }
                }
                // Read in event-time order, so the files read one after another hold the
                // windows open as briefly as they can: those with unknown times first.
                let key = |i: &u32| {
                    newest
                        .get(i)
                        .or_else(|| first_events.iter().find(|(p, _)| p == i).map(|(_, ms)| ms))
                        .copied()
                };
                taken.sort_by_key(|t| key(&t.partition).unwrap_or(i64::MIN));
                Box::new(FileSource::new(taken, &at, config.max_record_bytes))
            }
            SourceConfig::Kafka(k) => {
                if !siblings.gate.wait(START_GATE_TIMEOUT) {
                    info!(worker, "joining the consumer group without every sibling worker");
                }
                Box::new(
                    KafkaSource::new(k.clone(), &member, Box::new(restorer), metrics.clone())?
                        .with_max_record_bytes(config.max_record_bytes),
                )
            }
        };
        let exchange = match &config.source {
            SourceConfig::Kafka(k) => {
                Some(Exchange::open(k, &exchange_topic(&facts), facts.counting_partitions)?)
            }
            _ => None,
        };
        // Iceberg's timestamptz is microseconds.
        let timestamps = if config.iceberg.is_some() { TimestampUnit::Micros } else { TimestampUnit::Millis };
        let writer_config = config.files.writer(&config.pipeline_id, storage.is_object_store(), timestamps);
        let rules = config.windows;
        let totals = log.lock().map(|l| l.view().totals()).unwrap_or_default();
        if let Ok(mut st) = status.lock() {
            st.state = "running".into();
            st.totals = totals;
            st.last_checkpoint = log.lock().ok().map(|l| l.view().version).filter(|v| *v > 0);
        }
        let mut tasks = Tasks::new(TaskSetup {
            storage,
            writer_config,
            rules,
            counting_partitions: facts.counting_partitions,
            source_partitions: source_partitions.max(facts.counting_partitions),
        });
        let now = config.clock.now_ms();
        tasks.add(restored, now);
        for (partition, ms) in first_events {
            if let Some(task) = tasks.get_mut(partition) {
                task.set_first_event(ms);
            }
        }
        if let Some(counter) = tasks.get_mut(0) {
            for (partition, time) in left_behind {
                counter.declare(partition, &time, now)?;
            }
        }
        let forwarding = match (exchange, siblings.relay) {
            (Some(exchange), _) => Forwarding::Exchange(exchange),
            (None, Some(relay)) => Forwarding::Relay(relay),
            (None, None) => Forwarding::Local,
        };
        let member = log.lock().map(|l| l.member().to_string()).unwrap_or_default();
        let first_checkpoint = first_checkpoint(&member, config.checkpoint_interval);
        let reporter = Reporter::new(
            metrics,
            status,
            config.clock.clone(),
            member,
            config.checkpoint_interval,
            config.windows.watermark_delay_ms,
        );
        let limits = Limits {
            batch_size: config.batch_size,
            max_record_bytes: config.max_record_bytes,
            checkpoint_interval: config.checkpoint_interval,
            first_checkpoint,
            commit_delay_ms: config.partition_commit_delay_ms,
        };
        let pipeline = Pipeline::new(Assembly {
            source,
            tasks,
            log,
            forwarding,
            reporter,
            clock: config.clock.clone(),
            limits,
            event_time,
            stop: siblings.stop.clone(),
            rebalances: matches!(config.source, SourceConfig::Kafka(_)),
        })?;
        Ok(pipeline)
    }
}

/// Files: a partition read goes on past where it finished (its input may have grown); one
/// not read (an earlier content of its input) is finished. Each restored position is the
/// one the plan checked its input against, or, when another instance committed since (this
/// run takes its files over), the newer one, against which the file is checked again.
fn settle_restored(restored: &mut [(u32, Restored)], taken: &mut [Taken]) -> Result<(), PipelineError> {
    for (partition, r) in restored.iter_mut() {
        let Some(t) = taken.iter_mut().find(|t| t.partition == *partition) else { continue };
        let committed = r.state.as_ref().map_or(0, |s| s.position.ordinal());
        if let (Some(read), Some(state)) = (&t.read, r.state.as_ref()) {
            if committed != read.offset {
                t.read = Some(reopen(&t.path, state)?.ok_or_else(|| {
                    SourceError::Restore(format!(
                        "partition {partition} ({}) was committed up to byte {} when this run checked its input, and is up to byte {committed} now: another instance reads it, and stdin cannot be read again; run one instance on it",
                        t.path, read.offset
                    ))
                })?);
            }
        }
        if let Some(state) = r.state.as_mut() {
            state.time.finished = t.read.is_none();
        }
    }
    Ok(())
}

/// Restores what the newest committed states of `partitions` hold, for sources that know
/// their partitions up front (the generator, files).
fn restore_all(
    restorer: &mut LogRestorer,
    partitions: &[u32],
) -> Result<Vec<(u32, Restored)>, PipelineError> {
    use crate::source::Restore;
    Ok(restorer.restore(partitions)?)
}

/// When a worker's first scheduled checkpoint comes: somewhere in the first interval, fixed
/// by its member id. Members started together (a deployment rolled out, a group rebalanced)
/// would otherwise checkpoint in step and race each other for the log's next version.
fn first_checkpoint(member: &str, interval: Duration) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    member.hash(&mut hasher);
    let interval_ms = interval.as_millis().max(1) as u64;
    Duration::from_millis(1 + hasher.finish() % interval_ms)
}

/// The worker's name as a member of the deployment: `<instance>[-w<k>]`.
pub(super) fn member_id(config: &PipelineConfig, worker: usize) -> String {
    if config.workers > 1 {
        format!("{}-w{worker}", config.instance_id)
    } else {
        config.instance_id.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_opens_when_every_worker_arrived_and_not_before() {
        let gate = Arc::new(StartGate::new(3));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..2)
            .map(|k| {
                let (gate, arrivals) = (gate.clone(), arrivals.clone());
                std::thread::spawn(move || {
                    let all = gate.wait(Duration::from_secs(30));
                    arrivals.lock().unwrap().push(k);
                    all
                })
            })
            .collect();
        // Two of three are in: neither may pass while the third is missing.
        let waiting = |n| *gate.arrived.lock().unwrap() == n;
        while !waiting(2) {
            std::thread::yield_now();
        }
        assert!(arrivals.lock().unwrap().is_empty(), "a worker passed before its siblings arrived");
        assert!(gate.wait(Duration::from_secs(30)), "the last to arrive passes at once");
        for t in threads {
            assert!(t.join().unwrap(), "every worker saw all arrive");
        }
    }

    #[test]
    fn a_worker_that_never_arrives_holds_the_others_only_until_the_timeout() {
        let gate = StartGate::new(2);
        let started = Instant::now();
        assert!(!gate.wait(Duration::from_millis(50)));
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn members_started_together_spread_their_first_checkpoints_over_the_interval() {
        let interval = Duration::from_secs(10);
        let firsts: Vec<Duration> =
            (0..64).map(|m| first_checkpoint(&format!("pageviews-{m}"), interval)).collect();
        assert!(firsts.iter().all(|f| !f.is_zero() && *f <= interval));
        // 64 members over ten one-second slots: every slot has some (a fixed phase, or one
        // from the interval's start, would fill one).
        let slots: std::collections::BTreeSet<u64> =
            firsts.iter().map(|f| f.as_millis() as u64 / 1000).collect();
        assert_eq!(slots.len(), 10, "{firsts:?}");
        assert_eq!(
            first_checkpoint("a", interval),
            first_checkpoint("a", interval),
            "fixed by the member id"
        );
        assert_eq!(first_checkpoint("a", Duration::ZERO), Duration::from_millis(1));
    }
}
