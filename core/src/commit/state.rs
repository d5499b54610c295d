//! What the commit log holds: the pipeline's fixed facts, and per source partition (a *task*)
//! its committed state — position, event time, counting state, open files, totals.
//!
//! This is the on-disk format every party reads: the pipeline restores tasks from it, and
//! `verify` and the SQL client learn from it which files are committed and how far. Types
//! here are plain data; the pipeline converts its running state to and from them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::storage::UploadRef;
use crate::table::{Partition, Table};

/// The watermark before any event: nothing is late yet.
pub const NO_WATERMARK: i64 = i64::MIN;

/// Format version of the log, snapshots and facts; bumped on incompatible changes.
pub const LOG_VERSION: u32 = 3;

/// What is fixed when a pipeline is created (`_checkpoints/<pipeline>/pipeline.json`): every
/// instance of a deployment must agree on it, and a restart must not change it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// Format version.
    pub version: u32,
    /// The pipeline id.
    pub pipeline: String,
    /// Unique to this pipeline's creation: names what it keeps outside the table root (its
    /// exchange topic), so a new pipeline with the same id never reads an old one's.
    pub id: String,
    /// What the pipeline reads.
    pub source: SourceIdentity,
    /// Counting partitions: a postcode's windows are counted by partition
    /// `route(postcode) % counting_partitions`, whichever source partition its events arrive in.
    pub counting_partitions: u32,
    /// Window size, ms.
    pub window_ms: i64,
    /// When the pipeline was created (UTC), for humans.
    pub created_at: String,
}

/// The source a pipeline reads, as fixed at its creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceIdentity {
    /// The built-in generator: records are a function of (seed, start, sequence number).
    Generator {
        /// The stream's seed.
        seed: u64,
        /// Event time of record 0, UTC ms.
        start_ms: i64,
    },
    /// A Kafka topic.
    Kafka {
        /// The topic.
        topic: String,
    },
    /// JSON-lines files, in command-line order. Partition `i` is the first content read
    /// from input `i`; new content under an input (stdin piped again, a file rewritten) is
    /// read as a new partition, numbered after every other (`Position::File::input`).
    Files {
        /// The paths as given (`-` for stdin).
        paths: Vec<String>,
    },
}

impl SourceIdentity {
    /// The source in words, for errors that compare the pipeline with this run.
    pub fn describe(&self) -> String {
        match self {
            SourceIdentity::Generator { seed, start_ms } => format!(
                "the generator with --seed {seed} --start-time \"{}\"",
                crate::time::format_timestamp(*start_ms)
            ),
            SourceIdentity::Kafka { topic } => format!("Kafka topic {topic}"),
            SourceIdentity::Files { paths } => format!("--input {}", paths.join(" --input ")),
        }
    }
}

/// Where a source partition resumes: everything before it is committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Position {
    /// Generator: the next sequence number.
    Generator {
        /// The next record to produce.
        next_seq: u64,
        /// How far the event time of records from `next_seq` on is moved past their nominal
        /// time: a run continuing a stream whose bounded end emitted every window starts
        /// after those windows. 0 for a stream never continued that way.
        #[serde(default, skip_serializing_if = "is_zero")]
        shift_ms: i64,
    },
    /// Kafka: the next offset to read.
    Kafka {
        /// The offset.
        offset: i64,
        /// The timestamp of the record before `offset`, the last one read: a fingerprint
        /// that tells the same partition from one of a topic deleted and created again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_ts: Option<i64>,
    },
    /// A file: bytes and lines consumed.
    File {
        /// Bytes consumed: the next record starts here.
        offset: u64,
        /// Lines consumed.
        line: u64,
        /// A checksum of the bytes before `offset`: the input continues this position only
        /// when it begins with these bytes. `None` in logs written before inputs were
        /// identified: whether an input is still the one read then cannot be told.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checksum: Option<u64>,
        /// The input (its index among `SourceIdentity::Files::paths`) this partition reads:
        /// new content under an input is read as a new partition. `None` in logs written
        /// before that: the partition's own number.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<u32>,
    },
}

impl Position {
    /// The position as one number: the offset, sequence number or byte offset. Records of a
    /// partition are numbered by it, in order, which is what deduplication relies on.
    pub fn ordinal(&self) -> u64 {
        match self {
            Position::Generator { next_seq, .. } => *next_seq,
            Position::Kafka { offset, .. } => (*offset).max(0) as u64,
            Position::File { offset, .. } => *offset,
        }
    }
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Counts committed so far, cumulative.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Records read from the source.
    pub records_read: u64,
    /// Rows in page_views.
    pub page_views: u64,
    /// Rows in late_page_views.
    pub late_page_views: u64,
    /// Rows in page_view_aggregates.
    pub page_view_aggregates: u64,
    /// Rows in dead_letters.
    pub dead_letters: u64,
}

impl Totals {
    /// Adds `other` to these totals.
    pub fn add(&mut self, other: &Totals) {
        self.records_read += other.records_read;
        self.page_views += other.page_views;
        self.late_page_views += other.late_page_views;
        self.page_view_aggregates += other.page_view_aggregates;
        self.dead_letters += other.dead_letters;
    }
}

/// One source partition's event-time progress: what it tells the counting partitions it
/// may feed, and what a checkpoint keeps of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionTime {
    /// Highest event time delivered, UTC ms; `None` before the first record.
    pub max_event_ms: Option<i64>,
    /// The event time of the first event, known before it is read (a file's first page
    /// view, peeked at start): until then the partition holds watermarks just before it
    /// rather than at the very start of time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_event_ms: Option<i64>,
    /// The partition will deliver nothing more.
    pub finished: bool,
    /// The partition has nothing to read (caught up with its end) and was silent past the
    /// idle timeout: it holds no watermark back until its next event.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub idle: bool,
}

impl PartitionTime {
    /// The watermark this partition holds others at, with `delay_ms` of allowed
    /// out-of-orderness: `None` when it holds nothing back (finished or idle). Before its
    /// first event it holds at [`NO_WATERMARK`], or, when its first event time is known, as
    /// if it had delivered an event 1 ms before that one: an event on time in its own
    /// partition then never finds its window emitted.
    pub fn hold(&self, delay_ms: i64) -> Option<i64> {
        if self.finished || self.idle {
            return None;
        }
        let newest = self.max_event_ms.or(self.first_event_ms.map(|f| f.saturating_sub(1)));
        Some(newest.map_or(NO_WATERMARK, |m| m.saturating_sub(delay_ms)))
    }

    /// The watermark of the partition alone: its newest event time minus `delay_ms`.
    pub fn own_watermark(&self, delay_ms: i64) -> i64 {
        self.max_event_ms.map_or(NO_WATERMARK, |m| m.saturating_sub(delay_ms))
    }
}

/// A window's count for one postcode: an emitted aggregate row, or an open window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowCount {
    /// Window end (exclusive), UTC ms; the start is `end - size`.
    pub end: i64,
    /// The postcode.
    pub postcode: String,
    /// Events counted.
    pub views: u64,
}

/// One forwarding source of a counting partition: what of it has been counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputProgress {
    /// Every record of the source at or below this ordinal has been counted (or was late);
    /// a record that arrives again is dropped.
    pub high_water: Option<u64>,
    /// The source's event time as forwarded.
    pub time: PartitionTime,
}

/// A counting partition's state: the windows of the postcodes routed to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counting {
    /// Windows not yet emitted, with their counts.
    pub open_windows: Vec<WindowCount>,
    /// Every window ending at or before this was emitted (UTC ms).
    pub emitted_through: i64,
    /// The counting watermark.
    pub watermark: i64,
    /// Other source partitions that forwarded events here, and how far.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<u32, InputProgress>,
    /// Next offset to read in the repartition topic's partition (Kafka sources only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_offset: Option<i64>,
}

/// A rolled file whose upload a commit completes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedFile {
    /// The table it belongs to.
    pub table: Table,
    /// Its partition hour.
    pub hour: i64,
    /// Its upload; `upload.path` is where it appears, relative to the table root.
    pub upload: UploadRef,
    /// Part ids, in order.
    pub parts: Vec<String>,
    /// Rows in the file.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
}

impl ClosedFile {
    /// Where the file appears, relative to the table root.
    pub fn path(&self) -> &str {
        &self.upload.path
    }
}

/// A file still being written at a checkpoint: what recovery needs to seal it with exactly
/// the rows written up to that checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFileState {
    /// The table it belongs to.
    pub table: Table,
    /// Its partition hour.
    pub hour: i64,
    /// Where it appears, relative to the table root.
    pub path: String,
    /// The upload, once one was started (small files start theirs when they close).
    pub upload: Option<UploadRef>,
    /// Ids of the parts uploaded so far, in order.
    pub parts: Vec<String>,
    /// Bytes in those parts.
    pub sent: u64,
    /// The object holding the rest of the file as of the checkpoint.
    pub tail: Option<String>,
    /// Rows written up to the checkpoint.
    pub rows: u64,
    /// The file's size if sealed at the checkpoint: `sent` plus the tail.
    pub bytes: u64,
}

impl OpenFileState {
    /// The file as recovery seals it, without its upload details.
    pub fn sealed(&self, upload: UploadRef, parts: Vec<String>) -> ClosedFile {
        ClosedFile { table: self.table, hour: self.hour, upload, parts, rows: self.rows, bytes: self.bytes }
    }
}

/// One source partition's committed state: the unit that moves between instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskState {
    /// The source partition (Kafka partition, file index, 0 for the generator).
    pub partition: u32,
    /// The claim under which it was written (see `Log::claim`).
    pub claim: u64,
    /// Checkpoints this task has committed under any claim: names tails and files.
    pub cp: u64,
    /// Where the source resumes.
    pub position: Position,
    /// Event-time progress of the source partition (`idle` when it had nothing to read and
    /// was silent past the idle timeout at this checkpoint).
    pub time: PartitionTime,
    /// The counting partition this task hosts (the one with its own number), if it has state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counting: Option<Counting>,
    /// Counting partitions this source has forwarded events to: they wait for its progress.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub forwarded_to: BTreeSet<u32>,
    /// Files rolled since the previous checkpoint of this task, which this one completes.
    #[serde(default)]
    pub files: Vec<ClosedFile>,
    /// Files still being written, as recovery would seal them.
    #[serde(default)]
    pub open: Vec<OpenFileState>,
    /// Cumulative counts of this task (page views and dead letters of its records; late
    /// rows and aggregates of the windows it counts).
    pub totals: Totals,
}

/// One entry of the commit log (`_checkpoints/<pipeline>/log/<version>.json`), written
/// create-only: the atomic commit point of one instance's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Format version.
    pub format: u32,
    /// Position in the log, from 1.
    pub version: u64,
    /// The instance that wrote it.
    pub member: String,
    /// That instance's process run, so a restarted instance is told from its zombie.
    pub run: String,
    /// Wall-clock time of the commit (UTC), for humans.
    pub created_at: String,
    /// Source partitions this entry claims, with their new claim numbers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<u32, u64>,
    /// Committed task states.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskState>,
    /// `_SUCCESS` markers this entry writes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub markers: Vec<Partition>,
}

/// Who holds a source partition: the newest claim in the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The claim number; every claim of a partition has a higher one.
    pub claim: u64,
    /// The instance that claimed it.
    pub member: String,
    /// Its run.
    pub run: String,
    /// When the claim was written (UTC), for humans.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub since: String,
}
