//! The page-view event: decoding an input record, and which event times are taken.
//!
//! First in the flow of every reader of page views: the pipeline decodes its sources'
//! records here, and `pageviews sql` decodes the Kafka topic it reads as a table with the
//! same code, so both take the same records, with the same dead-letter reasons. A decoded
//! [`PageView`] borrows its strings from the input buffer, so the hot path allocates
//! nothing per record.

mod bounds;
mod decode;

pub use bounds::{EventTimeBounds, DEFAULT_MAX_FUTURE};
pub use decode::{decode, DecodeError, Reason};

use std::borrow::Cow;

/// Longest prefix of an oversized record kept in its dead letter.
pub const OVERSIZED_KEEP: usize = 64 * 1024;

/// The pipeline's default `--max-record-bytes`: larger records are `oversized` dead letters.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;

/// The part of an oversized record its dead letter keeps: the first `min(limit, 64 KiB)`
/// bytes, cut before a partial UTF-8 character so a text payload stays text.
pub fn oversized_prefix(payload: &[u8], limit: usize) -> &[u8] {
    let cut = &payload[..payload.len().min(limit).min(OVERSIZED_KEEP)];
    match std::str::from_utf8(cut) {
        Err(e) if e.error_len().is_none() => &cut[..e.valid_up_to()],
        _ => cut,
    }
}

/// One valid page view. Strings borrow from the record unless JSON escapes forced a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageView<'a> {
    /// Who viewed the page.
    pub user_id: i64,
    /// Where they were (a UK postcode in the original job; any string is accepted).
    pub postcode: Cow<'a, str>,
    /// Which page.
    pub webpage: Cow<'a, str>,
    /// Event time, UTC milliseconds since the epoch.
    pub timestamp: i64,
}
