//! The commit log: what a checkpoint writes, where, and how instances share it.
//!
//! [`layout`] says where everything lives under the table root; [`state`] is the on-disk
//! form of the pipeline's facts and of each source partition's committed state; [`log`]
//! writes the log (claims, commits, snapshots, pruning) and is the fence between instances;
//! [`view`] folds the log into the newest state of everything; [`recover`] publishes
//! committed files and finishes what a crash left; [`check_head`] refuses a log that lost its
//! newest entries before a run goes on from it; `lease` and [`InstanceLock`] keep a second
//! run out where the claims cannot; [`index`] keeps the list of completed
//! files that audits need. The pipeline writes through [`Log`]; `verify` reads a [`View`];
//! readers of the tables (the SQL client) see committed state only through [`snapshot`], which
//! names every committed file, open ones included, with how to read exactly their committed
//! bytes.

mod head;
pub mod index;
pub mod layout;
mod lease;
mod lock;
pub mod log;
pub mod recover;
pub mod snapshot;
pub mod state;
pub mod view;

use thiserror::Error;

pub use head::check_head;
pub use lease::DEFAULT_LEASE;
pub use lock::InstanceLock;
pub use log::{Committed, Log, TablePublisher};
pub use snapshot::{read_snapshot, Snapshot, SnapshotError, SnapshotFile, Unreadable};
pub use state::{
    Claim, ClosedFile, Counting, Entry, Facts, InputProgress, OpenFileState, PartitionTime, Position,
    SourceIdentity, TaskState, Totals, WindowCount, LOG_VERSION, NO_WATERMARK,
};
pub use view::{IndexedFile, View};

use crate::storage::StorageError;

/// Why the commit log could not be written, read or recovered.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A log entry, snapshot or facts file is unreadable.
    #[error("{path} is corrupt: {reason}")]
    Corrupt {
        /// The object.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Written by a pageviews with another format.
    #[error("{path} has format version {found}, this pageviews reads version {}; use a new --output or --pipeline-id", state::LOG_VERSION)]
    Format {
        /// The object.
        path: String,
        /// Its format version.
        found: u32,
    },
    /// A file a committed entry names is missing from both staging and the table.
    #[error("{path}, committed by log entry {seq} for source partition {partition}, is missing from the table and from staging: the output was modified outside pageviews (the file, or a newer log entry, was removed); put it back from a backup, or write the tables anew into an empty --output (`pageviews verify` lists every missing file)")]
    Lost {
        /// The file's final path.
        path: String,
        /// The entry that names it.
        seq: u64,
        /// The source partition whose state names it.
        partition: u32,
    },
    /// The tables hold a file that only a commit after the log's newest entry can have
    /// published: entries were removed from the end of the log. Going on would read again,
    /// and write a second time, what they committed.
    #[error("the commit log of pipeline {pipeline} {}, but the tables hold {path}, which only a later commit can have published: log entry {} ({}) is missing; going on would write its rows a second time. Put the entry back from a backup, or write the tables anew into an empty --output", log_end(*newest), newest + 1, layout::entry_path(pipeline, newest + 1))]
    LogBehind {
        /// The pipeline.
        pipeline: String,
        /// The newest entry the log holds.
        newest: u64,
        /// A table file published by a missing entry.
        path: String,
    },
    /// Committing the log's files into a table format's catalog (Iceberg) failed; the log
    /// entry stands, and the next commit or recovery adds what is missing.
    #[error("committing the tables to their catalog failed: {0}")]
    Tables(String),
    /// Other instances kept winning the race for the next log entry.
    #[error("could not append to the commit log of {pipeline} after {attempts} attempts: other instances keep writing it")]
    Contended {
        /// The pipeline.
        pipeline: String,
        /// Attempts made.
        attempts: usize,
    },
    /// The store cannot fence two instances, and another one runs.
    #[error("instance {other} of pipeline {pipeline} is running on this output (run {run}, since {since} UTC), and this store does not refuse a second create-only write, so two instances cannot be kept apart safely; stop the other instance, or use a store with conditional writes (S3, MinIO, Azure Blob Storage, local disk)")]
    Unfenced {
        /// The pipeline.
        pipeline: String,
        /// The other instance.
        other: String,
        /// Its run.
        run: String,
        /// Since when it holds the lease (UTC).
        since: String,
    },
    /// The same instance of the pipeline already runs on this output.
    #[error("instance {instance} of pipeline {pipeline} already runs on this output ({holder}); stop it first, or give this run its own --instance-id (instances share a Kafka topic's partitions; over files or the generator, a newer instance takes them over and the older one stops)")]
    Running {
        /// The pipeline.
        pipeline: String,
        /// The instance id.
        instance: String,
        /// The run holding it: its process and since when.
        holder: String,
    },
    /// Another run of the pipeline took over what this run held: this run must stop, and
    /// what it read since its last commit is the other run's to read again.
    #[error("this run of pipeline {pipeline} was replaced: instance {by} (run {run}) took {took} over at {since} UTC; this run stopped without committing what it read since its last checkpoint, which the other run reads again")]
    Replaced {
        /// The pipeline.
        pipeline: String,
        /// The instance that took over.
        by: String,
        /// Its run.
        run: String,
        /// What it took: the lease, or a partition.
        took: String,
        /// When (UTC).
        since: String,
    },
}

/// Where a log ends, in words.
fn log_end(newest: u64) -> String {
    match newest {
        0 => "holds no entry".into(),
        n => format!("ends at entry {n}"),
    }
}

#[cfg(test)]
mod tests;
