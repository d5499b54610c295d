//! Table writers: rows in, files out, visible only once a checkpoint commits them.
//!
//! Last stage before the checkpoint. A [`Row`] is encoded by [`jsonl`] or [`parquet`] (the
//! encoders know nothing of storage), uploaded part by part by `upload` (which knows nothing
//! of formats), into files that `writer::TableWriter` opens per Hive partition and rolls.
//! What a checkpoint makes of the writers' files — the log entry, publication, recovery — is
//! the commit protocol in `pageviews_core::commit`; [`iceberg`] commits the same files into
//! Iceberg tables after the log.

mod columns;
mod encoder;
#[cfg(test)]
mod fixtures;
pub mod iceberg;
pub mod jsonl;
pub mod orc;
pub mod parquet;
mod upload;
pub(crate) mod writer;

use crate::event::{DecodeError, PageView};
use pageviews_core::commit::WindowCount;

pub(crate) use columns::ColumnsError;
pub use pageviews_core::table::{Format, Partition, Table};
pub(crate) use writer::{TableWriter, WriterConfig};

/// One row of one table, borrowed from what the pipeline is processing; each file format
/// encodes it its own way.
#[derive(Debug, Clone, Copy)]
pub enum Row<'a> {
    /// A `page_views` row.
    View(&'a PageView<'a>),
    /// A `late_page_views` row: the event and the watermark it arrived behind (UTC ms).
    Late(&'a PageView<'a>, i64),
    /// A `page_view_aggregates` row: the window and the window size in ms.
    Aggregate(&'a WindowCount, i64),
    /// A `dead_letters` row.
    DeadLetter {
        /// The record as read (or its kept prefix, when oversized).
        payload: &'a [u8],
        /// Why it could not be decoded.
        error: &'a DecodeError,
        /// Where it came from.
        origin: jsonl::Origin<'a>,
        /// When it was read (UTC ms).
        received_at: i64,
    },
}

impl Row<'_> {
    /// The row's event time, UTC ms: the event's timestamp; for an aggregate, its window's
    /// last millisecond; for a dead letter, when it was read. What freshness is measured in.
    #[inline]
    pub(crate) fn event_ms(&self) -> i64 {
        match *self {
            Row::View(pv) | Row::Late(pv, _) => pv.timestamp,
            Row::Aggregate(w, _) => w.end - 1,
            Row::DeadLetter { received_at, .. } => received_at,
        }
    }

    /// Appends the row as one JSON line.
    pub fn write_jsonl(&self, out: &mut Vec<u8>) {
        match *self {
            Row::View(pv) => jsonl::write_view(out, pv),
            Row::Late(pv, watermark) => jsonl::write_late(out, pv, watermark),
            Row::Aggregate(w, size_ms) => jsonl::write_aggregate(out, w, size_ms),
            Row::DeadLetter { payload, error, origin, received_at } => {
                jsonl::write_dead_letter(out, payload, error, origin, received_at)
            }
        }
    }
}
