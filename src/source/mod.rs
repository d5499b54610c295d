//! Sources: where records come from, and the positions that make replay exact.
//!
//! First stage of the flow (`source -> decode -> ...`). A [`Source`] fills a [`Batch`] with
//! raw record bytes, each tagged with the partition it came from and its position there
//! (Kafka offset, file line, generator sequence number). The pipeline processes whole
//! batches, so each partition's [`Source::position`] — the position just after the last
//! record handed out — is exactly what the committed tables contain once a checkpoint is taken.
//!
//! The shape is Kafka's: partitions come and go (`PartitionEvent`), each carries its own
//! watermark, and positions are restored from the commit log, which is the truth.

pub mod exchange;
pub(crate) mod file;
pub(crate) mod generator;
pub(crate) mod kafka;

use std::time::Duration;

use thiserror::Error;

use pageviews_core::commit::{CheckpointError, TaskState};
pub(crate) use pageviews_core::commit::{PartitionTime, Position};

pub(crate) use file::{FileSource, InputMode};
pub use generator::{GeneratorConfig, GeneratorSource, GeneratorSpec};
pub use kafka::{KafkaConfig, KafkaSource, OffsetReset};

/// One record inside a [`Batch`]: where its bytes are and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Source partition (Kafka partition, file index, 0 for the generator).
    pub(crate) partition: u32,
    /// Position in the partition: Kafka offset, 1-based line number, or sequence number.
    pub(crate) position: u64,
    /// The record's full length; more than the payload when a source cut an oversized one.
    pub len: u64,
    start: usize,
    end: usize,
}

/// A partition lifecycle change, delivered in order with the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PartitionEvent {
    /// The partition starts delivering records and takes part in the watermark.
    Assigned(u32),
    /// The partition will deliver nothing more; it no longer holds the watermark back.
    Finished(u32),
    /// The partition was given up (a rebalance); it no longer holds the watermark back.
    Revoked(u32),
}

/// Records handed from a source to the pipeline, reusing one buffer across polls.
#[derive(Debug, Default)]
pub struct Batch {
    data: Vec<u8>,
    records: Vec<Record>,
    /// Each event with the number of records that precede it.
    events: Vec<(usize, PartitionEvent)>,
}

impl Batch {
    /// Empties the batch, keeping its allocations.
    pub fn clear(&mut self) {
        self.data.clear();
        self.records.clear();
        self.events.clear();
    }

    /// Appends one record's bytes.
    pub(crate) fn push(&mut self, partition: u32, position: u64, payload: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(payload);
        let end = self.data.len();
        self.records.push(Record { partition, position, len: payload.len() as u64, start, end });
    }

    /// Appends the first bytes of a record too large to keep whole, with its full length.
    pub(crate) fn push_truncated(&mut self, partition: u32, position: u64, prefix: &[u8], len: u64) {
        let start = self.data.len();
        self.data.extend_from_slice(prefix);
        let end = self.data.len();
        self.records.push(Record { partition, position, len, start, end });
    }

    /// Appends a record, or when it is longer than `max_bytes` only the prefix a dead letter
    /// keeps, with its full length: an oversized record is never copied whole.
    pub(crate) fn push_capped(&mut self, partition: u32, position: u64, payload: &[u8], max_bytes: usize) {
        if payload.len() > max_bytes {
            let keep = max_bytes.min(crate::event::OVERSIZED_KEEP);
            self.push_truncated(partition, position, &payload[..keep], payload.len() as u64);
        } else {
            self.push(partition, position, payload);
        }
    }

    /// Appends a record whose bytes `write` appends to the buffer (no intermediate copy).
    pub(crate) fn push_with(&mut self, partition: u32, position: u64, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.data.len();
        write(&mut self.data);
        let end = self.data.len();
        self.records.push(Record { partition, position, len: (end - start) as u64, start, end });
    }

    /// Appends a partition lifecycle event after the records pushed so far.
    pub(crate) fn push_event(&mut self, event: PartitionEvent) {
        self.events.push((self.records.len(), event));
    }

    /// The records, in source order.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Lifecycle events, each with the number of records that precede it: apply an event
    /// before the record at that index, so a partition finishes after its last record.
    pub(crate) fn events(&self) -> &[(usize, PartitionEvent)] {
        &self.events
    }

    /// A record's bytes.
    pub fn payload(&self, record: &Record) -> &[u8] {
        &self.data[record.start..record.end]
    }

    /// Number of records.
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// True when the batch holds no records.
    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// What a poll produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// The batch holds records or events.
    Ready,
    /// Nothing yet; poll again after about this long.
    Pending(Duration),
    /// A bounded source has delivered everything.
    End,
}

/// Why a source cannot go on.
#[derive(Debug, Error)]
pub enum SourceError {
    /// Reading an input failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The input.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The checkpoint was written for different inputs than this run's.
    #[error("the checkpoint in the output was written for {checkpoint}, but this run reads {this_run}; resume with the same inputs, or use another --output or --pipeline-id")]
    Mismatch {
        /// What the checkpoint describes.
        checkpoint: String,
        /// What this run was given.
        this_run: String,
    },
    /// Kafka refused or failed an operation the source cannot go on without.
    #[error("Kafka at {brokers}: cannot {what}: {source}")]
    Kafka {
        /// Bootstrap servers.
        brokers: String,
        /// What was attempted.
        what: String,
        /// The client's error (boxed: it is large and rare).
        source: Box<rdkafka::error::KafkaError>,
    },
    /// `--until-end` on a topic that does not exist.
    #[error("topic {topic:?} does not exist (create it, or produce to it with `pageviews datagen`)")]
    NoTopic {
        /// The topic.
        topic: String,
    },
    /// Events forwarded to the exchange topic were not delivered.
    #[error("{failed} event(s) forwarded to the exchange topic {topic} were not delivered; the checkpoint is not taken")]
    Exchange {
        /// The exchange topic.
        topic: String,
        /// Undelivered events.
        failed: u64,
    },
    /// A stop came while the exchange topic did not take what was forwarded.
    #[error("stopped before the exchange topic {topic} took {pending} forwarded event(s); the last checkpoint is not taken, and the next run reads those events again")]
    ExchangeStopped {
        /// The exchange topic.
        topic: String,
        /// Events still on their way.
        pending: u64,
    },
    /// A checkpoint's Kafka position does not belong to the partition as it is now.
    #[error("topic {topic:?} partition {partition}: {problem}; the topic was deleted and created again, or truncated. Choose where to read with --on-offset-reset earliest|latest (or use another --output or --pipeline-id)")]
    OffsetReset {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// What does not fit, with the offsets.
        problem: String,
    },
    /// The brokers refused this client's credentials or TLS: no retry can cure it.
    #[error("Kafka at {brokers} refused the connection: {cause}; check the security.protocol, sasl.* and ssl.* settings given with --kafka-option")]
    Refused {
        /// Bootstrap servers.
        brokers: String,
        /// librdkafka's account of the failure.
        cause: String,
    },
    /// A stop was requested before the source could start: nothing was read.
    #[error("stopped while waiting for {waiting_for}: nothing was read, nothing is left to commit")]
    Stopped {
        /// What the source was waiting for.
        waiting_for: String,
    },
    /// Claiming or restoring assigned partitions failed.
    #[error("cannot take over the assigned partitions: {0}")]
    Restore(String),
    /// The generator's stream left the years the tables can hold.
    #[error("the generator's record {seq} would be stamped outside years 0000..=9999; give an earlier --start-time or a smaller --count")]
    GeneratorRange {
        /// The first record out of range.
        seq: u64,
    },
    /// An input's committed position cannot be told to fit it (a log written before inputs
    /// were identified).
    #[error(
        "the checkpoint of {input} was written before inputs were identified, so whether {input} still begins with the {offset} bytes read from it cannot be told; run again with --input-mode continue if it does (the same input, or one that grew), or with --input-mode new to read it from its start as new content"
    )]
    Unidentified {
        /// The input (`stdin` for `-`).
        input: String,
        /// Bytes committed from it.
        offset: u64,
    },
    /// More of stdin was committed than a run holds to compare stdin with it.
    #[error(
        "{offset} bytes of stdin are committed, more than the {cap} a run holds to tell whether stdin is that stream piped again; run again with --input-mode continue if it is, or with --input-mode new if it is new data"
    )]
    StdinUnjudged {
        /// Bytes committed from stdin.
        offset: u64,
        /// What a run holds.
        cap: u64,
    },
    /// `--input-mode continue` on an input that does not begin with its committed bytes.
    #[error(
        "--input-mode continue, but {input} does not begin with the {offset} bytes committed from it: {why}; {retry} with --input-mode new to read it from its start as new content"
    )]
    NotContinued {
        /// The input (`stdin` for `-`).
        input: String,
        /// Bytes committed from it.
        offset: u64,
        /// What differs.
        why: String,
        /// How to run again (stdin was read, and must be piped again).
        retry: &'static str,
    },
    /// A file changed between the start of the run, when its committed prefix was checked,
    /// and the moment reading reached it.
    #[error(
        "{path} changed after this run found it to begin with the {offset} bytes committed from it, and no longer does; nothing was read from it: run again"
    )]
    Changed {
        /// The input.
        path: String,
        /// Bytes committed from it.
        offset: u64,
    },
}

/// A partition just taken by this instance: the claim it is held under and its newest
/// committed state (after recovery), if it was ever committed.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The claim number.
    pub claim: u64,
    /// The committed state to go on from.
    pub state: Option<TaskState>,
}

/// Claims source partitions for this instance and restores them: a source calls it when
/// partitions are assigned to it (Kafka does so inside its rebalance callback), so that it
/// can seek each to where its committed state says.
pub trait Restore: Send {
    /// Claims `partitions` and restores each.
    fn restore(&mut self, partitions: &[u32]) -> Result<Vec<(u32, Restored)>, CheckpointError>;
}

/// A stream of records with replayable positions. Implemented by the generator, files and
/// Kafka. Partitions are the unit of state: each carries its own position.
pub trait Source: Send {
    /// Appends available records (and partition events) to `batch`, at most about
    /// `max_records`. `now_ms` is processing time in milliseconds, for rate limiting.
    fn poll(&mut self, batch: &mut Batch, max_records: usize, now_ms: u64) -> Result<Poll, SourceError>;

    /// Where `partition` resumes after everything polled so far is committed.
    fn position(&self, partition: u32) -> Option<Position>;

    /// A partition's name for dead letters: a topic, a file path, `generator`.
    fn partition_name(&self, partition: u32) -> &str;

    /// Partitions the source must give up once everything read from them is committed
    /// (Kafka: a rebalance revokes them). Non-empty means a checkpoint is due now.
    fn revoking(&self) -> Vec<u32> {
        Vec::new()
    }

    /// The claim and restored state of a partition the source announced as assigned.
    fn take_restored(&mut self, _partition: u32) -> Option<Restored> {
        None
    }

    /// Called after a checkpoint is durable with the committed positions; Kafka commits
    /// offsets here (advisory) and gives up revoked partitions.
    fn committed(&mut self, _positions: &std::collections::BTreeMap<u32, Position>) {}

    /// How many partitions the source has as far as it knows now; 0 when it cannot grow
    /// (files and the generator know theirs from the start). A topic can gain partitions.
    fn partitions(&self) -> u32 {
        0
    }

    /// True when `partition` has nothing more to read for now: it reached the end of what
    /// its input holds (Kafka: the end offset, at the latest fetch), and nothing came since.
    /// Only such a partition can be idle; a partition behind its end never is.
    fn caught_up(&self, _partition: u32) -> bool {
        false
    }

    /// This instance lost `partition` to another one (its commit was fenced): deliver
    /// nothing more of it until it is assigned again.
    fn fenced(&mut self, _partition: u32) {}
}
