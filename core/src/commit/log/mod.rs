//! Writing the commit log: claims, commits, snapshots, pruning — and the fence.
//!
//! The log is a sequence of entries `_checkpoints/<pipeline>/log/<version>.json`, each
//! written **create-only**: of two instances writing the same version, one wins and the other
//! learns it lost. That is the only coordination between instances, and what fences zombies:
//! - to take a source partition, an instance appends a *claim* (the partition's claim number
//!   plus one), then restores the partition from the newest committed state — whoever wrote
//!   it — which the claim entry orders after;
//! - to commit, an instance first reads every entry it has not seen; a partition claimed since
//!   by someone else is dropped from its commit (it is fenced there) and reported, and only
//!   then is the entry appended. A zombie therefore never commits a partition after the
//!   claim that took it away.
//!
//! The committer of every [`SNAPSHOT_EVERY`]-th version writes a snapshot (the view) and an index
//! segment, and deletes entries and snapshots the newer snapshot covers, so what lies under
//! `_checkpoints` stays bounded however long the run. That, and the check that a version just created was
//! not one a snapshot pruned, are in `prune`.

mod prune;

use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::path::Path;

use super::layout::{entry_path, facts_path};
use super::lease::{wall_ms, Lease};
use super::recover::{publish, publish_markers, recover_partition, Sealing};
use super::state::{Entry, Facts, TaskState, LOG_VERSION};
use super::view::View;
use super::CheckpointError;
use crate::storage::{Storage, StorageError};
use crate::table::Partition;

/// Entries between snapshots.
pub const SNAPSHOT_EVERY: u64 = 16;

/// Appends attempted before a commit gives up on a log that other instances keep writing.
const MAX_ATTEMPTS: usize = 1000;

/// The longest wait between two tries of an append.
const MAX_BACKOFF: Duration = Duration::from_millis(1600);

/// A random wait before the append's `attempt` (from 2): up to 50 ms, doubling each time.
pub(super) fn backoff(attempt: usize) -> Duration {
    let ceiling = Duration::from_millis(50 << attempt.saturating_sub(2).min(5)).min(MAX_BACKOFF);
    crate::storage::random_up_to(ceiling)
}

/// What a commit did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Committed {
    /// The entry's version (0 when nothing was left to commit).
    pub version: u64,
    /// Partitions dropped from the commit because another instance claimed them since.
    pub fenced: Vec<u32>,
}

/// What commits the log's published files into a table format with a catalog of its own
/// (Iceberg): called after each entry's files are published, and after recovery, with the
/// up-to-date view. It must be idempotent and go by log versions: the view names every
/// file the log committed, and the publisher adds those its tables lack.
pub trait TablePublisher: Send {
    /// Brings the tables up to `view` (every file committed through `view.version`).
    fn publish(&mut self, view: &View) -> Result<(), CheckpointError>;
}

/// One instance's handle on a pipeline's commit log.
pub struct Log {
    storage: Storage,
    pipeline: String,
    member: String,
    run: String,
    view: View,
    /// The store refuses a second create of the same key (checked at open).
    fencing: bool,
    /// This run's lease, on a store that does not fence.
    lease: Option<Lease>,
    /// Tables kept in a catalog as well as in their folders (Iceberg), if any.
    publisher: Option<Box<dyn TablePublisher>>,
}

impl Log {
    /// Opens the log of `pipeline` for instance `member` (run `run`): checks or creates the
    /// facts, probes whether the store fences, and reads the log.
    pub fn open(
        storage: &Storage,
        pipeline: &str,
        member: &str,
        run: &str,
        facts: &Facts,
    ) -> Result<(Log, Facts), CheckpointError> {
        storage.block_on(async {
            let facts = settle_facts(storage, pipeline, facts).await?;
            let fencing = probe_fencing(storage, pipeline, run).await?;
            let view = View::load(storage, pipeline).await?;
            let log = Log {
                storage: storage.clone(),
                pipeline: pipeline.to_string(),
                member: member.to_string(),
                run: run.to_string(),
                view,
                fencing,
                lease: None,
                publisher: None,
            };
            Ok((log, facts))
        })
    }

    /// The folded log as last read.
    pub fn view(&self) -> &View {
        &self.view
    }

    /// True when the store refuses a second create of the same key, so instances fence each
    /// other through the log.
    pub fn fencing(&self) -> bool {
        self.fencing
    }

    /// The storage the log lives in.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The pipeline whose log this is.
    pub fn pipeline_id(&self) -> &str {
        &self.pipeline
    }

    /// The member (instance, or instance's worker) this handle commits as.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// Commits every published file into `publisher`'s tables too, after each entry and
    /// after recovery ([`Log::publish_tables`]).
    pub fn set_publisher(&mut self, publisher: Box<dyn TablePublisher>) {
        self.publisher = Some(publisher);
    }

    /// Brings the publisher's tables up to the log as this instance sees it: what a crash
    /// left between an entry and its catalog commit, or another member's entries. Called
    /// after each commit, and by recovery once it published the partitions it took.
    pub fn publish_tables(&mut self) -> Result<(), CheckpointError> {
        match self.publisher.as_mut() {
            Some(p) => p.publish(&self.view),
            None => Ok(()),
        }
    }

    /// Reads what other instances committed since.
    pub fn catch_up(&mut self) -> Result<(), CheckpointError> {
        let (storage, pipeline) = (&self.storage, &self.pipeline);
        storage.block_on(self.view.catch_up(storage, pipeline))
    }

    /// Before an append's `attempt`: everything since on the first; after one lost race,
    /// the entry that won the version; after more, a random wait that doubles (to
    /// [`MAX_BACKOFF`]), then everything since. Members that keep losing otherwise all try
    /// every next version at once, each lost try a read and a write the store must answer,
    /// and a store slowed by that (moto here, at 64 members) makes fewer versions a second.
    fn read_since(&mut self, attempt: usize) -> Result<(), CheckpointError> {
        if attempt == 1 {
            let (storage, pipeline) = (&self.storage, &self.pipeline);
            return storage.block_on(self.view.follow(storage, pipeline));
        }
        if attempt > 1 {
            std::thread::sleep(backoff(attempt));
        }
        self.catch_up()
    }

    /// Claims `partitions` for this instance: their claim numbers go up by one, so whoever
    /// held them can no longer commit them. Returns the new claim numbers.
    pub fn claim(&mut self, partitions: &[u32]) -> Result<Vec<(u32, u64)>, CheckpointError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        for attempt in 0..MAX_ATTEMPTS {
            self.read_since(attempt)?;
            let claims = partitions.iter().map(|&p| (p, self.view.claim_of(p) + 1)).collect();
            let entry = self.entry(claims, Vec::new(), Vec::new());
            if self.append(&entry, started)? {
                return Ok(entry.claims.into_iter().collect());
            }
        }
        Err(self.contended())
    }

    /// Commits `tasks` (each under the claim it carries) and the markers `markers` picks
    /// from the up-to-date view. Tasks whose partition was claimed by someone else since are
    /// left out and reported in [`Committed::fenced`]. Then publishes the committed files and
    /// markers and, every [`SNAPSHOT_EVERY`] versions, snapshots and prunes.
    pub fn commit(
        &mut self,
        mut tasks: Vec<TaskState>,
        markers: impl Fn(&View, &[TaskState]) -> Vec<Partition>,
    ) -> Result<Committed, CheckpointError> {
        let mut fenced = Vec::new();
        let started = Instant::now();
        for attempt in 0..MAX_ATTEMPTS {
            self.read_since(attempt)?;
            let view = &self.view;
            let (keep, lost): (Vec<TaskState>, Vec<TaskState>) = tasks
                .into_iter()
                .partition(|t| view.claims.get(&t.partition).is_some_and(|c| c.claim == t.claim));
            fenced.extend(lost.iter().map(|t| t.partition));
            tasks = keep;
            let markers = markers(&self.view, &tasks);
            if tasks.is_empty() && markers.is_empty() {
                return Ok(Committed { version: 0, fenced });
            }
            let entry = self.entry(Default::default(), tasks.clone(), markers);
            if self.append(&entry, started)? {
                let files = entry.tasks.iter().flat_map(|t| t.files.iter().map(move |f| (t.partition, f)));
                self.storage.block_on(publish(&self.storage, entry.version, files, &entry.markers))?;
                // Before the snapshot, which moves the entry's files from the view into the
                // index.
                self.publish_tables()?;
                // The committer of every SNAPSHOT_EVERY-th version snapshots: one snapshotter
                // per version however many members share the log.
                if entry.version.is_multiple_of(SNAPSHOT_EVERY) {
                    self.snapshot()?;
                }
                return Ok(Committed { version: entry.version, fenced });
            }
        }
        Err(self.contended())
    }

    /// Whether another run took over one of `held` (partitions, with the claims this run
    /// holds them under), as the log says now: the error that says which, and since when.
    pub fn taken_over(&mut self, held: &[(u32, u64)]) -> Result<Option<CheckpointError>, CheckpointError> {
        self.catch_up()?;
        Ok(held.iter().find(|(p, claim)| self.view.claim_of(*p) != *claim).map(|(p, _)| self.replaced(*p)))
    }

    /// The error of a run whose `partition` another run claimed: who, and since when.
    pub fn replaced(&self, partition: u32) -> CheckpointError {
        let claim = self.view.claims.get(&partition).cloned().unwrap_or_default();
        CheckpointError::Replaced {
            pipeline: self.pipeline.clone(),
            by: claim.member,
            run: claim.run,
            took: format!("partition {partition}"),
            since: claim.since,
        }
    }

    pub(super) fn entry(
        &self,
        claims: std::collections::BTreeMap<u32, u64>,
        tasks: Vec<TaskState>,
        markers: Vec<Partition>,
    ) -> Entry {
        Entry {
            format: LOG_VERSION,
            version: self.view.version + 1,
            member: self.member.clone(),
            run: self.run.clone(),
            created_at: now_text(),
            claims,
            tasks,
            markers,
        }
    }

    /// Writes `entry` create-only; false when another instance wrote that version first,
    /// or wrote it and a snapshot pruned it before this write ([`prune::pruned_before`]: the view
    /// is then that snapshot). Where the store does not fence, only while this run holds the
    /// lease. Reports the time since `started` (when this member began reading the log for
    /// the entry) once written, and each lost race, so contention for the next version is
    /// seen.
    pub(super) fn append(&mut self, entry: &Entry, started: Instant) -> Result<bool, CheckpointError> {
        if let Some(lease) = &self.lease {
            self.storage.block_on(lease.renew())?;
        }
        let path = entry_path(&self.pipeline, entry.version);
        let json = serde_json::to_vec_pretty(entry)
            .map_err(|e| CheckpointError::Corrupt { path: path.to_string(), reason: e.to_string() })?;
        let storage = &self.storage;
        match storage.block_on(storage.put_new(&path, Bytes::from(json))) {
            Ok(()) => {
                if let Some(snapshot) =
                    storage.block_on(prune::pruned_before(storage, &self.pipeline, entry))?
                {
                    tracing::warn!(
                        version = entry.version,
                        snapshot = snapshot.version,
                        "log version {} was written and pruned while this member waited to write it; trying again after snapshot {}",
                        entry.version,
                        snapshot.version
                    );
                    storage.observer().log_conflict();
                    self.view = snapshot;
                    return Ok(false);
                }
                storage.observer().log_appended(started.elapsed());
                self.view.apply(entry);
                Ok(true)
            }
            Err(StorageError::AlreadyExists(_)) => {
                storage.observer().log_conflict();
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn contended(&self) -> CheckpointError {
        CheckpointError::Contended { pipeline: self.pipeline.clone(), attempts: MAX_ATTEMPTS }
    }

    /// On a store that does not fence: refuses to run beside another live instance, and
    /// keeps this one's lease (see `commit::lease`) for as long as the run lasts, renewed
    /// every third of `duration` and before each append. Stores that fence need none.
    pub fn take_lease(&mut self, duration: Duration) -> Result<(), CheckpointError> {
        if self.fencing || self.lease.is_some() {
            return Ok(());
        }
        let (storage, pipeline) = (&self.storage, self.pipeline.as_str());
        let lease = storage.block_on(Lease::take(storage, pipeline, &self.member, &self.run, duration))?;
        self.lease = Some(lease);
        Ok(())
    }

    /// Gives the lease up on a clean stop (stores that do not fence), so another instance
    /// may start at once.
    pub fn release_lease(&mut self) -> Result<(), CheckpointError> {
        match self.lease.take() {
            Some(lease) => self.storage.block_on(lease.release()),
            None => Ok(()),
        }
    }

    /// Writes the `_SUCCESS` markers of the newest entries again ([`View::recent_markers`]):
    /// an instance killed between an entry and its publication wrote none of its own.
    /// Idempotent; once per batch of partitions taken, not per partition.
    pub fn republish_markers(&self) -> Result<(), CheckpointError> {
        let markers = self.view.recent_markers.values().flatten();
        self.storage.block_on(publish_markers(&self.storage, markers))
    }

    /// Finishes what the newest committed state of `partition` left: publishes its files,
    /// seals its open files, and removes its orphaned uploads and tails (see
    /// [`super::recover`]). Returns that state with the sealed files listed as completed (so
    /// the next commit indexes them) and no open files, or `None` when the partition was
    /// never committed.
    pub fn recover_task(&self, partition: u32) -> Result<Option<TaskState>, CheckpointError> {
        let at = Sealing {
            pipeline: &self.pipeline,
            partition,
            version: self.view.version_of_task(partition),
            newest: self.view.version,
        };
        let state = self.view.tasks.get(&partition).cloned();
        self.storage.block_on(recover_partition(&self.storage, &at, state))
    }
}

/// Reads the facts file, or creates it. Reading first matters on a store that does not
/// fence (s3rver), where a create-only put of an existing key replaces it: a second
/// instance must learn the pipeline's facts, not overwrite them, before its lease is refused.
async fn settle_facts(storage: &Storage, pipeline: &str, facts: &Facts) -> Result<Facts, CheckpointError> {
    let path = facts_path(pipeline);
    let bytes = match storage.get(&path).await {
        Ok(bytes) => bytes,
        Err(e) if e.is_not_found() => {
            let json = serde_json::to_vec_pretty(facts)
                .map_err(|e| CheckpointError::Corrupt { path: path.to_string(), reason: e.to_string() })?;
            match storage.put_new(&path, Bytes::from(json)).await {
                Ok(()) => return Ok(facts.clone()),
                Err(StorageError::AlreadyExists(_)) => storage.get(&path).await?,
                Err(e) => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    };
    let stored: Facts = serde_json::from_slice(&bytes)
        .map_err(|e| CheckpointError::Corrupt { path: path.to_string(), reason: e.to_string() })?;
    if stored.version != LOG_VERSION {
        return Err(CheckpointError::Format { path: path.to_string(), found: stored.version });
    }
    Ok(stored)
}

/// Creates a probe object twice: a store that fences refuses the second create.
async fn probe_fencing(storage: &Storage, pipeline: &str, run: &str) -> Result<bool, CheckpointError> {
    let path = Path::from(format!("_checkpoints/{pipeline}/probe-{run}"));
    storage.put_new(&path, Bytes::from_static(b"probe")).await?;
    let fences = match storage.put_new(&path, Bytes::from_static(b"probe")).await {
        Err(StorageError::AlreadyExists(_)) => true,
        Ok(()) => false,
        Err(e) => return Err(e.into()),
    };
    storage.delete(&path).await?;
    if !fences {
        tracing::warn!(
            "this store accepted a second create-only write of the same key: it does not fence, so only one instance may run on this output"
        );
    }
    Ok(fences)
}

fn now_text() -> String {
    crate::time::format_timestamp(wall_ms())
}
