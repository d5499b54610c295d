//! pageviews-core: the table format that the pipeline writes and the SQL client reads.
//!
//! ```text
//!            pageviews (pipeline: sources, decode, windows, writers)     pageviews-sql (DataFusion)
//!                         │                                                    │
//!                         └────────────────┬───────────────────────────────────┘
//!                                          ▼
//!   pageviews-core:  table (names, columns, formats, partitions) · time (UTC, day/hour)
//!                    storage (root URL → local disk or S3, uploads) · commit (layout, log, protocol)
//!                    event (decoding a record, which event times are taken)
//!                    window (windows, watermarks, the own-partition lateness rule)
//! ```
//!
//! Everything both binaries must agree on lives here, and nothing else: no Kafka client,
//! no Parquet encoder, no query engine. The SQL client reads the Kafka topic as a table, so
//! the decoder and the event-time rules are here too: both judge the same records alike.

#![warn(missing_docs)]

pub mod commit;
pub mod error;
pub mod event;
pub mod secrets;
pub mod shutdown;
pub mod storage;
pub mod table;
pub mod time;
pub mod window;

pub use error::error_chain;
pub use shutdown::Shutdown;
