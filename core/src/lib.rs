//! pageviews-core: the table format that the pipeline writes and the SQL client reads.
//!
//! ```text
//!            pageviews (pipeline: sources, decode, windows, writers)     pageviews-sql (DataFusion)
//!                         │                                                    │
//!                         └────────────────┬───────────────────────────────────┘
//!                                          ▼
//!   pageviews-core:  table (names, columns, formats, partitions) · time (UTC, day/hour)
//!                    storage (root URL → local disk or S3, uploads) · commit (layout, log, protocol)
//! ```
//!
//! Everything both binaries must agree on lives here, and nothing else: no Kafka client,
//! no Parquet encoder, no query engine.

#![warn(missing_docs)]

pub mod commit;
pub mod error;
pub mod secrets;
pub mod shutdown;
pub mod storage;
pub mod table;
pub mod time;

pub use error::error_chain;
pub use shutdown::Shutdown;
