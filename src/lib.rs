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

// A module is public where the binary, the integration tests, the benches, the SQL client or
// the testkit reach into it, and within it only what they use is `pub`; everything else is
// `pub(crate)`, so the dead-code lint sees what nothing uses.
pub mod cli;
pub mod clock;
pub mod datagen;
pub mod event;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub(crate) mod route;
pub mod sink;
pub mod source;
pub mod verify;
/// Windows and watermarks: `pageviews_core::window`, which the SQL client shares.
pub use pageviews_core::window;

pub use pageviews_core as core;
pub use pipeline::{run, start, PipelineConfig, RunHandle, Shutdown, SourceConfig, Summary};
