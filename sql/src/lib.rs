//! pageviews-sql: SQL over the tables the pageviews pipeline writes, on Apache DataFusion.
//!
//! ```text
//! <root>/page_views/day=…/hour=…/part-*.{jsonl,parquet} ──┐
//! <root>/page_view_aggregates/…                          ├──> catalog (listing tables, day/hour
//! <root>/late_page_views/…                               │     partitions) ──> session ──> table | csv | json
//! <root>/dead_letters/…                                 ─┘
//!   <root>: a local directory, s3://bucket/prefix or az://container/prefix
//! ```
//!
//! [`root`] parses the table root (local disk, S3 or Azure) and lists its files; [`committed`] shows
//! every committed row, files still being written included, as of the newest checkpoints
//! (the default; `--visible-only` shows the table folders as they are); [`catalog`]
//! registers the four tables with fixed schemas, each as JSON lines or Parquet as its files
//! are, and prints them as DDL;
//! [`session`] runs statements within a [`budget`] of memory and spill, and refuses every
//! one that would write or register anything (`read_only`); [`shell`] is the interactive
//! loop, [`script`] splits SQL text into statements, and [`output`] prints results. The
//! binary `pageviews-sql` (also reached as `pageviews sql`) is a thin layer over these.
//! With `--brokers`, [`kafka`] registers the topics as tables of schema `kafka`, read with
//! the pipeline's decoder; [`settings`] holds what `SET` changes (Flink's
//! `execution.runtime-mode` and the rest), and in streaming mode [`stream`] follows a topic,
//! printing rows, closed windows or changes as they come. In both modes [`group_window`]
//! turns Flink's `TUMBLE` group windows into the `date_bin` windows DataFusion plans. This
//! crate is separate from the pipeline so that building the pipeline never compiles
//! DataFusion.

#![warn(missing_docs)]

pub mod budget;
pub mod catalog;
pub mod committed;
pub mod group_window;
pub mod kafka;
pub(crate) mod orc;
pub mod output;
mod read_only;
pub mod root;
pub mod script;
pub mod session;
pub mod settings;
pub mod shell;
pub mod stream;

pub use budget::{Amount, Budget};
pub use catalog::{Catalog, CatalogError, TableRoot};
pub use output::Format;
pub use session::{QueryResult, Session, SqlError};
