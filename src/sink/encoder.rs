//! A file's encoder: rows in, bytes to upload out, in the table's file format.
//!
//! The writer does not care which format it writes; this is the one place that dispatches.

use pageviews_core::storage::StorageError;
use pageviews_core::table::{Format, Table};

use super::orc::{OrcError, OrcFile};
use super::parquet::{ParquetError, ParquetFile, TimestampUnit};
use super::Row;

/// Encoded bytes ready to upload, plus (Parquet, ORC) rows buffered for a row group or
/// stripe.
pub(super) enum Encoder {
    Jsonl(Vec<u8>),
    Parquet(Box<ParquetFile>),
    Orc(Box<OrcFile>),
}

impl Encoder {
    /// An encoder for a new file of `table`; `row_group_rows` is a Parquet row group's or an
    /// ORC stripe's most rows.
    pub(super) fn new(
        format: Format,
        table: Table,
        part_bytes: usize,
        row_group_rows: usize,
        unit: TimestampUnit,
    ) -> Result<Self, StorageError> {
        Ok(match format {
            Format::Jsonl => Encoder::Jsonl(Vec::with_capacity(part_bytes.min(1 << 16))),
            Format::Parquet => Encoder::Parquet(Box::new(
                ParquetFile::with_unit(table, row_group_rows, unit).map_err(encode_error)?,
            )),
            Format::Orc => Encoder::Orc(Box::new(OrcFile::new(table, row_group_rows))),
        })
    }

    #[inline]
    pub(super) fn push(&mut self, row: &Row<'_>) -> Result<(), StorageError> {
        match self {
            Encoder::Jsonl(out) => {
                row.write_jsonl(out);
                Ok(())
            }
            Encoder::Parquet(file) => file.push(row).map_err(encode_error),
            Encoder::Orc(file) => file.push(row).map_err(orc_error),
        }
    }

    /// Encoded bytes not yet uploaded.
    pub(super) fn output(&mut self) -> &mut Vec<u8> {
        match self {
            Encoder::Jsonl(out) => out,
            Encoder::Parquet(file) => file.output(),
            Encoder::Orc(file) => file.output(),
        }
    }

    /// Bytes held in memory: encoded plus buffered.
    #[inline]
    pub(super) fn held(&self) -> usize {
        match self {
            Encoder::Jsonl(out) => out.len(),
            Encoder::Parquet(file) => file.held_bytes(),
            Encoder::Orc(file) => file.held_bytes(),
        }
    }

    /// Ends the current row group or stripe; returns what completes the file as of now
    /// after everything uploaded and [`Encoder::output`].
    pub(super) fn checkpoint_footer(&mut self) -> Result<Vec<u8>, StorageError> {
        match self {
            Encoder::Jsonl(_) => Ok(Vec::new()),
            Encoder::Parquet(file) => file.checkpoint_footer().map_err(encode_error),
            Encoder::Orc(file) => file.checkpoint_footer().map_err(orc_error),
        }
    }

    /// The rest of the file.
    pub(super) fn finish(self) -> Result<Vec<u8>, StorageError> {
        match self {
            Encoder::Jsonl(out) => Ok(out),
            Encoder::Parquet(file) => file.finish().map_err(encode_error),
            Encoder::Orc(file) => file.finish().map_err(orc_error),
        }
    }
}

fn encode_error(e: ParquetError) -> StorageError {
    StorageError::Encode(e.to_string())
}

fn orc_error(e: OrcError) -> StorageError {
    StorageError::Encode(e.to_string())
}
