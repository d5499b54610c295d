//! ORC table files: rows in, ORC bytes out a part at a time, and back to JSON lines.
//!
//! The ORC counterpart of [`super::parquet`], at the same place in the flow and with the
//! same promises: the table writer pushes each row into an [`OrcFile`] (`write`) and ships
//! whatever [`OrcFile::output`] holds as the next multipart-upload part; [`to_jsonl`]
//! (`read`) turns a file back into JSON lines, so `pageviews verify` audits ORC tables with
//! the JSON-lines code. The columns are the tables' own (`pageviews_core::table`): integers
//! are LONG, text is STRING (labels dictionary-encoded per stripe), event times are
//! TIMESTAMP with the writer's time zone UTC, so they read as the UTC instants they are.
//!
//! ORC, like Parquet, keeps its index at the end: stripes, then the stripe statistics, the
//! footer (stripes' offsets, schema, file statistics) and the postscript. So a file spans
//! checkpoints the way a Parquet file does:
//! - Everything ever taken from `output`, in order, is a prefix of the final file: bytes once
//!   shipped never change.
//! - A checkpoint ends the stripe (a stripe per checkpoint, plus one per `stripe_rows`
//!   rows), and [`OrcFile::checkpoint_footer`] returns the statistics, footer and postscript
//!   that, appended to that prefix, make a complete file of every row pushed so far. The
//!   file stays open; the final tail equals a checkpoint tail taken after the last row.
//!
//! Everything but the postscript is compressed with Snappy, in ORC's chunks of at most
//! 256 KiB. Row indexes are not written (`rowIndexStride` 0): stripes are a checkpoint's
//! rows, and their statistics let readers skip them.
//!
//! One instant cannot be stored: ORC readers take a second off every time before 1970 whose
//! fraction is at least a millisecond (ORC-763), so a time in the last second before
//! 1970-01-01 00:00:00 UTC with a fraction (say 23:59:59.500) reads back a second later.
//!
//! ```
//! use pageviews::event::PageView;
//! use pageviews::sink::orc::{to_jsonl, OrcFile};
//! use pageviews::sink::{Row, Table};
//!
//! let pv = PageView { user_id: 1, postcode: "SW19".into(), webpage: "/".into(), timestamp: 0 };
//! let mut file = OrcFile::new(Table::PageViews, 128 * 1024);
//! file.push(&Row::View(&pv))?;
//! let mut shipped = std::mem::take(file.output()); // a multipart-upload part
//! let footer = file.checkpoint_footer()?; // readable up to here, yet still open
//! let at_checkpoint = [shipped.as_slice(), file.output().as_slice(), footer.as_slice()].concat();
//! assert_eq!(to_jsonl(Table::PageViews, &at_checkpoint)?.1, 1);
//! shipped.append(file.output());
//! shipped.extend(file.finish()?); // the last part
//! let mut want = Vec::new();
//! Row::View(&pv).write_jsonl(&mut want);
//! assert_eq!(to_jsonl(Table::PageViews, &shipped)?, (want, 1));
//! # Ok::<(), pageviews::sink::orc::OrcError>(())
//! ```

mod proto;
mod read;
mod rle;
#[cfg(test)]
mod tests;
mod write;

use pageviews_core::table::Table;

use crate::sink::ColumnsError;

pub use read::to_jsonl;
pub use write::OrcFile;

/// File extension of ORC table files.
pub(crate) const EXTENSION: &str = "orc";

/// The magic at the start of the file and in the postscript.
const MAGIC: &[u8] = b"ORC";

/// ORC's TIMESTAMP seconds count from 2015-01-01 00:00:00 in the writer's time zone (UTC).
const TIMESTAMP_BASE_S: i64 = 1_420_070_400;

/// Uncompressed bytes per compression chunk: ORC's default, and what the postscript declares.
const BLOCK: usize = 256 * 1024;

/// `CompressionKind` SNAPPY.
const SNAPPY: u64 = 2;

/// Why an ORC file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum OrcError {
    /// A row or a file refused the way Parquet files refuse it too.
    #[error(transparent)]
    Columns(#[from] ColumnsError),
    /// Snappy refused a chunk (it cannot, below 4 GiB).
    #[error("compressing a {} ORC file: {source}", .table.name())]
    Compress {
        /// The table being written.
        table: Table,
        /// Snappy's error.
        source: snap::Error,
    },
    /// The bytes are not an ORC file as pageviews writes them.
    #[error("reading a {} ORC file: {problem}", .table.name())]
    Read {
        /// The table being read.
        table: Table,
        /// What is wrong, and where.
        problem: String,
    },
}

/// Appends `data` as ORC's compressed stream: chunks of at most [`BLOCK`] bytes, each behind a
/// 3-byte header (length × 2, plus 1 when the chunk is stored as it was because Snappy
/// did not make it smaller).
fn compress(table: Table, data: &[u8], out: &mut Vec<u8>) -> Result<(), OrcError> {
    let mut snappy = snap::raw::Encoder::new();
    for chunk in data.chunks(BLOCK) {
        let packed = snappy.compress_vec(chunk).map_err(|source| OrcError::Compress { table, source })?;
        let (body, original) = if packed.len() < chunk.len() { (&packed[..], 0) } else { (chunk, 1) };
        let header = ((body.len() as u32) << 1) | original;
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.extend_from_slice(body);
    }
    Ok(())
}

/// The bytes of a compressed stream; `Err` says what is wrong.
fn decompress(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut snappy = snap::raw::Decoder::new();
    while !data.is_empty() {
        let header = data.get(..3).ok_or("a compression chunk's header is cut")?;
        let header = u32::from(header[0]) | u32::from(header[1]) << 8 | u32::from(header[2]) << 16;
        let len = (header >> 1) as usize;
        let body = data.get(3..3 + len).ok_or("a compression chunk is cut")?;
        data = &data[3 + len..];
        if header & 1 == 1 {
            out.extend_from_slice(body);
        } else {
            out.extend(snappy.decompress_vec(body).map_err(|e| format!("snappy: {e}"))?);
        }
    }
    Ok(out)
}
