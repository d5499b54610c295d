//! The commit log: what a checkpoint writes, where, and how a restart finishes it.
//!
//! [`layout`] says where everything lives under the table root, [`manifest`] is the on-disk
//! form of one checkpoint, and [`protocol`] writes, publishes and recovers checkpoints. The
//! pipeline calls [`Checkpoints`]; `verify` and the SQL client read manifests.

pub mod layout;
pub mod manifest;
pub mod protocol;

pub use manifest::{
    ClosedFile, FilePosition, Manifest, OpenFileState, PartitionTime, SourceCheckpoint, Totals, WindowCount,
    MANIFEST_VERSION, NO_WATERMARK,
};
pub use protocol::{CheckpointError, Checkpoints};
