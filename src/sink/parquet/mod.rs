//! Parquet table files: rows in, Parquet bytes out a part at a time, and back to JSON lines.
//!
//! The Parquet counterpart of [`super::jsonl`], at the same place in the flow: the table
//! writer pushes each row into a [`ParquetFile`] (`write`) and ships whatever
//! [`ParquetFile::output`] holds as the next multipart-upload part; [`to_jsonl`] (`read`)
//! turns a file back into JSON lines. The columns are the tables' own
//! (`pageviews_core::table`), so the schema cannot drift from the SQL client's. Rows wait in per-column buffers until a row group
//! is full and are only then encoded, so a row costs a few `Vec` pushes and, for the
//! low-cardinality strings, one hash lookup into a per-file dictionary.
//!
//! What it guarantees:
//! - Everything ever taken from `output`, in order, is a prefix of the final file: bytes once
//!   shipped never change.
//! - [`ParquetFile::checkpoint_footer`] returns the bytes that, appended to that prefix, make a
//!   complete file holding every row pushed so far, while the file stays open for more rows.
//!   Page indexes are off (statistics are per column chunk), because they are written only at
//!   close: so a checkpoint footer and the final footer describe the same kind of file, and
//!   the final footer equals a checkpoint footer taken after the last row.
//! - [`to_jsonl`] turns a table file back into exactly the bytes `Row::write_jsonl` makes for
//!   the same rows, so `pageviews verify` audits Parquet tables with the JSON-lines code.
//!
//! ```
//! use pageviews::event::PageView;
//! use pageviews::sink::parquet::{to_jsonl, ParquetFile};
//! use pageviews::sink::{Row, Table};
//!
//! let pv = PageView { user_id: 1, postcode: "SW19".into(), webpage: "/".into(), timestamp: 0 };
//! let mut file = ParquetFile::new(Table::PageViews, 128 * 1024)?;
//! file.push(&Row::View(&pv))?;
//! let mut shipped = std::mem::take(file.output()); // a multipart-upload part
//! let footer = file.checkpoint_footer()?; // readable up to here, yet still open
//! let at_checkpoint = [shipped.as_slice(), file.output().as_slice(), footer.as_slice()].concat();
//! assert_eq!(to_jsonl(Table::PageViews, at_checkpoint.into())?.1, 1);
//! shipped.append(file.output());
//! shipped.extend(file.finish()?); // the last part
//! let mut want = Vec::new();
//! Row::View(&pv).write_jsonl(&mut want);
//! assert_eq!(to_jsonl(Table::PageViews, shipped.into())?, (want, 1));
//! # Ok::<(), pageviews::sink::parquet::ParquetError>(())
//! ```

mod read;
#[cfg(test)]
mod tests;
mod write;

use std::sync::Arc;

use pageviews_core::table::{Column, Table};
use parquet::basic::{Compression, LogicalType, Repetition, TimeUnit, Type as PhysicalType};
use parquet::errors::ParquetError as LibError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::{ColumnPath, Type, TypePtr};

use crate::sink::columns::{kind, Kind};
use crate::sink::ColumnsError;

pub use read::to_jsonl;
pub use write::ParquetFile;

/// How timestamp columns are stored. Iceberg's `timestamptz` is microseconds; the Hive
/// layout keeps milliseconds, the pipeline's own resolution, which its readers already know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum TimestampUnit {
    /// `timestamp(ms, UTC)`: the Hive tables.
    #[default]
    Millis,
    /// `timestamp(us, UTC)`: the Iceberg tables.
    Micros,
}

impl TimestampUnit {
    fn parquet(self) -> TimeUnit {
        match self {
            TimestampUnit::Millis => TimeUnit::MILLIS,
            TimestampUnit::Micros => TimeUnit::MICROS,
        }
    }

    /// Stored values per millisecond.
    fn per_ms(self) -> i64 {
        match self {
            TimestampUnit::Millis => 1,
            TimestampUnit::Micros => 1000,
        }
    }
}

/// File extension of Parquet table files.
pub(crate) const EXTENSION: &str = "parquet";

/// Written into every file's metadata, in the `<name> version <v>` form readers parse.
const CREATED_BY: &str = concat!("pageviews version ", env!("CARGO_PKG_VERSION"));

/// Values handed to the column writer per call: bounds the `ByteArray` scratch, whatever the
/// row-group size.
const BATCH: usize = 8 * 1024;

/// Why a Parquet file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ParquetError {
    /// The Parquet library refused to encode: a bug here, or a file past Parquet's limits
    /// (32767 row groups, i.e. checkpoints plus full row groups).
    #[error("encoding a {} Parquet file: {source}", .table.name())]
    Encode {
        /// The table being written.
        table: Table,
        /// The library's error.
        source: LibError,
    },
    /// A row or a file refused the way ORC files refuse it too.
    #[error(transparent)]
    Columns(#[from] ColumnsError),
    /// The bytes are not a readable Parquet file.
    #[error("reading a {} Parquet file: {source}", .table.name())]
    Read {
        /// The table being read.
        table: Table,
        /// The library's error.
        source: LibError,
    },
}

// `columns::Buffered::push` fills `ints` (Int and Timestamp), `labels` and `texts` in the order
// their columns appear in the table definition; `encode_row_group` takes them back in the same
// order.
fn columns(table: Table) -> &'static [Column] {
    table.columns()
}

/// The table's Parquet schema: every column REQUIRED, with the Iceberg field id of its
/// column (its position from 1), which Iceberg readers match columns by.
fn schema(table: Table, unit: TimestampUnit) -> Result<TypePtr, LibError> {
    let fields = columns(table)
        .iter()
        .zip(1..)
        .map(|(c, id)| {
            let (physical, logical) = match kind(c) {
                Kind::Int => (PhysicalType::INT64, None),
                Kind::Timestamp => (PhysicalType::INT64, Some(LogicalType::timestamp(true, unit.parquet()))),
                Kind::Label | Kind::Text => (PhysicalType::BYTE_ARRAY, Some(LogicalType::String)),
            };
            Type::primitive_type_builder(c.name, physical)
                .with_repetition(Repetition::REQUIRED)
                .with_logical_type(logical)
                .with_id(Some(id))
                .build()
                .map(Arc::new)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(Type::group_type_builder(table.name()).with_fields(fields).build()?))
}

fn properties(table: Table) -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_created_by(CREATED_BY.to_string())
        .set_compression(Compression::SNAPPY)
        // Page indexes are written only when the file closes, after the last checkpoint
        // footer; without them every footer describes the same kind of file. Chunk
        // statistics still let readers skip row groups by time.
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_offset_index_disabled(true);
    for c in columns(table) {
        if matches!(kind(c), Kind::Int | Kind::Timestamp) {
            // Numbers go plain: timestamps and offsets are nearly unique per row, so a
            // dictionary would fill up and fall back after costing a hash per value; Snappy
            // takes the repeats out of the others.
            props = props.set_column_dictionary_enabled(ColumnPath::from(c.name), false);
        }
    }
    props.build()
}
