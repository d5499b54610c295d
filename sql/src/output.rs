//! Query results as text: boxed tables (like Flink's tableau mode), CSV, or JSON lines.
//!
//! Timestamps print as `yyyy-MM-dd HH:mm:ss.SSS` in every format, the form the pipeline
//! writes, so a value can be pasted back into a filter. JSON keeps null columns as `null`
//! so every row has every key.

use std::io::Write;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::FormatOptions;
use datafusion::arrow::util::pretty::pretty_format_batches_with_options;

/// The timestamp format of the tables, in chrono's notation.
pub const TIMESTAMP_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.3f";

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// A boxed table with a header row.
    #[default]
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object per row.
    Json,
}

/// Writes `batches` to `out` in `format`. An empty result prints the header only (table,
/// CSV) or nothing (JSON).
pub fn write_batches(out: &mut dyn Write, format: Format, batches: &[RecordBatch]) -> Result<(), ArrowError> {
    match format {
        Format::Table => {
            let options = FormatOptions::default()
                .with_null("NULL")
                .with_timestamp_format(Some(TIMESTAMP_FORMAT))
                .with_types_info(false);
            let table = pretty_format_batches_with_options(batches, &options)?;
            writeln!(out, "{table}")?;
        }
        Format::Csv => {
            let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .with_timestamp_format(TIMESTAMP_FORMAT.to_string())
                .build(&mut *out);
            for batch in batches {
                writer.write(batch)?;
            }
        }
        Format::Json => {
            let mut writer = datafusion::arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .with_timestamp_format(TIMESTAMP_FORMAT.to_string())
                .build::<_, datafusion::arrow::json::writer::LineDelimited>(&mut *out);
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
    }
    out.flush()?;
    Ok(())
}
