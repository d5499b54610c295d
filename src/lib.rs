//! pageviews: Kafka page-view events into four consistent tables, partitioned by day and hour
//! (raw events, views per postcode per window, late events, dead letters).
//!
//! ```text
//! source ──> decode ──> event time ──┬──> raw table writer ─────────┐
//! (generator |          (watermarks)  ├──> window operator ──> aggregate table writer
//!  files | Kafka)                     ├──> late table writer        ├──> checkpoint: files + state
//!                                     └── (decode errors) dead letters ┘    + source positions
//! ```
//!
//! The binary is a thin shell over [`pipeline::start`]; tests call the same function. The
//! guarantees (exactly once across every table, late data never lost, bad input never
//! fatal) are stated in `ARCHITECTURE.md` and enforced by the commit protocol in
//! `pageviews_core::commit`, which this crate shares with the SQL client.

#![warn(missing_docs)]

pub mod cli;
pub mod clock;
pub mod datagen;
pub mod event;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod route;
pub mod sink;
pub mod source;
pub mod verify;
/// Windows and watermarks: `pageviews_core::window`, which the SQL client shares.
pub use pageviews_core::window;

pub use pageviews_core as core;
pub use pipeline::{run, start, PipelineConfig, RunHandle, Shutdown, SourceConfig, Summary};
