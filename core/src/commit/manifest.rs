//! The manifest: one committed checkpoint, as written to `_checkpoints/<pipeline>/<seq>.json`.
//!
//! This is the on-disk format both sides read: the pipeline restores its state from it, and
//! `verify` and the SQL client learn from it which files are committed and how far. Types
//! here are plain data; the pipeline converts its running state to and from them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::storage::UploadRef;
use crate::table::{Partition, Table};

/// The watermark before any event: nothing is late yet.
pub const NO_WATERMARK: i64 = i64::MIN;

fn no_watermark() -> i64 {
    NO_WATERMARK
}

/// Manifest format version, bumped on incompatible changes.
pub const MANIFEST_VERSION: u32 = 2;

/// Counts committed so far, cumulative over the pipeline's life.
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

/// One committed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version.
    pub version: u32,
    /// The pipeline that wrote it.
    pub pipeline: String,
    /// Sequence number, from 1.
    pub seq: u64,
    /// Wall-clock time of the commit (UTC), for humans.
    pub created_at: String,
    /// Where the source resumes.
    pub source: SourceCheckpoint,
    /// The pipeline watermark, UTC ms.
    pub watermark: i64,
    /// Per-partition event-time progress.
    pub partitions: BTreeMap<u32, PartitionTime>,
    /// Window size the open windows were counted with.
    pub window_ms: i64,
    /// Windows not yet emitted, with their counts.
    pub open_windows: Vec<WindowCount>,
    /// Every window ending at or before this was emitted (UTC ms).
    #[serde(default = "no_watermark")]
    pub emitted_through: i64,
    /// Rolled files this checkpoint completes.
    pub files: Vec<ClosedFile>,
    /// Files still being written, as recovery would seal them.
    #[serde(default)]
    pub open: Vec<OpenFileState>,
    /// Partitions with rows whose `_SUCCESS` marker is not written yet.
    #[serde(default)]
    pub unmarked: Vec<Partition>,
    /// `_SUCCESS` markers this checkpoint writes.
    #[serde(default)]
    pub markers: Vec<Partition>,
    /// Cumulative committed counts, including this checkpoint.
    pub totals: Totals,
}

/// One source partition's event-time progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionTime {
    /// Highest event time delivered, UTC ms; `None` before the first record.
    pub max_event_ms: Option<i64>,
    /// The partition will deliver nothing more.
    pub finished: bool,
}

/// A window's count for one postcode: an emitted aggregate row, or an open window in a
/// manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowCount {
    /// Window end (exclusive), UTC ms; the start is `end - size`.
    pub end: i64,
    /// The postcode.
    pub postcode: String,
    /// Events counted.
    pub views: u64,
}

/// A rolled file, waiting for the checkpoint that completes it.
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

/// The position to resume from, stored in the checkpoint manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceCheckpoint {
    /// Built-in generator: record `next_seq` is the next to produce.
    Generator {
        /// The stream's seed; records are a function of (seed, sequence number).
        seed: u64,
        /// Event time of record 0, UTC ms.
        start_ms: i64,
        /// Next sequence number.
        next_seq: u64,
        /// How far the event time of records from `next_seq` on is moved past their nominal
        /// time: a run continuing a stream whose bounded end emitted every window starts
        /// after those windows. 0 for a stream never continued that way.
        #[serde(default, skip_serializing_if = "is_zero")]
        shift_ms: i64,
    },
    /// A Kafka topic: the next offset to read per partition.
    Kafka {
        /// The topic.
        topic: String,
        /// Partition → next offset.
        #[serde(with = "partition_keys")]
        partitions: std::collections::BTreeMap<i32, i64>,
    },
    /// JSON-lines files, read in order.
    Files {
        /// One entry per input, in command-line order.
        files: Vec<FilePosition>,
    },
}

/// JSON object keys are strings; serde cannot turn them back into integers inside an
/// internally tagged enum (its buffered content keeps them as strings), so parse them here.
mod partition_keys {
    use std::collections::BTreeMap;

    use serde::{de::Error, Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(map: &BTreeMap<i32, i64>, s: S) -> Result<S::Ok, S::Error> {
        map.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<i32, i64>, D::Error> {
        BTreeMap::<String, i64>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                k.parse()
                    .map(|p| (p, v))
                    .map_err(|_| D::Error::custom(format!("partition {k:?} is not a number")))
            })
            .collect()
    }
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// How far one input file has been consumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePosition {
    /// The path as given (`-` for stdin).
    pub path: String,
    /// Bytes consumed: the next record starts here.
    pub offset: u64,
    /// Lines consumed.
    pub line: u64,
}

impl SourceCheckpoint {
    /// The source in words, for errors that compare a checkpoint with this run.
    pub fn describe(&self) -> String {
        match self {
            SourceCheckpoint::Generator { seed, .. } => format!("the generator with --seed {seed}"),
            SourceCheckpoint::Kafka { topic, .. } => format!("Kafka topic {topic}"),
            SourceCheckpoint::Files { files } => {
                let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
                format!("--input {}", paths.join(" --input "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kafka_checkpoint_survives_its_json_form() {
        let checkpoint = SourceCheckpoint::Kafka {
            topic: "page_views".into(),
            partitions: [(0, 12), (2, 7), (10, 0)].into_iter().collect(),
        };
        let json = serde_json::to_string(&checkpoint).unwrap();
        assert!(json.contains(r#""partitions":{"0":12,"2":7,"10":0}"#), "{json}");
        assert_eq!(serde_json::from_str::<SourceCheckpoint>(&json).unwrap(), checkpoint);
        let bad = json.replace(r#""2":7"#, r#""two":7"#);
        assert!(serde_json::from_str::<SourceCheckpoint>(&bad).unwrap_err().to_string().contains("two"));
    }
}
