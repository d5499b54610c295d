//! The page-view event: decoding input records and encoding table rows.
//!
//! Sits first in the flow (`source -> decode -> event time -> writers`). A decoded
//! [`PageView`] borrows its strings from the input buffer, so the hot path allocates
//! nothing per record; encoding appends JSON lines to a caller's buffer.

mod bounds;
mod decode;
mod encode;

pub use bounds::{EventTimeBounds, DEFAULT_MAX_FUTURE};
pub use decode::{decode, DecodeError, Reason};
pub use encode::{write_json_str, write_view_fields};

use std::borrow::Cow;

/// Longest prefix of an oversized record kept in its dead letter.
pub const OVERSIZED_KEEP: usize = 64 * 1024;

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
